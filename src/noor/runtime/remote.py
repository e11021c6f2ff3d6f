"""A worker on another process or machine: it reaches the job store and the asset store through the
server's worker API (`noor worker --server URL --key KEY`), so it needs no database or bucket credentials."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

log = logging.getLogger("noor.worker")


class ServerError(RuntimeError):
    """The server refused a worker call (a bad key, or a job that is no longer ours)."""


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    tenant: str
    model: str
    task: dict[str, Any]
    request: dict[str, Any]
    generation_type: str
    batch_key: str | None = None  # jobs with one key run as one call (a server before batching sends none)


class Server:
    """Jobs and files of one `noor serve`, for one named worker; the Store and AssetStore calls a Worker makes."""

    def __init__(self, url: str, key: str, worker: str, *, client: httpx.Client | None = None, retries: int = 5):
        self.worker, self.retries = worker, retries
        self.http = client or httpx.Client(base_url=url.rstrip("/"), timeout=60.0, trust_env=False)
        self.http.headers["Authorization"] = f"Bearer {key}"

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; connection errors and 5xx are retried with backoff (the server may be restarting)."""
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                if attempt == self.retries:
                    raise ServerError(f"{method} {path}: server unreachable ({type(err).__name__})") from err
            else:
                if response.status_code < 500 or attempt == self.retries:
                    break
            time.sleep(min(8.0, 0.25 * 2**attempt))
        if response.status_code == 401:
            raise ServerError("the server refused this worker key (create one with `noor keys create --worker`)")
        if response.status_code >= 400:
            detail = response.json().get("detail") if response.headers.get("content-type") == "application/json" else ""
            raise ServerError(f"{method} {path}: HTTP {response.status_code} {detail}".strip())
        return response

    def ping(self) -> None:
        """Raises ServerError unless the server answers and takes this worker key."""
        self._call("GET", "/v1/worker/ping")

    # --- the Store calls a Worker makes ------------------------------------------------------------

    def claim(
        self, worker: str, lease_s: float, models: Sequence[str] | None = None, regions: Sequence[str] | None = None
    ) -> ClaimedJob | None:
        claimed = self.claim_batch(worker, lease_s, models, regions)
        return claimed[0] if claimed else None

    def claim_batch(
        self,
        worker: str,
        lease_s: float,
        models: Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        *,
        max_batch: int = 1,
    ) -> list[ClaimedJob]:
        """The job the server's policy puts first and up to `max_batch - 1` that run with it (`Store.claim_batch`)."""
        region = regions[0] if regions else None
        body = {
            "worker": worker, "lease_s": lease_s, "models": list(models or []), "region": region, "max_batch": max_batch
        }  # fmt: skip
        response = self._call("POST", "/v1/worker/claim", json=body)
        if response.status_code == 204:
            return []
        data = response.json()
        return [ClaimedJob(**job) for job in data["jobs"]] if "jobs" in data else [ClaimedJob(**data)]  # old server

    def heartbeat(
        self,
        generation_id: str,
        worker: str,
        lease_s: float,
        progress: float | None = None,
        now: datetime | None = None,
        preview: str | None = None,
    ) -> bool:
        body = {"worker": worker, "lease_s": lease_s, "progress": progress, "preview": preview}
        return bool(self._call("POST", f"/v1/worker/jobs/{generation_id}/heartbeat", json=body).json()["ok"])

    def complete(self, generation_id: str, worker: str, assets: dict[str, Any], now: datetime | None = None) -> bool:
        body = {"worker": worker, "assets": assets}
        return bool(self._call("POST", f"/v1/worker/jobs/{generation_id}/complete", json=body).json()["ok"])

    def fail(self, generation_id: str, worker: str, reason: str, now: datetime | None = None) -> bool:
        body = {"worker": worker, "reason": reason}
        return bool(self._call("POST", f"/v1/worker/jobs/{generation_id}/fail", json=body).json()["ok"])

    def release(self, generation_id: str, worker: str, now: datetime | None = None) -> bool:
        """Give a job back to the queue (its attempt failed for a reason outside the request)."""
        body = {"worker": worker}
        return bool(self._call("POST", f"/v1/worker/jobs/{generation_id}/release", json=body).json()["ok"])

    # --- the AssetStore calls a Worker makes --------------------------------------------------------

    def get(self, key: str) -> bytes:
        return self._call("GET", f"/v1/worker/assets/{key}").content

    def put(self, key: str, data: bytes) -> str:
        """`key` is tenant/generation/filename, as `asset_key` makes it; the server files it under the job."""
        _, generation_id, filename = key.split("/", 2)
        path = f"/v1/worker/jobs/{generation_id}/files/{filename}"
        stored: str = self._call("PUT", path, params={"worker": self.worker}, content=data).json()["key"]
        return stored

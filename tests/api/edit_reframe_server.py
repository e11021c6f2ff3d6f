"""What the edit and reframe API tests (#29) share: the app under uvicorn on a loopback port with a worker thread on
the toy noor-tiny (the SDKs talk real HTTP to it), two metered tenants, and small sources uploaded through
/v1/uploads (a 64x48 clip at 8 fps, a 40x40 image)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from noor.api.app import ApiConfig, create_app
from noor.engine import media
from noor.engine.tiny.backend import TinyBackend
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.worker import Worker, WorkerConfig
from tests.api.toy_server import on_loopback


@dataclass
class Live:
    base: str
    keys: dict[str, str]  # tenant -> API key
    store: Store
    assets: AssetStore
    tmp: Path

    def auth(self, tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def upload(self, data: bytes, name: str, tenant: str = "acme") -> str:
        """The URL of `data` uploaded to this server by `tenant`."""
        r = httpx.post(f"{self.base}/v1/uploads", headers=self.auth(tenant), files={"file": (name, data)})
        assert r.status_code == 201, r.text
        return str(r.json()["url"])

    def credits(self, tenant: str = "acme") -> float:
        r = httpx.get(f"{self.base}/dream-machine/v1/credits", headers=self.auth(tenant))
        return float(r.json()["credit_balance"])


def clip(tmp: Path, frames: int = 8, width: int = 64, height: int = 48, fps: int = 8) -> bytes:
    """A small MP4: a white square on grey moving right."""
    video = np.full((frames, height, width, 3), 96, np.uint8)
    for t in range(frames):
        video[t, 16:32, 4 + 3 * t : 20 + 3 * t] = 255
    return media.write_video(tmp / f"clip-{frames}.mp4", video, fps).read_bytes()


def png(width: int = 40, height: int = 40, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def _tenant(store: Store, name: str) -> str:
    """A metered tenant with room for the tests' requests; its API key."""
    tenants.create_tenant(store, name, credits_cents=10_000, max_concurrent=50, max_per_minute=600)
    return tenants.create_key(store, name)


@contextmanager
def live_server(tmp: Path, toy_weights: Path) -> Iterator[Live]:
    store, assets = Store(f"sqlite:///{tmp / 'noor.db'}"), AssetStore(str(tmp / "assets"))
    keys = {name: _tenant(store, name) for name in ("acme", "globex")}
    backend = TinyBackend(toy_weights, threads=1)
    config = WorkerConfig(name="w1", preview_s=None)
    worker = Worker(store, assets, config, load_backend=lambda model, parallel=None: backend)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        with on_loopback(create_app(store, assets, ApiConfig(secret=b"test-secret"))) as port:
            yield Live(f"http://127.0.0.1:{port}", keys, store, assets, tmp)
    finally:
        stop.set()
        thread.join(60)
        store.close()


def fixtures(name: str, sdk: Callable[[Live], Any]) -> tuple[Any, Any]:
    """A module's `live` fixture (one server for its tests, in a temp dir named `name`) and its `client` fixture
    (`sdk(live)`: an SDK client of tenant acme's)."""

    @pytest.fixture(scope="module")
    def live(tmp_path_factory: pytest.TempPathFactory, toy_weights: Path) -> Iterator[Live]:
        with live_server(tmp_path_factory.mktemp(name), toy_weights) as server:
            yield server

    @pytest.fixture(scope="module")
    def client(live: Live) -> Any:
        return sdk(live)

    return live, client


def strict(sdk: Callable[..., Any], path: str) -> Callable[[Live], Any]:
    """A Luma SDK class's client of tenant acme's at `path`, in strict response mode."""
    return lambda live: sdk(
        auth_token=live.keys["acme"], base_url=f"{live.base}{path}", _strict_response_validation=True
    )

"""`noor worker --server URL --key KEY`: a worker that reaches jobs and files only through the worker API."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from noor.api.app import ApiConfig, create_app
from noor.engine import media
from noor.engine.tiny.backend import TinyBackend
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.remote import Server, ServerError
from noor.runtime.worker import Worker, WorkerConfig
from tests.conftest import Served, start_serve


@pytest.fixture
def app_parts(tmp_path: Path) -> tuple[TestClient, Store, AssetStore]:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    assets = AssetStore(str(tmp_path / "assets"))
    tenants.create_tenant(store, "acme", credits_cents=100)
    return TestClient(create_app(store, assets, ApiConfig(secret=b"s"))), store, assets


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, toy_weights: Path) -> Iterator[Served]:
    """`noor serve --workers 0`, shared by the tests of `noor worker` processes (a worker refused changes nothing)."""
    server = start_serve(tmp_path_factory.mktemp("remote-worker") / "data", toy_weights, "--workers", "0")
    yield server
    server.stop()


def _png() -> bytes:
    out = io.BytesIO()
    frame = np.full((64, 64, 3), 128, dtype=np.uint8)
    frame[10:30, 10:30] = (20, 200, 20)
    Image.fromarray(frame).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.slow
def test_a_remote_worker_runs_a_keyframed_job_through_the_api(
    app_parts: tuple[TestClient, Store, AssetStore], toy_weights: Path
) -> None:
    client, store, assets = app_parts
    tenant_auth = {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}
    upload = client.post("/v1/uploads", files={"file": ("k.png", _png(), "image/png")}, headers=tenant_auth)
    body = {"prompt": "a green square", "keyframes": {"frame0": {"type": "image", "url": upload.json()["url"]}}}
    gid = client.post("/generations/video", json=body, headers=tenant_auth).json()["id"]

    remote = Server("http://testserver", tenants.create_worker_key(store), "far-1", client=client)
    backend = TinyBackend(toy_weights)
    worker = Worker(remote, remote, WorkerConfig(name="far-1", heartbeat_s=0.0, preview_s=None), lambda m: backend)
    assert worker.run_once()  # claims, reads the keyframe, generates, uploads, completes: all over HTTP
    assert not worker.run_once()

    done = store.get("acme", gid)
    assert done.state == "completed" and done.attempts == 1, done.failure_reason
    assert assets.keys(f"acme/{gid}") == [f"acme/{gid}/thumbnail.jpg", f"acme/{gid}/video.mp4"]
    video = client.get(f"/generations/{gid}", headers=tenant_auth).json()["assets"]["video"]
    path = Path(store.db.url.database or ".").parent / "v.mp4"
    path.write_bytes(client.get(video).content)
    assert media.video_info(path)[:3] == (done.task["num_frames"], done.task["width"], done.task["height"])


def test_keys_are_kept_to_their_role(app_parts: tuple[TestClient, Store, AssetStore]) -> None:
    client, store, _ = app_parts
    tenant_auth = {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}
    worker_auth = {"Authorization": f"Bearer {tenants.create_worker_key(store)}"}
    claim = {"worker": "w", "models": ["tiny"]}
    assert client.post("/v1/worker/claim", json=claim, headers=tenant_auth).status_code == 401
    assert client.get("/generations", headers=worker_auth).status_code == 401
    assert client.post("/v1/worker/claim", json=claim, headers=worker_auth).status_code == 204  # nothing queued


def test_a_worker_touches_only_jobs_it_holds(app_parts: tuple[TestClient, Store, AssetStore]) -> None:
    client, store, assets = app_parts
    auth = {"Authorization": f"Bearer {tenants.create_worker_key(store)}"}
    task = {"prompt": "x", "width": 64, "height": 64, "num_frames": 16, "fps": 8, "seed": 1}
    gid = store.create(tenant="acme", model="tiny", request={}, task=task).id
    job = client.post("/v1/worker/claim", json={"worker": "a", "models": ["tiny"]}, headers=auth).json()
    assert job["id"] == gid and job["task"] == task
    put = client.put(f"/v1/worker/jobs/{gid}/files/video.mp4", params={"worker": "b"}, content=b"x", headers=auth)
    assert put.status_code == 409 and "not leased to worker 'b'" in put.json()["detail"]
    bad = client.put(f"/v1/worker/jobs/{gid}/files/..%2Fx", params={"worker": "a"}, content=b"x", headers=auth)
    assert bad.status_code in (404, 422)
    assert assets.keys("acme") == []
    beat = {"worker": "b", "progress": 0.5}
    assert client.post(f"/v1/worker/jobs/{gid}/heartbeat", json=beat, headers=auth).json() == {"ok": False}
    assert client.post(f"/v1/worker/jobs/{gid}/complete", json={"worker": "b"}, headers=auth).json() == {"ok": False}
    preview = {"worker": "a", "preview": "globex/other/x.mp4"}
    assert client.post(f"/v1/worker/jobs/{gid}/heartbeat", json=preview, headers=auth).status_code == 400
    assert store.get("acme", gid).state == "dreaming"


def test_a_bad_key_or_server_is_a_clear_error(app_parts: tuple[TestClient, Store, AssetStore]) -> None:
    client, _, _ = app_parts
    with pytest.raises(ServerError, match="refused this worker key"):
        Server("http://testserver", "noor_wrong", "w", client=client).ping()
    with pytest.raises(ServerError, match="refused this worker key"):
        Server("http://testserver", "noor_wrong", "w", client=client).claim("w", 30, models=["tiny"])
    nowhere = Server("http://127.0.0.1:9", "k", "w", retries=1)
    with pytest.raises(ServerError, match="unreachable"):
        nowhere.ping()
    nowhere.close()


@pytest.mark.slow
def test_noor_worker_process_serves_a_live_server(served: Served) -> None:
    worker = None
    try:
        keys = subprocess.run(
            [sys.executable, "-m", "noor.cli", "keys", "create", "--worker"],
            env=served.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        auth = {"Authorization": f"Bearer {served.key}"}
        gid = httpx.post(f"{served.base}/generations/video", json={"prompt": "a red circle"}, headers=auth).json()["id"]
        worker = subprocess.Popen(
            [sys.executable, "-m", "noor.cli", "worker", "--server", served.base, "--key", keys.stdout.strip()],
            env=served.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            g = httpx.get(f"{served.base}/generations/{gid}", headers=auth).json()
            if g["state"] in ("completed", "failed"):
                break
            time.sleep(0.1)
        assert g["state"] == "completed", g
        assert httpx.get(g["assets"]["video"]).headers["content-type"] == "video/mp4"
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
            assert worker.stderr is not None
            worker.stderr.close()


@pytest.mark.slow
def test_noor_worker_refuses_a_bad_key_in_one_line(served: Served) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "noor.cli", "worker", "--server", served.base, "--key", "noor_nope"],
        env=served.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "noor: error: --server: the server refused this worker key (create one with `noor keys create --worker`)"
    ]


@pytest.mark.parametrize("args", [[], ["--tenant", "acme", "--worker"]])
def test_keys_create_wants_a_tenant_or_worker(tmp_path: Path, args: list[str]) -> None:
    env = {**os.environ, "NOOR_DATA_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "noor.cli", "keys", "create", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"noor: error: --tenant: give --tenant NAME for a tenant key, or --worker for a worker key, got "
        f"{'acme' if args else None!r}"
    ]

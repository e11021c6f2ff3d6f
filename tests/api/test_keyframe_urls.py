"""Keyframes given as external URLs: fetched once through the SSRF guard, stored, then used like an upload."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from noor.api.app import ApiConfig, create_app
from noor.engine.tiny.backend import TinyBackend
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.ssrf import Guard
from noor.runtime.worker import Worker, WorkerConfig


def _png() -> bytes:
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    frame[20:40, 20:40] = (230, 30, 30)
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="PNG")
    return out.getvalue()


PNG = _png()


@pytest.fixture(scope="module")
def origin() -> Iterator[int]:
    """An image host on loopback: /red.png, /notes.txt, /big.png (over the limit), /cut.png (truncated), else 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = {
                "/red.png": PNG,
                "/notes.txt": b"not an image",
                "/big.png": PNG + b"\0" * (21 * 2**20),
                "/cut.png": PNG[: len(PNG) // 2],
            }.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _client(tmp_path: Path, guard: Guard, toy_weights: Path) -> tuple[TestClient, Store, dict[str, str], Worker]:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    assets = AssetStore(str(tmp_path / "assets"))
    tenants.create_tenant(store, "acme", credits_cents=100)
    app = create_app(store, assets, ApiConfig(secret=b"s", guard=guard))
    backend = TinyBackend(toy_weights)
    worker = Worker(store, assets, WorkerConfig(name="w"), load_backend=lambda m: backend)
    return TestClient(app), store, {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}, worker


def _create(client: TestClient, auth: dict[str, str], url: str) -> Any:
    body = {"prompt": "a red square", "keyframes": {"frame0": {"type": "image", "url": url}}}
    return client.post("/generations/video", json=body, headers=auth)


@pytest.mark.slow
def test_an_allowed_external_keyframe_is_fetched_and_used(tmp_path: Path, origin: int, toy_weights: Path) -> None:
    # "images.example" resolves to loopback, which this deployment's allow list lets through
    guard = Guard.from_strings(["127.0.0.1/32"], resolver=lambda host, port: ["127.0.0.1"])
    client, store, auth, worker = _client(tmp_path, guard, toy_weights)
    created = _create(client, auth, f"http://images.example:{origin}/red.png")
    assert created.status_code == 201, created.text
    job = store.get("acme", created.json()["id"])
    key = job.task["start"]["asset"]
    assert key.startswith("acme/uploads/") and key.endswith(".png")
    assert (tmp_path / "assets" / key).read_bytes() == PNG  # a copy: the job no longer needs the origin
    assert worker.run_once()
    assert store.get("acme", job.id).state == "completed"
    store.close()


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/notes.txt", "must be a PNG, JPEG or WebP image"),
        ("/cut.png", "is not a whole image"),
        ("/gone.png", "HTTP 404"),
        ("/big.png", "larger than"),
    ],
)
def test_a_bad_external_keyframe_is_a_400(
    tmp_path: Path, origin: int, toy_weights: Path, path: str, detail: str
) -> None:
    guard = Guard.from_strings(["127.0.0.1/32"])
    client, store, auth, _ = _client(tmp_path, guard, toy_weights)
    r = _create(client, auth, f"http://127.0.0.1:{origin}{path}")
    assert r.status_code == 400 and detail in r.json()["detail"], r.text
    assert store.list("acme", 10, 0)[1] == 0  # nothing stored
    store.close()


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/x.png", "http://10.0.0.1/x.png", "http://169.254.169.254/latest", "http://rebind.example/x"],
)
def test_keyframe_urls_inside_are_refused(tmp_path: Path, toy_weights: Path, url: str) -> None:
    guard = Guard(resolver=lambda host, port: ["127.0.0.1"])  # any name resolves to loopback
    client, store, auth, _ = _client(tmp_path, guard, toy_weights)
    r = _create(client, auth, url)
    assert r.status_code == 400 and "private or reserved address" in r.json()["detail"], r.text
    store.close()

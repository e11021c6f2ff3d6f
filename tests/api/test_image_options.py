"""Image options the Dream Machine API offers are honoured (sync) or refused with a reason (references)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from noor.api.app import ApiConfig, create_app
from noor.engine.tiny.backend import TinyBackend
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.worker import Worker, WorkerConfig

URL = "/dream-machine/v1/generations/image"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_ref", [{"url": "https://example.com/a.jpg", "weight": 0.85}]),
        ("style_ref", [{"url": "https://example.com/a.jpg", "weight": 0.5}]),
        ("character_ref", {"identity0": {"images": ["https://example.com/a.jpg"]}}),
        ("modify_image_ref", {"url": "https://example.com/a.jpg", "weight": 0.1}),
    ],
)
def test_image_references_are_refused_not_dropped(tmp_path: Path, field: str, value: object) -> None:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(store, "acme", credits_cents=1000)
    auth = {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}
    with TestClient(create_app(store, AssetStore(str(tmp_path / "a")), ApiConfig(secret=b"s"))) as client:
        answer = client.post(URL, json={"prompt": "a red circle", field: value}, headers=auth)
        assert answer.status_code == 400 and answer.json()["detail"].startswith(f"{field}: no model"), answer.text
        assert client.get("/dream-machine/v1/generations", headers=auth).json()["count"] == 0  # nothing queued
    store.close()


def test_a_sync_image_is_answered_finished(tmp_path: Path, toy_weights: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    assets = AssetStore(str(tmp_path / "a"))
    tenants.create_tenant(store, "acme", credits_cents=1000)
    auth = {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}
    backend = TinyBackend(toy_weights)
    worker = Worker(store, assets, WorkerConfig(name="w", poll_s=0.05), load_backend=lambda model: backend)
    stop = threading.Event()
    runner = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    with TestClient(create_app(store, assets, ApiConfig(secret=b"s"))) as client:
        runner.start()
        try:
            done = client.post(URL, json={"prompt": "a red circle", "sync": True, "sync_timeout": 50}, headers=auth)
            assert done.status_code == 201 and done.json()["state"] == "completed", done.text
            assert done.json()["assets"]["image"]
            later = client.post(URL, json={"prompt": "a red circle"}, headers=auth).json()
            assert later["state"] == "queued"  # without sync: at once
            bad = client.post(URL, json={"prompt": "a red circle", "sync": True, "sync_timeout": 600}, headers=auth)
            assert bad.status_code in (400, 422) and "sync_timeout" in bad.text
        finally:
            stop.set()
            runner.join(30)
    store.close()

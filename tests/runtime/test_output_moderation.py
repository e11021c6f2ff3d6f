"""A worker screens each output with the deployment's frame checkers: a refused one fails its job with the
reason, refunded, and stores nothing; with no checker configured every output passes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from noor.api.app import ApiConfig, create_app
from noor.engine.tiny.backend import TinyBackend
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.worker import Worker, WorkerConfig
from noor.trust import moderation


def test_a_refused_output_fails_its_job_refunded_and_stores_nothing(
    tmp_path: Path, toy_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []

    def classify(request: httpx.Request) -> httpx.Response:  # the prompt passes; what was drawn does not
        payload = json.loads(request.content)
        if "texts" in payload:
            return httpx.Response(200, json={"allowed": True})
        asked.append(len(payload["frames"]))
        return httpx.Response(200, json={"allowed": False, "category": "graphic_violence", "rule": "gore"})

    client = httpx.Client(transport=httpx.MockTransport(classify))
    refusing = moderation.Classifier("http://classifier.test/check", client=client)
    store, assets = Store(f"sqlite:///{tmp_path / 'noor.db'}"), AssetStore(str(tmp_path / "assets"))
    tenants.create_tenant(store, "acme", credits_cents=1000)
    app = create_app(store, assets, ApiConfig(secret=b"test-secret"))
    backend = TinyBackend(toy_weights)
    worker = Worker(store, assets, WorkerConfig(name="w"), load_backend=lambda model: backend)
    with TestClient(app) as api:
        auth = {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}
        body = {"model": "ray-2", "prompt": "a red circle moves to the left", "aspect_ratio": "1:1"}
        allowed = api.post("/dream-machine/v1/generations/video", json=body, headers=auth).json()
        assert worker.run_once()  # no checker configured: it passes
        before = api.get("/dream-machine/v1/credits", headers=auth).json()["credit_balance"]
        monkeypatch.setattr(moderation, "configured_classifier", lambda: refusing)
        refused = api.post("/dream-machine/v1/generations/video", json=body, headers=auth).json()
        assert worker.run_once()
        done = api.get(f"/dream-machine/v1/generations/{allowed['id']}", headers=auth).json()
        failed = api.get(f"/dream-machine/v1/generations/{refused['id']}", headers=auth).json()
        after = api.get("/dream-machine/v1/credits", headers=auth).json()["credit_balance"]
    assert done["state"] == "completed"
    assert failed["state"] == "failed" and failed["failure_reason"].startswith("content_moderated: graphic_violence")
    assert asked == [8]  # 8 frames, evenly spaced, went to the classifier
    assert not list((tmp_path / "assets").rglob(f"*{refused['id']}*"))  # nothing of it stored
    assert after == before  # the refused one was charged at create and refunded when it failed
    store.close()

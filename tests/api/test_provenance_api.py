"""Every kind of output the API makes carries its provenance: a trusted C2PA manifest (c2pa-python's reader) that
names the generation, its action and what it was made from, and the watermark in its pixels after a re-encode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from noor.api.app import ApiConfig, create_app
from noor.config import settings
from noor.engine.tiny.backend import TinyBackend
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.worker import Worker, WorkerConfig
from noor.trust import provenance, signing
from tests.trust.outputs import check_output


@pytest.fixture
def server(tmp_path: Path, toy_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("NOOR_DATA_DIR", str(tmp_path / "data"))  # the deployment's own signing key, made here
    settings.cache_clear()
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    assets = AssetStore(str(tmp_path / "assets"))
    tenants.create_tenant(store, "acme", credits_cents=1000)
    app = create_app(store, assets, ApiConfig(secret=b"test-secret"))
    backend = TinyBackend(toy_weights)
    worker = Worker(store, assets, WorkerConfig(name="w1", region="me-riyadh"), load_backend=lambda model: backend)
    with TestClient(app) as client:
        yield {
            "client": client,
            "worker": worker,
            "auth": {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"},
        }
    store.close()
    settings.cache_clear()


def test_every_output_kind_is_signed_and_marked(server: dict[str, Any]) -> None:
    c, auth, worker = server["client"], server["auth"], server["worker"]
    square = {"model": "ray-2", "prompt": "a red circle moves to the left", "resolution": "540p", "aspect_ratio": "1:1"}
    video = c.post("/dream-machine/v1/generations/video", json={**square, "duration": "5s"}, headers=auth).json()
    png = c.post("/generations/image", json={"prompt": "a blue square", "format": "png", "aspect_ratio": "1:1"},
                 headers=auth).json()  # fmt: skip
    jpg = c.post("/generations/image", json={"prompt": "a green triangle", "format": "jpg", "aspect_ratio": "1:1"},
                 headers=auth).json()  # fmt: skip
    for _ in range(3):
        assert worker.run_once()
    start = {"frame0": {"type": "generation", "id": video["id"]}}
    extended = c.post(
        "/dream-machine/v1/generations/video", json={**square, "duration": "5s", "keyframes": start}, headers=auth
    ).json()
    upscaled = c.post(f"/generations/{video['id']}/upscale", json={"resolution": "720p"}, headers=auth).json()
    assert worker.run_once() and worker.run_once()
    anchors = signing.trust_anchors(settings())
    actions = {}
    for made in (video, png, jpg, extended, upscaled):
        done = c.get(f"/generations/{made['id']}", headers=auth).json()
        assert done["state"] == "completed", done
        for kind, url in done["assets"].items():
            if url is None or kind not in ("video", "image"):
                continue
            data = c.get(url).content
            name = "video.mp4" if kind == "video" else ("image.jpg" if data[:3] == b"\xff\xd8\xff" else "image.png")
            assert check_output(name, data, anchors) == made["id"]  # trusted, and marked where big enough
            verdict = provenance.verify(data, provenance.mime_of(name), anchors=anchors)
            actions[made["id"], kind] = verdict.fields
    # what each was made from, and how
    assert (
        actions[video["id"], "video"]["action"] == "created" and actions[video["id"], "video"]["region"] == "me-riyadh"
    )
    assert actions[upscaled["id"], "video"]["action"] == "upscaled"
    assert any(video["id"] in str(i) for i in actions[upscaled["id"], "video"]["ingredients"])
    assert actions[extended["id"], "video"]["ingredients"], "the extended clip names the clip it starts from"
    assert actions[video["id"], "video"]["watermark_claimed"]["embedded"]  # 540x540: big enough to carry it

"""A generation says what the model adapts or cannot do for it (`warnings`), and the worker runs it unchanged."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from noor.api.app import ApiConfig, create_app
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store


def _client(tmp_path: Path) -> tuple[TestClient, dict[str, str], Store]:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(store, "acme", credits_cents=1000)
    app = create_app(store, AssetStore(str(tmp_path / "assets")), ApiConfig(secret=b"test-secret"))
    return TestClient(app), {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}, store


def test_a_video_carries_the_models_warnings_and_a_plain_one_carries_none(tmp_path: Path) -> None:
    client, auth, store = _client(tmp_path)
    with client:
        url = "/dream-machine/v1/generations/video"
        odd = {"model": "ray-2", "prompt": "a cat playing the piano", "aspect_ratio": "16:9", "resolution": "540p"}
        created = client.post(url, json=odd, headers=auth)
        assert created.status_code == 201, created.text
        warnings = created.json()["warnings"]
        assert warnings == [
            "tiny does not know 'cat', 'playing', 'piano' and ignores them",
            "tiny draws 64x64: scaled to 540x540 in the middle of 960x540, the rest filled with its background "
            "(not stretched)",
            "tiny draws 16 frames; retimed to 40",
        ]
        again = client.get(f"/dream-machine/v1/generations/{created.json()['id']}", headers=auth).json()
        assert again["warnings"] == warnings
        plain = {"model": "ray-2", "prompt": "a red circle moves to the left", "aspect_ratio": "1:1", "duration": "5s"}
        square = client.post(url, json={**plain, "resolution": "540p"}, headers=auth).json()
        assert square["warnings"] == ["tiny draws 64x64; resized to 540x540", "tiny draws 16 frames; retimed to 40"]
        image = client.post(
            "/dream-machine/v1/generations/image", json={"prompt": "a red ball and a blue box"}, headers=auth
        ).json()
        assert any("mostly draws one object where two are asked for" in w for w in image["warnings"]), image
        looped = client.post(url, json={**plain, "resolution": "540p", "loop": True}, headers=auth).json()
        assert any("loops snap back" in w for w in looped["warnings"]), looped
    store.close()

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from noor.jobs.assets import AssetNotFound, AssetStore, asset_key, sign, verify


@pytest.fixture(params=["file", "memory"])
def assets(request: pytest.FixtureRequest, tmp_path: Path) -> AssetStore:
    if request.param == "file":
        return AssetStore(str(tmp_path / "assets"), region="eu-london")
    return AssetStore(f"memory://noor-{uuid.uuid4().hex}", region="me-riyadh")


def test_put_get_list_delete(assets: AssetStore) -> None:
    key = asset_key("acme", "g1", "video.mp4")
    assets.put(key, b"\x00\x01mp4")
    assets.put(asset_key("acme", "g1", "thumb.jpg"), b"jpg")
    assets.put(asset_key("acme", "g2", "video.mp4"), b"other")
    assert assets.get(key) == b"\x00\x01mp4" and assets.exists(key)
    assert assets.keys("acme/g1") == ["acme/g1/thumb.jpg", "acme/g1/video.mp4"]
    assets.delete_prefix("acme/g1")
    assert not assets.exists(key) and assets.keys("acme") == ["acme/g2/video.mp4"]
    with pytest.raises(AssetNotFound):
        assets.get(key)


@pytest.mark.parametrize("name", ["../x", "a/../../b", "", "x y", "/abs"])
def test_keys_cannot_escape_the_store(name: str) -> None:
    with pytest.raises(ValueError):
        asset_key("acme", "g1", name)


def test_no_partial_file_is_left_on_local_disk(tmp_path: Path) -> None:
    store = AssetStore(str(tmp_path))
    store.put("t/g/video.mp4", b"x" * 1000)
    assert sorted(p.name for p in (tmp_path / "t" / "g").iterdir()) == ["video.mp4"]


def test_signed_links_expire_and_bind_the_key() -> None:
    secret = b"s3cret"
    sig = sign(secret, "acme/g1/video.mp4", 1000)
    assert verify(secret, "acme/g1/video.mp4", 1000, sig, now=999)
    assert not verify(secret, "acme/g1/video.mp4", 1000, sig, now=1001)
    assert not verify(secret, "acme/g2/video.mp4", 1000, sig, now=999)
    assert not verify(b"other", "acme/g1/video.mp4", 1000, sig, now=999)

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from PIL import Image

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


def test_a_region_bound_tenants_own_files_go_to_its_regions_store(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from noor.api.app import ApiConfig, create_app
    from noor.jobs import tenants
    from noor.jobs.assets import RegionalAssets
    from noor.jobs.store import Store

    def locate(region: str) -> str:
        return str(tmp_path / "regions" / region)

    assets = RegionalAssets(str(tmp_path / "default"), locate=locate)
    # no regions, or the server's own region: the home store
    assert assets.put_for(None, "acme/uploads/a.png", b"a") and (tmp_path / "default/acme/uploads/a.png").exists()
    # bound to me-riyadh: that region's store only, still readable through the server's store
    assets.put_for(["me-riyadh"], "sa/uploads/b.png", b"b")
    assert (tmp_path / "regions/me-riyadh/sa/uploads/b.png").read_bytes() == b"b"
    assert not (tmp_path / "default/sa").exists() and assets.get("sa/uploads/b.png") == b"b"
    with pytest.raises(ValueError, match="no store is known for region 'eu-london'"):
        RegionalAssets(str(tmp_path / "x")).put_for(["eu-london"], "k/uploads/c.png", b"c")

    # through the API: an upload of a me-riyadh tenant
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(store, "sovereign", regions=["me-riyadh"])
    auth = {"Authorization": f"Bearer {tenants.create_key(store, 'sovereign')}"}
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")  # a real image: uploads are decoded
    png = buffer.getvalue()
    with TestClient(create_app(store, assets, ApiConfig(secret=b"s"))) as client:
        up = client.post("/v1/uploads", files={"file": ("k.png", png, "image/png")}, headers=auth)
        assert up.status_code == 201, up.text
        assert client.get(up.json()["url"]).content == png
    stored = list((tmp_path / "regions/me-riyadh/sovereign/uploads").iterdir())
    assert len(stored) == 1 and stored[0].read_bytes() == png and not (tmp_path / "default/sovereign").exists()
    store.close()

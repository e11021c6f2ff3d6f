"""Money, limits and deletes through a live server, raced by real threads (#25 8, 9, 10, 14; #26 6).

Each probe that found a bug is here, against uvicorn on loopback with httpx clients, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest

from noor import catalog
from noor.api.app import ApiConfig, create_app
from noor.api.pricing import OUTPUT_S_PER_PIXEL, quote
from noor.api.requests import RequestError
from noor.engine import media
from noor.jobs import tenants
from noor.jobs.assets import AssetStore, asset_key
from noor.jobs.store import Store
from tests.api.toy_server import on_loopback
from tests.jobs.conftest import store as store  # the store on SQLite and on PostgreSQL

T = TypeVar("T")
VIDEO = {"model": "ray-2", "prompt": "a red circle moves to the left"}


@pytest.fixture
def live(store: Store, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The app under a real uvicorn on loopback: {"url", "store", "assets", "root", "key"(tenant) -> headers}."""
    quote("tiny", {"width": 64, "height": 64, "num_frames": 8})  # cpu-local is measured once, before any request
    root = tmp_path / "assets"
    assets = AssetStore(str(root))
    app = create_app(store, assets, ApiConfig(secret=b"test-secret"))

    def key(tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tenants.create_key(store, tenant)}"}

    with on_loopback(app) as port:
        yield {"url": f"http://127.0.0.1:{port}", "store": store, "assets": assets, "root": root, "key": key}


def _race(n: int, fn: Callable[[httpx.Client, int], T], url: str) -> list[T]:
    """`fn(client, i)` from `n` threads released together, each with its own connection."""
    start = threading.Barrier(n)

    def one(i: int) -> T:
        with httpx.Client(base_url=url, timeout=30) as client:
            start.wait()
            return fn(client, i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _finished(live: dict[str, Any], tenant: str, width: int = 64, height: int = 64, frames: int = 8) -> str:
    """A completed video generation of `tenant` with a real MP4 on disk (stored by a worker's calls)."""
    store: Store = live["store"]
    task = {"prompt": "p", "width": width, "height": height, "num_frames": frames, "fps": 8}
    gid = store.create(tenant=tenant, model="tiny", request={"model": "tiny"}, task=task).id
    assert store.claim_job(gid, "w1", 30) is not None
    clip = np.full((frames, 16, 16, 3), 200, np.uint8)
    path = media.write_video(live["root"].parent / f"{gid}.mp4", clip, 8)
    key = live["assets"].put(asset_key(tenant, gid, "video.mp4"), path.read_bytes())
    thumb = live["assets"].put(asset_key(tenant, gid, "thumbnail.jpg"), b"\xff\xd8\xff" + b"0" * 32)
    assert store.complete(gid, "w1", {"video": key, "image": thumb})
    return gid


def test_racing_deletes_refund_once_and_never_answer_500(live: dict[str, Any]) -> None:
    # the probe: 20 queued jobs x 10 concurrent DELETEs gave 102 refunds instead of 20; the OpenAI route 500
    tenants.create_tenant(live["store"], "acme", credits_cents=100, max_concurrent=100, max_per_minute=100)
    auth = live["key"]("acme")
    with httpx.Client(base_url=live["url"], timeout=30, headers=auth) as c:
        before = c.get("/credits").json()["credit_balance"]
        ids = [c.post("/generations/video", json=VIDEO).json()["id"] for _ in range(20)]
        assert c.get("/credits").json()["credit_balance"] < before
    # 10 clients at once, each deleting every job (each from a different one on, half through the Dream Machine
    # route, half through OpenAI's): every job is deleted by up to 10 requests racing
    def delete_all(client: httpx.Client, i: int) -> list[tuple[str, int]]:
        path = "/generations/{}" if i % 2 else "/v1/videos/{}"
        order = ids[2 * i :] + ids[: 2 * i]
        return [(gid, client.delete(path.format(gid), headers=auth).status_code) for gid in order]

    codes: dict[str, list[int]] = {gid: [] for gid in ids}
    for results in _race(10, delete_all, live["url"]):
        for gid, code in results:
            codes[gid].append(code)
    for gid in ids:
        assert sorted(codes[gid])[:1] in ([200], [204]) and codes[gid].count(404) == 9, codes[gid]
    with httpx.Client(base_url=live["url"], timeout=30, headers=auth) as c:
        assert c.get("/credits").json()["credit_balance"] == before  # every price back exactly once, exact


@pytest.mark.slow
def test_racing_creates_hold_the_concurrency_and_rate_limits(live: dict[str, Any]) -> None:
    # the probes: 100 concurrent creates with a limit of 5 concurrent left 44 active; 10 per minute let 48 in
    store: Store = live["store"]
    tenants.create_tenant(store, "small", credits_cents=100, max_concurrent=5, max_per_minute=1000)
    tenants.create_tenant(store, "quick", credits_cents=100, max_concurrent=1000, max_per_minute=10)
    for tenant, allowed in (("small", 5), ("quick", 10)):
        auth = live["key"](tenant)
        create: Callable[[httpx.Client, int], httpx.Response] = lambda c, i, auth=auth: c.post(  # noqa: E731
            "/generations/video", json=VIDEO, headers=auth
        )
        responses = _race(30, create, live["url"])
        codes = [r.status_code for r in responses]
        assert codes.count(201) == allowed and codes.count(429) == 30 - allowed, codes
        assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in responses if r.status_code == 429)
        assert store.list(tenant)[1] == allowed


def test_upscales_are_limited_and_priced_by_their_output(live: dict[str, Any]) -> None:
    # the probe: a tenant limited to 2 concurrent queued 50 upscales up to 4k, each priced 0
    store: Store = live["store"]
    tenants.create_tenant(store, "acme", credits_cents=100, max_concurrent=3, max_per_minute=1000)
    auth = live["key"]("acme")
    source = _finished(live, "acme", 64, 64, 8)
    responses = _race(
        12, lambda c, i: c.post(f"/generations/{source}/upscale", json={"resolution": "4k"}, headers=auth), live["url"]
    )
    ok = [r.json() for r in responses if r.status_code == 200]
    assert len(ok) == 3 and sorted({r.status_code for r in responses}) == [200, 429]
    # 2160x2160, 8 frames of resampling and encoding at cpu-local's $/hour
    expected_s = 2160 * 2160 * 8 * OUTPUT_S_PER_PIXEL
    usd_per_hour = catalog.chip("cpu-local").usd_per_hour
    assert all(u["eta_s"] == round(expected_s, 3) for u in ok)
    assert all(u["price_cents"] == pytest.approx(expected_s * usd_per_hour / 36, abs=1e-6) for u in ok)
    assert ok[0]["price_cents"] > 0
    with httpx.Client(base_url=live["url"], timeout=30, headers=auth) as c:
        assert c.get("/credits").json()["credit_balance"] == pytest.approx(100 - 3 * ok[0]["price_cents"], abs=1e-9)
        store.delete("acme", ok[0]["id"])
        small = c.post(f"/generations/{source}/upscale", json={"resolution": "720p"})
        assert small.status_code == 200 and 0 < small.json()["price_cents"] < ok[0]["price_cents"]


def test_sizes_are_priced_and_bounded_by_a_workers_memory(live: dict[str, Any]) -> None:
    # the probe: a 4096x4096 x 64-frame job cost the same as 540p
    store: Store = live["store"]
    tenants.create_tenant(store, "acme", credits_cents=1000, max_concurrent=100, max_per_minute=100)
    auth = live["key"]("acme")
    with httpx.Client(base_url=live["url"], timeout=30, headers=auth) as c:
        answers = [c.post("/v1/videos", json={"prompt": "a red circle", "size": size, "seconds": "8"}) for size in
                   ("960x540", "4096x4096")]  # fmt: skip
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        small, large = (a.json() for a in answers)
        assert large["price_cents"] > 10 * small["price_cents"] > 0  # 32x the pixels, the model's work the same
        assert large["eta_s"] > 4096 * 4096 * 64 * OUTPUT_S_PER_PIXEL
        # an upscale whose output no H.264 frame holds: 400 naming the field and the value
        wide = _finished(live, "acme", 4096, 128, 8)
        refused = c.post(f"/generations/{wide}/upscale", json={"resolution": "4k"})
        assert refused.status_code == 400 and refused.json()["detail"].startswith("resolution: the output would be")
        assert "'4k'" in refused.json()["detail"] and store.list("acme")[1] == 3
    # a worker with 1 GB: a 4096x4096x64 output (3.2 GB held three times) does not fit
    small_chip = catalog.chip("cpu-local").model_copy(update={"hbm_gb": 1.0})
    task = {"prompt": "p", "width": 4096, "height": 4096, "num_frames": 64, "fps": 8}
    with pytest.raises(RequestError, match=r"size: a 4096x4096 output of 64 frames needs 9.7 GB") as err:
        quote("tiny", task, small_chip)
    assert err.value.field == "size" and err.value.status == 400 and "'4096x4096x64'" in err.value.detail


def test_a_deleted_generations_files_are_gone(live: dict[str, Any]) -> None:
    # the probe: after DELETE, the signed link and the owner's key both still served the file, kept on disk
    tenants.create_tenant(live["store"], "acme", credits_cents=100)
    auth = live["key"]("acme")
    with httpx.Client(base_url=live["url"], timeout=30, headers=auth) as c:
        for route in ("/generations/{}", "/v1/videos/{}"):
            gid = _finished(live, "acme")
            link = c.get(f"/generations/{gid}").json()["assets"]["video"]
            key = live["store"].get("acme", gid).assets["video"]
            assert httpx.get(link).status_code == 200 and c.get(f"/assets/{key}").status_code == 200
            assert c.delete(route.format(gid)).status_code in (200, 204)
            assert httpx.get(link).status_code == 404  # the signed link, without the key
            assert c.get(f"/assets/{key}").status_code == 404  # the owner's key
            assert c.get(f"/v1/videos/{gid}/content").status_code == 404
            assert not (live["root"] / "acme" / gid).exists()  # the files themselves
        # a file of a deleted generation that is still there (a worker finished after the delete) is refused too
        gid = _finished(live, "acme")
        key = live["store"].get("acme", gid).assets["video"]
        live["store"].delete("acme", gid)
        assert live["assets"].exists(key) and c.get(f"/assets/{key}").status_code == 404


def test_money_reads_the_same_everywhere_and_adds_up_exactly(live: dict[str, Any]) -> None:
    # the probe: the balance read 4999.982268000002 after a few jobs
    tenants.create_tenant(live["store"], "acme", credits_cents=5000, max_concurrent=100, max_per_minute=100)
    with httpx.Client(base_url=live["url"], timeout=30, headers=live["key"]("acme")) as c:
        prices = [c.post("/generations/video", json=VIDEO).json()["price_cents"] for _ in range(8)]
        balance = c.get("/credits").json()
    micro = [round(p * 1_000_000) for p in prices]
    assert all(p == m / 1_000_000 for p, m in zip(prices, micro, strict=True))  # whole micro-cents
    assert balance == {"credit_balance": (5_000_000_000 - sum(micro)) / 1_000_000, "metered": True}


def test_an_unmetered_tenant_is_shown_as_such_and_never_charged(live: dict[str, Any]) -> None:
    tenants.create_tenant(live["store"], "local", metered=False)
    with httpx.Client(base_url=live["url"], timeout=30, headers=live["key"]("local")) as c:
        assert c.get("/credits").json() == {"credit_balance": 0.0, "metered": False}
        created = c.post("/generations/video", json=VIDEO)
        assert created.status_code == 201 and created.json()["price_cents"] > 0  # priced, not charged
        assert c.get("/credits").json() == {"credit_balance": 0.0, "metered": False}

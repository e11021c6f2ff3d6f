"""World sessions of a region-bound tenant live in its region's data plane (docs/trust.md, "Data residency"):
their rows (prompt, start image key, frames, seconds, cost) are written and read only there, their start image is
in the region's asset store, their seconds are debited from the central credits, and they share max_concurrent
with the tenant's jobs there. Two real PostgreSQL databases: central and me-riyadh."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from noor.api.app import ApiConfig, create_app
from noor.config import settings
from noor.jobs import sessions, tenants
from noor.jobs.limits import LimitExceeded
from noor.jobs.planes import RegionUnavailable
from noor.jobs.sessions import EndReason
from noor.jobs.store import Store
from noor.runtime.interactive import HostConfig, SessionHost
from noor.runtime.ssrf import Guard
from tests import world_double
from tests.api.test_keyframe_urls import origin  # noqa: F401 - a fixture: an image host on loopback
from tests.api.test_worlds import closed, next_status, wait_for
from tests.jobs.test_regions import DOWN, configured, databases, files_of, rows_of  # noqa: F401 - `databases`: a fixture

RIYADH = "me-riyadh"


@pytest.fixture
def deployment(databases: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:  # noqa: F811
    """The central store with me-riyadh's plane, tenant `sovereign` (bound to it, metered) with a key, and the API
    with a session host in me-riyadh on the terrain double (billing every 0.1 s), under a TestClient."""
    regions = {RIYADH: {"database_url": databases["riyadh"], "assets_url": str(tmp_path / "riyadh-files")}}
    _, store, assets = configured(monkeypatch, tmp_path, databases["central"], regions)
    world_double.register(world_double.TerrainDouble())
    tenants.create_tenant(store, "sovereign", regions=[RIYADH], credits_cents=10.0)
    app = create_app(store, assets, ApiConfig(secret=b"s", guard=Guard.from_strings(["127.0.0.1/32"])))
    config = HostConfig(slots=2, queue=2, idle_s=30, region=RIYADH, bill_every_s=0.1, name="host-riyadh")
    app.state.world_host = SessionHost(store, config)
    try:
        with TestClient(app) as client:
            yield {
                "client": client,
                "store": store,
                "auth": {"Authorization": f"Bearer {tenants.create_key(store, 'sovereign')}"},
                "urls": {"central": databases["central"], RIYADH: databases["riyadh"]},
                "files": {"central": tmp_path / "central-files", RIYADH: tmp_path / "riyadh-files"},
            }
    finally:
        world_double.unregister()
        store.close()
        settings.cache_clear()


@pytest.mark.postgres
def test_a_bound_tenants_session_lives_and_is_billed_in_its_region(deployment: dict[str, Any], origin: int) -> None:  # noqa: F811
    c, auth, store = deployment["client"], deployment["auth"], deployment["store"]
    before = tenants.get_tenant(store, "sovereign").credits_microcents
    # 1. a session from an external start image (fetched once, kept in the region's asset store), played a few frames
    body = {"prompt": "a palm grove at dusk", "model": "terrain-double", "fps": 20,
            "start_image_url": f"http://127.0.0.1:{origin}/red.png"}  # fmt: skip
    made = c.post("/v1/worlds/sessions", json=body, headers=auth)
    assert made.status_code == 201, made.text
    s = made.json()
    assert s["state"] == "active" and s["region"] == RIYADH
    with c.websocket_connect(f"/v1/worlds/sessions/{s['id']}/stream") as ws:
        ws.send_json({"token": s["token"]})  # found by id and token in the plane
        ws.send_json({"action": "right"})
        _, status = next_status(ws)
        while status["frame"] < 4 or status["cost"] == 0:  # drawn, and billed at least once
            _, status = next_status(ws)
        # 2. listed and fetched from the plane while it runs, then deleted
        listed = c.get("/v1/worlds/sessions", headers=auth).json()["data"]
        assert [x["id"] for x in listed] == [s["id"]]
        assert c.get(f"/v1/worlds/sessions/{s['id']}", headers=auth).json()["state"] == "active"
        assert c.delete(f"/v1/worlds/sessions/{s['id']}", headers=auth).status_code == 204
        assert closed(ws) == (1000, "session ended: client")
    got = c.get(f"/v1/worlds/sessions/{s['id']}", headers=auth).json()
    assert got["state"] == "ended" and got["end_reason"] == "client" and got["frames"] >= 4 and got["cost"] > 0

    # 3. its rows are in the plane only; its start image in the region's files only
    urls = deployment["urls"]
    assert rows_of(urls[RIYADH], "sovereign")["world_sessions"] == 1
    assert rows_of(urls["central"], "sovereign")["world_sessions"] == 0
    row = sessions.by_id(store, s["id"])
    assert row is not None and row.start_image_key is not None and row.start_image_key.startswith("sovereign/")
    assert any(p.as_posix().endswith(row.start_image_key) for p in files_of(deployment["files"][RIYADH], "sovereign"))
    assert not files_of(deployment["files"]["central"], "sovereign")
    # 4. debited centrally by exactly what the session cost (the plane's row), and all of it paid
    after = tenants.get_tenant(store, "sovereign").credits_microcents
    assert before - after == row.cost_microcents == row.paid_microcents > 0
    assert row.cost_microcents == round(row.seconds * app_host(deployment).price_per_s_microcents)
    assert got["cost"] == row.cost_cents

    # 5. the plane down: a create answers 503 in the API's shape, charges and writes nothing
    store.planes[RIYADH].session.configure(bind=create_engine(DOWN))
    down = c.post("/v1/worlds/sessions", json={"prompt": "x", "model": "terrain-double"}, headers=auth)
    assert down.status_code == 503 and down.headers["Retry-After"] == "5", down.text
    assert "region 'me-riyadh': its database cannot be reached" in down.json()["detail"]
    assert tenants.get_tenant(store, "sovereign").credits_microcents == after
    assert rows_of(urls["central"], "sovereign")["world_sessions"] == 0
    assert app_host(deployment).runner.free([RIYADH]) == 2  # the slot the refused create reserved is free again
    with c.websocket_connect(f"/v1/worlds/sessions/{s['id']}/stream") as ws:  # its token can't be checked: later
        ws.send_json({"token": s["token"]})
        code, reason = closed(ws)
        assert code == 1013 and "me-riyadh" in reason


def app_host(deployment: dict[str, Any]) -> SessionHost:
    host: SessionHost = deployment["client"].app.state.world_host
    return host


def _open(store: Store, tenant: str = "sovereign") -> sessions.WorldSession:
    row, _ = sessions.create(store, tenant=tenant, model="terrain-double", prompt="p", seed=0, fps=5, max_seconds=60)
    return row


def _job(store: Store, tenant: str = "sovereign") -> str:
    return store.create(tenant=tenant, model="tiny", request={}, task={}).id


@pytest.mark.postgres
def test_a_plane_tenants_jobs_and_sessions_share_max_concurrent(deployment: dict[str, Any]) -> None:
    store = deployment["store"]
    tenants.set_tenant(store, "sovereign", max_concurrent=2)
    job = _job(store)
    session = _open(store)  # one job and one session, both in the plane: 2 of 2
    with pytest.raises(LimitExceeded, match=r"^Too many concurrent generations: 2 of 2;"):
        _open(store)
    with pytest.raises(LimitExceeded, match=r"^Too many concurrent generations: 2 of 2;"):
        _job(store)
    assert store.usage("sovereign", sessions.now_utc())[0] == 2  # what the API's check_limits reads
    assert sessions.end(store, session.id, EndReason.CLIENT)
    second = _job(store)  # the ended session's place
    with pytest.raises(LimitExceeded):
        _open(store)
    # a claim skips a tenant whose running jobs and live sessions fill its limit (FULL_TENANTS, counted in the plane
    # against the central max_concurrent)
    store.delete("sovereign", second)
    live = _open(store)
    sessions.activate(store, live.id, "host-riyadh")
    assert store.planes[RIYADH].full_tenants() == ()  # 1 live session of 2: the queued job may run
    tenants.set_tenant(store, "sovereign", max_concurrent=1)
    assert store.planes[RIYADH].full_tenants() == ("sovereign",)
    assert store.claim("w", 30, regions=[RIYADH]) is None
    sessions.end(store, live.id, EndReason.CLIENT)
    claimed = store.claim("w", 30, regions=[RIYADH])
    assert claimed is not None and claimed.id == job
    assert rows_of(deployment["urls"]["central"], "sovereign") | {"prompt_text": 0} == dict.fromkeys(
        ["generations", "idempotency_keys", "world_sessions", "webhook_outbox", "prompt_text"], 0
    )


@pytest.mark.postgres
def test_recover_and_reap_reach_the_planes(deployment: dict[str, Any]) -> None:
    store = deployment["store"]
    now = sessions.now_utc()
    left = _open(store)  # a session this host's last run left live in the plane
    sessions.activate(store, left.id, "host-riyadh")
    sessions.record(store, left.id, frames=3, seconds=0.5, price_per_s_microcents=1000)
    assert sessions.recover(store, "host-riyadh", now=now) == [left.id]
    ended = sessions.get(store, "sovereign", left.id)
    assert (ended.state, ended.end_reason, ended.cost_microcents) == ("ended", "server_restart", 500)
    # reap: a dead host's plane session ends; a live host's (its heartbeat is central) does not
    gone, alive = _open(store), _open(store)
    sessions.activate(store, gone.id, "host-gone")
    sessions.activate(store, alive.id, "host-alive")
    sessions.beat(store, "host-alive", now)
    assert sessions.reap(store, "host-riyadh", now=now + timedelta(seconds=1)) == [gone.id]
    assert sessions.get(store, "sovereign", alive.id).state == "active"
    assert rows_of(deployment["urls"]["central"], "sovereign")["world_sessions"] == 0
    # billing a session whose plane went away: RegionUnavailable, nothing charged
    balance = tenants.get_tenant(store, "sovereign").credits_microcents
    store.planes[RIYADH].session.configure(bind=create_engine(DOWN))
    with pytest.raises(RegionUnavailable, match="me-riyadh"):
        sessions.record(store, alive.id, frames=9, seconds=2.0, price_per_s_microcents=1000)
    assert tenants.get_tenant(store, "sovereign").credits_microcents == balance
    # reap with that plane down: the planes it reaches are reaped all the same (here the central one), no error
    central = _open(store, tenant="nomad")  # a tenant bound to no plane region: its sessions are central
    sessions.activate(store, central.id, "host-gone")
    assert sessions.reap(store, "host-riyadh", now=now + timedelta(seconds=2)) == [central.id]


@pytest.mark.postgres
def test_a_session_whose_plane_goes_down_ends_and_its_record_ends_when_the_plane_is_back(
    deployment: dict[str, Any],
) -> None:
    c, auth, store = deployment["client"], deployment["auth"], deployment["store"]
    before = tenants.get_tenant(store, "sovereign").credits_microcents
    s = c.post("/v1/worlds/sessions", json={"prompt": "dunes", "model": "terrain-double", "fps": 20}, headers=auth)
    assert s.status_code == 201, s.text
    sid, plane = s.json()["id"], store.planes[RIYADH].session
    with c.websocket_connect(f"/v1/worlds/sessions/{sid}/stream") as ws:
        ws.send_json({"token": s.json()["token"]})
        _, status = next_status(ws)
        while status["cost"] == 0:  # billed at least once while the plane was up
            _, status = next_status(ws)
        # 1. the plane goes down: its seconds can no longer be recorded or billed, so the session ends, failed
        up = plane.kw["bind"]
        plane.configure(bind=create_engine(DOWN))
        while status.get("type") != "ended":
            _, status = next_status(ws)
        assert status["reason"] == "error" and "cannot be written" in status["failure_reason"], status
        assert closed(ws)[0] == 1000
    assert app_host(deployment).runner.free([RIYADH]) == 2  # its slot is free at once
    assert sid in app_host(deployment)._unrecorded  # the end waits to be written
    # 2. the plane is back: the host writes the end (no one else would: the host is alive), billed only what was
    # recorded before the plane went
    plane.configure(bind=up)
    row = wait_for(lambda: (r := sessions.by_id(store, sid)) is not None and r.state != "active" and r)
    assert (row.state, row.end_reason) == ("failed", "error") and "cannot be written" in row.failure_reason
    assert not app_host(deployment)._unrecorded
    after = tenants.get_tenant(store, "sovereign").credits_microcents
    assert before - after == row.cost_microcents == row.paid_microcents > 0

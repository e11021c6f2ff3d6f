"""World sessions over HTTP and the WebSocket (docs/world.md, "Sessions"), on the terrain double."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from noor.api import worlds
from noor.config import settings
from noor.engine.world_tiny import terrain
from noor.jobs import sessions, tenants
from noor.runtime.interactive import HostConfig
from tests import world_double
from tests.api.world_server import WorldServer, world_server


def stream(w: WorldServer, session: dict[str, Any]) -> Any:
    return w.client.websocket_connect(f"/v1/worlds/sessions/{session['id']}/stream")


def frame_of(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def next_status(ws: WebSocketTestSession) -> tuple[bytes | None, dict[str, Any]]:
    """The next frame (if one comes first) and the next status-like JSON message."""
    data = None
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            raise WebSocketDisconnect(message["code"], message.get("reason"))
        if message.get("bytes") is not None:
            data = message["bytes"]
            continue
        import json

        return data, json.loads(message["text"])


def closed(ws: WebSocketTestSession) -> tuple[int, str]:
    """Read until the server closes: (code, reason)."""
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return message["code"], message.get("reason") or ""


def wait_for(check: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_a_session_streams_frames_that_follow_the_action(tmp_path: Path) -> None:
    with world_server(tmp_path) as w:
        s = w.open(seed=3)
        assert s["object"] == "world.session" and s["state"] == "active" and s["model"] == "terrain-double"
        assert s["stream_url"] == f"ws://testserver/v1/worlds/sessions/{s['id']}/stream"
        assert s["token"] and s["fps"] == 20 and s["seed"] == 3 and s["queue_position"] is None
        with stream(w, s) as ws:
            ws.send_json({"token": s["token"]})
            # the opening frame at once: the city's terrain, JPEG, with a status
            data, status = next_status(ws)
            assert data is not None and data[:2] == b"\xff\xd8"
            tmap = terrain.make_map("city_night", 3)
            expected = terrain.view(tmap, tmap.width // 2, tmap.height // 2).astype(float)
            shifted = terrain.view(tmap, tmap.width // 2 + 4, tmap.height // 2).astype(float)
            error = np.abs(frame_of(data).astype(float) - expected).mean()
            assert error < 10 and error < np.abs(frame_of(data).astype(float) - shifted).mean() / 2  # JPEG's loss only
            assert status == {"type": "status", "state": "active", "frame": 0, "action": "none", "latency_ms": None,
                              "fps": 0, "seconds": 0.0, "cost": 0.0}  # fmt: skip
            # a held key: "right" applies at every tick until "none"
            ws.send_json({"action": "right"})
            _, status = next_status(ws)
            while status["action"] != "right":
                _, status = next_status(ws)
            assert status["latency_ms"] is not None and status["latency_ms"] >= 0  # the change's first frame
            first = status["frame"]
            _, status = next_status(ws)
            assert status["action"] == "right" and status["latency_ms"] is None and status["frame"] == first + 1
            ws.send_json({"action": "none"})
            while status["action"] != "none":
                _, status = next_status(ws)
            world = w.double.worlds[-1]
            moved = world.actions.count("right")
            assert moved >= 2 and set(world.actions) <= {"none", "right"}
            # moving right scrolled the scene left: the view is the map further right
            assert (world.x, world.y) == ((tmap.width // 2 + 4 * moved) % tmap.width, tmap.height // 2)
            got = w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()
            assert got["state"] == "active" and got["frames"] >= status["frame"] - 1 and got["token"] is None
            assert w.client.delete(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).status_code == 204
            _, status = next_status(ws)
            while status["type"] != "ended":
                _, status = next_status(ws)
            assert status == {"type": "ended", "reason": "client"}
            assert closed(ws) == (1000, "session ended: client")
        ended = w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()
        assert ended["state"] == "ended" and ended["end_reason"] == "client" and ended["ended_at"]
        assert ended["frames"] >= 3 and ended["seconds"] > 0
        assert w.double.worlds[-1].closed
        listed = w.client.get("/v1/worlds/sessions", headers=w.auth).json()
        assert [x["id"] for x in listed["data"]] == [s["id"]]
        # a socket for an ended session: 4410 with the reason
        with stream(w, s) as ws:
            ws.send_json({"token": s["token"]})
            assert closed(ws) == (4410, "session ended: client")


def test_png_frames_when_asked(tmp_path: Path) -> None:
    with world_server(tmp_path) as w:
        s = w.open()
        with stream(w, s) as ws:
            ws.send_json({"token": s["token"], "format": "png"})
            data, _ = next_status(ws)
            assert data is not None and data[:8] == b"\x89PNG\r\n\x1a\n"
            world = w.double.worlds[-1]
            assert frame_of(data).shape == (64, 64, 3)
            assert np.array_equal(frame_of(data), terrain.view(world.map, world.map.width // 2, world.map.height // 2))


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"prompt": "   "}, 400, "prompt: must not be blank, got '   '"),
        ({"prompt": "x" * 501}, 400, "prompt: must be at most 500 characters"),
        ({"model": "genie-9"}, 400, "model: unknown world model; available: terrain-double, world-tiny, got 'genie-9'"),
        ({"fps": 0}, 400, "fps: must be in 1..30 for terrain-double, got 0"),
        ({"fps": 31}, 400, "fps: must be in 1..30 for terrain-double, got 31"),
        ({"max_seconds": 0}, 400, "max_seconds: must be in 1..3600, got 0"),
        ({"max_seconds": 3601}, 400, "max_seconds: must be in 1..3600, got 3601"),
        ({"seed": -1}, 422, "seed"),
        ({"colour": "red"}, 422, "colour"),
        ({"start_image_url": "http://127.0.0.1:9/x.png"}, 400, "start_image_url"),
    ],
)
def test_bad_requests_name_the_field(tmp_path: Path, body: dict[str, Any], status: int, words: str) -> None:
    with world_server(tmp_path) as w:
        answer = w.client.post(
            "/v1/worlds/sessions", json={"prompt": "a desert", "model": "terrain-double"} | body, headers=w.auth
        )
        assert answer.status_code == status, answer.text
        assert words in str(answer.json()["detail"])
        assert sessions.list_for(w.store, "acme") == []  # nothing recorded


def test_no_key_and_another_tenants_session(tmp_path: Path) -> None:
    with world_server(tmp_path) as w:
        assert w.client.post("/v1/worlds/sessions", json={"prompt": "a desert"}).status_code == 401
        s = w.open()
        other = w.key_for("other", metered=False)
        for method in ("get", "delete"):
            answer = getattr(w.client, method)(f"/v1/worlds/sessions/{s['id']}", headers=other)
            unknown = getattr(w.client, method)("/v1/worlds/sessions/no-such-id", headers=other)
            assert answer.status_code == unknown.status_code == 404
            assert answer.json() == unknown.json() == {"detail": "World session not found"}
        assert w.client.get("/v1/worlds/sessions", headers=other).json()["data"] == []
        # the other tenant's own session's token does not open acme's
        mine = w.client.post(
            "/v1/worlds/sessions", json={"prompt": "a coast", "model": "terrain-double"}, headers=other
        ).json()
        with stream(w, s) as ws:
            ws.send_json({"token": mine["token"]})
            assert closed(ws) == (4401, "invalid or expired token for this session")
        assert w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()["state"] == "active"


def test_socket_authentication(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worlds, "AUTH_TIMEOUT_S", 0.2)
    with world_server(tmp_path) as w:
        s = w.open()
        cases: list[tuple[Any, tuple[int, str]]] = [
            ({"token": "wrong"}, (4401, "invalid or expired token for this session")),
            ("not json", (4401, 'the first message must be JSON {"token": "..."}, got \'not json\'')),
            ({"token": s["token"], "format": "gif"}, (4401, "format must be jpeg or png, got 'gif'")),
            ({"token": s["token"], "key": 1}, (4401, "unknown field 'key' in the first message (token, format)")),
            (None, (4401, 'no token within 0.2 s: send {"token": ...} first')),
        ]
        for first, expected in cases:
            with stream(w, s) as ws:
                if isinstance(first, dict):
                    ws.send_json(first)
                elif first is not None:
                    ws.send_text(first)
                assert closed(ws) == expected
        # an expired token
        with w.store.session.begin() as db:
            row = db.get(sessions.WorldSession, s["id"])
            assert row is not None
            row.token_expires_at = sessions.now_utc()
        with stream(w, s) as ws:
            ws.send_json({"token": s["token"]})
            assert closed(ws) == (4401, "invalid or expired token for this session")
        assert w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()["state"] == "active"


def test_bad_messages_get_errors_and_the_session_goes_on(tmp_path: Path) -> None:
    with world_server(tmp_path) as w:
        s = w.open()
        with stream(w, s) as ws:
            ws.send_json({"token": s["token"]})
            errors = []
            for text in ('{"action": "jump"}', "{oops", '{"move": "up"}', '["up"]', '{"action": 3}'):
                ws.send_text(text)
                _, message = next_status(ws)
                while message["type"] != "error":
                    _, message = next_status(ws)
                errors.append((message["code"], message["message"]))
            assert errors == [
                ("bad_action", "action must be one of none, up, down, left, right, got 'jump'"),
                ("bad_message", "message must be JSON, got '{oops'"),
                ("bad_message", 'message must be {"action": "..."}, got \'{"move": "up"}\''),
                ("bad_message", 'message must be {"action": "..."}, got \'["up"]\''),
                ("bad_action", "action must be one of none, up, down, left, right, got 3"),
            ]
            ws.send_json({"action": "up"})
            _, status = next_status(ws)
            while status.get("action") != "up":
                _, status = next_status(ws)
            # a binary message: closed 1003, the session lives on
            ws.send_bytes(b"\x00\x01")
            assert closed(ws) == (1003, 'binary messages are not accepted: send JSON text {"action": ...}')
        assert w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()["state"] == "active"


def test_a_flood_closes_the_socket_not_the_session(tmp_path: Path) -> None:
    with world_server(tmp_path) as w:
        s = w.open()
        with stream(w, s) as ws:
            ws.send_json({"token": s["token"]})
            for _ in range(101):
                ws.send_text('{"action": "left"}')
            assert closed(ws) == (1008, "more than 100 messages a second")
        assert w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()["state"] == "active"
        with stream(w, s) as ws:  # a reconnect with the same token
            ws.send_json({"token": s["token"]})
            data, status = next_status(ws)
            assert data is not None and status["type"] == "status"


def test_a_second_socket_replaces_the_first(tmp_path: Path) -> None:
    with world_server(tmp_path) as w:
        s = w.open()
        with stream(w, s) as first:
            first.send_json({"token": s["token"]})
            next_status(first)
            with stream(w, s) as second:
                second.send_json({"token": s["token"]})
                assert closed(first) == (4409, "another socket opened for this session")
                data, status = next_status(second)
                assert data is not None and status["type"] == "status"


def test_admission_queue_and_429(tmp_path: Path) -> None:
    with world_server(tmp_path, HostConfig(slots=1, queue=1, idle_s=30)) as w:
        first = w.open(max_seconds=20)
        second = w.open()
        assert first["state"] == "active"
        assert second["state"] == "queued" and second["queue_position"] == 1 and second["started_at"] is None
        third = w.client.post(
            "/v1/worlds/sessions", json={"prompt": "a coast", "model": "terrain-double"}, headers=w.auth
        )
        assert third.status_code == 429
        assert third.json()["detail"].startswith("all 1 world session slot(s) are busy and the queue of 1 is full")
        assert 1 <= int(third.headers["Retry-After"]) <= 20
        with stream(w, second) as ws:
            ws.send_json({"token": second["token"]})
            _, message = next_status(ws)
            assert message == {"type": "queued", "position": 1}
            assert w.client.delete(f"/v1/worlds/sessions/{first['id']}", headers=w.auth).status_code == 204
            data, status = next_status(ws)  # its slot came: the opening frame
            assert data is not None and status["state"] == "active"
        got = w.client.get(f"/v1/worlds/sessions/{second['id']}", headers=w.auth).json()
        assert got["state"] == "active" and got["queue_position"] is None
        # a queued session deleted before its slot came: ended, never started, nothing billed
        waiting = w.open()
        assert waiting["queue_position"] == 1
        assert w.client.delete(f"/v1/worlds/sessions/{waiting['id']}", headers=w.auth).status_code == 204
        got = w.client.get(f"/v1/worlds/sessions/{waiting['id']}", headers=w.auth).json()
        assert (got["state"], got["end_reason"], got["started_at"], got["cost"]) == ("ended", "client", None, 0.0)
        assert w.open()["queue_position"] == 1  # its place is free again


def test_a_stopping_server_ends_its_sessions(tmp_path: Path) -> None:
    with world_server(tmp_path, HostConfig(slots=1, queue=1, idle_s=30)) as w:
        active, queued = w.open(), w.open()
        w.host.close()
        for s in (active, queued):
            got = w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()
            assert got["state"] == "ended" and got["end_reason"] == "server_restart"
        answer = w.client.post("/v1/worlds/sessions", json={"prompt": "x", "model": "terrain-double"}, headers=w.auth)
        assert answer.status_code == 429 and answer.json()["detail"] == "the session host has stopped; retry in 5 s"


def test_idle_and_max_seconds(tmp_path: Path) -> None:
    with world_server(tmp_path, HostConfig(slots=2, queue=2, idle_s=0.4)) as w:
        idle = w.open()
        capped = w.open(max_seconds=1)
        with stream(w, capped) as ws:
            ws.send_json({"token": capped["token"]})
            _, status = next_status(ws)
            while status["type"] != "ended":
                _, status = next_status(ws)
            assert status == {"type": "ended", "reason": "max_seconds"}
        got = w.client.get(f"/v1/worlds/sessions/{capped['id']}", headers=w.auth).json()
        assert got["end_reason"] == "max_seconds" and got["seconds"] == 1.0
        assert 1 <= got["frames"] <= 21  # at most 20 fps for a second (fewer on a loaded machine)
        gone = w.client.get(f"/v1/worlds/sessions/{idle['id']}", headers=w.auth).json()
        assert gone["state"] == "ended" and gone["end_reason"] == "idle"
        assert gone["frames"] == 0  # nothing is drawn while no socket watches


def test_billing_ends_a_session_when_credits_run_out(tmp_path: Path) -> None:
    config = HostConfig(slots=1, queue=1, idle_s=30, bill_every_s=0.1)
    with world_server(tmp_path, config, credits_cents=0.002) as w:  # 2000 micro-cents
        price = w.host.price_per_s_microcents
        assert price == 1389  # cpu-local: $0.05 an hour (catalog) = 0.001389 cents a second
        s = w.open()
        with stream(w, s) as ws:
            ws.send_json({"token": s["token"]})
            _, status = next_status(ws)
            while status["type"] != "ended":
                _, status = next_status(ws)
            assert status == {"type": "ended", "reason": "credits"}
        got = w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()
        assert got["end_reason"] == "credits" and got["cost"] == 0.002  # all it had, not a micro-cent more
        assert got["seconds"] > 1.0  # 2000 micro-cents buy 1.44 s
        assert tenants.balance(w.store, "acme") == 0
        # no credit for another second: 402 before anything is recorded
        answer = w.client.post("/v1/worlds/sessions", json={"prompt": "x", "model": "terrain-double"}, headers=w.auth)
        assert answer.status_code == 402 and "a second of a world session costs $0.00001389" in answer.json()["detail"]


def test_a_session_without_a_socket_is_billed_and_draws_nothing(tmp_path: Path) -> None:
    config = HostConfig(slots=1, queue=1, idle_s=30, bill_every_s=0.1)
    with world_server(tmp_path, config, credits_cents=0.0015) as w:  # about 1.1 s at 1389 micro-cents a second
        s = w.open()
        got = wait_for(
            lambda: (
                (g := w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json())["state"] == "ended" and g
            )
        )
        assert got["end_reason"] == "credits" and got["frames"] == 0 and got["cost"] == 0.0015
        assert got["seconds"] > 1.0  # 1500 micro-cents buy 1.08 s


def test_a_failing_model_fails_the_session(tmp_path: Path) -> None:
    with world_server(tmp_path, double=world_double.TerrainDouble(fail_at_step=3)) as w:
        s = w.open()
        with stream(w, s) as ws:  # frames are drawn while a socket watches
            ws.send_json({"token": s["token"]})
            _, status = next_status(ws)
            while status["type"] != "ended":
                _, status = next_status(ws)
            assert status == {
                "type": "ended",
                "reason": "error",
                "failure_reason": "RuntimeError: terrain-double: asked to fail at step 3",
            }
        got = wait_for(
            lambda: (
                (g := w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json())["state"] != "active" and g
            )
        )
        assert got["state"] == "failed" and got["end_reason"] == "error"
        assert got["failure_reason"] == "RuntimeError: terrain-double: asked to fail at step 3"
        assert w.open()["state"] == "active"  # the host goes on


def test_regions(tmp_path: Path) -> None:
    with world_server(tmp_path) as w:
        bound = w.key_for("sovereign", regions=["me-riyadh"], metered=False)
        answer = w.client.post("/v1/worlds/sessions", json={"prompt": "x", "model": "terrain-double"}, headers=bound)
        assert answer.status_code == 403
        assert answer.json()["detail"] == (
            "tenant 'sovereign' may run only in me-riyadh; this server's world sessions run in no region "
            "(NOOR_REGION)"
        )
    with world_server(tmp_path / "riyadh", HostConfig(region="me-riyadh")) as w:
        bound = w.key_for("sovereign", regions=["me-riyadh"], metered=False)
        answer = w.client.post("/v1/worlds/sessions", json={"prompt": "x", "model": "terrain-double"}, headers=bound)
        assert answer.status_code == 201 and answer.json()["region"] == "me-riyadh"


def test_restart_ends_what_a_dead_server_left_live(tmp_path: Path) -> None:
    """A server killed mid-session left its record active with 2 s recorded (and paid); the next server's start
    ends it (server_restart) and bills nothing more."""
    from noor.jobs.store import Store

    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(store, "acme", credits_cents=1.0)
    row, _ = sessions.create(store, tenant="acme", model="terrain-double", prompt="x", seed=0, fps=10, max_seconds=60)
    queued, _ = sessions.create(
        store, tenant="acme", model="terrain-double", prompt="y", seed=0, fps=10, max_seconds=60
    )
    assert sessions.activate(store, row.id, "dead-host")
    assert sessions.record(store, row.id, frames=20, seconds=2.0, price_per_s_microcents=1389).recorded
    store.close()
    with world_server(tmp_path, store_url=f"sqlite:///{tmp_path / 'noor.db'}", create_acme=False) as w:
        for sid in (row.id, queued.id):
            got = w.client.get(f"/v1/worlds/sessions/{sid}", headers=w.auth).json()
            assert got["state"] == "ended" and got["end_reason"] == "server_restart"
        got = w.client.get(f"/v1/worlds/sessions/{row.id}", headers=w.auth).json()
        assert got["seconds"] == 2.0 and got["frames"] == 20 and got["cost"] == 0.002778
        assert tenants.balance(w.store, "acme") == pytest.approx(1.0 - 0.002778)


@pytest.mark.slow
def test_a_real_world_tiny_session_on_toy_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """noor-world-tiny itself (untrained toy-size weights) behind the same protocol: the registry's world-tiny
    loads from NOOR_WORLD_TINY_WEIGHTS, opens a world and draws with the actions sent."""
    from noor.engine.world_tiny.train import save_toy_weights

    weights = save_toy_weights(tmp_path / "world-tiny")
    monkeypatch.setenv("NOOR_WORLD_TINY_WEIGHTS", str(weights))
    with world_server(tmp_path) as w:
        answer = w.client.post(
            "/v1/worlds/sessions", json={"prompt": "a desert with palm trees", "fps": 5}, headers=w.auth
        )
        assert answer.status_code == 201, answer.text
        s = answer.json()
        assert s["model"] == "world-tiny" and s["fps"] == 5
        with stream(w, s) as ws:
            ws.send_json({"token": s["token"], "format": "png"})
            data, status = next_status(ws)
            assert data is not None and frame_of(data).shape == (64, 64, 3) and status["frame"] == 0
            ws.send_json({"action": "right"})
            _, status = next_status(ws)
            while status["action"] != "right":
                _, status = next_status(ws)
            assert status["latency_ms"] is not None and status["frame"] >= 1
            assert w.client.delete(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).status_code == 204
        got = w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()
        assert got["state"] == "ended" and got["end_reason"] == "client" and got["frames"] >= 1


@pytest.mark.postgres
def test_a_session_on_postgresql(tmp_path: Path) -> None:
    """The same session, recorded and billed in PostgreSQL (a schema of its own)."""
    import uuid

    from sqlalchemy import create_engine, text

    from tests.jobs.conftest import POSTGRES

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        config = HostConfig(slots=1, queue=1, idle_s=30, bill_every_s=0.1)
        url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
        with world_server(tmp_path, config, store_url=url, credits_cents=1.0) as w:
            s = w.open()
            with stream(w, s) as ws:
                ws.send_json({"token": s["token"]})
                ws.send_json({"action": "down"})
                _, status = next_status(ws)
                while status.get("frame", 0) < 5:
                    _, status = next_status(ws)
                assert w.client.delete(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).status_code == 204
            got = w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()
            assert got["state"] == "ended" and got["frames"] >= 5 and got["seconds"] > 0
            assert got["cost"] == round(got["seconds"] * 1389) / 1e6
            assert tenants.balance(w.store, "acme") == pytest.approx(1.0 - got["cost"])
            assert w.double.worlds[-1].actions.count("down") >= 4
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_sessions_and_jobs_share_max_concurrent(tmp_path: Path) -> None:
    """A tenant at its max_concurrent gets the jobs API's 429 when it opens a session, and the other way round."""
    video = {"model": "ray-2", "prompt": "a red circle moves to the left"}
    with world_server(tmp_path, max_concurrent=1, metered=False) as w:
        job = w.client.post("/dream-machine/v1/generations/video", json=video, headers=w.auth)
        assert job.status_code == 201, job.text
        refused_job = w.client.post("/dream-machine/v1/generations/video", json=video, headers=w.auth)
        refused = w.client.post("/v1/worlds/sessions", json={"prompt": "x", "model": "terrain-double"}, headers=w.auth)
        assert refused.status_code == refused_job.status_code == 429
        assert (
            refused.json()
            == refused_job.json()
            == {"detail": "Too many concurrent generations: 1 of 1; wait for one to finish"}
        )
        assert refused.headers["Retry-After"] == refused_job.headers["Retry-After"] == "5"
        assert w.client.delete(f"/dream-machine/v1/generations/{job.json()['id']}", headers=w.auth).status_code < 300
        s = w.open()
        refused_job = w.client.post("/dream-machine/v1/generations/video", json=video, headers=w.auth)
        assert refused_job.status_code == 429 and refused_job.json()["detail"].startswith(
            "Too many concurrent generations: 1 of 1"
        )
        assert w.client.delete(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).status_code == 204
        assert w.client.post("/dream-machine/v1/generations/video", json=video, headers=w.auth).status_code == 201


def test_an_unmetered_tenants_session_follows_the_jobs_rule(tmp_path: Path) -> None:
    """As a job of an unmetered tenant carries its price_cents and takes nothing (docs/serve.md), a session shows
    what its seconds cost and takes nothing: the balance stays 0 and `paid` 0."""
    config = HostConfig(slots=1, queue=1, idle_s=30, bill_every_s=0.1)
    video = {"model": "ray-2", "prompt": "a red circle moves to the left"}
    with world_server(tmp_path, config) as w:  # acme: unmetered
        job = w.client.post("/dream-machine/v1/generations/video", json=video, headers=w.auth).json()
        assert job["price_cents"] > 0  # the jobs' rule: priced, not charged
        s = w.open()
        wait_for(lambda: w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()["seconds"] >= 0.5)
        assert w.client.delete(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).status_code == 204
        got = w.client.get(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).json()
        assert got["cost"] == round(got["seconds"] * w.host.price_per_s_microcents) / 1_000_000 > 0
        assert w.client.get("/dream-machine/v1/credits", headers=w.auth).json() == {
            "credit_balance": 0.0,
            "metered": False,
        }
        row = sessions.get(w.store, "acme", s["id"])
        assert row.paid_microcents == 0 and tenants.get_tenant(w.store, "acme").credits_microcents == 0


def test_a_new_token_for_the_tenants_own_live_session(tmp_path: Path) -> None:
    with world_server(tmp_path) as w:
        s = w.open()
        url = f"/v1/worlds/sessions/{s['id']}/token"
        minted = w.client.post(url, headers=w.auth)
        assert minted.status_code == 200 and minted.json()["id"] == s["id"]
        token = minted.json()["token"]
        assert token and token != s["token"] and minted.json()["state"] == "active"
        with stream(w, s) as ws:  # the first token is replaced: only the newest opens the socket
            ws.send_json({"token": s["token"]})
            assert closed(ws) == (4401, "invalid or expired token for this session")
        with stream(w, s) as ws:
            ws.send_json({"token": token})
            data, status = next_status(ws)
            assert data is not None and status["type"] == "status"
        other = w.key_for("other", metered=False)
        assert w.client.post(url, headers=other).status_code == 404  # another tenant's: not found
        assert w.client.post("/v1/worlds/sessions/nope/token", headers=w.auth).status_code == 404
        assert w.client.delete(f"/v1/worlds/sessions/{s['id']}", headers=w.auth).status_code == 204
        ended = w.client.post(url, headers=w.auth)
        assert ended.status_code == 409
        assert ended.json()["detail"] == f"World session {s['id']} has ended: no socket opens for it"


def test_two_hosts_on_one_database_recover_only_their_own_and_dead_hosts_sessions(tmp_path: Path) -> None:
    """Hosts a and b share one SQLite file. a restarts (a new host of the same name, as after a crash): it ends
    its own last run's session and a dead host's, never b's; b's heartbeat ends a dead host's as it runs."""
    from datetime import timedelta

    from noor.jobs.store import Store
    from noor.runtime.interactive import SessionHost

    db = f"sqlite:///{tmp_path / 'noor.db'}"
    with (
        world_server(tmp_path / "a", HostConfig(slots=1, queue=1, idle_s=30, name="host-a"), store_url=db) as a,
        world_server(
            tmp_path / "b", HostConfig(slots=1, queue=1, idle_s=30, name="host-b"), store_url=db, create_acme=False
        ) as b,
    ):
        on_a, on_b = a.open(), b.open()
        assert sessions.by_id(a.store, on_a["id"]).worker == "host-a"  # type: ignore[union-attr]
        assert sessions.by_id(a.store, on_b["id"]).worker == "host-b"  # type: ignore[union-attr]
        # host-c died a minute ago with a session active
        dead, _ = sessions.create(a.store, tenant="acme", model="terrain-double", prompt="x", seed=0, fps=10,
                                  max_seconds=60, worker="host-c")  # fmt: skip
        sessions.activate(a.store, dead.id, "host-c")
        sessions.beat(a.store, "host-c", now=sessions.now_utc() - timedelta(seconds=60))
        # a restarts on the same database while b runs
        store = Store(db)
        restarted = SessionHost(store, HostConfig(name="host-a")).start()
        try:
            state = {sid: sessions.by_id(store, sid) for sid in (on_a["id"], on_b["id"], dead.id)}
            assert state[on_a["id"]].end_reason == "server_restart"  # type: ignore[union-attr]
            assert state[dead.id].end_reason == "server_restart"  # type: ignore[union-attr]
            assert state[on_b["id"]].state == "active"  # type: ignore[union-attr]
            with stream(b, on_b) as ws:  # b's session still plays
                ws.send_json({"token": on_b["token"]})
                data, status = next_status(ws)
                assert data is not None and status["state"] == "active"
            # host-d dies while both run: the next beat of a live host ends its session
            late, _ = sessions.create(store, tenant="acme", model="terrain-double", prompt="x", seed=0, fps=10,
                                      max_seconds=60, worker="host-d")  # fmt: skip
            sessions.beat(store, "host-d", now=sessions.now_utc() - timedelta(seconds=60))
            wait_for(lambda: sessions.by_id(store, late.id).state == "ended")  # type: ignore[union-attr]
            assert sessions.by_id(store, on_b["id"]).state == "active"  # type: ignore[union-attr]
        finally:
            restarted.close()
            store.close()


def test_a_host_is_named_by_noor_world_host_else_by_its_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stable name: a restarted server is the same host, so it ends its last run's sessions at its start."""
    monkeypatch.delenv("NOOR_WORLD_HOST", raising=False)
    settings.cache_clear()
    assert worlds.host_config("cpu-local", 1.0).name == socket.gethostname()[:64]
    monkeypatch.setenv("NOOR_WORLD_HOST", "edge-1")
    settings.cache_clear()
    assert worlds.host_config("cpu-local", 1.0).name == "edge-1"
    settings.cache_clear()

"""World sessions on a live `noor serve` (a real uvicorn, a real WebSocket client), killed mid-session and
restarted: the session ends `server_restart`, billed only for the seconds it had recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from noor.jobs import sessions, tenants
from noor.jobs.store import Store
from tests.conftest import free_port, serve_process

REPO = Path(__file__).resolve().parents[2]


def serve(data_dir: Path, port: int, started: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], str]:
    """`noor serve` that knows the terrain double; (process, admin key), in `started` at once."""
    env = {
        **os.environ,
        "NOOR_DATA_DIR": str(data_dir),
        "NOOR_THREADS": "1",
        "NOOR_LOG_LEVEL": "WARNING",
        "NOOR_WORLD_SLOTS": "1",
        "PYTHONPATH": str(REPO),
    }
    # a loaded machine starts it slowly
    return serve_process("tests.world_double", port, env, "--workers", "0", timeout_s=120, started=started)


def status_after(ws: ClientConnection) -> tuple[bytes | None, dict[str, Any]]:
    data = None
    while True:
        message = ws.recv(timeout=10)
        if isinstance(message, bytes):
            data = message
            continue
        return data, json.loads(message)


def latencies(ws: ClientConnection, changes: int) -> tuple[list[float], list[float]]:
    """Alternate left and right `changes` times: (client-measured ms from send to the first frame drawn with the
    new action, the server's own latency_ms for it)."""
    client_ms, server_ms = [], []
    for i in range(changes):
        action = "left" if i % 2 else "right"
        sent = time.monotonic()
        ws.send(json.dumps({"action": action}))
        _, status = status_after(ws)
        while status.get("action") != action:
            _, status = status_after(ws)
        client_ms.append((time.monotonic() - sent) * 1000)
        server_ms.append(status["latency_ms"])
    return client_ms, server_ms


@pytest.mark.slow
def test_a_killed_server_leaves_the_session_ended_and_billed_for_recorded_seconds(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    started: list[subprocess.Popen[str]] = []
    proc, key = serve(data_dir, port, started)
    store = Store(f"sqlite:///{data_dir / 'noor.db'}", run_migrations=False)
    try:
        tenants.set_tenant(store, "admin", credits_cents=1.0)  # metered, so seconds are charged
        base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
        answer = httpx.post(
            f"{base}/v1/worlds/sessions",
            json={"prompt": "a green oasis", "model": "terrain-double", "fps": 20},
            headers=auth,
        )
        assert answer.status_code == 201, answer.text
        s = answer.json()
        assert s["stream_url"] == f"ws://127.0.0.1:{port}/v1/worlds/sessions/{s['id']}/stream"
        with connect(s["stream_url"]) as ws:
            ws.send(json.dumps({"token": s["token"]}))
            data, status = status_after(ws)
            assert data is not None and data[:2] == b"\xff\xd8" and status["frame"] == 0
            client_ms, server_ms = latencies(ws, 10)
            print(f"action-to-frame ms: client {sorted(client_ms)}, server {sorted(server_ms)}")
            assert all(ms is not None and 0 <= ms <= c for ms, c in zip(server_ms, client_ms, strict=True))
            # 2. wait until the record holds a second or more, then kill the server without a goodbye
            deadline = time.monotonic() + 20
            while (row := sessions.by_id(store, s["id"])) is not None and row.seconds < 1.0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            assert proc.stdout is not None
            proc.stdout.close()
        row = sessions.by_id(store, s["id"])
        assert row is not None and row.state == "active" and row.seconds >= 1.0
        recorded_s, cost, balance = row.seconds, row.cost_microcents, tenants.balance(store, "admin")
        assert cost == round(recorded_s * 1389) and balance == pytest.approx(1.0 - cost / 1e6)
        # 3. the next server ends it: server_restart, the recorded seconds, nothing more charged
        proc, _ = serve(data_dir, port, started)
        got = httpx.get(f"{base}/v1/worlds/sessions/{s['id']}", headers=auth).json()
        assert got["state"] == "ended" and got["end_reason"] == "server_restart"
        assert got["seconds"] == recorded_s and got["cost"] == cost / 1e6
        assert tenants.balance(store, "admin") == balance
        with connect(s["stream_url"]) as ws:
            ws.send(json.dumps({"token": s["token"]}))
            with pytest.raises(Exception) as closed:
                ws.recv(timeout=10)
            assert "4410" in str(closed.value) and "server_restart" in str(closed.value)
    finally:
        for server in started:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(10)
            if server.stdout is not None and not server.stdout.closed:
                server.stdout.close()
        store.close()

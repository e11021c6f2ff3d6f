"""The server killed (SIGKILL) during a burst of creates: every create that was answered 201 survives."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_serve


@pytest.mark.slow
def test_every_acknowledged_create_survives_a_kill(tmp_path: Path, toy_weights: Path) -> None:
    served = start_serve(tmp_path / "data", toy_weights, "--workers", "0")
    auth = {"Authorization": f"Bearer {served.key}"}
    acknowledged: list[str] = []
    answered = threading.Event()
    lock = threading.Lock()

    def create(i: int) -> None:
        body = {"prompt": f"a red circle moves to the left, take {i}"}
        try:
            r = httpx.post(f"{served.base}/generations/video", json=body, headers=auth, timeout=30)
        except httpx.HTTPError:
            return  # the server died before answering: the client cannot count on this one
        if r.status_code == 201:
            with lock:
                acknowledged.append(r.json()["id"])
                if len(acknowledged) >= 30:
                    answered.set()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(create, i) for i in range(100)]
        answered.wait(60)
        served.stop(signal.SIGKILL)  # mid-burst, no chance to flush or clean up
        for f in futures:
            f.result()
    assert 30 <= len(acknowledged) < 100, len(acknowledged)

    again = start_serve(tmp_path / "data", toy_weights, "--workers", "0")
    try:
        with httpx.Client(base_url=again.base, headers=auth, timeout=30) as client:
            for gid in acknowledged:
                r = client.get(f"/generations/{gid}")
                assert r.status_code == 200 and r.json()["state"] == "queued", (gid, r.text)
    finally:
        again.stop()

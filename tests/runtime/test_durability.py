from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from noor.engine.tiny.backend import TinyBackend
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.local import LocalWorkers
from noor.runtime.worker import Worker, WorkerConfig

TASK = {"prompt": "a red circle moves left", "width": 64, "height": 64, "num_frames": 16, "fps": 8, "seed": 1}


def _wait_for(predicate, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_a_worker_killed_mid_generation_loses_nothing(
    tmp_path: Path, toy_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOOR_TINY_WEIGHTS", str(toy_weights))
    url, assets_url = f"sqlite:///{tmp_path / 'noor.db'}", str(tmp_path / "assets")
    store = Store(url)
    gid = store.create(tenant="acme", model="tiny", request={}, task=TASK | {"steps": 100}).id
    first = LocalWorkers(1, url, assets_url, threads=1, lease_s=1.5)
    first.start()
    _wait_for(lambda: store.get("acme", gid).state == "dreaming" and store.get("acme", gid).progress > 0)
    pid = first.processes[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # mid-generation, no chance to clean up
    first.close()
    assert store.get("acme", gid).state == "dreaming"
    second = LocalWorkers(1, url, assets_url, threads=1, lease_s=1.5)
    second.start()
    try:
        _wait_for(lambda: store.get("acme", gid).is_done)
    finally:
        second.close()
    done = store.get("acme", gid)
    assert done.state == "completed" and done.attempts == 2
    files = set(AssetStore(assets_url).keys(f"acme/{gid}")) - {f"acme/{gid}/progress.mp4"}  # a preview, if slow
    assert files == {f"acme/{gid}/thumbnail.jpg", f"acme/{gid}/video.mp4"}
    store.close()


def test_deleting_a_running_generation_stops_it_between_steps(tmp_path: Path, toy_weights: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    assets = AssetStore(str(tmp_path / "assets"))
    backend = TinyBackend(toy_weights)
    steps_run: list[int] = []
    original = backend.generate

    def counting(tasks, progress=None, preview=None):  # type: ignore[no-untyped-def]
        def wrapped(done: int, total: int) -> None:
            steps_run.append(done)
            if progress:
                progress(done, total)

        return original(tasks, wrapped, preview)

    backend.generate = counting  # type: ignore[method-assign]
    worker = Worker(store, assets, WorkerConfig(name="w", lease_s=30, heartbeat_s=0.0), lambda m: backend)
    gid = store.create(tenant="acme", model="tiny", request={}, task=TASK | {"steps": 100}).id
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    _wait_for(lambda: len(steps_run) >= 3)
    store.delete("acme", gid)
    thread.join(30)
    assert not thread.is_alive() and len(steps_run) < 100
    with store.session() as s:
        from noor.jobs.generation import Generation

        row = s.get(Generation, gid)
    assert row is not None and row.state == "failed" and row.failure_reason == "Deleted"
    assert all(k.endswith("/progress.mp4") for k in assets.keys(f"acme/{gid}"))  # no result files
    store.close()


@pytest.mark.slow
def test_a_dreaming_job_shows_a_preview_of_the_work_so_far(tmp_path: Path, toy_weights: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    assets = AssetStore(str(tmp_path / "assets"))
    backend = TinyBackend(toy_weights)
    seen: list[dict[str, object]] = []  # the generation's assets after each heartbeat that brought a preview
    original = store.heartbeat

    def watching(*args, **kwargs):  # type: ignore[no-untyped-def]
        ok = original(*args, **kwargs)
        if kwargs.get("preview"):
            seen.append(dict(store.get("acme", args[0]).assets or {}))
        return ok

    store.heartbeat = watching  # type: ignore[method-assign]
    config = WorkerConfig(name="w", heartbeat_s=0.0, preview_s=0.0)
    worker = Worker(store, assets, config, lambda m: backend)
    task = TASK | {"steps": 4, "width": 320, "height": 180}
    gid = store.create(tenant="acme", model="tiny", request={}, task=task).id
    assert worker.run_once()
    assert len(seen) == 4  # one per step when asked for every step
    key = seen[-1]["progress_video"]
    assert key == f"acme/{gid}/progress.mp4"
    path = tmp_path / "p.mp4"
    path.write_bytes(assets.get(str(key)))
    from noor.engine import media

    assert media.video_info(path)[:3] == (16, 256, 144)  # the task's length, at most 256 px on the long side
    done = store.get("acme", gid)
    assert done.state == "completed" and done.assets and "progress_video" not in done.assets
    store.close()


@pytest.mark.slow
def test_local_workers_stop_when_their_server_is_killed(tmp_path: Path, toy_weights: Path) -> None:
    """No orphans: a SIGKILLed server's workers exit, so a restarted server does not end up with twice as many."""
    script = (
        "import sys, time\n"
        "from noor.runtime.local import LocalWorkers\n"
        "from noor.jobs.store import Store\n"
        f"url = 'sqlite:///{tmp_path / 'noor.db'}'\n"
        "Store(url).close()\n"
        f"pool = LocalWorkers(1, url, '{tmp_path / 'assets'}', threads=1)\n"
        "pool.start()\n"
        "print(pool.processes[0].pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "NOOR_TINY_WEIGHTS": str(toy_weights), "NOOR_DATA_DIR": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    worker_pid = int(server.stdout.readline())
    server.kill()
    server.wait(10)
    server.stdout.close()

    def gone() -> bool:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{worker_pid}/stat") as f:  # reaped by init yet? a zombie counts as gone
            return f.read().split()[2] == "Z"

    _wait_for(gone, timeout_s=30)

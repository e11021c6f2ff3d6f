"""`noor serve` as a user runs it: started, then stopped with Ctrl+C or SIGTERM, cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, keep_cpu_local, share_cpu_local


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_stops_cleanly_with_its_workers(tmp_path: Path, toy_weights: Path, sig: signal.Signals) -> None:
    """Before: Ctrl+C logged a KeyboardInterrupt traceback from inside uvicorn's loop, and SIGTERM ended the
    process before its clean-up, leaving the workers' semaphores to multiprocessing's leak warning."""
    port = free_port()
    env = {**os.environ, "NOOR_DATA_DIR": str(tmp_path / "data"), "NOOR_TINY_WEIGHTS": str(toy_weights)}
    share_cpu_local(env)
    server = subprocess.Popen(
        [sys.executable, "-m", "noor.cli", "serve", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    keep_cpu_local(env)
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.communicate()[1]
            time.sleep(0.1)
        # Ctrl+C reaches the whole foreground process group; SIGTERM (a service manager) the server alone
        if sig == signal.SIGINT:
            os.killpg(server.pid, sig)
        else:
            server.send_signal(sig)
        _, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert server.returncode == 0, err
    assert "Traceback" not in err and "leaked" not in err and "KeyboardInterrupt" not in err, err
    assert "Application shutdown complete" in err
    assert "restarting it" not in err  # a worker stopped by the shutdown is not restarted

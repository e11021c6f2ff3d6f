"""Loopback load on the API: GET and create throughput and latency, next to a bare FastAPI endpoint.

Starts `noor serve` (0 workers, a temporary data dir) and a bare FastAPI app in subprocesses on
127.0.0.1, then runs a bounded number of requests from N concurrent clients against each, in one run.
Targets: GET >= 50% of the bare endpoint's throughput; GET p99 < 50 ms at 100 concurrent clients.

    python benchmarks/api_load.py [--clients 100] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import httpx

BARE_APP = textwrap.dedent(
    """
    import sys, uvicorn
    from fastapi import FastAPI
    app = FastAPI()
    @app.get("/generations/{gid}")
    def get(gid: str) -> dict:
        return {"id": gid, "state": "completed"}
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


async def load(method: str, url: str, clients: int, total: int, headers: dict[str, str], body: dict | None) -> dict:
    latencies: list[float] = []
    errors = 0
    remaining = total

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            try:
                r = await client.request(method, url, headers=headers, json=body)
                errors += r.status_code >= 400
            except httpx.HTTPError:  # a dropped connection counts as an error, not the end of the run
                errors += 1
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="noor-load-")
    noor_port, bare_port = free_port(), free_port()
    env = {**os.environ, "NOOR_DATA_DIR": data, "NOOR_LOG_LEVEL": "WARNING"}
    key = subprocess.run(
        [sys.executable, "-m", "noor.cli", "keys", "create", "--tenant", "bench",
         "--max-concurrent", "1000000", "--per-minute", "1000000", "--credits", "1000000"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    serve = subprocess.Popen(
        [sys.executable, "-m", "noor.cli", "serve", "--port", str(noor_port), "--workers", "0"],
        env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    bare = subprocess.Popen([sys.executable, "-c", BARE_APP, str(bare_port)])
    try:
        noor = f"http://127.0.0.1:{noor_port}"
        wait_up(f"{noor}/healthz")
        wait_up(f"http://127.0.0.1:{bare_port}/generations/x")
        auth = {"Authorization": f"Bearer {key}"}
        gid = httpx.post(f"{noor}/generations/video", json={"prompt": "a red circle"}, headers=auth).json()["id"]

        bare_get = asyncio.run(load("GET", f"http://127.0.0.1:{bare_port}/generations/{gid}", args.clients,
                                    args.requests, {}, None))  # fmt: skip
        noor_get = asyncio.run(load("GET", f"{noor}/generations/{gid}", args.clients, args.requests, auth, None))
        noor_create = asyncio.run(load("POST", f"{noor}/generations/video", args.clients, args.requests // 3, auth,
                                       {"prompt": "a red circle moves left"}))  # fmt: skip
    finally:
        serve.terminate()
        bare.terminate()
        serve.wait(20)
        bare.wait(20)

    print(f"{'endpoint':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, r in (
        ("bare FastAPI GET", bare_get),
        ("noor GET generation", noor_get),
        ("noor create video", noor_create),
    ):
        print(f"{name:<28}{r['rps']:>10.0f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['errors']:>8}")
    ratio = noor_get["rps"] / bare_get["rps"]
    print(f"GET throughput vs bare: {ratio:.0%} (target >= 50%); GET p99 {noor_get['p99_ms']:.1f} ms (target < 50 ms)"
          f" at {args.clients} clients")  # fmt: skip


if __name__ == "__main__":
    main()

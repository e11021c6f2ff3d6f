"""Loopback load on the API: GET and create throughput and latency, next to a bare FastAPI endpoint.

Starts `noor serve` (0 workers, a temporary data dir) and a bare FastAPI app in subprocesses on
127.0.0.1 and measures both in one run, in two phases:

1. throughput: N clients send requests back to back (closed loop, connections opened before the clock
   starts); req/s of noor's GET next to the bare endpoint's. Target: GET >= 50% of bare.
2. latency under load: N concurrent pollers each GET their generation every `--poll-s` seconds (the SDK
   docs poll every 3 s; 0.5 s by default here), while creators POST new videos at `--create-rps`;
   p50/p99 of the GETs. Target: GET p99 < 50 ms at 100 pollers. Closed-loop latency at 100 clients is
   not that number: there every request waits behind the 99 others by construction (Little's law), on
   the server and in this single-threaded client alike.

    python benchmarks/api_load.py [--clients 100] [--requests 3000] [--poll-s 0.5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import aiohttp
import httpx

BARE_APP = textwrap.dedent(
    """
    import sys, uvicorn
    from fastapi import FastAPI
    app = FastAPI()
    @app.get("/generations/{gid}")
    def get(gid: str) -> dict:
        return {"id": gid, "state": "completed"}
    @app.get("/async/generations/{gid}")
    async def get_async(gid: str) -> dict:
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

    async def client_loop(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            try:
                async with session.request(method, url, headers=headers, json=body) as r:
                    await r.read()
                    errors += r.status >= 400
            except aiohttp.ClientError:  # a dropped connection counts as an error, not the end of the run
                errors += 1
            latencies.append(time.perf_counter() - t0)

    # aiohttp, not httpx: on this machine httpx's async pool tops out near 200 req/s with 100 clients (p99 ~4 s
    # against a bare endpoint), so it measured itself; aiohttp drives the same endpoint ~7x faster.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=TIMEOUT) as session:
        # open every connection before the clock starts: connection set-up is not request latency
        await asyncio.gather(*(_once(session, method, url, headers, body) for _ in range(clients)))
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "errors": errors,
    }


TIMEOUT = aiohttp.ClientTimeout(total=30)


async def _once(
    session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], body: dict | None
) -> None:
    async with session.request(method, url, headers=headers, json=body) as r:
        await r.read()


async def poll(
    base: str,
    gets: list[str],
    creates: str | None,
    headers: dict[str, str],
    period_s: float,
    create_rps: float,
    seconds: float,
) -> dict:
    """Open loop: one poller per URL in `gets`, each GETting every `period_s` (random phase); creators POST to
    `creates` at `create_rps` in all. Returns GET latency percentiles and the requests that failed."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def poller(session: aiohttp.ClientSession, url: str) -> None:
        nonlocal errors
        await asyncio.sleep(random.uniform(0, period_s))
        while (start := time.perf_counter()) < deadline:
            try:
                async with session.get(base + url, headers=headers) as r:
                    await r.read()
                    errors += r.status >= 400
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - start)
            await asyncio.sleep(max(0.0, period_s - (time.perf_counter() - start)))

    async def creator(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while creates and time.perf_counter() < deadline:
            try:
                body = {"prompt": "a red circle moves left"}
                async with session.post(base + creates, headers=headers, json=body) as r:
                    await r.read()
                    errors += r.status >= 400
            except aiohttp.ClientError:
                errors += 1
            await asyncio.sleep(random.expovariate(create_rps))

    connector = aiohttp.TCPConnector(limit=len(gets) + 1)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        await asyncio.gather(*(_once(session, "GET", base + url, headers, None) for url in gets))  # connections first
        tasks = [poller(session, url) for url in gets] + ([creator(session)] if creates and create_rps > 0 else [])
        await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--poll-s", type=float, default=0.5, help="each poller's GET period in phase 2")
    parser.add_argument("--create-rps", type=float, default=5.0, help="creates per second in phase 2")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of phase 2")
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
        bare_async = asyncio.run(load("GET", f"http://127.0.0.1:{bare_port}/async/generations/{gid}", args.clients,
                                      args.requests, {}, None))  # fmt: skip
        noor_get = asyncio.run(load("GET", f"{noor}/generations/{gid}", args.clients, args.requests, auth, None))
        noor_create = asyncio.run(load("POST", f"{noor}/generations/video", args.clients, args.requests // 3, auth,
                                       {"prompt": "a red circle moves left"}))  # fmt: skip
        # phase 2: one generation per poller, as SDK users polling their own jobs
        ids = [
            httpx.post(f"{noor}/generations/video", json={"prompt": "a red circle"}, headers=auth).json()["id"]
            for _ in range(args.clients)
        ]
        bare_poll = asyncio.run(poll(f"http://127.0.0.1:{bare_port}", [f"/generations/{i}" for i in ids], None, {},
                                     args.poll_s, 0.0, args.seconds))  # fmt: skip
        noor_poll = asyncio.run(poll(noor, [f"/generations/{i}" for i in ids], "/generations/video", auth,
                                     args.poll_s, args.create_rps, args.seconds))  # fmt: skip
    finally:
        serve.terminate()
        bare.terminate()
        serve.wait(20)
        bare.wait(20)

    print(f"{'phase 1: closed loop, ' + str(args.clients) + ' clients':<44}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'errors':>8}")  # fmt: skip
    rows = (
        ("bare FastAPI GET (def)", bare_get),
        ("bare FastAPI GET (async def)", bare_async),
        ("noor GET generation", noor_get),
        ("noor create video", noor_create),
    )
    for name, r in rows:
        print(f"  {name:<42}{r['rps']:>8.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}")
    print(f"phase 2: {args.clients} pollers every {args.poll_s:g} s, {args.create_rps:g} creates/s, {args.seconds:g} s")
    for name, r in (("bare FastAPI GET (def)", bare_poll), ("noor GET generation (+ creates)", noor_poll)):
        print(f"  {name:<42}{r['rps']:>8.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}")
    ratio = noor_get["rps"] / bare_get["rps"]
    print(f"GET throughput vs bare: {ratio:.0%} of the def endpoint, {noor_get['rps'] / bare_async['rps']:.0%} of the"
          f" async def one (target >= 50%); GET p99 under polling load "
          f"{noor_poll['p99_ms']:.1f} ms (target < 50 ms) at {args.clients} pollers")  # fmt: skip


if __name__ == "__main__":
    main()

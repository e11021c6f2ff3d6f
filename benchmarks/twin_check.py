"""Digital-twin check: one arrival trace, replayed against a live `noor serve` and against `noor simulate`.

1. An arrival trace is drawn (Poisson, default tiny clips) at a rate that loads N workers to `--load`
   by the perf model's prediction for the clip on cpu-local.
2. Live: `noor serve` with N local workers (one torch thread each) on a temporary data dir; each
   arrival is POSTed at its time; each job's created/started/finished times are read from the store.
3. Simulated: the same trace through `noor.sim` on a site of N `cpu-local` GPUs (one per node), with
   durations from the perf model, measured here with one thread like each worker.
4. Queue wait and end-to-end p50/p95, side by side. Target: end-to-end p50 and p95 within 20%.

    python benchmarks/twin_check.py [--workers 2] [--seconds 120] [--load 0.6] [--seed 0]

The simulator knows only what a planner would: the perf model's seconds for the model's work, plus
`--overhead-s` per job for what the perf model does not cover (resizing the built-in model's 64x64 frames
to the requested size, encoding the MP4 and thumbnail, the worker's claim poll), by default measured in
step 0 by doing that work once the way a worker does. Requests are 540p 1:1 5 s clips, as an SDK sends.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

PROMPTS = ["a red circle moves to the left", "مربع أزرق يتحرك إلى الأعلى", "a green triangle bounces"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What each request asks for, as an SDK user would: the smallest Dream Machine size and a 5 s clip.
REQUEST = {"aspect_ratio": "1:1", "resolution": "540p", "duration": "5s"}


def request_shape() -> tuple[int, int, int, int]:
    """(width, height, num_frames, fps) of REQUEST for the built-in model, as the API resolves it."""
    from noor.api.requests import DURATIONS_S
    from noor.engine import registry
    from noor.engine.task import size_from_aspect

    width, height = size_from_aspect(REQUEST["aspect_ratio"], REQUEST["resolution"])
    fps = registry.get("tiny").default_fps
    return width, height, round(DURATIONS_S[REQUEST["duration"]] * fps), fps


def outside_model_s(poll_s: float) -> float:
    """Per-job time outside the model, measured: the built-in model draws 64x64x16, so the worker retimes and
    resizes to the requested size, then encodes the MP4 and thumbnail; plus half a claim poll."""
    from noor.engine import media
    from noor.engine.canvas import retime
    from noor.engine.resample import resize

    width, height, num_frames, fps = request_shape()
    native = np.random.default_rng(0).integers(0, 255, (16, 64, 64, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as d:
        best = float("inf")
        for i in range(3):
            t0 = time.perf_counter()
            frames = resize(retime(native, num_frames), width, height)
            media.write_video(Path(d) / f"{i}.mp4", frames, fps=fps)
            media.write_image(Path(d) / f"{i}.jpg", media.thumbnail(frames))
            best = min(best, time.perf_counter() - t0)
    return best + poll_s / 2


def run_live(workers: int, arrivals: np.ndarray, prompts: list[str]) -> list[tuple[float, float, float]]:
    """(wait_s, e2e_s, run_s) per job, from the store's own timestamps."""
    from noor.jobs.generation import Generation
    from noor.jobs.store import Store

    data = tempfile.mkdtemp(prefix="noor-twin-")
    port = free_port()
    env = {**os.environ, "NOOR_DATA_DIR": data, "NOOR_THREADS": "1", "NOOR_LOG_LEVEL": "WARNING"}
    key = subprocess.run(
        [sys.executable, "-m", "noor.cli", "keys", "create", "--tenant", "twin", "--credits", "1e9",
         "--max-concurrent", "100000", "--per-minute", "100000"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    serve = subprocess.Popen(
        [sys.executable, "-m", "noor.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
            for _ in range(600):
                try:
                    client.get("/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)

            def finished(ids: list[str]) -> bool:
                # one list request a second, not a GET per job: polling must not steal the workers' CPU
                page = client.get("/generations", params={"limit": 1000}).json()["generations"]
                states = {g["id"]: g["state"] for g in page}
                if any(states.get(i) == "failed" for i in ids):
                    raise SystemExit("a job failed")
                return all(states.get(i) == "completed" for i in ids)

            # warm-up: every worker loads the model and runs one clip before the clock starts
            warm = [
                client.post("/generations/video", json={"prompt": "warm-up", **REQUEST}).json()["id"]
                for _ in range(workers)
            ]
            while not finished(warm):
                time.sleep(1.0)

            ids: list[str] = []
            start = time.perf_counter()
            for t_s, prompt in zip(arrivals, prompts, strict=True):
                time.sleep(max(0.0, start + t_s - time.perf_counter()))
                ids.append(client.post("/generations/video", json={"prompt": prompt, **REQUEST}).json()["id"])
            while not finished(ids):
                time.sleep(1.0)
    finally:
        serve.terminate()
        serve.wait(30)
    store = Store(f"sqlite:///{data}/noor.db", run_migrations=False)
    with store.session() as s:
        rows = {g.id: g for g in s.query(Generation).filter(Generation.id.in_(ids))}
    store.close()
    out = []
    for i in ids:
        g = rows[i]
        assert g.started_at is not None and g.finished_at is not None
        out.append(
            (
                (g.started_at - g.created_at).total_seconds(),
                (g.finished_at - g.created_at).total_seconds(),
                (g.finished_at - g.started_at).total_seconds(),
            )
        )
    return out


def run_sim(workers: int, arrivals: np.ndarray, overhead_s: float, seed: int) -> dict:
    from noor import sim

    width, height, frames, _ = request_shape()
    folder = Path(tempfile.mkdtemp(prefix="noor-twin-sim-"))
    with (folder / "trace.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s", "class"])
        w.writerows((f"{t:.6f}", "tiny") for t in arrivals)
    scenario = sim.parse(
        {
            "name": "twin check",
            "seed": seed,
            "horizon_h": (float(arrivals[-1]) + 1) / 3600,
            "regions": {"local": {"timezone": "UTC", "diurnal": "flat"}},
            "sites": [
                {
                    "name": "this machine",
                    "region": "local",
                    "chip": "cpu-local",
                    "gpus": workers,
                    "gpus_per_node": 1,
                    "job_overhead_s": overhead_s,
                }
            ],
            "classes": [{"name": "tiny", "model": "tiny", "width": width, "height": height, "frames": frames}],
            "tenants": [{"name": "twin", "regions": ["local"]}],
            "trace": {"path": str(folder / "trace.csv")},
        }
    )
    return sim.run(scenario)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the arrival trace")
    parser.add_argument("--load", type=float, default=0.6, help="offered load per worker, by the perf model")
    parser.add_argument("--overhead-s", type=float, default=None, help="per-job time outside the model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # cpu-local is measured (and cached) per thread count: one, like each worker

    from noor import perf
    from noor.runtime.worker import WorkerConfig

    # 0. what the perf model predicts for one clip, and the per-job overhead
    width, height, num_frames, _ = request_shape()
    predicted_s = perf.estimate_task("tiny", width, height, num_frames, None).latency_s
    assert predicted_s is not None
    overhead_s = args.overhead_s if args.overhead_s is not None else outside_model_s(WorkerConfig(name="x").poll_s)
    rate_per_s = args.load * args.workers / (predicted_s + overhead_s)
    rng = np.random.default_rng(args.seed)
    arrivals = np.cumsum(rng.exponential(1 / rate_per_s, size=int(rate_per_s * args.seconds * 2)))
    arrivals = arrivals[arrivals < args.seconds]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(arrivals))]
    print(
        f"tiny {width}x{height}x{num_frames} on cpu-local (1 thread): predicted {predicted_s:.3f} s"
        f" + {overhead_s:.3f} s outside the model;"
        f" {len(arrivals)} arrivals in {args.seconds:g} s ({rate_per_s:.2f}/s) on {args.workers} workers"
    )

    # 1. simulated first (the cpu-local measurement, if not cached, runs on a quiet machine)
    result = run_sim(args.workers, arrivals, overhead_s, args.seed)
    (cls,) = result["classes"]

    # 2. live
    live = np.array(run_live(args.workers, arrivals, prompts))

    # 3. side by side
    def pct(values: np.ndarray, q: float) -> float:
        return float(np.percentile(values, q))

    rows = [
        ("queue wait p50", pct(live[:, 0], 50), cls["wait_s"]["p50"]),
        ("queue wait p95", pct(live[:, 0], 95), cls["wait_s"]["p95"]),
        ("end-to-end p50", pct(live[:, 1], 50), cls["e2e_s"]["p50"]),
        ("end-to-end p95", pct(live[:, 1], 95), cls["e2e_s"]["p95"]),
        ("run time p50 (start to finish)", pct(live[:, 2], 50), predicted_s + overhead_s),
    ]
    print(f"{'':<32}{'live s':>9}{'simulated s':>13}{'sim/live':>10}")
    for name, a, b in rows:
        print(f"{name:<32}{a:>9.3f}{b:>13.3f}{b / a if a else float('nan'):>10.2f}")
    ok = all(abs(b / a - 1) <= 0.20 for _, a, b in rows[2:4])
    print(f"end-to-end p50 and p95 within 20%: {'yes' if ok else 'no'}")


if __name__ == "__main__":
    main()

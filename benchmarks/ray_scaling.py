"""Noor's Ray runtime on this machine: throughput with 2 worker actors vs 1, and what dispatching through Ray
costs per job next to the local runtime, measured in one run with the built-in model (noor-tiny, packaged
weights).

1. Throughput: N default clips (16 steps) on 1, then 2, Ray worker actors, each limited to one torch thread
   (and one Ray CPU); the same with 1 and 2 local worker processes, to tell Ray's share from the machine's.
   Target: 2 Ray workers >= 1.6x the jobs per second of 1, on 2 cores.
2. Dispatch overhead: M one-step jobs back to back on one worker, Ray and local; the time per job beyond the
   model's own work is what each runtime adds (claim, hand-over, completion), and the difference is Ray's.

Each run starts a private one-node Ray in this process (2 CPUs, no dashboard, an 80 MB object store) and
stops it at the end. Jobs are timed from their records: first `started_at` to last `finished_at`.

    python benchmarks/ray_scaling.py [--jobs 16] [--quick-jobs 40]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TARGET_RATIO = 1.6
TASK = {"prompt": "a red circle moves to the left", "width": 64, "height": 64, "num_frames": 16, "fps": 8, "seed": 0}


class Runtime:
    """One way of running jobs: a store and workers; `run(n, steps)` -> seconds per job and gaps between jobs."""

    def __init__(self, tmp: Path, name: str):
        from noor.config import Settings
        from noor.jobs.store import Store

        self.settings = Settings(data_dir=tmp / name, threads=1)  # type: ignore[call-arg]
        self.store = Store(self.settings.resolved_database_url)
        self.close: Callable[[], None] = lambda: None

    def run(self, n: int, steps: int | None) -> tuple[float, list[float]]:
        from noor.jobs.generation import Generation

        task = TASK | ({"steps": steps} if steps else {})
        ids = [
            self.store.create(tenant="bench", model="tiny", request={}, task=task | {"seed": i}).id for i in range(n)
        ]
        deadline = time.monotonic() + 60 + 10 * n
        while True:
            with self.store.session() as s:
                rows = [s.get(Generation, i) for i in ids]
            if all(r is not None and r.is_done for r in rows):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"jobs did not finish: {[r.state for r in rows if r]}")
            time.sleep(0.05)
        done = [r for r in rows if r is not None]
        failed = [r.failure_reason for r in done if r.state != "completed"]
        if failed:
            raise SystemExit(f"{len(failed)} jobs failed: {failed[0]}")
        starts = sorted(r.started_at for r in done if r.started_at)
        ends = sorted(r.finished_at for r in done if r.finished_at)
        per_job_s = (ends[-1] - starts[0]).total_seconds() / n
        ordered = sorted(done, key=lambda r: r.started_at or 0)  # type: ignore[arg-type,return-value]
        gaps = [
            (b.started_at - a.finished_at).total_seconds()
            for a, b in itertools.pairwise(ordered)
            if a.finished_at and b.started_at
        ]
        return per_job_s, gaps


def local_runtime(tmp: Path, name: str, workers: int) -> Runtime:
    from noor.runtime.local import LocalWorkers

    rt = Runtime(tmp, name)
    pool = LocalWorkers(workers, rt.settings.resolved_database_url, rt.settings.resolved_assets_url, threads=1)
    pool.start()
    rt.run(workers, 1)  # warm-up: every worker has loaded its model
    rt.close = lambda: (pool.close(), rt.store.close())  # type: ignore[func-returns-value]
    return rt


def ray_runtime(tmp: Path, name: str, workers: int, ray: object) -> Runtime:
    from noor.engine import registry
    from noor.jobs.assets import RegionalAssets
    from noor.runtime.ray_cluster import ClusterConfig, RayCluster

    rt = Runtime(tmp, name)
    models = [spec.id for spec in registry.available()] + ["resample"]
    config = ClusterConfig(models=models, threads=1, workers_per_node=workers)
    cluster = RayCluster(rt.store, config, rt.settings, RegionalAssets(rt.settings.resolved_assets_url), ray=ray)
    cluster.start()
    cluster.wait_ready(count=workers, timeout_s=180)
    rt.run(workers, 1)  # warm-up
    rt.close = lambda: (cluster.close(), rt.store.close())  # type: ignore[func-returns-value]
    return rt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=16, help="default clips per throughput run")
    parser.add_argument("--quick-jobs", type=int, default=40, help="one-step jobs per overhead run")
    args = parser.parse_args()

    os.environ["NOOR_DATA_DIR"] = tempfile.mkdtemp(prefix="noor-ray-bench-data-")  # never the user's data dir
    # this private, in-process Ray dies with the process; a new local Ray would otherwise make a token in ~/.ray
    # that switches token auth on for every later Ray on the machine
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    import ray

    logging.getLogger("noor").setLevel(logging.WARNING)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 2**20,
        log_to_driver=False,
        namespace="noor",
        logging_level=logging.WARNING,
    )
    throughput: dict[str, float] = {}
    overhead: dict[str, tuple[float, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="noor-ray-bench-") as d:
            tmp = Path(d)
            for kind in ("ray", "local"):
                for workers in (1, 2):
                    name = f"{kind}-{workers}"
                    rt = ray_runtime(tmp, name, workers, ray) if kind == "ray" else local_runtime(tmp, name, workers)
                    try:
                        per_job_s, _ = rt.run(args.jobs, None)
                        throughput[name] = 1.0 / per_job_s
                        print(
                            f"{name}: {args.jobs} clips, {per_job_s:.3f} s per clip, {1 / per_job_s:.2f} clips/s",
                            flush=True,
                        )
                        if workers == 1:
                            quick_s, gaps = rt.run(args.quick_jobs, 1)
                            overhead[kind] = (quick_s, statistics.median(gaps))
                            print(
                                f"{name}: {args.quick_jobs} one-step jobs, {quick_s * 1000:.1f} ms per job, "
                                f"median gap between jobs {statistics.median(gaps) * 1000:.1f} ms",
                                flush=True,
                            )
                    finally:
                        rt.close()
    finally:
        ray.shutdown()

    ratio = throughput["ray-2"] / throughput["ray-1"]
    local_ratio = throughput["local-2"] / throughput["local-1"]
    extra_ms = (overhead["ray"][0] - overhead["local"][0]) * 1000
    print()
    print("| figure | Ray | local processes |")
    print("| --- | --- | --- |")
    print(f"| clips/s, 1 worker (1 thread) | {throughput['ray-1']:.2f} | {throughput['local-1']:.2f} |")
    print(f"| clips/s, 2 workers (1 thread each) | {throughput['ray-2']:.2f} | {throughput['local-2']:.2f} |")
    print(f"| 2 workers / 1 worker | **{ratio:.2f}x** (target >= {TARGET_RATIO}x) | {local_ratio:.2f}x |")
    print(
        f"| one-step job, back to back, per job | {overhead['ray'][0] * 1000:.0f} ms | "
        f"{overhead['local'][0] * 1000:.0f} ms |"
    )
    print(
        f"| median gap from one job's end to the next's start | {overhead['ray'][1] * 1000:.1f} ms | "
        f"{overhead['local'][1] * 1000:.1f} ms |"
    )
    print()
    print(
        f"scaling 2 vs 1 Ray workers: {ratio:.2f}x ({'meets' if ratio >= TARGET_RATIO else 'misses'} the "
        f"{TARGET_RATIO}x target); Ray adds {extra_ms:+.0f} ms per job over the local runtime"
    )


if __name__ == "__main__":
    main()

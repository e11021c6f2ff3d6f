"""Batching in live workers: noor-tiny throughput and per-request latency at batch 1, 2, 4 and 8, side by side.

Everything runs in this one run (the machine is noisy): first the fp32 matmul peak, then a check that batching
keeps each request's own prompt and seed (each job of a batch against the same job run alone, frame by frame; the
target is byte-identical frames, which noor-tiny's batch invariance gives: noor.engine.tiny.invariance), then the
timing. Each batch size runs the live path: `--jobs` default clips (each its own prompt and seed)
queued at once in a fresh SQLite store, one worker with `max_batch` = k claims (`Store.claim_batch`), runs each
batch as one pipeline call, encodes and completes each job, until the queue is empty. Sizes alternate round by
round (`--rounds`), and each size's best round counts.

Throughput: clips/s of the whole drain. Latency: a request's seconds from its claim to its completion (its
batch's call plus its encode), mean over the jobs; and from queued to completed (p50 and max: all were queued at
the start). Target: batch 4 >= 1.5x the clips/s of batch 1 in the same run, on 2 cores.

    python benchmarks/batching.py [--threads 2] [--jobs 16] [--rounds 2] [--steps N] [--sizes 1,2,4,8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from machine import matmul_peak_flops  # benchmarks/machine.py (scripts run from this folder)

from noor.engine.task import Task
from noor.engine.tiny.backend import TinyBackend
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.worker import Worker, WorkerConfig

TARGET_RATIO = 1.5  # batch 4 against batch 1
PROMPTS = [
    "a red circle moves to the left", "a blue square falls", "a green ball bounces", "a yellow star spins",
    "a white triangle slides right", "a pink ring grows", "an orange box rises", "a purple dot circles",
]  # fmt: skip


@dataclass
class Round:
    size: int
    wall_s: float
    jobs: int
    service_s: list[float]  # claim -> completed, per job
    e2e_s: list[float]  # queued -> completed, per job

    @property
    def clips_per_s(self) -> float:
        return self.jobs / self.wall_s


def task_json(i: int, steps: int | None) -> dict[str, object]:
    return {"prompt": PROMPTS[i % len(PROMPTS)], "negative_prompt": "", "width": 64, "height": 64, "num_frames": 16,
            "fps": 8, "seed": 1000 + i, "steps": steps}  # fmt: skip


def check(backend: TinyBackend, size: int, steps: int | None) -> tuple[int, int, int]:
    """Each request of a batch against itself run alone: (largest difference of a value in 0..255, values that
    differ, values compared)."""
    tasks = [Task(prompt=PROMPTS[i % len(PROMPTS)], seed=1000 + i, steps=steps) for i in range(size)]
    together = backend.generate(tasks)
    worst, differ, total = 0, 0, 0
    for task, clip in zip(tasks, together, strict=True):
        alone = backend.generate([task])[0].frames.astype(int)
        diff = np.abs(clip.frames.astype(int) - alone)
        worst, differ, total = max(worst, int(diff.max())), differ + int((diff > 0).sum()), total + diff.size
    return worst, differ, total


def drain(backend: TinyBackend, size: int, jobs: int, steps: int | None) -> Round:
    """Queue `jobs` clips at once; one worker with max_batch `size` runs them all through the live path."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'noor.db'}")
        assets = AssetStore(str(Path(tmp) / "assets"))
        ids = [store.create(tenant="bench", model="tiny", request={}, task=task_json(i, steps)).id for i in range(jobs)]
        config = WorkerConfig(name="bench", preview_s=None, max_batch=size)
        worker = Worker(store, assets, config, lambda m: backend)
        t0 = time.perf_counter()
        while worker.run_once():
            pass
        wall_s = time.perf_counter() - t0
        done = [store.get("bench", gid) for gid in ids]
        store.close()
    failed = [g.failure_reason for g in done if g.state != "completed"]
    if failed:
        raise SystemExit(f"batch {size}: {len(failed)} job(s) did not complete: {failed[0]}")
    service = [(g.finished_at - g.started_at).total_seconds() for g in done]  # type: ignore[operator]
    e2e = [(g.finished_at - g.created_at).total_seconds() for g in done]  # type: ignore[operator]
    return Round(size, wall_s, jobs, service, e2e)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=16, help="clips queued for each batch size (default 16)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 16)")
    parser.add_argument("--sizes", default="1,2,4,8", help="batch sizes, comma-separated (default 1,2,4,8)")
    parser.add_argument("--peak-s", type=float, default=2.0, help="seconds spent measuring the matmul peak")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes: whole numbers, comma-separated, got {args.sizes!r}")
    if 1 not in sizes or any(s < 1 for s in sizes):
        parser.error(f"--sizes: must include 1 (the baseline) and be >= 1 each, got {args.sizes!r}")
    if args.jobs < max(sizes) or args.rounds < 1 or args.threads < 1:
        parser.error(f"--jobs must be >= the largest batch ({max(sizes)}), got {args.jobs}; --rounds, --threads >= 1")
    torch.set_num_threads(args.threads)

    # 1. the ceiling
    peak = matmul_peak_flops(seconds=args.peak_s)
    backend = TinyBackend()
    backend.generate([Task(prompt=PROMPTS[0], seed=0, steps=args.steps)])  # warm-up: allocations, kernel choice
    print(f"threads                 {args.threads}")
    print(f"matmul peak (fp32)      {peak / 1e9:8.1f} GFLOP/s")
    print(f"clips                   {args.jobs} a size a round, 16 frames 64x64, steps {args.steps or 'default (16)'}")

    # 2. batching keeps each request its own, byte for byte
    identical = True
    for size in sizes:
        if size > 1:
            worst, differ, total = check(backend, size, args.steps)
            verdict = "identical" if differ == 0 else f"differ by at most {worst}/255 on {differ} of {total} values"
            print(f"batch {size} vs alone        {verdict}")
            identical = identical and differ == 0

    # 3. the live path, sizes alternating round by round; each size's best round counts
    best: dict[int, Round] = {}
    for _ in range(args.rounds):
        for size in sizes:
            r = drain(backend, size, args.jobs, args.steps)
            if size not in best or r.wall_s < best[size].wall_s:
                best[size] = r
    base = best[1].clips_per_s
    print()
    print(f"{'batch':>5} {'clips/s':>8} {'vs batch 1':>10} {'claim->done s':>14} {'queued->done p50':>17} {'max':>7}")
    for size in sizes:
        r = best[size]
        print(
            f"{size:>5} {r.clips_per_s:8.3f} {r.clips_per_s / base:9.2f}x {statistics.mean(r.service_s):14.2f} "
            f"{statistics.median(r.e2e_s):17.2f} {max(r.e2e_s):7.2f}"
        )
    if 4 in best:
        ratio = best[4].clips_per_s / base
        verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
        print(f"target batch 4 >= {TARGET_RATIO}x batch 1: {verdict} ({ratio:.2f}x)")
    print(f"target batched = alone, byte for byte: {'met' if identical else 'MISSED'}")


if __name__ == "__main__":
    main()

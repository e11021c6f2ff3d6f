"""noor-tiny on this machine: predicted seconds (noor.perf on cpu-local) next to measured seconds.

The prediction uses the cached cpu-local measurement (or measures once); the measured clip is a
default tiny request (64x64, 16 frames, 16 steps, guidance on) through the engine as `noor serve` runs it.
Target: predicted within 25% of measured.

    python benchmarks/perf_tiny.py [--runs 5] [--threads N] [--remeasure]

On a busy machine wall-clock seconds mostly measure the neighbours: the script also prints CPU
seconds per thread (process time / threads), which a busy machine disturbs far less.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from noor import catalog, perf
from noor.catalog import local
from noor.config import settings
from noor.engine.task import Task
from noor.perf import report
from noor.runtime.local import load_backend

TARGET = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--remeasure", action="store_true", help="measure cpu-local again before predicting")
    parser.add_argument("--threads", type=int, default=settings().threads, help="torch threads (default: NOOR_THREADS)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # before measuring: cpu-local is cached per thread count

    # 1. predict (cpu-local from the cache, or measured now)
    chip = local.remeasure() if args.remeasure else catalog.chip("cpu-local")
    estimate = perf.estimate(catalog.model("tiny"), perf.Shape(64, 64, 16, 16), chip)
    assert estimate.latency_s is not None

    # 2. measure default clips the way a worker makes them
    backend = load_backend("tiny", threads=args.threads)
    backend.generate([Task(prompt="a red circle moves to the left", seed=0)])  # warm-up
    times, cpu_times = [], []
    for i in range(args.runs):
        t0, c0 = time.perf_counter(), time.process_time()
        backend.generate([Task(prompt="a red circle moves to the left", seed=i)])
        times.append(time.perf_counter() - t0)
        cpu_times.append((time.process_time() - c0) / torch.get_num_threads())
    measured = statistics.median(times)
    cpu_measured = statistics.median(cpu_times)

    # 3. side by side
    print("cpu-local: " + "\n".join(report.measured_chip_lines(chip)))
    for stage in estimate.stages:
        print(f"  predicted {stage.name:13s} {stage.latency_s:8.3f} s")
    step = estimate.stage("denoise").detail
    parts = ("linear_s", "self_attention_s", "cross_attention_s", "elementwise_s", "launch_s")
    print("  per step (ms)        " + ", ".join(f"{k[:-2]} {step[k] * 1e3:.2f}" for k in parts))
    ratio = estimate.latency_s / measured
    print(f"predicted            {estimate.latency_s:8.3f} s  ({estimate.flops / 1e9:.1f} GFLOP)")
    print(
        f"measured             {measured:8.3f} s  (median of {args.runs}; min {min(times):.3f}, max {max(times):.3f})"
    )
    print(
        f"CPU s per thread     {cpu_measured:8.3f} s  (median; predicted/this {estimate.latency_s / cpu_measured:.2f})"
    )
    verdict = "within" if abs(ratio - 1) <= TARGET else "OUTSIDE"
    print(f"predicted/measured   {ratio:8.2f}   {verdict} the {TARGET:.0%} target")


if __name__ == "__main__":
    main()

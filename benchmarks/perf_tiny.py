"""noor-tiny on this machine: predicted seconds (noor.perf on cpu-local) next to measured seconds.

The prediction uses the cached cpu-local measurement (or measures once); the measured clip is a
default tiny request (64x64, 16 frames, 16 steps, guidance on) through the engine as `noor serve` runs it.
Target: predicted within 25% of measured.

    python benchmarks/perf_tiny.py [--runs 5] [--remeasure]
"""

from __future__ import annotations

import argparse
import statistics
import time

from noor import catalog, perf
from noor.catalog import local
from noor.engine.task import Task
from noor.runtime.local import load_backend

TARGET = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--remeasure", action="store_true", help="measure cpu-local again before predicting")
    args = parser.parse_args()

    # 1. predict (cpu-local from the cache, or measured now)
    chip = local.remeasure() if args.remeasure else catalog.chip("cpu-local")
    estimate = perf.estimate(catalog.model("tiny"), perf.Shape(64, 64, 16, 16), chip)
    assert estimate.latency_s is not None

    # 2. measure default clips the way a worker makes them
    backend = load_backend("tiny")
    backend.generate([Task(prompt="a red circle moves to the left", seed=0)])  # warm-up
    times = []
    for i in range(args.runs):
        t0 = time.perf_counter()
        backend.generate([Task(prompt="a red circle moves to the left", seed=i)])
        times.append(time.perf_counter() - t0)
    measured = statistics.median(times)

    # 3. side by side
    print(f"cpu-local            {chip.name}")
    print(
        f"  linear / attention / conv  {chip.class_tflops['linear'] * 1e3:.1f} / "
        f"{chip.class_tflops['attention'] * 1e3:.1f} / {chip.class_tflops['conv'] * 1e3:.1f} GFLOP/s, "
        f"memory {chip.hbm_tbps or 0 * 1e3:.4f} TB/s, {chip.op_overhead_s * 1e6:.1f} us/op"
    )
    for stage in estimate.stages:
        print(f"  predicted {stage.name:13s} {stage.latency_s:8.3f} s")
    ratio = estimate.latency_s / measured
    print(f"predicted            {estimate.latency_s:8.3f} s  ({estimate.flops / 1e9:.1f} GFLOP)")
    print(
        f"measured             {measured:8.3f} s  (median of {args.runs}; min {min(times):.3f}, max {max(times):.3f})"
    )
    verdict = "within" if abs(ratio - 1) <= TARGET else "OUTSIDE"
    print(f"predicted/measured   {ratio:8.2f}   {verdict} the {TARGET:.0%} target")


if __name__ == "__main__":
    main()

"""Seconds per default noor-tiny clip, its FLOPs, and achieved FLOP/s against this machine's matmul peak.

Everything is measured in this one run (the machine is noisy): first the fp32 matmul peak, then the
clip. Target: a default clip (16 frames, 64x64, 16 steps, guidance on) in <= 3 s on 2 CPU cores.

    python benchmarks/generate_tiny.py [--threads 2] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import matmul_peak_flops  # benchmarks/machine.py (scripts run from this folder)
from torch.utils.flop_counter import FlopCounterMode

from noor.engine.task import Task
from noor.engine.tiny.backend import TinyBackend

TARGET_S = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    peak = matmul_peak_flops()
    backend = TinyBackend()
    task = Task(prompt="a red circle moves to the left", seed=0)
    backend.generate([task])  # warm-up: first-call allocations and kernel selection

    with FlopCounterMode(display=False) as counter:
        backend.generate([task])
    flops = counter.get_total_flops()

    times = []
    for i in range(args.runs):
        t0 = time.perf_counter()
        backend.generate([Task(prompt="a red circle moves to the left", seed=i)])
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)

    achieved = flops / median
    print(f"threads                 {args.threads}")
    print(f"matmul peak (fp32)      {peak / 1e9:8.1f} GFLOP/s")
    print(f"FLOPs per default clip  {flops / 1e9:8.1f} GFLOP  (all it runs: text encoder, first frame, clip, decode)")
    print(
        f"seconds per clip        {median:8.2f} s  (median of {args.runs}; min {min(times):.2f}, max {max(times):.2f})"
    )
    print(f"achieved                {achieved / 1e9:8.1f} GFLOP/s = {achieved / peak:.0%} of matmul peak")
    verdict = "met" if median <= TARGET_S else "MISSED"
    print(f"target <= {TARGET_S:.0f} s            {verdict} ({median / TARGET_S:.2f}x of budget)")


if __name__ == "__main__":
    main()

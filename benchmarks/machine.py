"""What every benchmark measures first: this machine's fp32 matmul peak, the ceiling its figures are read against."""

from __future__ import annotations

import time

import torch


def matmul_peak_flops(n: int = 1024, seconds: float = 2.0) -> float:
    """Best fp32 GEMM rate over short bursts: the practical ceiling for a model's kernels."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - t0))
    return best

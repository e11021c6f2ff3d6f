"""`cpu-local`: this machine, measured with torch once and cached in the data dir.

What is measured (fp32, torch's current thread count), each as the best of several short bursts so
a busy neighbour lowers it less:
  - linear:    a 1024^3 GEMM, FLOP/s
  - attention: scaled_dot_product_attention at 16 and 1024 keys (head dim 32), FLOP/s; the two
               fix a saturation curve rate(n) = peak * n / (n + half_tokens). 16 keys, as a small
               model's per-frame attention sees (noor-tiny: 16 tokens a frame, 16 frames)
  - activations: what a transformer block does to its activations besides matmuls (LayerNorm, GELU,
               a modulation multiply-add) on a 512x384 tensor, as bytes/s of activation traffic:
               on a CPU, GELU's erf and the norms' reductions run far below a plain add's bandwidth
  - conv:      a 3x3 conv2d, 32 -> 32 channels on 64x64 maps, FLOP/s
  - memory:    an elementwise add of 1M-float tensors (read 2, write 1), bytes/s
  - overhead:  one small elementwise op, seconds (framework dispatch per kernel)
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from noor.catalog.chips import Chip

CACHE_VERSION = 3


def cache_path() -> Path:
    from noor.config import settings

    return settings().data_dir / "perf" / "cpu-local.json"


def _key() -> dict[str, Any]:
    import torch

    return {
        "version": CACHE_VERSION,
        "machine": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }


def _best_rate(work: float, fn: Callable[[], object], seconds: float, inner: int = 3) -> float:
    fn()  # warm-up: allocations and kernel selection
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = max(best, inner * work / (time.perf_counter() - t0))
    return best


def measure(seconds_per_kernel: float = 0.25) -> dict[str, Any]:
    """Measure this CPU (about 1.5 s). Returns the cache record."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        n = 1024
        a, b = torch.randn(n, n), torch.randn(n, n)
        linear = _best_rate(2 * n**3, lambda: a @ b, seconds_per_kernel)

        def sdpa_rate(keys: int) -> float:
            heads = max(1, 32768 // keys)  # the same FLOPs at both lengths
            q = torch.randn(1, heads, keys, 32)
            return _best_rate(
                4 * heads * keys * keys * 32, lambda: F.scaled_dot_product_attention(q, q, q), 0.5 * seconds_per_kernel
            )

        n_short, n_long = 16, 1024
        short, long = sdpa_rate(n_short), sdpa_rate(n_long)
        # rate(n) = peak * n / (n + h): two lengths give peak and h (h >= 0)
        ratio = long / short
        half = max(0.0, (ratio - 1) / (ratio / n_short - 1 / n_long)) if ratio > 1 else 0.0
        attention = long * (1024 + half) / 1024

        x, w = torch.randn(4, 32, 64, 64), torch.randn(32, 32, 3, 3)
        conv = _best_rate(2 * 4 * 64 * 64 * 32 * 32 * 9, lambda: F.conv2d(x, w, padding=1), seconds_per_kernel)

        # elementwise traffic on activation-sized tensors (1M floats), as a model's adds and norms see it
        x1, x2, out = torch.randn(1 << 20), torch.randn(1 << 20), torch.empty(1 << 20)
        memory = _best_rate(3 * x1.numel() * 4, lambda: torch.add(x1, x2, out=out), seconds_per_kernel)

        # a block's activation ops, each reading and writing the tensor once (the perf model's traffic unit)
        act, scale, shift = torch.randn(512, 384), torch.randn(384), torch.randn(384)
        act_out = torch.empty_like(act)

        def block_ops() -> None:
            F.layer_norm(act, (384,))
            F.gelu(act, approximate="none")
            torch.addcmul(shift, act, scale, out=act_out)

        activation = _best_rate(3 * 2 * act.numel() * 4, block_ops, seconds_per_kernel)

        small = torch.randn(64)
        overhead = 1 / _best_rate(1.0, lambda: small.add(1.0), 0.5 * seconds_per_kernel, inner=200)
    return {
        **_key(),
        "measured_at": time.time(),
        "linear_tflops": linear / 1e12,
        "attention_tflops": attention / 1e12,
        "attention_half_tokens": half,
        "conv_tflops": conv / 1e12,
        "memory_tbps": memory / 1e12,
        "activation_tbps": activation / 1e12,
        "op_overhead_s": overhead,
    }


def load_or_measure(remeasure: bool = False) -> dict[str, Any]:
    """The cached record for this machine and thread count; measured (and cached) if absent or stale."""
    path = cache_path()
    if not remeasure and path.exists():
        try:
            record = json.loads(path.read_text())
            if all(record.get(k) == v for k, v in _key().items()):
                return dict(record)
        except (OSError, ValueError):
            pass  # unreadable cache: measure again
    record = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return record


def chip_from_record(entry: Chip, record: dict[str, Any]) -> Chip:
    return entry.model_copy(
        update={
            "bf16_tflops": record["linear_tflops"],
            "hbm_tbps": record["memory_tbps"],
            "class_tflops": {
                "linear": record["linear_tflops"],
                "attention": record["attention_tflops"],
                "conv": record["conv_tflops"],
            },
            "attention_half_tokens": record["attention_half_tokens"],
            "activation_tbps": record.get("activation_tbps"),
            "op_overhead_s": record["op_overhead_s"],
            "hbm_gb": _memory_gb(),
            "name": f"{entry.name}: {record['processor']}, {record['threads']} threads",
        }
    )


def _memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return None


@cache
def _record(threads: int) -> dict[str, Any]:
    return load_or_measure()


def local_chip(entry: Chip) -> Chip:
    """cpu-local with measured figures: from the in-process cache, the disk cache, or one measurement."""
    import torch

    return chip_from_record(entry, _record(torch.get_num_threads()))


def remeasure() -> Chip:
    from noor.catalog.chips import _table

    _record.cache_clear()
    record = load_or_measure(remeasure=True)
    return chip_from_record(_table()["cpu-local"], record)

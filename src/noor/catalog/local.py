"""`cpu-local`: this machine, measured with torch once and cached in the data dir.

What is measured (fp32, torch's current thread count), each as the median of many short bursts:
the rate a model's run sustains, which is what its clip time sees (the best burst was up to 2x the
sustained rate on a shared VM):
  - linear:    a 1024^3 GEMM, FLOP/s
  - attention: scaled_dot_product_attention at 16 and 1024 keys (head dim 32), FLOP/s; the two
               fix a saturation curve rate(n) = peak * n / (n + half_tokens). 16 keys, as a small
               model's per-frame attention sees (noor-tiny: 16 tokens a frame, 16 frames)
  - attention call: one diffusers `Attention` module called on two tokens, seconds: the fixed cost of
               an attention layer in eager PyTorch (its projections' dispatch, the processor's Python,
               SDPA's setup), which on a CPU is as large as the arithmetic of a small model's layer
  - activations: what a transformer block does to its activations besides matmuls (LayerNorm, GELU,
               a modulation multiply-add) on a 512x384 tensor, as bytes/s of activation traffic:
               on a CPU, GELU's erf and the norms' reductions run far below a plain add's bandwidth
  - conv:      a 3x3 conv2d on 32x32 maps at 16 and 128 channels, FLOP/s; the two fix a saturation
               curve in channels (oneDNN runs 16-channel convs, a small VAE's widest maps, at a
               fraction of its rate at 128)
  - memory:    an elementwise add of 1M-float tensors (read 2, write 1), bytes/s
  - overhead:  one small elementwise op, seconds (framework dispatch per kernel)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from noor.catalog.chips import Chip

CACHE_VERSION = 4


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
        "booted_at": _boot_time(),  # a reboot (or a new VM on the same name) measures again
    }


def _boot_time() -> int | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _rate(work: float, fn: Callable[[], object], seconds: float, inner: int = 3) -> float:
    """`work` per second of `fn`: the median of bursts of `inner` calls over about `seconds`."""
    fn()  # warm-up: allocations and kernel selection
    rates: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 5:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        rates.append(inner * work / (time.perf_counter() - t0))
    return statistics.median(rates)


def saturation_half(n_short: float, short: float, n_long: float, long: float) -> float:
    """`h` of rate(n) = peak * n / (n + h) through two measured points (0 if the short one is as fast)."""
    ratio = long / short
    if ratio <= 1:
        return 0.0
    if ratio >= n_long / n_short:  # still linear in n at n_long: saturates beyond it; take the bound
        return float("inf")
    return (ratio - 1) / (1 / n_short - ratio / n_long)


def measure(seconds_per_kernel: float = 0.3) -> dict[str, Any]:
    """Measure this CPU (about 2 s). Returns the cache record."""
    import torch
    import torch.nn.functional as F
    from diffusers.models.attention_processor import Attention

    with torch.no_grad():
        n = 1024
        a, b = torch.randn(n, n), torch.randn(n, n)
        linear = _rate(2 * n**3, lambda: a @ b, seconds_per_kernel)

        def sdpa_rate(keys: int) -> float:
            heads = max(1, 32768 // keys)  # the same FLOPs at both lengths
            q = torch.randn(1, heads, keys, 32)
            return _rate(
                4 * heads * keys * keys * 32, lambda: F.scaled_dot_product_attention(q, q, q), 0.5 * seconds_per_kernel
            )

        n_short, n_long = 16, 1024
        short, long = sdpa_rate(n_short), sdpa_rate(n_long)
        # rate(n) = peak * n / (n + h): two lengths give peak and h (h >= 0)
        half = min(saturation_half(n_short, short, n_long, long), 1e6)
        attention = long * (n_long + half) / n_long

        layer, two = Attention(64, heads=2, dim_head=32), torch.randn(1, 2, 64)
        attention_call = 1 / _rate(1.0, lambda: layer(two), 0.5 * seconds_per_kernel, inner=20)

        def conv_rate(channels: int) -> float:
            batch = max(1, 2048 // channels)  # similar FLOPs at both widths
            x, w = torch.randn(batch, channels, 32, 32), torch.randn(channels, channels, 3, 3)
            flops = 2 * batch * 32 * 32 * channels * channels * 9
            return _rate(flops, lambda: F.conv2d(x, w, padding=1), 0.5 * seconds_per_kernel)

        c_narrow, c_wide = 16, 128
        narrow, wide = conv_rate(c_narrow), conv_rate(c_wide)
        conv_half = min(saturation_half(c_narrow, narrow, c_wide, wide), 1e6)
        conv = wide * (c_wide + conv_half) / c_wide

        # elementwise traffic on activation-sized tensors (1M floats), as a model's adds and norms see it
        x1, x2, out = torch.randn(1 << 20), torch.randn(1 << 20), torch.empty(1 << 20)
        memory = _rate(3 * x1.numel() * 4, lambda: torch.add(x1, x2, out=out), seconds_per_kernel)

        # a block's activation ops, each reading and writing the tensor once (the perf model's traffic unit)
        act, scale, shift = torch.randn(512, 384), torch.randn(384), torch.randn(384)
        act_out = torch.empty_like(act)

        def block_ops() -> None:
            F.layer_norm(act, (384,))
            F.gelu(act, approximate="none")
            torch.addcmul(shift, act, scale, out=act_out)

        activation = _rate(3 * 2 * act.numel() * 4, block_ops, seconds_per_kernel)

        small = torch.randn(64)
        overhead = 1 / _rate(1.0, lambda: small.add(1.0), 0.5 * seconds_per_kernel, inner=200)
    return {
        **_key(),
        "measured_at": time.time(),
        "linear_tflops": linear / 1e12,
        "attention_tflops": attention / 1e12,
        "attention_half_tokens": half,
        "conv_tflops": conv / 1e12,
        "conv_half_channels": conv_half,
        "memory_tbps": memory / 1e12,
        "activation_tbps": activation / 1e12,
        "op_overhead_s": overhead,
        "attention_call_s": attention_call,
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
            "attention_call_s": record["attention_call_s"],
            "conv_half_channels": record["conv_half_channels"],
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

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

The activation and elementwise tensors are larger than a small model's (noor-world-tiny's are 64 tokens x 128
= 8k floats, noor-tiny's 256 x 128) on purpose: at 8k floats an op takes about as long as its dispatch, so a
rate measured there would hold the dispatch cost the perf model already charges per operator (`overhead`).

A measurement is only as good as the machine was quiet: competing processes once cut the activation rate
160x (0.18 GB/s against 28.9, docs/perf.md). So each record carries the 1-minute load average read just
before measuring and is marked `contended` when that load leaves the measuring threads fewer free cores than
they use (`is_busy`). A contended record is used (there is nothing better) but said so (`contention_note`),
and is measured again on a later use once the machine is quiet (`retry_due`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from noor.catalog.chips import Chip

CACHE_VERSION = 5  # 5: records carry the load they were measured under (older ones are measured again once)
# Others may use this much of a core beyond the cores the measuring threads leave free: a quiet VM's 1-min load
# sits at 0.0-0.3 (daemons, an idle server); half a core taken from the measuring threads costs them a few
# percent, a whole one halves a thread (and stalls the others at its barriers).
LOAD_SLACK = 0.5
# A contended record is measured again no sooner than this after it was measured: the 1-min load average moves
# on this time scale, so it bounds the re-measuring (about 2 s each) when the load hovers at the limit.
RETRY_AFTER_S = 60.0

log = logging.getLogger("noor.catalog")
log.addHandler(logging.NullHandler())  # a server's configured "noor" logger shows it; a CLI prints its own line


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


def load_1m() -> float:
    """The system's 1-minute load average: tasks running or waiting for a core, averaged over about a minute."""
    return os.getloadavg()[0]


def load_limit(cores: int | None, threads: int) -> float:
    """The highest 1-min load under which `threads` measuring threads still get their cores.

    The load others put on the machine may fill the cores the measuring threads leave free, plus LOAD_SLACK;
    with a thread per core (this 2-core VM) that is 0.5. It is read before measuring, so it does not
    count the measuring threads themselves."""
    return max((cores or threads) - threads, 0) + LOAD_SLACK


def is_busy(load: float, cores: int | None, threads: int) -> bool:
    return load > load_limit(cores, threads)


def retry_due(record: dict[str, Any], now: float | None = None) -> bool:
    """Whether a contended record should be measured again now: the machine is quiet and the record is not new."""
    if not record.get("contended"):
        return False
    age_s = (time.time() if now is None else now) - float(record.get("measured_at", 0.0))
    return age_s >= RETRY_AFTER_S and not is_busy(load_1m(), record.get("cpus"), int(record["threads"]))


def contention_note(record: dict[str, Any] | None = None) -> str | None:
    """One line for whoever prints predictions from a contended record (this process's, by default)."""
    if record is None:
        import torch

        record = _record(torch.get_num_threads())
    if not record.get("contended"):
        return None
    return (
        f"cpu-local measured under load (1-min load {record['load_1m']:.1f} on {record.get('cpus')} cores,"
        f" {record['threads']} measuring threads): predictions may be slow; it is measured again when the machine"
        " is quiet (or run `noor perf measure` then)"
    )


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


def measure_under_load() -> dict[str, Any]:
    """`measure()` with the load it ran under, marked `contended` if others' work left its threads short of cores.

    It does not wait for a quiet machine: the 1-min average takes minutes to fall, and the first measurement
    may be on a request's path. A contended record is measured again on a later use instead (`retry_due`)."""
    load = load_1m()  # before measuring: the measuring threads are not in it
    record = measure()
    cores, threads = record.get("cpus"), int(record["threads"])
    return {
        **record,
        "load_1m": round(load, 2),
        "load_limit": load_limit(cores, threads),
        "contended": is_busy(load, cores, threads),
    }


def load_or_measure(remeasure: bool = False) -> dict[str, Any]:
    """The cached record for this machine and thread count; measured (and cached) if absent, stale, or
    contended and the machine is quiet now."""
    path = cache_path()
    if not remeasure and path.exists():
        try:
            record = json.loads(path.read_text())
            if all(record.get(k) == v for k, v in _key().items()) and not retry_due(record):
                return dict(record)
        except (OSError, ValueError):
            pass  # unreadable cache: measure again
    record = measure_under_load()
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
    """This process's record for a thread count; a contended one is logged, as servers print no predictions."""
    record = load_or_measure()
    if note := contention_note(record):
        log.warning("%s", note)
    return record


def local_chip(entry: Chip) -> Chip:
    """cpu-local with measured figures: from the in-process cache, the disk cache, or one measurement (again,
    if the one this process holds was contended and the machine is quiet now)."""
    import torch

    threads = torch.get_num_threads()
    record = _record(threads)
    if retry_due(record):
        _record.cache_clear()  # every thread count's; the others reload from disk or measure when next asked
        record = _record(threads)
    return chip_from_record(entry, record)


def remeasure() -> Chip:
    from noor.catalog.chips import _table

    _record.cache_clear()
    record = load_or_measure(remeasure=True)
    return chip_from_record(_table()["cpu-local"], record)

"""An interactive world model's cost per frame and frames/s on one chip.

An autoregressive world model (Self-Forcing, CausVid, Matrix-Game 2.0, noor-world-tiny) draws a chunk of
`chunk_latent_frames` new latent frames at a time (1: frame by frame):

  1. `steps` denoising passes over the chunk's own tokens, each attending to the cached keys/values of
     `context_frames` earlier latent frames and `memory_tokens` (and reading `cross_tokens` by cross-attention);
  2. one more pass over the clean chunk that writes its keys/values to the cache (`cache_pass`);
  3. a VAE decode of the chunk's frames.

FLOPs per chunk (a multiply-add = 2 FLOPs, workload.py's rules), with n the chunk's tokens, c the cached ones:
  linear    2 x n x layers x (4 d^2 + ffn_matrices x d x ffn [+ 2 d^2 with cross-attention]) x passes
  attention 4 x n x (c + n) x d x layers x passes    (QK^T and PV over the cache and the chunk)
  cross     4 x n x cross_tokens x d x layers x passes
  decode    the VAE decoder's convolutions over the chunk's frames (workload.decode_frames)
where passes = steps + 1 with a cache pass. The prompt's encoding and its cross-attention keys/values are
computed once per session, not per frame, and are left out. On the shipped noor-world-tiny this is torch's own
count (FlopCounterMode, attention through the math kernel: on a CPU torch has no formula for the fused one and
counts no attention at all) to within 3% (tests/perf/test_world.py).

Latency is estimate.py's roofline on the same chip, with the same fitted efficiencies: each pass's linear
layers at the GEMM rate or the time to read the weights, whichever is longer (at batch 1 a 1.3B model reads
2.6 GB of weights per pass), attention at the attention rate or the time to read the cache, elementwise
traffic, kernel launches (on a measured CPU every operator dispatched, views included: the model's own count,
`dispatched_ops_per_pass`, where the catalog has one). A chip may hold `batch` sessions at once: their chunks
run together, which shares the weight reads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from noor import catalog
from noor.catalog import Chip, WorldArch
from noor.perf import workload
from noor.perf.efficiency import Efficiency, load
from noor.perf.estimate import _Device
from noor.perf.shape import PerfError

MAX_SESSIONS_PER_CHIP = 4096  # where the search for sessions per chip stops: past any chip's memory here


@dataclass(frozen=True)
class ChunkWork:
    """The FLOPs of one chunk for `batch` sessions, all passes, and the sizes latency needs."""

    batch: int
    passes: int
    chunk_tokens: int  # per session: new tokens drawn together
    cached_tokens: int  # per session: context frames' and memory tokens every new token attends to
    frames: int  # output frames per chunk
    linear_flops: float
    attention_flops: float
    cross_flops: float
    decode_flops: float
    decode: workload.VaeWork

    @property
    def flops(self) -> float:
        return self.linear_flops + self.attention_flops + self.cross_flops + self.decode_flops


def chunk_work(world: WorldArch, batch: int = 1, steps: int | None = None) -> ChunkWork:
    """Count one chunk's FLOPs (see the module's docstring for the rules)."""
    if not isinstance(batch, int) or batch < 1:
        raise PerfError("batch", batch, "must be a positive integer")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise PerfError("steps", steps, "must be a positive integer")
    d, L = world.hidden_size, world.layers
    passes = (steps or world.steps) + (1 if world.cache_pass else 0)
    n = world.chunk_latent_frames * world.tokens_per_latent_frame
    c = world.context_frames * world.tokens_per_latent_frame + world.memory_tokens
    per_token = 4 * d * d + world.ffn_matrices * d * world.ffn_size + (2 * d * d if world.cross_tokens else 0)
    decode = workload.decode_frames(world.vae, world.frames_per_chunk, world.width, world.height, batch)
    return ChunkWork(
        batch=batch,
        passes=passes,
        chunk_tokens=n,
        cached_tokens=c,
        frames=world.frames_per_chunk,
        linear_flops=2.0 * batch * n * L * per_token * passes,
        attention_flops=4.0 * batch * n * (c + n) * d * L * passes,
        cross_flops=4.0 * batch * n * world.cross_tokens * d * L * passes,
        decode_flops=decode.flops,
        decode=decode,
    )


def dispatched_ops(world: WorldArch) -> int:
    """Operators one pass dispatches in eager PyTorch (a CPU runs each in line): counted for the model, or the
    generic diffusers-block figure per layer."""
    return world.dispatched_ops_per_pass or workload.DISPATCHED_OPS_PER_BLOCK * world.layers


@dataclass
class WorldEstimate:
    model: str
    chip: str
    batch: int  # sessions on the chip at once
    steps: int
    fits: bool
    why_not: str | None
    chunk_latency_s: float | None  # one chunk for all `batch` sessions: the wait for its first frame
    frame_latency_s: float | None  # the chip's time per frame of a session (chunk / frames in it)
    fps: float | None  # frames/s each session gets
    flops_per_frame: float  # per session
    peak_memory_gb: float
    breakdown_s: dict[str, float]  # per chunk, by part
    flops_per_chunk: dict[str, float]  # per chunk, all sessions, by part
    memory_gb: dict[str, float]
    usd_per_hour: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_world(
    world: WorldArch, chip: Chip, batch: int = 1, steps: int | None = None, efficiency: Efficiency | None = None
) -> WorldEstimate:
    """Time one chunk of `batch` sessions on one chip; frames/s per session follow."""
    eff = efficiency or load()
    work = chunk_work(world, batch, steps)
    notes: list[str] = []
    precision = "fp32" if chip.measured else ("bf16" if world.precision == "fp32" else world.precision)
    nbytes = workload.BYTES[precision]
    act_bytes = 4 if precision == "fp32" else 2
    dev = _Device(chip, eff, precision, fa3=False)
    d, L, p = world.hidden_size, world.layers, work.passes
    rows = batch * work.chunk_tokens
    keys = work.cached_tokens + work.chunk_tokens
    weights_bytes = world.params_b * 1e9 * nbytes
    kv_bytes = batch * keys * d * 2 * L * act_bytes  # the cache every pass reads (keys and values)

    # 1. one pass: linear layers (or the weights' read), attention (or the cache's read), the rest
    linear_s = max(dev.linear_s(work.linear_flops / p, rows), dev.memory_s(weights_bytes))
    head_dim = world.hidden_size // world.heads
    attention_s = max(dev.attention_s(work.attention_flops / p, keys, head_dim), dev.memory_s(kv_bytes))
    attention_s += L * dev.attention_call_s
    cross_s = dev.attention_s(work.cross_flops / p, max(world.cross_tokens, 1), head_dim) if world.cross_tokens else 0.0
    cross_s += L * dev.attention_call_s if world.cross_tokens else 0.0
    elementwise_s = dev.activation_s(rows * d * L * act_bytes * eff["activation_passes_eager"])
    launch_s = dispatched_ops(world) * dev.kernel_s if chip.measured else workload.KERNELS_PER_BLOCK * L * dev.kernel_s
    pass_s = linear_s + attention_s + cross_s + elementwise_s + launch_s

    # 2. the VAE decode of the chunk's frames (fp32 convs, a GroupNorm and a SiLU over each conv's input)
    decode_s = sum(f / dev.conv_rate(c) for f, c in work.decode.conv_rows)
    decode_s += dev.activation_s(work.decode.activation_elems * 4 * 2 * 2)
    chunk_s = p * pass_s + decode_s

    # 3. memory: weights, the cache, one pass's activations, the decoder
    gb = 1e-9
    memory = {
        "weights_gb": weights_bytes * gb,
        "kv_cache_gb": kv_bytes * gb,
        "activations_gb": rows * (world.ffn_size * world.ffn_matrices / 2 + 4 * d) * act_bytes * gb,
        "vae_gb": world.vae.params_m * 1e6 * 4 * gb + work.decode.largest_elems * batch * 4 * 3 * gb,
    }
    peak_gb = memory["weights_gb"] + memory["kv_cache_gb"] + max(memory["activations_gb"], memory["vae_gb"])
    why_not = None
    if chip.hbm_gb is not None and peak_gb > chip.hbm_gb:
        why_not = f"needs {peak_gb:.1f} GB, {chip.id} has {chip.hbm_gb:.0f} GB (fewer sessions per chip)"
    fits = why_not is None
    if world.chunk_latent_frames > 1:
        notes.append(
            f"{world.id} draws {work.frames} frames a chunk: a frame's time is the chunk's / {work.frames}; "
            f"the first frame of a chunk waits for the whole chunk"
        )
    frame_s = chunk_s / work.frames
    breakdown = {
        "linear_s": p * linear_s,
        "self_attention_s": p * attention_s,
        "cross_attention_s": p * cross_s,
        "elementwise_s": p * elementwise_s,
        "launch_s": p * launch_s,
        "vae_decode_s": decode_s,
        "chunk_s": chunk_s,
    }
    flops = {
        "linear": work.linear_flops,
        "self_attention": work.attention_flops,
        "cross_attention": work.cross_flops,
        "vae_decode": work.decode_flops,
    }
    return WorldEstimate(
        model=world.id,
        chip=chip.id,
        batch=batch,
        steps=p - (1 if world.cache_pass else 0),
        fits=fits,
        why_not=why_not,
        chunk_latency_s=chunk_s if fits else None,
        frame_latency_s=frame_s if fits else None,
        fps=1 / frame_s if fits else None,
        flops_per_frame=work.flops / batch / work.frames,
        peak_memory_gb=peak_gb,
        breakdown_s=breakdown,
        flops_per_chunk=flops,
        memory_gb=memory,
        usd_per_hour=chip.usd_per_hour,
        notes=notes,
    )


def check_fps(fps: object, field_name: str = "fps") -> float:
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise PerfError(field_name, fps, "must be a number of frames per second above 0")
    return float(fps)


def sessions_per_chip(
    world: WorldArch, chip: Chip, fps: float, steps: int | None = None, efficiency: Efficiency | None = None
) -> tuple[int, WorldEstimate]:
    """The most sessions one chip holds with every session's frame time <= 1/fps and the cache in memory,
    and the estimate at that many (0 and the batch-1 estimate if even one session misses the SLO)."""
    fps = check_fps(fps)
    eff = efficiency or load()

    def ok(b: int) -> WorldEstimate | None:
        e = estimate_world(world, chip, b, steps, eff)
        return e if e.fits and e.frame_latency_s is not None and e.frame_latency_s <= 1 / fps else None

    one = ok(1)
    if one is None:
        return 0, estimate_world(world, chip, 1, steps, eff)
    low, best = 1, one  # time and memory grow with the batch: double, then bisect
    high = 2
    while high <= MAX_SESSIONS_PER_CHIP and (e := ok(high)) is not None:
        low, best, high = high, e, high * 2
    high = min(high, MAX_SESSIONS_PER_CHIP + 1)
    while high - low > 1:
        mid = (low + high) // 2
        if (e := ok(mid)) is not None:
            low, best = mid, e
        else:
            high = mid
    return low, best


def predict_world(world_id: str, chip_id: str, batch: int = 1, steps: int | None = None) -> WorldEstimate:
    """`estimate_world` by catalog ids (unknown ids raise `catalog.UnknownId` listing the valid ones)."""
    return estimate_world(catalog.world(world_id), catalog.chip(chip_id), batch, steps)

"""Interactive world models: FLOPs per chunk counted by hand, frames/s, sessions per chip, the CLI."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from noor import catalog
from noor.catalog import WorldArch
from noor.engine.world_tiny.backend import WorldTinyBackend
from noor.engine.world_tiny.pipeline import NoorWorldPipeline, Rollout
from noor.perf import PerfError
from noor.perf.world import chunk_work, dispatched_ops, estimate_world, predict_world, sessions_per_chip
from tests.perf.conftest import CountOps

PUBLISHED = Path(__file__).parents[2] / "data" / "published" / "world_models.csv"
# benchmarks/world_tiny.py on this machine, 2 cores, otherwise idle (docs/world.md, docs/benchmarks.md, 2026-12-05)
MEASURED_WORLD_TINY_FPS = 35.4
# cpu-local as catalog/local.py measured it on this machine, quiet (loadavg 0.8), 2026-12-05 07:04 UTC
QUIET_CPU_LOCAL = {
    "linear_tflops": 0.1776,
    "attention_tflops": 0.1430,
    "attention_half_tokens": 38.76,
    "conv_tflops": 0.2493,
    "conv_half_channels": 66.34,
    "memory_tbps": 0.1852,
    "activation_tbps": 0.02888,
    "op_overhead_s": 2.923e-6,
    "attention_call_s": 1.087e-4,
}


def toy(**update: object) -> WorldArch:
    """A toy world model: 32x32 pixels -> 4x8x8 latents (noor-tiny's VAE) -> 2x2 patches = 16 tokens a frame."""
    fields: dict[str, object] = {
        "id": "toy", "name": "toy", "base": "own", "params_b": 0.001, "layers": 2, "hidden_size": 8, "heads": 2,
        "ffn_size": 16, "patch": (2, 2), "width": 32, "height": 32, "vae": catalog.model("tiny").vae,
        "chunk_latent_frames": 1, "context_frames": 2, "memory_tokens": 4, "cross_tokens": 0, "steps": 3,
        "cache_pass": True, "precision": "fp32", "sources": {"transformer": "test", "defaults": "test"},
    }  # fmt: skip
    fields.update(update)
    return WorldArch(**fields)  # type: ignore[arg-type]


def test_flops_of_a_toy_chunk_match_a_count_by_hand() -> None:
    w = toy()
    work = chunk_work(w)
    # 16 new tokens, cached: 2 frames x 16 + 4 memory = 36; passes: 3 steps + 1 cache pass = 4
    assert (work.chunk_tokens, work.cached_tokens, work.passes, work.frames) == (16, 36, 4, 1)
    # linear per token per layer: q,k,v,o 4 x 8 x 8 = 256, MLP 2 x 8 x 16 = 256 -> 512 weights
    assert work.linear_flops == 2 * 16 * 2 * 512 * 4  # 2 x tokens x layers x weights x passes = 131,072
    # attention: 4 x 16 queries x (36 + 16) keys x 8 x 2 layers x 4 passes
    assert work.attention_flops == 4 * 16 * 52 * 8 * 2 * 4  # 212,992
    assert work.cross_flops == 0
    # decode of one 32x32 frame with noor-tiny's decoder rows [[16,4],[32,4],[32,8]] at 32, 16, 8 px
    decode = 2 * 9 * (32 * 32 * 4 * 16 * 16 + 16 * 16 * 4 * 32 * 32 + 8 * 8 * 8 * 32 * 32)
    assert work.decode_flops == decode
    with_cross = chunk_work(toy(cross_tokens=10))
    # cross-attention adds q,o (2 d^2) per token per layer and 4 x n x cross x d per layer per pass
    assert with_cross.linear_flops == 2 * 16 * 2 * (512 + 128) * 4
    assert with_cross.cross_flops == 4 * 16 * 10 * 8 * 2 * 4
    assert chunk_work(w, batch=3).flops == pytest.approx(3 * work.flops)


def test_more_steps_or_more_context_cost_more_and_give_fewer_frames_per_second() -> None:
    chip = catalog.chip("h100-sxm")
    w = catalog.world("self-forcing-chunk")
    fps = [estimate_world(w, chip, steps=s).fps for s in (1, 2, 4, 8)]
    assert all(a is not None and b is not None and a > b for a, b in itertools.pairwise(fps))
    short, long = estimate_world(w.model_copy(update={"context_frames": 3}), chip), estimate_world(w, chip)
    assert short.flops_per_chunk["self_attention"] < long.flops_per_chunk["self_attention"]
    assert short.fps is not None and long.fps is not None and short.fps > long.fps
    no_cache_pass = estimate_world(w.model_copy(update={"cache_pass": False}), chip)
    assert no_cache_pass.flops_per_chunk["linear"] == pytest.approx(long.flops_per_chunk["linear"] * 4 / 5)


def test_frames_per_second_is_the_chunks_frames_over_its_time() -> None:
    e = predict_world("matrix-game-2", "h100-sxm")
    assert e.fits and e.chunk_latency_s is not None and e.fps is not None and e.frame_latency_s is not None
    assert e.breakdown_s["chunk_s"] == pytest.approx(sum(v for k, v in e.breakdown_s.items() if k != "chunk_s"))
    assert e.fps == pytest.approx(12 / e.chunk_latency_s)  # 3 latent frames x 4 video frames a chunk
    assert e.flops_per_frame == pytest.approx(sum(e.flops_per_chunk.values()) / 12)
    assert e.flops_per_frame == pytest.approx(chunk_work(catalog.world("matrix-game-2")).flops / 12)


def test_sessions_per_chip_is_the_largest_batch_within_the_frame_budget() -> None:
    w, chip = catalog.world("noor-world-tiny"), catalog.chip("h100-sxm")
    most, at = sessions_per_chip(w, chip, 24)
    assert most > 1 and at.batch == most
    assert at.frame_latency_s is not None and at.frame_latency_s <= 1 / 24
    over = estimate_world(w, chip, most + 1)
    assert not over.fits or (over.frame_latency_s is not None and over.frame_latency_s > 1 / 24)
    assert sessions_per_chip(w, chip, 12)[0] >= most  # a lower frame rate leaves room for more
    big = catalog.world("self-forcing-chunk")
    one = estimate_world(big, chip)
    assert one.fps is not None
    assert sessions_per_chip(big, chip, one.fps * 1.01)[0] == 0  # a rate above one session's: none


def test_bad_input_names_the_field() -> None:
    with pytest.raises(PerfError, match="batch: must be a positive integer, got 0"):
        predict_world("noor-world-tiny", "h100-sxm", batch=0)
    with pytest.raises(PerfError, match="fps: must be a number"):
        sessions_per_chip(catalog.world("noor-world-tiny"), catalog.chip("h100-sxm"), 0)
    with pytest.raises(catalog.UnknownId, match="unknown world model 'genie-3'; valid: matrix-game-2"):
        catalog.world("genie-3")
    with pytest.raises(ValueError, match="width 30 is not a whole number of tokens"):
        toy(width=30)


def test_every_priced_published_row_names_a_catalog_world_model_of_its_size() -> None:
    with PUBLISHED.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} >= {"Self-Forcing (chunk-wise)", "Matrix-Game 2.0", "Oasis 500M", "Genie 3"}
    for row in rows:
        assert row["source_url"].startswith("https://") and row["notes"]
        if row["catalog_id"]:
            w = catalog.world(row["catalog_id"])
            assert (w.width, w.height) == (int(row["width"]), int(row["height"]))
        else:
            assert "not in the catalog" in row["notes"].lower()


def test_cli_prints_the_breakdown_and_sessions_and_refuses_bad_input(
    noor: Callable[..., tuple[int, str, str]],
) -> None:
    code, out, _ = noor("perf", "world", "noor-world-tiny", "--chip", "h100-sxm", "--fps", "24")
    assert code == 0
    assert "frames/s per session" in out and "sessions per h100-sxm at 24 frames/s:" in out
    assert "vae_decode" in out and "self_attention" in out
    code, out, _ = noor("perf", "world", "matrix-game-2", "--json")
    data = json.loads(out)
    assert code == 0 and data["model"] == "matrix-game-2" and data["fps"] > 0
    for args, message in (
        (("perf", "world", "genie-3"), "MODEL: unknown world model"),
        (("perf", "world", "noor-world-tiny", "--chip", "h900"), "--chip: unknown chip"),
        (("perf", "world", "noor-world-tiny", "--sessions", "0"), "--sessions: must be a positive integer, got 0"),
        (("perf", "world", "noor-world-tiny", "--steps", "0"), "--steps: must be a positive integer, got 0"),
        (("perf", "world", "noor-world-tiny", "--fps", "0"), "--fps: must be a number"),
    ):
        code, out, err = noor(*args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)


# -- noor-world-tiny: what perf/world.py assumes, against torch's own count on the shipped model ---------------


@pytest.fixture(scope="module")
def playing() -> Iterator[tuple[NoorWorldPipeline, Rollout]]:
    """The shipped pipeline with a world open and its cache full (the opening frame and `context_frames` moves)."""
    torch.manual_seed(0)
    pipe = WorldTinyBackend().pipe
    rollout = pipe.open("a desert with palm trees", seed=0)
    for action in ("right", "up"):
        pipe.step(rollout, action)
    assert len(rollout.cache.frames) == catalog.world("noor-world-tiny").context_frames
    yield pipe, rollout


def test_noor_world_tinys_flops_are_what_torch_counts_on_the_shipped_model(
    playing: tuple[NoorWorldPipeline, Rollout], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One frame of the shipped model (its denoising passes, the cache pass, the decode) under torch's
    FlopCounterMode, attention through the math kernel: torch has no formula for the CPU's fused attention
    and would count none (which is why benchmarks/world_tiny.py's 1.11 GFLOP a frame has no attention)."""
    pipe, rollout = playing
    world = catalog.world("noor-world-tiny")
    work = chunk_work(world)
    passes: list[float] = []
    denoise = pipe.transformer.denoise

    def counted(*args: Any, **kwargs: Any) -> Any:
        passes.append(args[3])  # its noise level
        return denoise(*args, **kwargs)

    monkeypatch.setattr(pipe.transformer, "denoise", counted)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as frame:
            latents = pipe.step(rollout, "right")
        with FlopCounterMode(display=False) as decode:
            pipe.decode(latents)
    torch_count = {str(k): v for k, v in frame.get_flop_counts()["Global"].items()}
    assert set(torch_count) == {"aten.addmm", "aten.bmm"}  # linear layers; QK^T and PV
    assert len(passes) == work.passes == world.steps + 1 and passes[-1] == 0.0  # 4 noise levels, then the cache pass
    # the count leaves out the patch embedding and output head (16 latent channels in, twice over with the memory,
    # and out: 2.5% of it), the timestep MLP and adaLN (per frame, not token): 3.5% in all
    assert 0.95 < work.linear_flops / torch_count["aten.addmm"] <= 1.0
    assert work.attention_flops == pytest.approx(torch_count["aten.bmm"], rel=1e-9)  # 64 queries x 192 keys
    # the decoder's rows leave out its 16->32 conv in and 32->3 conv out
    assert 0.97 < work.decode_flops / decode.get_total_flops() <= 1.0
    assert work.flops == pytest.approx(frame.get_total_flops() + decode.get_total_flops(), rel=0.04)


def test_a_cpu_pays_for_the_operators_noor_world_tiny_dispatches(playing: tuple[NoorWorldPipeline, Rollout]) -> None:
    """On a measured CPU each dispatched operator costs its overhead in line: the catalog carries the shipped
    model's count (a third below the generic 140 a block), re-counted here on one pass against a full cache."""
    pipe, rollout = playing
    world = catalog.world("noor-world-tiny")
    memory, known = (t[None] for t in rollout.canvas.crop(rollout.x, rollout.y))
    assert rollout.latents is not None
    with torch.no_grad(), CountOps() as counter:
        pipe.transformer.denoise(rollout.latents, memory, known, 0.5, 1, rollout.text, rollout.frame, rollout.cache)
    assert world.dispatched_ops_per_pass is not None
    assert abs(counter.ops - world.dispatched_ops_per_pass) <= 0.05 * world.dispatched_ops_per_pass, counter.ops
    assert dispatched_ops(world) == world.dispatched_ops_per_pass
    assert dispatched_ops(catalog.world("matrix-game-2")) == 140 * 30  # no count: diffusers' blocks' figure


def test_noor_world_tiny_on_a_quiet_cpu_local_is_near_its_measured_speed(
    cpu_local_record: Callable[[dict[str, Any]], None],
) -> None:
    """With cpu-local as measured on the quiet machine, the prediction is within 1.5x of the frames/s measured on
    it (a record measured under load, its activation rate 160x lower, is what once made it 2.2: docs/perf.md)."""
    cpu_local_record(QUIET_CPU_LOCAL)
    world = catalog.world("noor-world-tiny")
    e = predict_world("noor-world-tiny", "cpu-local")
    assert e.fps is not None
    assert 1 / 1.5 < e.fps / MEASURED_WORLD_TINY_FPS < 1.5, e.fps
    assert e.flops_per_chunk["vae_decode"] > 0.3 * e.flops_per_frame  # its own decoder, not noor-tiny's
    ops = e.breakdown_s["launch_s"] / (QUIET_CPU_LOCAL["op_overhead_s"] * (e.steps + 1))
    assert ops == pytest.approx(world.dispatched_ops_per_pass)  # every pass pays the counted operators

"""Interactive world models: FLOPs per chunk counted by hand, frames/s, sessions per chip, the CLI."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from noor import catalog
from noor.catalog import WorldArch
from noor.perf import PerfError
from noor.perf.world import chunk_work, estimate_world, predict_world, sessions_per_chip

PUBLISHED = Path(__file__).parents[2] / "data" / "published" / "world_models.csv"


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

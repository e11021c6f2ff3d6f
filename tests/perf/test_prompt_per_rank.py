"""The prompt under a sequence split (#28): Ulysses and ring divide the video tokens, while the prompt is whole on
every rank (docs/parallel.md), so each rank does the prompt's own work in full; a cfg split divides it with the
branches."""

from __future__ import annotations

import pytest

from noor import catalog, perf
from noor.perf import ParallelPlan, Shape, workload


def test_the_prompts_own_work_is_its_projection_and_each_blocks_keys_and_values() -> None:
    """benchmarks/parallel.py's step (docs/parallel.md): Wan 2.1 1.3B's text embedder, 4096 -> 1536 -> 1536 on 512
    tokens x 2 branches (17.7 GFLOP), and each block's cross-attention K and V of those tokens (9.7 GFLOP)."""
    wan = catalog.model("wan2.1-t2v-1.3b").model_copy(update={"layers": 2})
    work = workload.denoise_pass(wan, Shape(256, 256, 17, 1), batch=2)
    embedder, kv = 2 * 2 * 512 * (4096 * 1536 + 1536 * 1536), 2 * 2 * 512 * 2 * 1536 * 1536
    assert round(embedder / 1e9, 1) == 17.7 and round(kv / 1e9, 1) == 9.7
    assert work.prompt_linear_flops == embedder + 2 * kv
    video_tokens = 2 * 5 * 16 * 16
    blocks = 2 * video_tokens * 2 * (4 * 1536**2 + 2 * 1536 * 8960 + 2 * 1536**2)  # self q,k,v,o, FFN, cross q,o
    assert work.linear_flops == blocks + embedder + 2 * kv
    # a joint model's text tokens go through its blocks: their share is the prompt's too; noor-tiny reads its
    # encoder's 128-wide tokens as they are (no projection), so its prompt work is the K and V only
    cog = catalog.model("cogvideox-2b")
    joint = workload.denoise_pass(cog, Shape(720, 480, 49, 50), batch=1)
    assert joint.prompt_linear_flops / joint.linear_flops > 226 / joint.tokens
    tiny = catalog.model("tiny")
    assert workload.denoise_pass(tiny, Shape(64, 64, 16, 16), 1).prompt_linear_flops == (
        2 * tiny.layers * tiny.text_tokens * 2 * tiny.hidden_size**2
    )


def test_each_rank_of_a_sequence_split_does_the_prompts_work_whole(fixed_cpu_local: None) -> None:
    """Under Ulysses or ring the prompt is whole on every rank (docs/parallel.md): each rank does the prompt's own
    linear work in full and its share of the video tokens'; a cfg split divides the prompts with the branches."""
    chip = catalog.chip("cpu-local")  # measured: linear runs at one rate whatever the rows, so seconds ~ FLOPs
    wan = catalog.model("wan2.1-t2v-1.3b").model_copy(update={"layers": 2})
    shape = Shape(256, 256, 17, 1)
    both = workload.denoise_pass(wan, shape, batch=2)  # both guidance branches: one rank's pass under ulysses/ring
    one = workload.denoise_pass(wan, shape, batch=1)  # one branch: one rank's pass under cfg=2

    def linear_s(u: int, r: int, c: int) -> float:
        plan = ParallelPlan(gpus=u * r * c, ulysses=u, ring=r, cfg=c)
        return perf.estimate(wan, shape, chip, plan).stage("denoise").detail["linear_s"]

    s_per_flop = linear_s(1, 1, 1) / both.linear_flops
    video, prompt = both.linear_flops - both.prompt_linear_flops, both.prompt_linear_flops
    assert linear_s(2, 1, 1) == pytest.approx((video / 2 + prompt) * s_per_flop)
    assert linear_s(1, 2, 1) == pytest.approx((video / 2 + prompt) * s_per_flop)
    assert linear_s(1, 1, 2) == pytest.approx(one.linear_flops * s_per_flop)
    one_video = one.linear_flops - one.prompt_linear_flops
    assert linear_s(2, 1, 2) == pytest.approx((one_video / 2 + one.prompt_linear_flops) * s_per_flop)
    # dividing the prompt's work by the ranks too (the model before #28) would be this much shorter: > 5%
    assert linear_s(2, 1, 1) / (both.linear_flops / 2 * s_per_flop) > 1.05

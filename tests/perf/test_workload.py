from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from noor import catalog
from noor.engine.tiny import backend as tiny_backend
from noor.engine.tiny.transformer import TinyVideoTransformer
from noor.perf import Shape, calibrate, workload
from tests.perf.conftest import CountOps, CountTraffic


def test_wan_720p_token_grid() -> None:
    # 81 frames -> 21 latent frames; 1280x720 / (8 VAE x 2 patch) = 80 x 45
    m = catalog.model("wan2.1-t2v-14b")
    assert workload.latent_grid(m, Shape(1280, 720, 81, 50)) == (21, 45, 80)
    assert workload.denoise_pass(m, Shape(1280, 720, 81, 50), batch=1).tokens == 21 * 45 * 80


def test_joint_attention_counts_text_tokens_in_the_sequence() -> None:
    m = catalog.model("cogvideox-5b")
    work = workload.denoise_pass(m, Shape(720, 480, 49, 50), batch=1)
    assert work.tokens == 13 * 30 * 45 + 226 and work.video_tokens == 13 * 30 * 45


def test_full_attention_grows_with_the_square_of_tokens_and_linear_layers_linearly() -> None:
    m = catalog.model("wan2.1-t2v-1.3b")
    short = workload.denoise_pass(m, Shape(832, 480, 41, 50), batch=1)  # 11 latent frames
    long = workload.denoise_pass(m, Shape(832, 480, 85, 50), batch=1)  # 22 latent frames
    assert long.attention_flops / short.attention_flops == 4.0
    assert 1.9 < long.linear_flops / short.linear_flops <= 2.0


def test_moe_runs_one_expert_per_step() -> None:
    dense, moe = catalog.model("wan2.1-i2v-14b"), catalog.model("wan2.2-i2v-a14b")
    shape = Shape(1280, 720, 81, 40)
    assert workload.denoise_pass(moe, shape, 1).linear_flops < workload.denoise_pass(dense, shape, 1).linear_flops


def test_tiny_linear_flops_match_torch_flop_counter_on_the_real_transformer() -> None:
    """Count the shipped tiny transformer's matmuls with torch and compare with the analytic count."""
    weights = Path(tiny_backend.__file__).parent / "weights" / "transformer" / "config.json"
    config = {k: v for k, v in json.loads(weights.read_text()).items() if not k.startswith("_")}
    model = TinyVideoTransformer(**config).eval()
    tiny = catalog.model("tiny")
    B, T, S = 2, 16, 64 // 4  # CFG batch of 2, 16 frames, 16x16 latents
    x = torch.randn(B, config["in_channels"], T, S, S)
    text = torch.randn(B, tiny.text_tokens, config["text_dim"])
    mask = torch.ones(B, tiny.text_tokens, dtype=torch.bool)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.zeros(B, T), text, mask)
    counted = counter.get_flop_counts()["Global"]
    matmuls = sum(v for k, v in counted.items() if "mm" in str(k) or "linear" in str(k))
    analytic = workload.denoise_pass(tiny, Shape(64, 64, 16, 16), batch=B)
    # the analytic count leaves out patch embedding, timestep MLPs and adaLN (per frame, not per token)
    assert 0.85 < analytic.linear_flops / matmuls <= 1.0


def test_vae_decode_scales_with_pixels() -> None:
    m = catalog.model("flux.1-dev")
    small = workload.vae_decode(m, Shape(512, 512, 1, 28)).flops
    big = workload.vae_decode(m, Shape(1024, 1024, 1, 28)).flops
    assert big == 4 * small


def test_unet_counts_convolutions_and_attention() -> None:
    work = workload.denoise_pass(catalog.model("sdxl"), Shape(1024, 1024, 1, 20), batch=2)
    assert work.conv_flops > 0 and work.attention_flops > 0 and work.cross_flops > 0
    # SDXL UNet forward at 1024^2 is a few TFLOPs per image (2 x ~2.6B weights x 4096+ tokens, plus convs)
    assert 3e12 < work.flops / 2 < 1.5e13


def test_a_conv_stem_and_head_count_as_torch_counts_their_convolutions() -> None:
    """noor-tiny's optional conv stem and head (transformer.py, conv_channels): analytic conv FLOPs against
    torch's count on the real module."""
    tiny = catalog.model("tiny")
    c = 24
    stem = tiny.model_copy(update={"conv_stem_channels": c})
    model = TinyVideoTransformer(in_channels=4, patch_size=4, hidden_size=64, num_layers=1, conv_channels=c).eval()
    B, T, S = 2, 16, 16
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(B, 4, T, S, S), torch.zeros(B, T), torch.randn(B, 5, 128), torch.ones(B, 5, dtype=torch.bool))
    convs = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "conv" in str(k))
    work = workload.denoise_pass(stem, Shape(64, 64, 16, 16), batch=B)
    assert work.conv_flops == convs and work.conv_channels == c
    assert workload.denoise_pass(tiny, Shape(64, 64, 16, 16), batch=B).conv_flops == 0.0


def test_the_conv_stem_adds_the_operators_the_perf_model_charges() -> None:
    text, mask = torch.randn(2, 5, 128), torch.ones(2, 5, dtype=torch.bool)
    args = (torch.randn(2, 4, 16, 16, 16), torch.zeros(2, 16), text, mask)
    counts = []
    for c in (0, 32):
        model = TinyVideoTransformer(in_channels=4, patch_size=4, num_layers=1, attention="joint", conv_channels=c)
        with torch.no_grad():
            model(*args)  # warm: the rotary table is cached per grid
            with CountOps() as counter:
                model(*args)
        counts.append(counter.ops)
    assert counts[1] - counts[0] == workload.CONV_STEM_OPS


@pytest.fixture(scope="module")
def wan_block_traffic() -> tuple[CountTraffic, int]:
    """One eager bf16 forward of diffusers' WanTransformerBlock at Wan 14B's ratios (ffn 2.7x hidden, head 128),
    counted: (the counter, tokens x hidden x 2 bytes — one activation pass)."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformerBlock

    torch.manual_seed(0)
    dim, ffn, heads = 256, 692, 2
    block = WanTransformerBlock(dim, ffn, heads, cross_attn_norm=True).eval().to(torch.bfloat16)
    t, h, w = 4, 16, 16  # 1024 tokens against 32 prompt tokens: the context's share is small, as at 720p
    x = torch.randn(1, t * h * w, dim, dtype=torch.bfloat16)
    ctx = torch.randn(1, 32, dim, dtype=torch.bfloat16)
    temb = torch.randn(1, 6, dim, dtype=torch.bfloat16)
    rotary = WanRotaryPosEmbed(dim // heads, (1, 2, 2), 1024)(torch.zeros(1, 16, t, 2 * h, 2 * w))
    with torch.no_grad():
        block(x, ctx, temb, rotary)  # warm
        with CountTraffic() as counter:
            block(x, ctx, temb, rotary)
    return counter, t * h * w * dim * 2


def test_kernels_per_block_is_what_a_wan_block_launches(wan_block_traffic: tuple[CountTraffic, int]) -> None:
    counter, _ = wan_block_traffic
    assert counter.kernels == workload.KERNELS_PER_BLOCK


def test_dispatched_ops_per_block_is_within_a_tenth_of_a_wan_blocks(
    wan_block_traffic: tuple[CountTraffic, int],
) -> None:
    """140 is charged per block on a CPU (views included); a Wan block dispatches 151 with diffusers 0.42."""
    counter, _ = wan_block_traffic
    assert abs(counter.ops - workload.DISPATCHED_OPS_PER_BLOCK) <= 0.1 * counter.ops


def test_the_activation_pass_bound_is_what_a_wan_block_moves(wan_block_traffic: tuple[CountTraffic, int]) -> None:
    """The fit's elementwise traffic per block is bounded by the count (calibrate.ACTIVATION_PASSES_COUNTED)."""
    counter, one_pass = wan_block_traffic
    assert counter.elementwise_bytes / one_pass == pytest.approx(calibrate.ACTIVATION_PASSES_COUNTED, rel=0.05)

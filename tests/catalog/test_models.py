from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from pydantic import ValidationError
from torch.utils.flop_counter import FlopCounterMode

from noor import catalog
from noor.engine.tiny import backend as tiny_backend
from noor.perf import Shape, workload

REQUIRED = [
    "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-i2v-14b", "wan2.1-flf2v-14b", "wan2.2-t2v-a14b",
    "wan2.2-i2v-a14b", "wan2.2-ti2v-5b", "hunyuanvideo", "hunyuanvideo-1.5", "ltx-video-2b", "cogvideox-2b",
    "cogvideox-5b", "cogvideox-5b-i2v", "mochi-1", "open-sora-2.0", "step-video-t2v", "sana-1600m", "flux.1-dev",
    "flux.1-schnell", "sdxl", "sd3.5-large", "sd3.5-medium", "tiny", "wan2.1-vace-1.3b", "wan2.1-vace-14b",
]  # fmt: skip
WEIGHTS = Path(tiny_backend.__file__).parent / "weights"


def test_every_required_model_is_in_the_catalog() -> None:
    assert set(REQUIRED) <= set(catalog.model_ids())


def test_every_model_cites_its_sources() -> None:
    for m in catalog.models().values():
        assert m.sources["transformer"] and m.sources["defaults"], m.id
        assert m.vae.source and all(e.source for e in m.text_encoders), m.id


@pytest.mark.parametrize("model_id", [m for m in REQUIRED if m not in ("sdxl", "tiny")])
def test_layer_shapes_account_for_the_published_parameter_count(model_id: str) -> None:
    """Weights per block from (hidden, FFN, cross-attention) times layers ~ the published size: catches typos.
    The count leaves out adaLN modulation tables and embedders (no per-token FLOPs; up to ~45% of Mochi), so
    the band is wide; a wrong hidden size is off by 2-4x."""
    m = catalog.model(model_id)
    d = m.hidden_size
    per_block = 4 * d * d + m.ffn_matrices * d * m.ffn_size + (4 * d * d if m.cross_attention else 0)
    # MM-DiT double-stream blocks hold text weights too; each VACE block holds a main block's
    stream_copies = m.layers + m.double_stream_layers + len(m.vace_layers)
    computed = per_block * stream_copies * m.experts_total
    assert 0.5 < computed / (m.params_b * 1e9) < 1.45, (model_id, computed / 1e9)


def test_tiny_matches_the_shipped_configs() -> None:
    tiny = catalog.model("tiny")
    transformer = json.loads((WEIGHTS / "transformer" / "config.json").read_text())
    vae = json.loads((WEIGHTS / "vae" / "config.json").read_text())
    text = json.loads((WEIGHTS / "text_encoder" / "config.json").read_text())
    assert tiny.hidden_size == transformer["hidden_size"]
    assert tiny.layers == transformer["num_layers"]
    assert tiny.heads == transformer["num_heads"]
    assert tiny.ffn_size == transformer["mlp_ratio"] * transformer["hidden_size"]
    assert tiny.patch[1:] == (transformer["patch_size"], transformer["patch_size"])
    assert tiny.vae.latent_channels == vae["latent_channels"] == transformer["in_channels"]
    assert tiny.vae.spatial == 2 ** (len(vae["block_out_channels"]) - 1)
    assert [row[0] for row in tiny.vae.decoder] == vae["block_out_channels"]
    assert tiny.text_tokens == text["max_length"]
    assert tiny.text_encoders[0].layers == text["num_layers"]
    assert (tiny.default_width, tiny.default_frames, tiny.default_steps) == (
        tiny_backend.NATIVE_SIZE,
        tiny_backend.NATIVE_FRAMES,
        tiny_backend.DEFAULT_STEPS,
    )
    # how it samples: the first frame as an image (guided at every step), the clip guided inside its interval
    index = json.loads((WEIGHTS / "model_index.json").read_text())
    assert tiny.first_frame_stage == index["image_first"]
    assert tiny.image_guidance_passes == (2 if tiny_backend.DEFAULT_GUIDANCE != 1 else 1)
    assert tiny.guidance_passes == (2 if index["clip_guidance_scale"] != 1 else 1)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(WEIGHTS / "scheduler")
    scheduler.set_timesteps(tiny.default_steps)
    sigmas = scheduler.sigmas[: tiny.default_steps]
    share = float((sigmas >= index["clip_guidance_min_sigma"]).float().mean())
    assert tiny.guided_step_share == pytest.approx(share)


def test_unknown_model_lists_the_valid_ids() -> None:
    with pytest.raises(catalog.UnknownId) as err:
        catalog.model("wan9")
    assert "unknown model 'wan9'" in str(err.value) and "wan2.1-t2v-14b" in str(err.value)


def test_causal_vae_keeps_the_first_frame() -> None:
    vae = catalog.model("wan2.1-t2v-14b").vae
    assert [vae.latent_frames(f) for f in (1, 5, 81)] == [1, 2, 21]


# Wan VACE: each entry and the T2V entry of its size (the same DiT, without the VACE blocks)
VACE = [("wan2.1-vace-1.3b", "wan2.1-t2v-1.3b"), ("wan2.1-vace-14b", "wan2.1-t2v-14b")]
SAME_DIT = ("layers", "hidden_size", "heads", "ffn_size", "ffn_matrices", "patch", "cross_attention", "text_tokens")


@pytest.mark.parametrize(("vace_id", "t2v_id"), VACE)
def test_vace_costs_its_t2v_plus_the_vace_blocks_share(vace_id: str, t2v_id: str) -> None:
    """A VACE pass is the T2V pass with len(vace_layers) more blocks over as many tokens (layers' worth of blocks
    cost the T2V pass less its prompt projection, which runs once), plus VACE's patch embedding of the 96-channel
    control video and its hint projections (proj_out on every VACE block, proj_in on the first), counted by hand."""
    vace, t2v = catalog.model(vace_id), catalog.model(t2v_id)
    assert {f: getattr(vace, f) for f in SAME_DIT} == {f: getattr(t2v, f) for f in SAME_DIT}
    shape = Shape(vace.default_width, vace.default_height, vace.default_frames, vace.default_steps)
    with_vace, without = workload.denoise_pass(vace, shape, batch=2), workload.denoise_pass(t2v, shape, batch=2)
    blocks = without.flops - workload.text_projection_flops(t2v, batch=2)
    share = len(vace.vace_layers) / vace.layers  # 15/30 (1.3B), 8/40 (14B)
    t, h, w = workload.latent_grid(vace, shape)
    d, n = vace.hidden_size, len(vace.vace_layers)
    hints = 2.0 * 2 * t * h * w * (vace.vace_in_channels * 1 * 2 * 2 + (n + 1) * d) * d
    assert with_vace.flops == pytest.approx(without.flops + blocks * share + hints, rel=1e-12)
    assert with_vace.layers == vace.layers + n and with_vace.video_tokens == without.video_tokens
    # what it comes to: +50.9% a pass for the 1.3B at 832x480x81, +20.6% for the 14B at 1280x720x81
    assert with_vace.flops / without.flops == pytest.approx({15: 1.5089, 8: 1.2055}[n], abs=1e-4)


def test_vace_blocks_count_what_torch_counts_on_diffusers_vace_transformer() -> None:
    """The VACE blocks' FLOPs as torch's FlopCounterMode counts them: a toy WanVACETransformer3DModel less the
    WanTransformer3DModel of the same config, against the same difference in the perf model (attention through
    the math kernel, whose matmuls the counter sees)."""
    from diffusers import WanTransformer3DModel, WanVACETransformer3DModel
    from torch.nn.attention import SDPBackend, sdpa_kernel

    config = {
        "patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 16,
        "out_channels": 16, "text_dim": 32, "freq_dim": 32, "ffn_dim": 48, "num_layers": 4, "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 64,
    }  # fmt: skip
    vace_layers, channels = [0, 2], 96
    torch.manual_seed(0)
    latents = torch.randn(2, 16, 3, 8, 8)  # (B, C, latent frames, h, w): 9 frames of 64x64 through Wan's VAE
    prompt = torch.randn(2, 8, config["text_dim"])  # (B, text tokens, text_dim)
    control = torch.randn(2, channels, 3, 8, 8)  # (B, vace_in_channels, latent frames, h, w)

    def count(model: torch.nn.Module, **extra: torch.Tensor) -> int:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model.eval()(latents, torch.tensor([500, 500]), prompt, **extra)
        return int(counter.get_total_flops())

    measured = count(WanVACETransformer3DModel(**config, vace_layers=vace_layers, vace_in_channels=channels),
                     control_hidden_states=control) - count(WanTransformer3DModel(**config))  # fmt: skip
    toy = {"hidden_size": 32, "heads": 2, "ffn_size": 48, "layers": 4, "text_tokens": 8}
    t2v = catalog.model("wan2.1-t2v-1.3b").model_copy(update=toy)
    vace = catalog.model("wan2.1-vace-1.3b").model_copy(update=toy | {"vace_layers": tuple(vace_layers)})
    shape = Shape(64, 64, 9, 1)
    predicted = workload.denoise_pass(vace, shape, batch=2).flops - workload.denoise_pass(t2v, shape, batch=2).flops
    assert predicted == measured > 0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"vace_layers": [0, 2]}, "vace_in_channels 0"),
        ({"vace_in_channels": 96}, "vace_layers []"),
        ({"vace_layers": [2, 4], "vace_in_channels": 96}, "got [2, 4]"),
        ({"vace_layers": [0, 4, 4], "vace_in_channels": 96}, "got [0, 4, 4]"),
        ({"vace_layers": [0, 30], "vace_in_channels": 96}, "below layers 30; got [0, 30]"),
    ],
)
def test_bad_vace_fields_are_refused_naming_the_field_and_value(change: dict[str, object], words: str) -> None:
    fields = catalog.model("wan2.1-t2v-1.3b").model_dump() | change
    with pytest.raises(ValidationError, match=re.escape(words)):
        catalog.ModelArch(**fields)

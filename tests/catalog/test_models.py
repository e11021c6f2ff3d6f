from __future__ import annotations

import json
from pathlib import Path

import pytest
from diffusers import FlowMatchEulerDiscreteScheduler

from noor import catalog
from noor.engine.tiny import backend as tiny_backend

REQUIRED = [
    "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-i2v-14b", "wan2.1-flf2v-14b", "wan2.2-t2v-a14b",
    "wan2.2-i2v-a14b", "wan2.2-ti2v-5b", "hunyuanvideo", "hunyuanvideo-1.5", "ltx-video-2b", "cogvideox-2b",
    "cogvideox-5b", "cogvideox-5b-i2v", "mochi-1", "open-sora-2.0", "step-video-t2v", "sana-1600m", "flux.1-dev",
    "flux.1-schnell", "sdxl", "sd3.5-large", "sd3.5-medium", "tiny",
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
    stream_copies = m.layers + m.double_stream_layers  # MM-DiT double-stream blocks hold text weights too
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

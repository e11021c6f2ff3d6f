"""Each family's real diffusers and transformers classes at toy size, random weights, saved in HF layout.

Nothing comes from the Hub: tokenizers are built here from a small vocabulary (the text is noise to a
random model anyway; what matters is that the real tokenizer classes load and run).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

WORDS = [
    "a",
    "the",
    "red",
    "blue",
    "green",
    "circle",
    "square",
    "moves",
    "left",
    "right",
    "up",
    "down",
    "slowly",
    "dance",
    "monkey",
    "cat",
    "of",
    "in",
    "on",
]
CHARS = [c for c in string.printable if c.strip()]
# Each toy's size and length, in the model's own multiples (see families.Geometry), and its family.
SHAPES: dict[str, tuple[int, int, int]] = {}  # family -> (width, height, frames)


def t5_tokenizer(max_length: int | None = None) -> Any:
    """A T5 tokenizer of the toy vocabulary; `max_length`: the prompt's tokens at most (the audio pipelines
    truncate to it: unset, the fast tokenizer cannot)."""
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", *("▁" + w for w in WORDS), "▁", *CHARS]
    tokenizer = T5Tokenizer(vocab=[(p, 0.0) for p in pieces], extra_ids=0)
    if max_length is not None:
        tokenizer.model_max_length = max_length
    return tokenizer


def _bpe_vocab(specials: list[str], end_of_word: str = "") -> dict[str, int]:
    vocab = {s: i for i, s in enumerate(specials)}
    for c in [*CHARS, "Ġ", "▁"]:
        vocab.setdefault(c, len(vocab))
        if end_of_word:
            vocab.setdefault(c + end_of_word, len(vocab))
    return vocab


def clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    vocab = _bpe_vocab(["<|startoftext|>", "<|endoftext|>"], "</w>")
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def llama_tokenizer() -> Any:
    from transformers import LlamaTokenizer

    return LlamaTokenizer(vocab=_bpe_vocab(["<unk>", "<s>", "</s>", "<pad>"]), merges=[], pad_token="<pad>")


def qwen_tokenizer() -> Any:
    from transformers import Qwen2Tokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Qwen2Tokenizer(vocab=_bpe_vocab(specials), merges=[])
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}{{ c['text'] }}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


def t5_encoder(d_model: int = 32, vocab: int = 256, umt5: bool = False) -> Any:
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config = (UMT5Config if umt5 else T5Config)(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        is_encoder_decoder=False,
        use_cache=False,
    )
    return (UMT5EncoderModel if umt5 else T5EncoderModel)(config)


def clip_text(hidden: int = 32, projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=256,
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        max_position_embeddings=77,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def wan_vae(five_b: bool = False) -> Any:
    from diffusers import AutoencoderKLWan

    if five_b:  # Wan 2.2's VAE: 48 latent channels, 16x spatial, residual, 2x2 patchify
        return AutoencoderKLWan(
            base_dim=3,
            z_dim=48,
            in_channels=12,
            out_channels=12,
            is_residual=True,
            patch_size=2,
            latents_mean=[0.0] * 48,
            latents_std=[1.0] * 48,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            scale_factor_spatial=16,
            scale_factor_temporal=4,
            temperal_downsample=[False, True, True],
        )
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


def wan_transformer(
    in_channels: int = 16, out_channels: int = 16, image_dim: int | None = None, pos_embed_seq_len: int | None = None
) -> Any:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=128,  # patches per side: 540p needs 34
        image_dim=image_dim,
        pos_embed_seq_len=pos_embed_seq_len,
    )


def wan(variant: str) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanPipeline

    common = {
        "tokenizer": t5_tokenizer(),
        "text_encoder": t5_encoder(umt5=True),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }
    if variant == "t2v":
        return WanPipeline(transformer=wan_transformer(), vae=wan_vae(), **common)
    if variant == "ti2v":
        return WanPipeline(
            transformer=wan_transformer(48, 48), vae=wan_vae(five_b=True), expand_timesteps=True, **common
        )
    if variant == "t2v-a14b":
        return WanPipeline(
            transformer=wan_transformer(),
            transformer_2=wan_transformer(),
            vae=wan_vae(),
            boundary_ratio=0.875,
            **common,
        )
    if variant == "i2v-a14b":
        return WanImageToVideoPipeline(
            transformer=wan_transformer(36),
            transformer_2=wan_transformer(36),
            vae=wan_vae(),
            boundary_ratio=0.9,
            **common,
        )
    # Wan 2.1 I2V and FLF2V: a CLIP vision encoder embeds the keyframe(s); FLF2V's transformer reads both
    # frames' tokens as one sequence with a learnt position embedding (2 x (8x8 patches + CLS) tokens here)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    vision = CLIPVisionConfig(
        hidden_size=4,
        projection_dim=4,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        intermediate_size=16,
        patch_size=4,
    )
    return WanImageToVideoPipeline(
        transformer=wan_transformer(36, image_dim=4, pos_embed_seq_len=2 * 65 if variant == "flf2v" else None),
        vae=wan_vae(),
        image_encoder=CLIPVisionModel(vision),
        image_processor=CLIPImageProcessor(crop_size=32, size=32),
        **common,
    )


def wan_vace() -> Any:
    """Wan 2.1 VACE: the T2V toy's transformer with VACE context blocks at both layers; the context is the video's
    inactive and reactive latents (2 x 16 channels) and its mask at 8x8 pixels a latent (64): 96 channels."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel

    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=128, vace_layers=[0, 1], vace_in_channels=96,
    )  # fmt: skip
    return WanVACEPipeline(
        transformer=transformer,
        vae=wan_vae(),
        tokenizer=t5_tokenizer(),
        text_encoder=t5_encoder(umt5=True),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )


def ltx() -> Any:
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=2,  # First Block Cache needs two blocks or more
        caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        timestep_conditioning=False,
        patch_size=4,  # as the real VAE: 4x4 pixels per latent before the scaling blocks (16x in all)
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    return LTXPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=t5_encoder(),
        tokenizer=t5_tokenizer(),
    )


def hunyuanvideo() -> Any:
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import LlamaConfig, LlamaModel

    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
    )
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        act_fn="silu",
        norm_num_groups=4,
        scaling_factor=0.476986,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )
    llama = LlamaConfig(
        vocab_size=256,
        hidden_size=16,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=3,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        hidden_act="gelu",
    )
    return HunyuanVideoPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder=LlamaModel(llama),
        tokenizer=llama_tokenizer(),
        text_encoder_2=clip_text(8),
        tokenizer_2=clip_tokenizer(),
    )


def hunyuanvideo15(i2v: bool = False) -> Any:
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15ImageToVideoPipeline,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from diffusers.guiders import ClassifierFreeGuidance
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,  # First Block Cache needs two blocks or more
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        text_embed_2_dim=8,
        image_embed_dim=12,
        rope_axes_dim=(2, 2, 4),
        target_size=16,  # the I2V pipeline draws ~16x16 pixels at the start frame's aspect ratio
        task_type="i2v" if i2v else "t2v",
    )
    vae = AutoencoderKLHunyuanVideo15(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16, 16, 16),
        layers_per_block=1,
        spatial_compression_ratio=4,
        temporal_compression_ratio=2,
        scaling_factor=0.476986,
    )
    qwen = Qwen2_5_VLTextConfig(
        vocab_size=256,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=2,
        bos_token_id=0,
        eos_token_id=2,
        rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1e4},
    )
    parts = {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": Qwen2_5_VLTextModel(qwen),
        "tokenizer": qwen_tokenizer(),
        "text_encoder_2": t5_encoder(8, 384),
        "tokenizer_2": ByT5Tokenizer(),
        "guider": ClassifierFreeGuidance(guidance_scale=1.0),
    }
    if not i2v:
        return HunyuanVideo15Pipeline(**parts)
    # a SigLIP vision tower as wide as the transformer's image_embed_dim embeds the start frame
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    vision = SiglipVisionConfig(
        hidden_size=12, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8
    )
    return HunyuanVideo15ImageToVideoPipeline(
        **parts,
        image_encoder=SiglipVisionModel(vision),
        feature_extractor=SiglipImageProcessor(size={"height": 16, "width": 16}),
    )


def cogvideox(i2v: bool = False) -> Any:
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=8 if i2v else 4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=2,  # First Block Cache needs two blocks or more
        sample_width=2,
        sample_height=2,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=226,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    cls = CogVideoXImageToVideoPipeline if i2v else CogVideoXPipeline
    return cls(
        transformer=transformer,
        vae=vae,
        scheduler=CogVideoXDDIMScheduler(),
        text_encoder=t5_encoder(),
        tokenizer=t5_tokenizer(),
    )


def image_vae(latent_channels: int) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 4, 4, 4),  # 8x, as the real ones: few tokens even at 540p
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )


def flux() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    return FluxPipeline(
        transformer=transformer,
        vae=image_vae(1),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=clip_text(),
        tokenizer=clip_tokenizer(),
        text_encoder_2=t5_encoder(),
        tokenizer_2=t5_tokenizer(),
    )


def sd3(channels: int = 4) -> Any:
    """`channels`: latent channels; the inpainting pipeline takes only the real model's 16 (test_edits.py)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=channels,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=channels,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        vae=image_vae(channels),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=clip_text(projection=True),
        tokenizer=clip_tokenizer(),
        text_encoder_2=clip_text(projection=True),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5_encoder(),
        tokenizer_3=t5_tokenizer(),
    )


# family -> (builder, toy width, height, frames): sizes in each toy's multiples, frames t*k+1
TOYS: dict[str, tuple[Callable[[], Any], int, int, int]] = {
    "wan2.1-t2v": (lambda: wan("t2v"), 32, 32, 5),
    "wan2.1-i2v": (lambda: wan("i2v"), 32, 32, 5),
    "wan2.1-flf2v": (lambda: wan("flf2v"), 32, 32, 5),
    "wan2.2-ti2v": (lambda: wan("ti2v"), 64, 32, 5),
    "wan2.2-t2v-a14b": (lambda: wan("t2v-a14b"), 32, 32, 5),
    "wan2.2-i2v-a14b": (lambda: wan("i2v-a14b"), 32, 32, 5),
    "ltx-video": (ltx, 32, 32, 9),
    "hunyuanvideo": (hunyuanvideo, 32, 32, 5),
    "hunyuanvideo-1.5": (hunyuanvideo15, 16, 16, 5),
    "hunyuanvideo-1.5-i2v": (lambda: hunyuanvideo15(i2v=True), 16, 16, 5),
    "cogvideox": (cogvideox, 32, 32, 9),
    "cogvideox-i2v": (lambda: cogvideox(i2v=True), 32, 32, 9),
    "flux.1-dev": (flux, 32, 32, 1),
    "flux.1-schnell": (flux, 32, 32, 1),
    "sd3.5": (sd3, 32, 32, 1),
}


def stable_audio() -> Any:
    """Stable Audio Open at toy size: stereo at 8 kHz (the lowest rate AAC takes), a hop of 64 samples per latent
    and 256 latents, so it makes up to 2.048 s."""
    from diffusers import AutoencoderOobleck, EDMDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel

    from noor.engine.diffusers.audio import quiet_deprecations

    text_encoder = t5_encoder()
    with quiet_deprecations():
        vae = AutoencoderOobleck(
            encoder_hidden_size=6,
            downsampling_ratios=[2, 4, 8],
            decoder_channels=3,
            decoder_input_channels=3,
            audio_channels=2,
            channel_multiples=[1, 2, 2],
            sampling_rate=8000,
        )
    return StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=StableAudioProjectionModel(
            text_encoder_dim=text_encoder.config.d_model, conditioning_dim=4, min_value=0, max_value=32
        ),
        tokenizer=t5_tokenizer(max_length=16),  # the real one: 128 (T5-base)
        transformer=StableAudioDiTModel(
            sample_size=256,
            in_channels=3,
            num_layers=2,
            attention_head_dim=4,
            num_attention_heads=2,
            num_key_value_attention_heads=2,
            out_channels=3,
            cross_attention_dim=8,
            time_proj_dim=8,
            global_states_input_dim=8,
            cross_attention_input_dim=4,
        ),
        scheduler=EDMDPMSolverMultistepScheduler(
            solver_order=2, prediction_type="v_prediction", sigma_data=1.0, sigma_schedule="exponential"
        ),
    )


def audioldm2() -> Any:
    """AudioLDM 2 at toy size: CLAP, T5, GPT-2, a mel UNet and a HiFi-GAN vocoder at 16 kHz with a hop of 64
    samples (the release: 160), so the UNet attends over few mel frames; 256 latent rows of 2 mel frames each make
    its trained length 2.048 s."""
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        RobertaTokenizer,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
    )

    clap_text = ClapTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=8,
        intermediate_size=16,
        num_attention_heads=2,
        num_hidden_layers=1,
        vocab_size=256,
        projection_dim=8,
    )
    clap_audio = ClapAudioConfig(
        spec_size=64,
        window_size=4,
        num_mel_bins=64,
        intermediate_size=16,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        num_hidden_layers=1,
        hidden_size=16,
        projection_dim=8,
        patch_size=2,
        patch_stride=2,
        patch_embed_input_channels=4,
    )
    language_model = GPT2LMHeadModel(
        GPT2Config(n_embd=8, n_head=2, n_layer=1, vocab_size=256, n_positions=99, bos_token_id=0, eos_token_id=2)
    )
    language_model.config.max_new_tokens = 4  # the release: 8
    return AudioLDM2Pipeline(
        vae=AutoencoderKL(
            block_out_channels=[8, 16],
            norm_num_groups=8,
            in_channels=1,
            out_channels=1,
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            latent_channels=4,
        ),
        text_encoder=ClapModel(
            ClapConfig(text_config=clap_text.to_dict(), audio_config=clap_audio.to_dict(), projection_dim=8)
        ),
        text_encoder_2=t5_encoder(d_model=32),
        projection_model=AudioLDM2ProjectionModel(text_encoder_dim=8, text_encoder_1_dim=32, langauge_model_dim=8),
        language_model=language_model,
        tokenizer=RobertaTokenizer(
            vocab=_bpe_vocab(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]), merges=[], model_max_length=16
        ),
        tokenizer_2=t5_tokenizer(max_length=16),
        feature_extractor=ClapFeatureExtractor(),  # the release's: 48 kHz, 64 mel bins (it scores several waveforms)
        unet=AudioLDM2UNet2DConditionModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=256,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            # a self-attention, then cross-attention to GPT-2's (8) and T5's (32) states, as the release
            cross_attention_dim=([None, 8, 32], [None, 8, 32]),
        ),
        scheduler=DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
        ),
        vocoder=SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                model_in_dim=8,
                sampling_rate=16000,
                upsample_initial_channel=16,
                upsample_rates=[8, 8],
                upsample_kernel_sizes=[16, 16],
                resblock_kernel_sizes=[3],
                resblock_dilation_sizes=[[1, 3]],
                normalize_before=False,
            )
        ),
    )


# Audio families' toys (noor.engine.diffusers.audio), apart from TOYS: they make sound, not frames.
AUDIO_TOYS: dict[str, Callable[[], Any]] = {"stable-audio-open": stable_audio, "audioldm2": audioldm2}


def build(family: str, out: Path) -> Path:
    """Build a family's toy pipeline with fixed seeds and save it (safetensors) to `out`."""
    torch.manual_seed(0)
    pipe = AUDIO_TOYS[family]() if family in AUDIO_TOYS else TOYS[family][0]()
    pipe.save_pretrained(out, safe_serialization=True)
    return out


# Families whose toys are the same weights (schnell is FLUX.1's architecture).
SAME_WEIGHTS = {"flux.1-schnell": "flux.1-dev"}


def toy_dir(factory: Any, family: str) -> Path:
    """The family's toy, built once per test session (whichever test module asks first)."""
    key = SAME_WEIGHTS.get(family, family)
    out = factory.getbasetemp() / "toys" / key
    if not (out / "model_index.json").is_file():
        build(key, out)
    return out


def register_args(family: str, path: Path, model_id: str | None = None) -> list[str]:
    """`noor models add` arguments for a toy: float32, its toy size and length, 2 steps."""
    _, width, height, frames = TOYS[family]
    return [
        "models", "add", model_id or f"toy-{family}", "--path", str(path), "--family", family, "--dtype", "float32",
        "--size", f"{width}x{height}", "--frames", str(frames), "--fps", "8", "--steps", "2",
    ]  # fmt: skip

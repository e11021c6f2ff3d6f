"""Each open family's training objective: how its transformer is conditioned and what it predicts, for a rectified
flow (`x_sigma = (1 - sigma) * x_0 + sigma * noise`, the target the velocity `noise - x_0`), and the noise levels its
own scheduler visits. What `noor train lora` trains against (`engine.diffusers.lora`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from noor.engine.diffusers.lora import LoraTrainConfig

# each family's objective -----------------------------------------------------------------------------------


Grid = tuple[int, int, int]  # latent (frames, height, width)
Cond = dict[str, torch.Tensor]  # the transformer's text-conditioning arguments, by name


@dataclass
class Latents:
    """The VAE's posterior of every example, normalised as the pipeline's transformer sees latents, in its token
    layout where it packs them (LTX, FLUX): mean and std (N, ...), and the latent grid (frames, height, width)."""

    mean: torch.Tensor
    std: torch.Tensor
    grid: Grid


class Objective:
    """How one family's transformer is conditioned: text embeddings, latents, and one velocity prediction."""

    def encode_text(self, pipe: Any, captions: list[str], max_length: int, device: Any) -> Cond:
        raise NotImplementedError

    def encode_media(self, pipe: Any, pixels: torch.Tensor) -> Latents:
        raise NotImplementedError

    def predict(
        self, pipe: Any, model: Any, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, grid: Grid, cfg: LoraTrainConfig
    ) -> torch.Tensor:
        raise NotImplementedError

    def tokens(self, latents: Latents) -> int:
        """Image tokens per example: the sequence length a dynamic-shift scheduler sets its shift from."""
        f, h, w = latents.grid
        return f * h * w


def _posterior(vae: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    return dist.mean.float(), dist.std.float()


class WanObjective(Objective):
    def encode_text(self, pipe: Any, captions: list[str], max_length: int, device: Any) -> Cond:
        embeds, _ = pipe.encode_prompt(
            captions, do_classifier_free_guidance=False, max_sequence_length=max_length, device=device
        )
        return {"encoder_hidden_states": embeds}

    def encode_media(self, pipe: Any, pixels: torch.Tensor) -> Latents:
        mean, std = _posterior(pipe.vae, pixels)  # (N, z, f, h, w)
        z = pipe.vae.config.z_dim
        # the inverse of WanPipeline's decode: latents / (1 / std) + mean
        shift = torch.tensor(pipe.vae.config.latents_mean).view(1, z, 1, 1, 1)
        scale = torch.tensor(pipe.vae.config.latents_std).view(1, z, 1, 1, 1)
        _, _, f, h, w = mean.shape
        return Latents((mean - shift) / scale, std / scale, (f, h, w))

    def predict(
        self, pipe: Any, model: Any, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, grid: Grid, cfg: LoraTrainConfig
    ) -> torch.Tensor:
        timestep = sigma * 1000.0  # (B,)
        if pipe.config.expand_timesteps:  # Wan 2.2 TI2V: a timestep per token (all equal in text-to-video)
            p = pipe.transformer.config.patch_size
            tokens = x.shape[2] // p[0] * (x.shape[3] // p[1]) * (x.shape[4] // p[2])
            timestep = timestep[:, None].expand(-1, tokens)  # (B, tokens)
        return model(hidden_states=x, timestep=timestep, return_dict=False, **cond)[0]


class LTXObjective(Objective):
    def encode_text(self, pipe: Any, captions: list[str], max_length: int, device: Any) -> Cond:
        embeds, mask, _, _ = pipe.encode_prompt(
            captions, do_classifier_free_guidance=False, max_sequence_length=max_length, device=device
        )
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}

    def encode_media(self, pipe: Any, pixels: torch.Tensor) -> Latents:
        mean, std = _posterior(pipe.vae, pixels)  # (N, C, f, h, w)
        _, _, f, h, w = mean.shape
        # as LTXPipeline's decode undoes it: (x - mean) * scaling_factor / std, then packed into tokens
        scale = pipe.vae.config.scaling_factor / pipe.vae.latents_std.view(1, -1, 1, 1, 1).float()
        mean = (mean - pipe.vae.latents_mean.view(1, -1, 1, 1, 1).float()) * scale
        p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        return Latents(pipe._pack_latents(mean, p, pt), pipe._pack_latents(std * scale, p, pt), (f, h, w))

    def predict(
        self, pipe: Any, model: Any, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, grid: Grid, cfg: LoraTrainConfig
    ) -> torch.Tensor:
        f, h, w = grid
        return model(
            hidden_states=x,
            encoder_hidden_states=cond["encoder_hidden_states"],
            encoder_attention_mask=cond["encoder_attention_mask"],
            timestep=sigma * 1000.0,
            num_frames=f,
            height=h,
            width=w,
            # as LTXPipeline: the rotary positions in seconds and pixels
            rope_interpolation_scale=(
                pipe.vae_temporal_compression_ratio / cfg.fps,
                pipe.vae_spatial_compression_ratio,
                pipe.vae_spatial_compression_ratio,
            ),
            return_dict=False,
        )[0]


class HunyuanVideoObjective(Objective):
    def encode_text(self, pipe: Any, captions: list[str], max_length: int, device: Any) -> Cond:
        embeds, pooled, mask = pipe.encode_prompt(
            prompt=captions, prompt_2=None, device=device, max_sequence_length=max_length
        )
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask, "pooled_projections": pooled}

    def encode_media(self, pipe: Any, pixels: torch.Tensor) -> Latents:
        mean, std = _posterior(pipe.vae, pixels)
        scale = pipe.vae.config.scaling_factor
        _, _, f, h, w = mean.shape
        return Latents(mean * scale, std * scale, (f, h, w))

    def predict(
        self, pipe: Any, model: Any, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, grid: Grid, cfg: LoraTrainConfig
    ) -> torch.Tensor:
        # the embedded guidance the pipeline passes at sampling time (guidance_scale * 1000): trained at the same
        guidance = torch.full((len(x),), float(cfg.guidance or 0.0) * 1000.0, dtype=x.dtype, device=x.device)
        return model(hidden_states=x, timestep=sigma * 1000.0, guidance=guidance, return_dict=False, **cond)[0]


class FluxObjective(Objective):
    def encode_text(self, pipe: Any, captions: list[str], max_length: int, device: Any) -> Cond:
        embeds, pooled, _ = pipe.encode_prompt(
            prompt=captions, prompt_2=None, device=device, max_sequence_length=max_length
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def encode_media(self, pipe: Any, pixels: torch.Tensor) -> Latents:
        mean, std = _posterior(pipe.vae, pixels)  # (N, C, h, w)
        shift, scale = pipe.vae.config.shift_factor, pipe.vae.config.scaling_factor
        n, c, h, w = mean.shape
        mean, std = (mean - shift) * scale, std * scale
        # 2x2 latents a token, as FluxPipeline packs them: (N, h/2 * w/2, 4C)
        return Latents(pipe._pack_latents(mean, n, c, h, w), pipe._pack_latents(std, n, c, h, w), (1, h // 2, w // 2))

    def predict(
        self, pipe: Any, model: Any, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, grid: Grid, cfg: LoraTrainConfig
    ) -> torch.Tensor:
        _, h, w = grid
        embeds = cond["encoder_hidden_states"]
        guidance = None
        if pipe.transformer.config.guidance_embeds:  # FLUX.1 [dev] is guidance-distilled
            guidance = torch.full((len(x),), float(cfg.guidance or 0.0), device=x.device)
        return model(
            hidden_states=x,
            timestep=sigma,  # FluxPipeline passes timestep / 1000
            guidance=guidance,
            pooled_projections=cond["pooled_projections"],
            encoder_hidden_states=embeds,
            txt_ids=torch.zeros(embeds.shape[1], 3, device=x.device, dtype=embeds.dtype),
            img_ids=pipe._prepare_latent_image_ids(len(x), h, w, x.device, embeds.dtype),
            return_dict=False,
        )[0]


class SD3Objective(Objective):
    def encode_text(self, pipe: Any, captions: list[str], max_length: int, device: Any) -> Cond:
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=captions, prompt_2=None, prompt_3=None, do_classifier_free_guidance=False, device=device,
            max_sequence_length=max_length,
        )  # fmt: skip
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def encode_media(self, pipe: Any, pixels: torch.Tensor) -> Latents:
        mean, std = _posterior(pipe.vae, pixels)
        shift, scale = pipe.vae.config.shift_factor or 0.0, pipe.vae.config.scaling_factor
        _, _, h, w = mean.shape
        return Latents((mean - shift) * scale, std * scale, (1, h, w))

    def predict(
        self, pipe: Any, model: Any, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, grid: Grid, cfg: LoraTrainConfig
    ) -> torch.Tensor:
        return model(hidden_states=x, timestep=sigma * 1000.0, return_dict=False, **cond)[0]


# family -> its objective. Left out: the image-to-video families (their transformers also take the keyframe), Wan
# 2.2 A14B (two experts split by noise level), CogVideoX (v-prediction on a DDIM schedule, not a rectified flow)
# and HunyuanVideo 1.5 (its guider and image-conditioned channels).
OBJECTIVES: dict[str, Objective] = {
    "wan2.1-t2v": WanObjective(),
    "wan2.2-ti2v": WanObjective(),
    "ltx-video": LTXObjective(),
    "hunyuanvideo": HunyuanVideoObjective(),
    "flux.1-dev": FluxObjective(),
    "flux.1-schnell": FluxObjective(),
    "sd3.5": SD3Objective(),
}


def shifted_sigmas(u: torch.Tensor, scheduler_config: Any, tokens: int) -> torch.Tensor:
    """The scheduler's own shift applied to draws in (0, 1): `shift * u / (1 + (shift - 1) * u)`, with FLUX/LTX's
    resolution-dependent shift `exp(mu)` where the scheduler shifts dynamically (the same curve as its
    exponential time shift), so training sees the noise levels sampling visits."""
    shift = float(scheduler_config.get("shift", 1.0))
    if scheduler_config.get("use_dynamic_shifting"):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        mu = calculate_shift(
            tokens,
            scheduler_config.get("base_image_seq_len", 256),
            scheduler_config.get("max_image_seq_len", 4096),
            scheduler_config.get("base_shift", 0.5),
            scheduler_config.get("max_shift", 1.15),
        )
        shift = math.exp(mu)
    return shift * u / (1 + (shift - 1) * u)

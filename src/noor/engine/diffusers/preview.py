"""A look at a clip while it is denoised: the current latents' first latent frames through the model's own VAE.

Each pipeline keeps its latents in its own layout (LTX and FLUX pack them into token sequences; CogVideoX puts
time before channels) and normalises them its own way; `decode` undoes both as the pipeline does after its
last step, for a few latent frames only. A full decode of a real 81-frame clip costs several denoising steps,
so a preview shows the clip's beginning: the first PREVIEW_LATENT_FRAMES latent frames decode (the video VAEs
are causal in time) to its first 1 + t*(K-1) frames, 9 of Wan's 81, at about K/21 of a full decode. The
latents are the sampler's current state, not a clean estimate: noisy at first, the result at the last step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PREVIEW_LATENT_FRAMES = 3  # odd: CogVideoX's VAE decodes a first latent frame, then pairs
PREVIEWS_PER_CLIP = 8  # offered at most this often (every steps/8 steps), whatever the worker asks


def preview_steps(steps: int) -> set[int]:
    """The steps (1-based) after which a preview is offered: evenly spaced, always the last."""
    every = max(1, round(steps / PREVIEWS_PER_CLIP))
    return {s for s in range(1, steps + 1) if s % every == 0} | {steps}


def decode(pipe: Any, latents: Any, width: int, height: int, num_frames: int) -> np.ndarray:
    """`latents` as the pipeline holds them between steps -> (T, H, W, 3) uint8, T <= the clip's frames."""
    import torch

    vae, name = pipe.vae, type(pipe).__name__
    with torch.no_grad():
        z = latents[:1].detach()
        # 1. the pipeline's layout -> (1, C, T, h, w) for video VAEs, (1, C, h, w) for image VAEs
        if name.startswith("LTX"):
            t = (num_frames - 1) // pipe.vae_temporal_compression_ratio + 1
            h, w = height // pipe.vae_spatial_compression_ratio, width // pipe.vae_spatial_compression_ratio
            p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
            z = z[:, -(t // pt) * (h // p) * (w // p) :]  # LTXConditionPipeline puts keyframe tokens first
            z = pipe._unpack_latents(z, t, h, w, p, pt)
        elif name.startswith("Flux"):
            z = pipe._unpack_latents(z, height, width, pipe.vae_scale_factor)
        elif name.startswith("CogVideoX"):
            z = z.permute(0, 2, 1, 3, 4)  # (1, T, C, h, w) -> (1, C, T, h, w)
        if z.ndim == 5:
            z = z[:, :, :PREVIEW_LATENT_FRAMES]
        z = z.to(vae.dtype)
        # 2. undo the pipeline's normalisation, then decode
        config = vae.config
        if name.startswith("Wan"):
            mean = torch.tensor(config.latents_mean, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
            std = torch.tensor(config.latents_std, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
            z = z * std + mean
        elif name.startswith("LTX"):
            z = pipe._denormalize_latents(z, vae.latents_mean, vae.latents_std, config.scaling_factor)
        else:  # HunyuanVideo (1.5), CogVideoX, FLUX, SD3: a scale, and for the image VAEs a shift
            z = z / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
        if name.startswith("LTX") and config.timestep_conditioning:
            pixels = vae.decode(z, torch.zeros(1, dtype=z.dtype, device=z.device), return_dict=False)[0]
        else:
            pixels = vae.decode(z, return_dict=False)[0]
    # 3. [-1, 1] -> uint8 frames
    pixels = ((pixels[0].float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).cpu()
    if pixels.ndim == 3:  # an image: (3, H, W)
        return pixels.permute(1, 2, 0).numpy()[None]
    return pixels.permute(1, 2, 3, 0).numpy()  # (3, T, H, W) -> (T, H, W, 3)

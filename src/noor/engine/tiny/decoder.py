"""Training noor-tiny's VAE decoder alone, on the frozen encoder's posterior means: stage 2 sharpens the decoder
(`train.refine_decoder`), stage 2b teaches a copy canvases of other sizes (`canvases.canvas_decoder`). The encoder,
and so the latent space the denoiser learnt, does not move."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from diffusers import AutoencoderKL

OnStep = Callable[[str, int, int, float], None]


def cosine(lr: float, floor: float, step: int, total: int) -> float:
    """Cosine decay from `lr` to `floor * lr` over `total` steps."""
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / total)))


def fit_decoder(
    vae: AutoencoderKL,
    batch: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    generator: torch.Generator,
    stage: str,
    on_step: OnStep | None = None,
) -> list[float]:
    """Train `vae`'s decoder and post-quant conv in place for `steps` steps: `batch(step)` gives the frames (N, 3,
    H, W) in [-1, 1], the encoder's posterior means of them, jittered by 5% of their spread (robust to near-miss
    latents, as the denoiser's are), the input; L2 + L1/2 against the frames; Adam with cosine decay to 5% of `lr`.
    `on_step(stage, step, steps, loss)` after each; the step losses returned; the VAE left frozen."""
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optim = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    for step in range(steps):
        x = batch(step)
        for group in optim.param_groups:
            group["lr"] = cosine(lr, 0.05, step, steps)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
            z = z + 0.05 * z.std() * torch.randn(z.shape, generator=generator)
        recon = vae.decode(z).sample
        loss = ((recon - x) ** 2).mean() + 0.5 * (recon - x).abs().mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses.append(loss.item())
        if on_step:
            on_step(stage, step, steps, losses[-1])
    vae.requires_grad_(False)
    return losses

"""Memory plans that real runs use when a request would not fit a chip, cheapest first.

`estimate` walks `LADDER` only when no split of the request fits as asked, and stops at the first rung
that fits; the rung is reported in the estimate (`memory_plan`) and its costs are in the breakdown.
Each rung keeps the ones before it. What each costs is where the published runs say it was used:

- text encoder offloaded after encoding (Wan's `--offload_model`, diffusers' model CPU offload): the
  encoder leaves the chip before the denoiser runs; costs one copy of its weights over the host link;
- VAE slicing (diffusers `enable_vae_slicing`): a batch decodes one item at a time; no extra work;
- VAE tiling (diffusers `enable_vae_tiling`): the decoder runs on overlapping tiles; extra work from
  the overlap;
- model CPU offload: each component moves to the chip when it runs (ParallelPlan offload="model");
- sequential CPU offload (diffusers `enable_sequential_cpu_offload`): weights stream block by block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# diffusers AutoencoderKL: tile_sample_min_size = config.sample_size (512 for the SD/FLUX-class VAEs),
# tile_overlap_factor = 0.25 (src/diffusers/models/autoencoders/autoencoder_kl.py); video VAEs tile spatially alike
TILE_PX = 512
TILE_OVERLAP = 0.25


@dataclass(frozen=True)
class MemoryPlan:
    text_encoder_offload: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    offload: Literal["none", "model", "sequential"] = "none"  # applied to the ParallelPlan

    def labels(self) -> list[str]:
        out = []
        if self.text_encoder_offload:
            out.append("text encoder offloaded after encoding")
        if self.vae_slicing:
            out.append("VAE slicing")
        if self.vae_tiling:
            out.append("VAE tiling")
        if self.offload == "model":
            out.append("model CPU offload")
        elif self.offload == "sequential":
            out.append("sequential CPU offload")
        return out


LADDER = (
    MemoryPlan(text_encoder_offload=True),
    MemoryPlan(text_encoder_offload=True, vae_slicing=True),
    MemoryPlan(text_encoder_offload=True, vae_slicing=True, vae_tiling=True),
    MemoryPlan(text_encoder_offload=True, vae_slicing=True, vae_tiling=True, offload="model"),
    MemoryPlan(text_encoder_offload=True, vae_slicing=True, vae_tiling=True, offload="sequential"),
)


def tiled(width: int, height: int) -> tuple[float, float]:
    """(share of the feature map live at once, decoder work multiplier) when decoding in tiles."""
    if width * height <= TILE_PX * TILE_PX:
        return 1.0, 1.0
    live = min(1.0, TILE_PX * TILE_PX / (width * height))
    return live, 1.0 / (1.0 - TILE_OVERLAP) ** 2

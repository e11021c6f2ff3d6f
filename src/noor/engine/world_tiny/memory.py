"""noor-world-tiny's memory: a latent canvas of the whole world, written as the player walks.

The world is a torus of 128x128 latent pixels (the 512 px maps the model learnt from, at the VAE's 4x); a view is
16x16 of it and a step moves it one latent pixel. The canvas keeps, for every latent pixel, what was first drawn
there and whether anything was (`known`). Each new frame is denoised with the canvas cropped at the player's
new position as an input (the denoiser's `memory` and `known`); the frame keeps the canvas's latents wherever the
canvas knows them (the model's own prediction there, a near copy, is dropped: its small errors blurred the
scene's shift between frames) and only the pixels the canvas did not know are written back. What the player has
seen stays exactly as it was, so coming back shows the same place, and the model draws the strip a step reveals.
"""

from __future__ import annotations

import torch

WORLD_LATENT = 128  # latent pixels around the torus (512 map pixels / 4)


class Canvas:
    def __init__(self, channels: int = 4, size: int = WORLD_LATENT, view: int = 16, enabled: bool = True):
        self.size, self.view, self.enabled = size, view, enabled
        self.latents = torch.zeros(channels, size, size)
        self.known = torch.zeros(1, size, size)

    def _index(self, x: int, y: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = (torch.arange(self.view) + y) % self.size
        c = (torch.arange(self.view) + x) % self.size
        return r[:, None], c[None, :]

    def crop(self, x: int, y: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What the canvas holds in the view whose top-left latent pixel is (x, y): ((C, v, v), (1, v, v)).
        A disabled canvas (memory off) knows nothing."""
        if not self.enabled:
            return torch.zeros(self.latents.shape[0], self.view, self.view), torch.zeros(1, self.view, self.view)
        r, c = self._index(x, y)
        return self.latents[:, r, c], self.known[:, r, c]

    def write(self, x: int, y: int, latents: torch.Tensor) -> None:
        """Keep `latents` (C, v, v) where the canvas knew nothing yet; what it knew stays."""
        if not self.enabled:
            return
        r, c = self._index(x, y)
        new = 1.0 - self.known[:, r, c]
        self.latents[:, r, c] = self.latents[:, r, c] * (1 - new) + latents * new
        self.known[:, r, c] = 1.0

    @property
    def seen(self) -> float:
        """The share of the world the canvas holds."""
        return float(self.known.mean())

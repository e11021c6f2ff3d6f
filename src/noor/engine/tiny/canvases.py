"""noor-tiny's decoder for canvases of other sizes than the 64x64 frames its VAE was trained on.

A reframe (and an edit of another aspect) is drawn on a canvas of the task's aspect (`backend.canvas`), up to
256 pixels long: a source placed in it, the rest its edge pixels repeated, then the surround drawn. The VAE's
group norms then see mostly flat background, and trained at 64x64 it decodes such a canvas with its colours
shifted (a green square came back cyan; the source's region 21-31 dB through the VAE alone, against 34 dB at
64x64). Taught such canvases, one decoder gave the native frames' figures away (`noor eval tiny`: shape 84/81% ->
81/75%, the same with its native output held by distillation), so the pipeline keeps two: its VAE, and a copy whose
decoder alone learnt canvases (`canvas_vae`, used for every latent grid but the native one). The encoder is the
VAE's, frozen, so the latent space the denoiser learnt does not move.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from diffusers import AutoencoderKL

from noor.engine.resample import resize
from noor.engine.tiny.decoder import OnStep, fit_decoder
from noor.engine.tiny.scene import NUM_FRAMES, render, sample_scene

PATCH = 16  # canvases are whole patches of the denoiser's grid, as `backend.canvas` draws them
CANVAS_SIDES = (64, 256)  # each side of a training canvas, in pixels (the range `backend.canvas` draws)
SOURCE_SHORT_SIDES = (40, 144)  # the square scene's side before it is placed (then scaled to a short side of 48-96)
PLACED_SHORT_SIDES = (48, 96)
ASPECTS = (9 / 16, 16 / 9)  # a source's aspect, between a tall and a wide video
CANVAS_BATCH = 4  # frames a canvas step, on one canvas (a batch shares its shape)
NATIVE_BATCH = 16  # frames a native step: every other step is 64x64 frames, which keep canvases near the native
# size right (without them a square source on a 16:9 canvas, 112x64, drew worse than through the VAE: 29.3 dB)


def canvas_frames(rng: np.random.Generator, n: int, two_objects_p: float = 0.25) -> np.ndarray:
    """n frames (n, H, W, 3) uint8 on one random canvas of whole patches: each a random scene's frame rendered
    square, padded (its edge pixels) to a random aspect between 9:16 and 16:9, scaled to a short side of 48-96
    pixels (at most the canvas), placed at a random position, the rest of the canvas its edge pixels repeated, as
    `canvas.on_canvas` places a reframe's source."""
    W, H = (int(rng.integers(CANVAS_SIDES[0] // PATCH, CANVAS_SIDES[1] // PATCH + 1)) * PATCH for _ in range(2))
    out = []
    for _ in range(n):
        side = int(rng.integers(SOURCE_SHORT_SIDES[0], SOURCE_SHORT_SIDES[1] + 1))
        square = render(sample_scene(rng, two_objects_p), size=side)[int(rng.integers(NUM_FRAMES))]
        aspect = float(np.exp(rng.uniform(np.log(ASPECTS[0]), np.log(ASPECTS[1]))))
        sw, sh = (max(side, round(side * aspect)), side) if aspect >= 1 else (side, max(side, round(side / aspect)))
        left, top = (sw - side) // 2, (sh - side) // 2
        source = np.pad(square, ((top, sh - side - top), (left, sw - side - left), (0, 0)), mode="edge")
        k = min(rng.uniform(*PLACED_SHORT_SIDES) / min(sw, sh), W / sw, H / sh)
        w, h = max(8, round(sw * k)), max(8, round(sh * k))
        x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
        placed = resize((np.clip(source, 0.0, 1.0) * 255).round().astype(np.uint8)[None], w, h)[0]
        out.append(np.pad(placed, ((y, H - h - y), (x, W - w - x), (0, 0)), mode="edge"))
    return np.stack(out)


def native_frames(rng: np.random.Generator, n: int, two_objects_p: float = 0.25) -> np.ndarray:
    """n frames (n, 64, 64, 3) in [0, 1]: one random frame of each of n random scenes, as the VAE was trained on."""
    return np.stack([render(sample_scene(rng, two_objects_p))[int(rng.integers(NUM_FRAMES))] for _ in range(n)])


def _pixels(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 or [0, 1] floats -> (N, 3, H, W) in [-1, 1]."""
    x = frames.astype(np.float32) / (255.0 if frames.dtype == np.uint8 else 1.0)
    return torch.from_numpy(x).permute(0, 3, 1, 2) * 2.0 - 1.0


def canvas_decoder(
    vae: AutoencoderKL, steps: int, lr: float, seed: int, on_step: OnStep | None = None, two_objects_p: float = 0.25
) -> tuple[AutoencoderKL, list[float]]:
    """A copy of `vae` whose decoder (and post-quant conv) is trained `steps` steps against their pixels, on
    canvases of other sizes (`canvas_frames`, a new canvas each odd step) and native frames (each even step): the
    encoder's posterior means, slightly jittered, as input; L2 + L1/2; cosine decay to 5% of `lr`. Its own random
    streams (seeded by `seed`), so it gives the same decoder wherever in a run it happens. `vae` itself is not
    changed. With the step losses."""
    rng = np.random.default_rng([seed, 6])
    generator = torch.Generator().manual_seed(seed + 6)
    out = copy.deepcopy(vae)

    def batch(step: int) -> torch.Tensor:  # even steps native frames, odd steps a canvas
        if step % 2 == 0:
            return _pixels(native_frames(rng, NATIVE_BATCH, two_objects_p))
        return _pixels(canvas_frames(rng, CANVAS_BATCH, two_objects_p))

    losses = fit_decoder(out, batch, steps, lr, generator, "canvases", on_step)
    return out.eval(), losses

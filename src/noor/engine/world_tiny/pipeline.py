"""noor-world-tiny as a diffusers pipeline: a caption (or a start image) opens a world; each action draws a frame.

Components, saved and loaded in Hugging Face layout (`save_pretrained` / `from_pretrained`):
- `vae`: an `AutoencoderTiny` (TAESD's layout), 64x64x3 <-> 8x16x16: convolutions only, no attention and no
  normalisation over the frame, so a view's latent is the crop of a whole map's latent (the memory relies on
  that) and the same ground decodes the same wherever it is in the view (the scene's shift relies on that).
- `text_encoder`: noor-tiny's tokenizer and two-layer text encoder class (`TinyTextEncoder`), its own weights
  and vocabulary (the world captions, English and Arabic).
- `transformer`: `WorldTransformer`, the causal denoiser with its KV cache (`model.py`).
- `scheduler`: diffusers' `FlowMatchEulerDiscreteScheduler`; `steps` noise levels a frame, then one pass at
  noise level zero that writes the frame's keys and values into the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import AutoencoderTiny, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from PIL import Image

from noor.engine.tiny.text_encoder import TinyTextEncoder
from noor.engine.world_tiny.actions import MOVES, STEP_PX, check_actions
from noor.engine.world_tiny.memory import WORLD_LATENT, Canvas
from noor.engine.world_tiny.model import ACTION_IDS, Cache, WorldTransformer

VIEW = 64  # pixels a side
LATENT = 16  # latent pixels a side
SCALE = VIEW // LATENT  # map pixels per latent pixel: a step (STEP_PX) is one


def sigmas(steps: int) -> list[float]:
    """The noise levels a frame is drawn at: from pure noise down, evenly spaced (4 steps: 1, 0.75, 0.5, 0.25)."""
    return [1.0 - i / steps for i in range(steps)]


@dataclass
class Rollout:
    """One open world's state: where the player is, what the canvas holds, the cached frames."""

    text: torch.Tensor  # (1, text_dim) pooled caption
    canvas: Canvas
    cache: Cache
    generator: torch.Generator
    x: int = 0  # the view's top-left latent pixel on the torus
    y: int = 0
    frame: int = 0  # frames drawn so far (the opening one included)
    latents: torch.Tensor | None = field(default=None, repr=False)  # the latest frame's, (1, C, 16, 16)


class NoorWorldPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer->vae"

    def __init__(
        self,
        vae: AutoencoderTiny,
        transformer: WorldTransformer,
        text_encoder: TinyTextEncoder,
        scheduler: FlowMatchEulerDiscreteScheduler,
    ):
        super().__init__()
        self.register_modules(vae=vae, transformer=transformer, text_encoder=text_encoder, scheduler=scheduler)

    # -- conversions ------------------------------------------------------------------------------------------
    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        return (z - cfg.shift_factor) * cfg.scaling_factor

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        return z / cfg.scaling_factor + cfg.shift_factor

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Captions -> (B, text_dim): the mean of the text encoder's states over the caption's words."""
        states, mask = self.text_encoder.encode(prompts)
        m = mask[..., None].to(states.dtype)
        return (states * m).sum(1) / m.sum(1).clamp(min=1)

    @torch.no_grad()
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """An (H, W, 3) uint8 image of any size -> its view latent (1, C, 16, 16), normalised: the middle square,
        resized to 64x64 (the same pixels the start frame then shows)."""
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = Image.fromarray(np.ascontiguousarray(image[top : top + side, left : left + side, :3]))
        pixels = np.asarray(square.resize((VIEW, VIEW), Image.Resampling.LANCZOS), np.float32) / 127.5 - 1.0
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(self.vae.dtype)
        return self.normalise(self.vae.encode(x).latents)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, C, 16, 16) normalised latents -> (B, 64, 64, 3) uint8."""
        x = self.vae.decode(self.denormalise(latents)).sample
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    # -- a world --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def open(
        self, prompt: str, seed: int = 0, start_image: np.ndarray | None = None, memory: bool = True, steps: int = 4
    ) -> Rollout:
        """A world from a caption or a start image: its opening frame is drawn (or encoded) and remembered."""
        C = self.transformer.config.latent_channels
        generator = torch.Generator().manual_seed(int(seed))
        rollout = Rollout(
            text=self.encode_prompt([prompt]),
            canvas=Canvas(C, WORLD_LATENT, LATENT, enabled=memory),
            cache=Cache([], []),
            generator=generator,
        )
        if start_image is not None:
            z = self.encode_image(start_image)
            self._commit(rollout, z, "start")
        else:
            self._draw(rollout, "start", steps)
        return rollout

    @torch.no_grad()
    def step(self, rollout: Rollout, action: str, steps: int = 4) -> torch.Tensor:
        """Apply `action` and draw the frame it leads to: its latents (1, C, 16, 16)."""
        check_actions([action])
        dx, dy = MOVES[action]
        rollout.x = (rollout.x + dx // STEP_PX) % WORLD_LATENT
        rollout.y = (rollout.y + dy // STEP_PX) % WORLD_LATENT
        return self._draw(rollout, action, steps)

    def _draw(self, rollout: Rollout, action: str, steps: int) -> torch.Tensor:
        C = self.transformer.config.latent_channels
        memory, known = (t[None] for t in rollout.canvas.crop(rollout.x, rollout.y))
        at = (rollout.x, rollout.y)
        x = torch.randn((1, C, LATENT, LATENT), generator=rollout.generator)  # drawn always: the stream stays the same
        if bool((known > 0).all()):  # the canvas knows the whole view (standing still, a step back): it is the frame,
            return self._commit(rollout, memory, action, memory, known)  # and the denoiser's passes would be dropped
        self.scheduler.set_timesteps(sigmas=sigmas(steps))
        x0 = x
        for t in self.scheduler.timesteps:
            sigma = float(t) / self.scheduler.config.num_train_timesteps
            x0, _ = self.transformer.denoise(
                x, memory, known, sigma, ACTION_IDS[action], rollout.text, rollout.frame, rollout.cache, at
            )
            x = self.scheduler.step((x - x0) / sigma, t, x).prev_sample
        # what the world already holds stays exactly as it was: the model draws only what the canvas does not know
        x0 = torch.where(known > 0, memory, x0)
        return self._commit(rollout, x0, action, memory, known)

    def _commit(
        self,
        rollout: Rollout,
        x0: torch.Tensor,
        action: str,
        memory: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The frame is final: its clean keys and values go into the cache, its new pixels onto the canvas."""
        if memory is None or known is None:
            memory, known = (t[None] for t in rollout.canvas.crop(rollout.x, rollout.y))
        at = (rollout.x, rollout.y)
        _, kv = self.transformer.denoise(
            x0, memory, known, 0.0, ACTION_IDS[action], rollout.text, rollout.frame, rollout.cache, at
        )
        rollout.cache = self.transformer.remember(rollout.cache, kv, rollout.frame)
        rollout.canvas.write(rollout.x, rollout.y, x0[0])
        rollout.frame += 1
        rollout.latents = x0
        return x0

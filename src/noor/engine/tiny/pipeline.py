"""NoorTinyPipeline: text (and keyframes) to video with noor-tiny, as a diffusers pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from PIL import Image

from noor.engine.tiny.text_encoder import TinyTextEncoder
from noor.engine.tiny.transformer import TinyVideoTransformer

Keyframe = np.ndarray | Image.Image


@dataclass
class NoorTinyPipelineOutput(BaseOutput):
    frames: np.ndarray  # (B, T, H, W, 3) float32 in [0, 1]


def keyframe_tensor(image: Keyframe, height: int, width: int) -> torch.Tensor:
    """A keyframe (PIL, or HxWx3 array in uint8 or [0, 1] floats) -> (3, H, W) in [-1, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    if array.shape[:2] != (height, width):
        pil = Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8))
        array = np.asarray(pil.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1) * 2.0 - 1.0


class NoorTinyPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer"
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents"]

    def __init__(
        self,
        transformer: TinyVideoTransformer,
        text_encoder: TinyTextEncoder,
        scheduler: FlowMatchEulerDiscreteScheduler,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, text_encoder=text_encoder, scheduler=scheduler)
        self._interrupt = False

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        num_frames: int = 16,
        height: int = 64,
        width: int = 64,
        num_inference_steps: int = 16,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        start_frame: Keyframe | list[Keyframe | None] | None = None,
        end_frame: Keyframe | list[Keyframe | None] | None = None,
        loop: bool | list[bool] = False,
        callback_on_step_end: Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]] | None = None,
    ) -> NoorTinyPipelineOutput:
        # 1. check inputs; one value per clip in the batch
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        B, T = len(prompts), num_frames
        negatives = [negative_prompt] * B if isinstance(negative_prompt, str) else list(negative_prompt)
        starts = start_frame if isinstance(start_frame, list) else [start_frame] * B
        ends = end_frame if isinstance(end_frame, list) else [end_frame] * B
        loops = loop if isinstance(loop, list) else [loop] * B
        p = self.transformer.config.patch_size
        if height % p or width % p:
            raise ValueError(f"height and width must be multiples of {p}, got {height}x{width}")
        if not (len(negatives) == len(starts) == len(ends) == len(loops) == B):
            raise ValueError("every per-clip argument must have one value per prompt")
        device, dtype = self._execution_device, self.transformer.dtype
        self._interrupt = False

        # 2. encode the prompt, conditional and unconditional rows in one batch
        do_cfg = guidance_scale != 1.0
        text, text_mask = self.text_encoder.encode(prompts + negatives if do_cfg else prompts)
        text = text.to(dtype)

        # 3. keyframes: known frames are clean (t=0) in every step; loop = the end repeats the start
        known = torch.zeros(B, 1, T, 1, 1, device=device, dtype=torch.bool)
        frames_known = torch.zeros(B, 3, T, height, width, device=device, dtype=dtype)
        tie_ends = torch.zeros(B, dtype=torch.bool, device=device)
        for b in range(B):
            end = starts[b] if loops[b] and ends[b] is None else ends[b]
            for index, image in ((0, starts[b]), (T - 1, end)):
                if image is not None:
                    frames_known[b, :, index] = keyframe_tensor(image, height, width).to(device, dtype)
                    known[b, :, index] = True
            tie_ends[b] = loops[b] and starts[b] is None and ends[b] is None and T > 1
        latents = (
            torch.randn(B, 3, T, height, width, generator=generator, device=device, dtype=dtype)
            if not isinstance(generator, list)
            else torch.stack(
                [torch.randn(3, T, height, width, generator=g, device=device, dtype=dtype) for g in generator]
            )
        )

        # 4. timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 5. denoise: predict x0, guide, tie loop ends, step along the velocity
        for i, t in enumerate(timesteps):
            if self.interrupt:
                break
            sigma = self.scheduler.sigmas[i].to(device)
            x_in = torch.where(known, frames_known, latents)
            t_frames = torch.where(known[:, 0, :, 0, 0], 0.0, t.float()).to(dtype)  # (B, T)
            with self.transformer.cache_context("denoise"):  # a no-op unless a diffusers cache is enabled
                if do_cfg:
                    x0 = self.transformer(torch.cat([x_in, x_in]), torch.cat([t_frames, t_frames]), text, text_mask)[0]
                    x0_cond, x0_uncond = x0.chunk(2)
                    x0 = x0_uncond + guidance_scale * (x0_cond - x0_uncond)
                else:
                    x0 = self.transformer(x_in, t_frames, text, text_mask)[0]
            x0 = x0.clamp(-1.0, 1.0)
            if tie_ends.any():
                mean = (x0[:, :, :1] + x0[:, :, -1:]) / 2
                x0[tie_ends, :, :1] = mean[tie_ends]
                x0[tie_ends, :, -1:] = mean[tie_ends]
            velocity = (latents - x0) / sigma.clamp(min=1e-4)
            latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]
            if callback_on_step_end is not None:
                out = callback_on_step_end(self, i, t, {"latents": latents})
                latents = out.get("latents", latents)

        # 6. the clip in [0, 1], keyframes exactly as given
        video = torch.where(known, frames_known, latents)
        video = ((video.float().clamp(-1.0, 1.0) + 1.0) / 2.0).permute(0, 2, 3, 4, 1)  # (B, T, H, W, 3)
        self.maybe_free_model_hooks()
        return NoorTinyPipelineOutput(frames=video.cpu().numpy())

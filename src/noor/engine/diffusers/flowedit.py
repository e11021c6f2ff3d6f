"""FlowEdit (Kulikov et al. 2024, "FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained Flow Models") on
the open flow-matching families: SD3.5, FLUX.1, Wan 2.1 (T2V and VACE), LTX-Video. Which edits go this way is
the engine's rule (`noor.engine.flowedit.flow_edit`: adhere and flex modes whose source's prompt is known);
`edits.Work` routes them here, the rest go by SDEdit through the pipelines.

The edit never takes its source through noise. From the mode's first step on, each step draws fresh noise n,
noises the clean source latents x_src to the step's level (z_src = (1 - s_i) x_src + s_i n), shifts that by the
edit so far (z_tar = z_src + z - x_src), and moves z by the difference of the model's velocities, each with its
guidance: z += (s_{i+1} - s_i) (v(z_tar, target prompt) - v(z_src, source prompt)). What both predictions share,
the source's layout and the model's own habits, cancels; under the source's own prompt the difference is exactly 0
and the edit returns the source as its VAE decodes it. The target and source velocities are separate transformer
calls (each guided as the pipeline guides it), so that equal inputs give bit-equal outputs on any kernel.

Everything else is the family pipeline's own: its scheduler's sigmas and timesteps (set as `edits.scheduled` sets
them, shift included), its `encode_prompt`, its latent normalisation and its decode. The steps are Euler steps
whatever the pipeline's scheduler (Wan's checkpoints ship UniPC): FlowEdit's update is not a denoising ODE a
multistep solver's data-prediction form fits.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image


class Parts(ABC):
    """One family's pipeline as FlowEdit uses it: the prompts' conditioning, the guided velocity at a latent, and
    the decode to the pipeline's output. Latents are in the transformer's layout (SD3 (1, C, h, w), FLUX packed
    (1, tokens, 4C), Wan (1, C, T, h, w), LTX packed (1, tokens, C)), in float32."""

    def __init__(self, pipe: Any, canvas: np.ndarray, call: dict[str, Any]):
        self.pipe, self.canvas, self.guidance = pipe, canvas, float(call["guidance_scale"])
        self.device = pipe._execution_device
        self.dtype = pipe.transformer.dtype

    @abstractmethod
    def prompt(self, prompt: str, negative: str | None) -> Any:
        """The conditioning of one prompt, every guidance branch, as the pipeline encodes it."""

    @abstractmethod
    def velocity(self, z: Any, t: Any, conditioning: Any, branch: str) -> Any:
        """The guided velocity (float32, z's shape) at latents z and timestep t (the scheduler's). `branch`
        ("target"/"source") names the call's cache context: a step cache must not take one branch's call for the
        other's."""

    @abstractmethod
    def source(self) -> Any:
        """The canvas's clean latents, normalised as the pipeline normalises them (its VAE encoding's mean)."""

    @abstractmethod
    def output(self, z: Any) -> Any:
        """The pipeline's output for latents z (images or frames as numpy floats in [0, 1])."""

    def _called(self, name: str, **inputs: Any) -> Any:
        transformer = self.pipe.transformer
        context = transformer.cache_context(name) if hasattr(transformer, "cache_context") else contextlib.nullcontext()
        with context:
            return transformer(**inputs, return_dict=False)[0].float()

    def _batch_guided(self, branch: str, z: Any, inputs: Callable[[int], dict[str, Any]]) -> Any:
        """The guided velocity from one call on the batch [z, z] (unconditional and conditional rows; z alone
        without guidance); `inputs(n)`: the call's other inputs for a batch of n."""
        import torch

        cfg = self.guidance > 1  # the pipelines' do_classifier_free_guidance
        x = torch.cat([z] * 2) if cfg else z
        v = self._called(branch, hidden_states=x.to(self.dtype), **inputs(len(x)))
        if not cfg:
            return v
        uncond, cond = v.chunk(2)
        return uncond + self.guidance * (cond - uncond)

    def _image_latents(self) -> Any:
        """The image canvas through the VAE as SD3's and FLUX's pipelines take it: (mean - shift) x scaling."""
        import torch
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_img2img import retrieve_latents

        pipe, vae = self.pipe, self.pipe.vae
        height, width = self.canvas.shape[1:3]
        image = pipe.image_processor.preprocess(Image.fromarray(self.canvas[0]), height=height, width=width)
        with torch.no_grad():
            latents = retrieve_latents(vae.encode(image.to(self.device, vae.dtype)), sample_mode="argmax")
        return ((latents - vae.config.shift_factor) * vae.config.scaling_factor).float()

    def _image_output(self, latents: Any) -> Any:
        """SD3's and FLUX's decode of unpacked latents (1, C, h, w)."""
        from diffusers.pipelines.stable_diffusion_3.pipeline_output import StableDiffusion3PipelineOutput

        vae = self.pipe.vae
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return StableDiffusion3PipelineOutput(images=self.pipe.image_processor.postprocess(image, output_type="np"))


class SD3(Parts):
    """StableDiffusion3(Img2Img)Pipeline: three text encoders, guidance as one batch [unconditional, conditional]."""

    def prompt(self, prompt: str, negative: str | None) -> Any:
        import torch

        cfg = self.guidance > 1  # the pipeline's do_classifier_free_guidance
        embeds, negative_embeds, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=prompt,
            prompt_2=None,
            prompt_3=None,
            negative_prompt=negative,
            do_classifier_free_guidance=cfg,
            device=self.device,
        )
        if cfg:
            embeds, pooled = torch.cat([negative_embeds, embeds]), torch.cat([negative_pooled, pooled])
        return embeds.to(self.dtype), pooled.to(self.dtype)

    def velocity(self, z: Any, t: Any, conditioning: Any, branch: str) -> Any:
        embeds, pooled = conditioning
        inputs = {"encoder_hidden_states": embeds, "pooled_projections": pooled}
        return self._batch_guided(branch, z, lambda n: inputs | {"timestep": t.expand(n)})

    def source(self) -> Any:
        return self._image_latents()

    def output(self, z: Any) -> Any:
        return self._image_output(z)


class Flux(Parts):
    """Flux(Img2Img)Pipeline: guidance-distilled (the scale is an input of the transformer, `guidance_embeds`; none
    for [schnell]), latents packed 2x2 into tokens with their positions (`img_ids`)."""

    def __init__(self, pipe: Any, canvas: np.ndarray, call: dict[str, Any]):
        import torch

        super().__init__(pipe, canvas, call)
        height, width = canvas.shape[1:3]
        self.h = 2 * (int(height) // (pipe.vae_scale_factor * 2))  # the pipeline's latent size
        self.w = 2 * (int(width) // (pipe.vae_scale_factor * 2))
        self.ids = pipe._prepare_latent_image_ids(1, self.h // 2, self.w // 2, self.device, self.dtype)
        embeds_guidance = pipe.transformer.config.guidance_embeds
        self.scale = (
            torch.full([1], self.guidance, device=self.device, dtype=torch.float32) if embeds_guidance else None
        )

    def prompt(self, prompt: str, negative: str | None) -> Any:
        embeds, pooled, text_ids = self.pipe.encode_prompt(prompt=prompt, prompt_2=None, device=self.device)
        return embeds.to(self.dtype), pooled.to(self.dtype), text_ids

    def velocity(self, z: Any, t: Any, conditioning: Any, branch: str) -> Any:
        embeds, pooled, text_ids = conditioning
        return self._called(
            branch,
            hidden_states=z.to(self.dtype),
            timestep=t.expand(len(z)).to(self.dtype) / 1000,
            guidance=self.scale,
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=text_ids,
            img_ids=self.ids,
        )

    def source(self) -> Any:
        latents = self._image_latents()  # (1, C, h, w)
        return self.pipe._pack_latents(latents, 1, latents.shape[1], self.h, self.w)

    def output(self, z: Any) -> Any:
        height, width = self.canvas.shape[1:3]
        return self._image_output(self.pipe._unpack_latents(z, height, width, self.pipe.vae_scale_factor))


class Wan(Parts):
    """WanPipeline (and WanVideoToVideoPipeline, Wan 2.1 T2V's edit pipeline) and WanVACEPipeline: one umT5
    encoder, guidance as two calls (conditional, unconditional). VACE's context is the source's frames with a white
    mask (all of it redrawn, guided by it), as its SDEdit edit has it (`edits.Work._wan`), the same for both
    prompts."""

    def __init__(self, pipe: Any, canvas: np.ndarray, call: dict[str, Any]):
        import torch

        super().__init__(pipe, canvas, call)
        self.control: dict[str, Any] = {}
        if type(pipe).__name__ == "WanVACEPipeline":
            T, height, width = canvas.shape[:3]
            white = Image.new("L", (width, height), 255)
            video, mask, references = pipe.preprocess_conditions(
                [Image.fromarray(f) for f in canvas], [white] * T, None, 1, height, width, T, torch.float32, self.device
            )
            with torch.no_grad():
                context = pipe.prepare_video_latents(video, mask, references, call["generator"], self.device)
                mask = pipe.prepare_masks(mask, references, call["generator"])
            layers = len(pipe.transformer.config.vace_layers)
            self.control = {
                "control_hidden_states": torch.cat([context, mask], dim=1).to(self.dtype),
                "control_hidden_states_scale": torch.ones(layers, device=self.device, dtype=self.dtype),
            }

    def prompt(self, prompt: str, negative: str | None) -> Any:
        embeds, negative_embeds = self.pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative, do_classifier_free_guidance=self.guidance > 1, device=self.device
        )
        return embeds.to(self.dtype), None if negative_embeds is None else negative_embeds.to(self.dtype)

    def velocity(self, z: Any, t: Any, conditioning: Any, branch: str) -> Any:
        embeds, negative_embeds = conditioning
        x, timestep = z.to(self.dtype), t.expand(len(z))
        v = self._called(f"{branch}-cond", hidden_states=x, timestep=timestep, encoder_hidden_states=embeds,
                         **self.control)  # fmt: skip
        if self.guidance > 1:
            uncond = self._called(f"{branch}-uncond", hidden_states=x, timestep=timestep,
                                  encoder_hidden_states=negative_embeds, **self.control)  # fmt: skip
            v = uncond + self.guidance * (v - uncond)
        return v

    def source(self) -> Any:
        from noor.engine.diffusers.edits import video_latents  # edits imports this module

        return video_latents(self.pipe, self.canvas).to(self.device)

    def output(self, z: Any) -> Any:
        from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput

        vae = self.pipe.vae
        mean, std = self._statistics(z)
        video = vae.decode((z * std + mean).to(vae.dtype), return_dict=False)[0]
        return WanPipelineOutput(frames=self.pipe.video_processor.postprocess_video(video, output_type="np"))

    def _statistics(self, like: Any) -> tuple[Any, Any]:
        """The VAE's per-channel latents_mean and latents_std (1, C, 1, 1, 1), as Wan's pipelines normalise."""
        import torch

        config = self.pipe.vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(like.device, like.dtype)
        return mean, torch.tensor(config.latents_std).view(shape).to(like.device, like.dtype)


class LTX(Parts):
    """LTXConditionPipeline: one T5 encoder with attention masks, guidance as one batch [unconditional,
    conditional], latents packed into tokens with their coordinates (`video_coords`, time in seconds at the call's
    `frame_rate`). The pipeline steps its scheduler on -noise_pred with per-token timesteps (t, t - dt), which is
    the Euler step along noise_pred: the transformer's output is the velocity here."""

    def __init__(self, pipe: Any, canvas: np.ndarray, call: dict[str, Any]):
        super().__init__(pipe, canvas, call)
        T, height, width = canvas.shape[:3]
        self.latent_shape = (
            (T - 1) // pipe.vae_temporal_compression_ratio + 1,
            height // pipe.vae_spatial_compression_ratio,
            width // pipe.vae_spatial_compression_ratio,
        )
        p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        ids = pipe._prepare_video_ids(1, *self.latent_shape, patch_size=p, patch_size_t=pt, device=self.device)
        coords = pipe._scale_video_ids(ids, scale_factor=pipe.vae_spatial_compression_ratio,
                                       scale_factor_t=pipe.vae_temporal_compression_ratio, frame_index=0,
                                       device=self.device).float()  # fmt: skip
        coords[:, 0] = coords[:, 0] * (1.0 / float(call.get("frame_rate", 25)))  # the pipeline's default rate
        self.coords = coords

    def prompt(self, prompt: str, negative: str | None) -> Any:
        import torch

        cfg = self.guidance > 1
        embeds, mask, negative_embeds, negative_mask = self.pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative, do_classifier_free_guidance=cfg, device=self.device
        )
        if cfg:
            embeds, mask = torch.cat([negative_embeds, embeds]), torch.cat([negative_mask, mask])
        return embeds.to(self.dtype), mask

    def velocity(self, z: Any, t: Any, conditioning: Any, branch: str) -> Any:
        import torch

        embeds, mask = conditioning
        return self._batch_guided(
            branch,
            z,
            lambda n: {
                "encoder_hidden_states": embeds,
                "timestep": t.expand(n).unsqueeze(-1).float(),
                "encoder_attention_mask": mask,
                "video_coords": torch.cat([self.coords] * n),
            },
        )

    def source(self) -> Any:
        from noor.engine.diffusers.edits import video_latents  # edits imports this module

        pipe = self.pipe
        latents = video_latents(pipe, self.canvas).to(self.device)  # (1, C, T, h, w), normalised
        return pipe._pack_latents(latents, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)

    def output(self, z: Any) -> Any:
        """The pipeline's decode at its default decode_timestep 0 (no decode noise)."""
        import torch
        from diffusers.pipelines.ltx.pipeline_output import LTXPipelineOutput

        pipe, vae = self.pipe, self.pipe.vae
        p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        latents = pipe._unpack_latents(z, *self.latent_shape, p, pt)
        latents = pipe._denormalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        timestep = torch.zeros(1, device=self.device) if vae.config.timestep_conditioning else None
        video = vae.decode(latents.to(vae.dtype), timestep, return_dict=False)[0]
        return LTXPipelineOutput(frames=pipe.video_processor.postprocess_video(video, output_type="np"))


# the pipelines FlowEdit runs on, by class
PARTS: dict[str, type[Parts]] = {
    "StableDiffusion3Pipeline": SD3,
    "StableDiffusion3Img2ImgPipeline": SD3,
    "FluxPipeline": Flux,
    "FluxImg2ImgPipeline": Flux,
    "WanPipeline": Wan,
    "WanVideoToVideoPipeline": Wan,
    "WanVACEPipeline": Wan,
    "LTXConditionPipeline": LTX,
}


def supports(pipe: Any) -> bool:
    """Whether FlowEdit runs on this pipeline. Not on Wan 2.2's two-expert checkpoints (`transformer_2`) nor its
    TI2V-5B (a timestep per token, `expand_timesteps`), whose calls `Wan` does not make."""
    if type(pipe).__name__ not in PARTS:
        return False
    return getattr(pipe, "transformer_2", None) is None and not getattr(pipe.config, "expand_timesteps", False)


def edit(pipe: Any, canvas: np.ndarray, source_prompt: str, call: dict[str, Any], scheduler: Any, first: int) -> Any:
    """FlowEdit of `canvas` (T, H, W, 3) uint8, drawn under `source_prompt`, to the prompt of `call` (the backend's
    pipeline arguments: prompt, negative_prompt, guidance_scale, generator for the steps' noise,
    callback_on_step_end for each step's report), over `scheduler`'s schedule (set as the pipeline sets it) from
    step `first`. Returns the pipeline's output."""
    import torch

    # 1. the family's parts, the schedule, and the clean source latents x_src
    if "prompt" not in call:  # the guidance-parallel split (cfg=2) gives the pipeline embeddings instead
        raise ValueError("FlowEdit encodes both prompts itself: it cannot run under a guidance split (cfg=2)")
    parts = PARTS[type(pipe).__name__](pipe, canvas, call)
    steps = len(scheduler.timesteps)
    sigmas = scheduler.sigmas.float()  # steps + 1, the last 0
    negative = call.get("negative_prompt")
    callback: Callable[..., dict[str, Any]] | None = call.get("callback_on_step_end")
    with torch.no_grad():
        x_src = parts.source()
        # 2. both prompts, as the pipeline encodes them
        target = parts.prompt(call["prompt"], negative)
        source = parts.prompt(source_prompt, negative)
        # 3. from the first step: noise the source afresh, shift it by the edit so far, move by the difference
        z = x_src.clone()
        for i in range(first, steps):
            t, sigma, following = scheduler.timesteps[i].to(parts.device), sigmas[i], sigmas[i + 1]
            noise = torch.randn(x_src.shape, generator=call["generator"], dtype=torch.float32).to(x_src.device)
            z_src = (1.0 - sigma) * x_src + sigma * noise
            z_tar = z_src + (z - x_src)
            v = parts.velocity(z_tar, t, target, "target") - parts.velocity(z_src, t, source, "source")
            z = z + (following - sigma) * v
            if callback is not None:
                z = callback(pipe, i, t, {"latents": z}).pop("latents", z)
        # 4. decode as the pipeline does
        return parts.output(z)

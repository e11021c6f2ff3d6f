"""Edit and reframe on the open families (#29), through the pipelines diffusers has for them.

An edit (SDEdit) takes its source to a noise level and denoises it under the new prompt. The level is
`Task.edit_level` (EDIT_LEVELS), a noise level (sigma) as on noor-tiny: the edit starts at the first step of the
family's own schedule at or below it (`scheduled`), which the pipeline is told as its `strength` (FLUX and SD3.5:
`*Img2ImgPipeline`; Wan 2.1 T2V: `WanVideoToVideoPipeline`) or `denoise_strength` over the source's latents
(LTX-Video: `LTXConditionPipeline`); Wan VACE (and WanPipeline) has neither, so its call gets the source's latents
noised there and its schedule from that step (`from_step`), and VACE's context video is the source's frames (motion
and layout conditioned). An edit whose source's prompt is known (`Task.source_prompt`) in an adhere or flex mode
(`noor.engine.flowedit.flow_edit`) goes instead by FlowEdit from the same step, on SD3.5, FLUX.1, Wan 2.1 (T2V and
VACE) and LTX-Video (`flowedit`): what the two prompts share is kept. Either way the pipeline runs only the steps
from there (`Work.runs`), which is what the backend's progress counts.

A reframe places the source on the canvas (`Task.reframe_box`, the rest its edge pixels repeated: noor-tiny's
`on_canvas`) and draws the rest by masked denoising: the known region is re-injected at each step at the current
noise level, by the inpainting pipelines themselves (`*InpaintPipeline`, whose `mask_image` is white where the
model draws) or, for the video families, by a step callback here (`Reinject`; Wan VACE's context video is its
outpainting input besides). The output is brought to the task's size and length, and a reframe's region then shows
the source's own pixels (`keep_source`, as diffusers' `apply_overlay` pastes an inpainted image's).

A family declares "edit"/"reframe" in its capabilities and names the pipeline of each in `Family.pipelines`
(under the operation's name); the backend calls `Work.of` and the hooks below for a task with a source.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from noor.engine.canvas import keep_source, on_canvas, retime
from noor.engine.diffusers import flowedit
from noor.engine.flowedit import flow_edit
from noor.engine.resample import resize
from noor.engine.task import Task

OPERATIONS = ("edit", "reframe")
# A reframe draws the rest from pure noise (the known region re-injected at every step), as diffusers' outpainting
# examples do.
REFRAME_STRENGTH = 1.0
# The pipelines that cannot be told where to start (no `strength`): their call gets latents already noised to the
# first step's level, and their schedule from that step (`from_step`).
FROM_STEP = ("WanPipeline", "WanVACEPipeline")


@dataclass(frozen=True)
class Work:
    """A task's source as one family's pipeline takes it: the canvas at the drawn size and length (T, H, W, 3)
    uint8, where the source is on it ((H, W) bool, a reframe's; None for an edit), the level it is noised to, and
    where on the pipeline's schedule its denoising starts."""

    task: Task
    kind: str  # the family's kind: "video" or "image"
    canvas: np.ndarray
    mask: np.ndarray | None
    level: float
    notes: tuple[str, ...]
    scheduler: Any  # a copy of the pipeline's scheduler, set for the call's steps at the canvas's size (`scheduled`)
    steps: int  # the task's steps (the schedule's length)
    first: int  # the first step at or below `level` (0: from pure noise)
    flow: bool  # by FlowEdit (`noor.engine.flowedit.flow_edit`, on a pipeline `flowedit.supports`)

    @classmethod
    def of(cls, pipe: Any, kind: str, task: Task, fitted: Task, steps: int) -> Work | None:
        """The work for a task with a source (None for a generation) on `pipe` (the family's pipeline for the
        task's operation), drawn at `fitted`'s size and length in `steps` steps."""
        if task.operation not in OPERATIONS:
            return None
        placed = on_canvas(task, fitted.num_frames, fitted.width, fitted.height)
        assert placed is not None
        level = task.edit_level if task.operation == "edit" else REFRAME_STRENGTH
        scheduler = scheduled(pipe, steps, fitted.width, fitted.height)
        sigmas = [float(s) for s in scheduler.sigmas[:steps]]
        first = next((i for i, sigma in enumerate(sigmas) if sigma <= level + 1e-6), steps - 1)
        flow = flow_edit(task) and flowedit.supports(pipe)
        return cls(task, kind, placed.frames, placed.mask, level, placed.notes, scheduler, steps, first, flow)

    @property
    def runs(self) -> int:
        """The denoising steps the pipeline runs: an edit's from its first step on (SDEdit and FlowEdit alike, each
        pipeline told so by `kwargs`), all of a reframe's."""
        return self.steps - self.first

    @property
    def started(self) -> list[str]:
        """An edit's note of where its denoising started, and how."""
        if self.task.operation != "edit":
            return []
        sigma = float(self.scheduler.sigmas[self.first])
        how = ", by FlowEdit from the source's prompt" if self.flow else ""
        return [
            f"{self.task.edit_mode} (noise level {self.level:g}): steps {self.first + 1}..{self.steps} of "
            f"{self.steps}, from noise level {sigma:.3f}{how}"
        ]

    def kwargs(self, pipe: Any, call: dict[str, Any]) -> dict[str, Any]:
        """The pipeline's source arguments, for its `call` (generator) so far; none for a FlowEdit, which `call`
        runs itself. Each tells its pipeline to run the `runs` last steps."""
        if self.flow:
            return {}
        steps, first = self.steps, self.first
        if self.kind == "image":  # img2img and inpainting start at step int(steps x (1 - strength))
            out: dict[str, Any] = {"image": Image.fromarray(self.canvas[0])}
            out["strength"] = 1.0 if first == 0 else (steps - first - 0.5) / steps
            if self.mask is not None:  # white where the model draws
                out["mask_image"] = Image.fromarray(np.where(self.mask, 0, 255).astype(np.uint8))
            return out
        name = type(pipe).__name__
        if name in FROM_STEP:
            return self._wan(pipe, call)
        # the video pipelines run the last int(steps x strength) steps: WanVideoToVideoPipeline encodes its `video`
        # and noises it there itself; LTX-Video gets the canvas's latents, noised by the pipeline
        strength = 1.0 if first == 0 else (steps - first + 0.5) / steps
        if name == "WanVideoToVideoPipeline":
            return {"video": [Image.fromarray(f) for f in self.canvas], "strength": strength}
        return {"latents": self.latents(pipe, call["generator"]), "denoise_strength": strength}

    def _wan(self, pipe: Any, call: dict[str, Any]) -> dict[str, Any]:
        """Wan (VACE, and WanPipeline): VACE takes the source's frames as its context `video`. A reframe is VACE's
        outpainting (the unknown area grey, the `mask` white there; WanPipeline: from pure noise, the region
        re-injected, `during`); an edit starts from the source's latents noised to the level (SDEdit: the
        pipeline runs only the steps from there, `during`), and VACE gets all of the source as the part to redraw
        (mask white everywhere), its motion and layout the context the new prompt is drawn from. At level 1 the
        edit never sees its source (a text-to-video call), as on every family."""
        vace = type(pipe).__name__ == "WanVACEPipeline"
        if self.mask is not None:
            if not vace:
                return {}
            frames = np.where(self.mask[None, :, :, None], self.canvas, 128).astype(np.uint8)  # VACE's unknown
            mask = Image.fromarray(np.where(self.mask, 0, 255).astype(np.uint8))  # white where drawn
            return {"video": [Image.fromarray(f) for f in frames], "mask": [mask] * len(frames)}
        if self.first == 0:
            return {}
        import torch

        sigma = float(self.scheduler.sigmas[self.first])
        x0 = self.latents(pipe, call["generator"])
        noise = torch.randn(x0.shape, generator=call["generator"], dtype=x0.dtype)
        out = {"latents": (1.0 - sigma) * x0 + sigma * noise}
        if vace:
            mask = Image.new("L", (self.canvas.shape[2], self.canvas.shape[1]), 255)
            out |= {"video": [Image.fromarray(f) for f in self.canvas], "mask": [mask] * len(self.canvas)}
        return out

    def latents(self, pipe: Any, generator: Any) -> Any:
        """The canvas as the pipeline's normalised latents (`video_latents`)."""
        return video_latents(pipe, self.canvas, generator)

    def call(self, pipe: Any, kwargs: dict[str, Any]) -> Any:
        """The pipeline's output for the call `kwargs`: a FlowEdit's own loop over the pipeline's parts
        (`flowedit.edit`), or the pipeline's call."""
        if not self.flow:
            return pipe(**kwargs)
        return flowedit.edit(pipe, self.canvas, str(self.task.source_prompt), kwargs, self.scheduler, self.first)

    @contextlib.contextmanager
    def during(self, pipe: Any, kwargs: dict[str, Any], seed: int) -> Iterator[None]:
        """Around the call: a Wan SDEdit's schedule from its first step (`from_step`); a video reframe's known
        region re-injected at each step (`Reinject`), before the backend's own step callback. Nothing else (a
        FlowEdit runs its own loop; the other pipelines start where `strength` says, and the image ones re-inject
        the region themselves)."""
        if self.flow:
            yield
            return
        if self.task.operation == "edit" and type(pipe).__name__ in FROM_STEP and self.first > 0:
            with from_step(pipe.scheduler, self.first):
                yield
            return
        if self.mask is None or self.kind == "image":
            yield
            return
        source = kwargs["latents"] if "latents" in kwargs else self.latents(pipe, kwargs["generator"])
        reinject = Reinject.of(pipe, source, self.mask, seed)
        kwargs["callback_on_step_end"] = reinject.chained(kwargs.get("callback_on_step_end"))
        yield

    def finish(self, frames: np.ndarray, notes: list[str]) -> np.ndarray:
        """The drawn frames (T, h, w, 3) uint8 at the task's length and size; a reframe's region the source's own
        pixels. Notes what was placed and resized."""
        task = self.task
        notes.extend([*self.notes, *self.started])
        if frames.shape[:3] != (task.num_frames, task.height, task.width):
            notes.append(
                f"drawn as {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]}; "
                f"brought to the source's {task.num_frames} of {task.width}x{task.height}"
            )
        frames = resize(retime(frames, task.num_frames), task.width, task.height)
        if task.operation == "reframe":
            frames = keep_source(frames, task)
            notes.append("the source's own pixels kept in its region, the rest drawn around it")
        return frames


@contextlib.contextmanager
def from_step(scheduler: Any, first: int) -> Iterator[None]:
    """The scheduler's schedule from step `first` on (SDEdit in a pipeline that has no `strength`): each time the
    pipeline sets its timesteps, the earlier ones and their sigmas are dropped (the latents it is given are already
    at sigmas[first])."""
    original = scheduler.set_timesteps

    def truncated(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        scheduler.timesteps = scheduler.timesteps[first:]
        scheduler.sigmas = scheduler.sigmas[first:]
        scheduler.num_inference_steps = len(scheduler.timesteps)

    scheduler.set_timesteps = truncated
    try:
        yield
    finally:
        del scheduler.set_timesteps  # the instance attribute; the class method shows through again


def video_latents(pipe: Any, canvas: np.ndarray, generator: Any = None) -> Any:
    """A video canvas (T, H, W, 3) uint8 as the pipeline's normalised, unpacked latents (1, C, T, h, w), its VAE
    encoding's mean: LTX-Video's `_normalize_latents`, Wan's (z - latents_mean) / latents_std."""
    import torch
    from diffusers.pipelines.ltx.pipeline_ltx_condition import retrieve_latents

    frames = [Image.fromarray(frame) for frame in canvas]
    video = pipe.video_processor.preprocess_video(frames, canvas.shape[1], canvas.shape[2])
    vae = pipe.vae
    with torch.no_grad():
        latents = retrieve_latents(vae.encode(video.to(vae.device, vae.dtype)), generator, sample_mode="argmax")
    if hasattr(pipe, "_normalize_latents"):
        return pipe._normalize_latents(latents, vae.latents_mean, vae.latents_std).float()
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean, std = torch.tensor(vae.config.latents_mean).view(shape), torch.tensor(vae.config.latents_std).view(shape)
    return (latents.float() - mean.to(latents.device)) / std.to(latents.device)


def scheduled(pipe: Any, steps: int, width: int, height: int) -> Any:
    """A copy of the pipeline's scheduler, set for `steps` steps at this size as its own `__call__` sets it:
    LTX-Video's linear-quadratic schedule, FLUX's shift by the image's tokens, SD3's shift (dynamic where its
    scheduler says), Wan's as it is (its flow shift in the scheduler's config)."""
    import copy

    scheduler = copy.deepcopy(pipe.scheduler)
    config = scheduler.config
    name = type(pipe).__name__
    if name.startswith("LTX"):
        from diffusers.pipelines.ltx.pipeline_ltx_condition import linear_quadratic_schedule
        from diffusers.utils import logging as diffusers_logging

        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # its warning on timesteps without sigmas: the pipeline's to give
        try:
            scheduler.set_timesteps(timesteps=(linear_quadratic_schedule(steps) * 1000).tolist())
        finally:
            diffusers_logging.set_verbosity(verbosity)
    elif name.startswith(("Flux", "StableDiffusion3")):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        flux = name.startswith("Flux")
        patch = 2 if flux else int(pipe.transformer.config.patch_size)
        tokens = (height // pipe.vae_scale_factor // patch) * (width // pipe.vae_scale_factor // patch)
        shift = (config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096))
        shifts = (config.get("base_shift", 0.5), config.get("max_shift", 1.15 if flux else 1.16))
        mu = calculate_shift(tokens, *shift, *shifts)
        if flux:
            scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        else:
            scheduler.set_timesteps(steps, mu=mu if config.get("use_dynamic_shifting") else None)
    else:
        scheduler.set_timesteps(steps)
    return scheduler


@dataclass
class Reinject:
    """Masked denoising on a video pipeline's latents (LTX-Video's packed (1, tokens, C), Wan's (1, C, T, h, w)):
    after each step, the latents the source covers are the source's latents noised to the scheduler's next level
    (flow matching: (1 - sigma) x0 + sigma noise) with one fixed noise, and after the last step (level 0) the source's
    latents themselves. A latent (LTX: a token) is known when every pixel it covers is the source's."""

    scheduler: Any
    x0: Any
    noise: Any
    known: Any  # bool, broadcast over the latents' channels

    @classmethod
    def of(cls, pipe: Any, latents: Any, mask: np.ndarray, seed: int) -> Reinject:
        import torch
        import torch.nn.functional as F

        _, _, T, h, w = latents.shape
        unknown = torch.from_numpy((~mask).astype(np.float32))[None, None]  # (1, 1, H, W)
        per_latent = F.adaptive_max_pool2d(unknown, (h, w)) == 0  # every pixel under it known
        known = per_latent[:, :, None].expand(1, 1, T, h, w).float()
        x0 = latents
        if hasattr(pipe, "_pack_latents"):  # LTX-Video: tokens of p_t x p x p latents
            p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
            known = pipe._pack_latents(known, p, pt).amin(-1, keepdim=True)  # every latent of the token
            x0 = pipe._pack_latents(latents, p, pt)
        known = known > 0
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=x0.dtype)
        return cls(pipe.scheduler, x0, noise, known)

    def __call__(self, latents: Any) -> Any:
        import torch

        sigma = self.scheduler.sigmas[self.scheduler.step_index].to(latents.dtype)
        known = (1.0 - sigma) * self.x0.to(latents) + sigma * self.noise.to(latents)
        return torch.where(self.known.to(latents.device), known, latents)

    def chained(self, then: Callable[..., dict[str, Any]] | None) -> Callable[..., dict[str, Any]]:
        """A `callback_on_step_end` that re-injects, then calls `then` (the backend's step reporter) if any."""

        def callback(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            tensors["latents"] = self(tensors["latents"])
            return then(pipe, i, t, tensors) if then is not None else tensors

        return callback

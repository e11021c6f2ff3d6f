"""Fine-tune a LoRA adapter on an open model's transformer: `noor train lora`.

A handful of captioned clips (or images, for an image family) teach the transformer's attention projections a
concept; the base weights stay frozen. The objective is the family's own rectified flow: encode the media with the
pipeline's VAE, draw a noise level sigma, mix `x_sigma = (1 - sigma) * x_0 + sigma * noise`, and regress the
velocity `noise - x_0` that the pipeline's FlowMatchEuler scheduler integrates at sampling time (MSE).

The adapter is saved in diffusers' LoRA format beside the resolved config:

    OUT/pytorch_lora_weights.safetensors   `pipe.load_lora_weights(OUT)` loads it (rank and alpha in its metadata)
    OUT/lora_config.json                   the LoraTrainConfig, the family, the loss curve, the time taken

The training data is a folder (`read_examples`):

    DATA/captions.jsonl    one example a line: {"file": "clip1.mp4", "caption": "a red crescent moves left"}
    DATA/clip1.mp4 ...     (paths relative to DATA)

or, without captions.jsonl, every .mp4/.png/.jpg/.jpeg/.webp in DATA with its caption in a sidecar text file of
the same name (`clip1.mp4` + `clip1.txt`).

Across N processes (`nproc`), every rank draws the same global batch, noise and noise levels from the seed and
keeps its own 1/N share; DDP averages the LoRA gradients, so N processes follow one process's run with the
same global batch (within float32 rounding). Rank 0 alone reports progress and writes the outputs.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from noor.engine.ddp import SINGLE, Group, launch
from noor.engine.diffusers import families
from noor.engine.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, MediaError, read_clip, read_image

MANIFEST = "captions.jsonl"
WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default: what load_lora_weights(dir) looks for
CONFIG_NAME = "lora_config.json"
# The attention projections every supported transformer names this way (self- and cross-attention; FLUX, SD3 and
# HunyuanVideo's joint blocks add add_*_proj for the text stream, left frozen): diffusers' own LoRA scripts'
# default targets.
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
WEIGHTINGS = ("logit_normal", "uniform")
OnStep = Callable[[str, int, int, float], None]  # (stage, step, total, loss), as noor train tiny/world


class DataError(ValueError):
    """A training folder that cannot be used; the message names the file (and line) at fault."""


class ConfigError(ValueError):
    """A LoraTrainConfig field out of range: names the field and the bad value."""

    def __init__(self, field: str, value: object, message: str):
        super().__init__(f"{field}: {message}, got {value!r}")
        self.field, self.value, self.message = field, value, message


class UnsupportedFamily(ValueError):
    pass


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str


@dataclass(frozen=True)
class LoraTrainConfig:
    model_path: str  # a diffusers pipeline dir (Hugging Face layout)
    family: str
    steps: int = 500
    rank: int = 16
    alpha: int | None = None  # the LoRA scale is alpha / rank; None: alpha = rank (scale 1)
    lr: float = 1e-4
    batch_size: int = 1  # global: split evenly over the processes
    width: int = 0  # 0: the family's default size, frames and fps
    height: int = 0
    frames: int = 0
    fps: int = 0  # LTX's transformer conditions its rotary positions on the frame rate
    guidance: float | None = None  # embedded guidance (HunyuanVideo, FLUX.1 [dev]); None: the family's
    seed: int = 0
    nproc: int = 1
    dtype: str = "float32"  # the frozen base weights; the LoRA weights train in float32
    weighting: str = "logit_normal"  # how sigma is drawn before the scheduler's shift (SD3 paper: logit-normal)
    max_grad_norm: float = 1.0
    eval_levels: int = 4  # noise levels of the before/after figure (eval_loss)
    weight_decay: float = 1e-4
    target_modules: tuple[str, ...] = TARGET_MODULES

    def check(self) -> LoraTrainConfig:
        """Refuse an out-of-range field (naming it); fill in the family's defaults."""
        family = families.get(self.family)
        if self.family not in OBJECTIVES:
            raise UnsupportedFamily(
                f"noor train lora does not train {self.family} models yet; it trains {', '.join(OBJECTIVES)}"
            )
        for name in ("steps", "rank", "batch_size", "nproc", "eval_levels"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be at least 1")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigError("lr", self.lr, "must be a positive number")
        if self.alpha is not None and self.alpha < 1:
            raise ConfigError("alpha", self.alpha, "must be at least 1")
        slots, kind = (
            (torch.cuda.device_count(), "GPUs") if torch.cuda.is_available() else (os.cpu_count() or 1, "cores")
        )
        if self.nproc > slots:
            raise ConfigError("nproc", self.nproc, f"this machine has {slots} {kind} (one process each)")
        if self.batch_size % self.nproc:
            raise ConfigError("batch_size", self.batch_size, f"must be a multiple of nproc ({self.nproc})")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError("weighting", self.weighting, f"must be one of {', '.join(WEIGHTINGS)}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError("dtype", self.dtype, "must be float32, bfloat16 or float16")
        geometry = family.geometry(Path(self.model_path))
        width, height = self.width or family.width, self.height or family.height
        frames = self.frames or (family.frames if geometry.temporal else 1)
        for name, side in (("width", width), ("height", height)):
            if side < geometry.spatial or side % geometry.spatial:
                raise ConfigError(name, side, f"{family.name} needs a multiple of {geometry.spatial}")
        if geometry.fixed_size and (width, height) != geometry.fixed_size:
            raise ConfigError(
                "width", width, f"these weights draw only {geometry.fixed_size[0]}x{geometry.fixed_size[1]}"
            )
        if geometry.temporal and (frames - 1) % geometry.temporal:
            raise ConfigError("frames", frames, f"{family.name} needs {geometry.temporal}k+1 frames")
        if not geometry.temporal and frames != 1:
            raise ConfigError("frames", frames, f"{family.name} is an image model: 1 frame")
        return LoraTrainConfig(
            **{
                **asdict(self),
                "width": width,
                "height": height,
                "frames": frames,
                "fps": self.fps or family.fps,
                "guidance": family.guidance if self.guidance is None else self.guidance,
                "alpha": self.rank if self.alpha is None else self.alpha,
                "target_modules": tuple(self.target_modules),
            }
        )


# 1. the data --------------------------------------------------------------------------------------------------


def read_examples(data_dir: Path) -> list[Example]:
    """The captioned examples in a training folder (see the module's docstring); DataError names what is wrong."""
    if not data_dir.is_dir():
        raise DataError(f"no such folder, got {str(data_dir)!r}")
    manifest = data_dir / MANIFEST
    examples = _read_manifest(data_dir, manifest) if manifest.is_file() else _read_sidecars(data_dir)
    if not examples:
        raise DataError(f"{data_dir} holds no examples (a {MANIFEST}, or media files each with a .txt caption)")
    return examples


def _read_manifest(data_dir: Path, manifest: Path) -> list[Example]:
    examples = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{manifest} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("file"), str) or "caption" not in row:
            raise DataError(f'{where}: needs {{"file": ..., "caption": ...}}, got {line.strip()[:80]!r}')
        path = data_dir / row["file"]
        if not path.is_file():
            raise DataError(f"{where}: no such file {str(path)!r}")
        caption = row["caption"]
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{where}: empty caption for {row['file']!r}")
        examples.append(Example(path, caption.strip()))
    return examples


def _read_sidecars(data_dir: Path) -> list[Example]:
    examples = []
    for path in sorted(data_dir.iterdir()):
        if path.suffix.lower() not in (*VIDEO_SUFFIXES, *IMAGE_SUFFIXES) or not path.is_file():
            continue
        sidecar = path.with_suffix(".txt")
        if not sidecar.is_file():
            raise DataError(f"{path.name} has no caption file {str(sidecar)!r} (or write a {MANIFEST})")
        caption = sidecar.read_text(encoding="utf-8").strip()
        if not caption:
            raise DataError(f"empty caption in {str(sidecar)!r}")
        examples.append(Example(path, caption))
    return examples


def load_pixels(examples: list[Example], width: int, height: int, frames: int, video: bool) -> torch.Tensor:
    """Every example as (N, 3, T, H, W) floats in [-1, 1] (an image family: (N, 3, H, W)): its first `frames`
    frames, centre-cropped to the training aspect ratio and resized to the training size."""
    clips = []
    for example in examples:
        try:
            if example.path.suffix.lower() in VIDEO_SUFFIXES:
                array, _ = read_clip(example.path)  # (T, H, W, 3) uint8
                if not video:
                    raise DataError(f"{example.path.name} is a clip; an image model trains on images")
            else:
                array = read_image(example.path)[None]
        except MediaError as err:
            raise DataError(str(err)) from None
        if len(array) < frames:
            kind = "an image" if len(array) == 1 else f"{len(array)} frames"
            raise DataError(f"{example.path.name} is {kind}; training takes clips of {frames} frames")
        clips.append(_fit(array[:frames], width, height))
    pixels = torch.stack(clips)  # (N, 3, T, H, W)
    return pixels if video else pixels[:, :, 0]


def _fit(array: np.ndarray, width: int, height: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, height, width) in [-1, 1]: centre crop to the aspect ratio, then resize."""
    _, h, w, _ = array.shape
    if w * height > h * width:  # too wide
        keep = round(h * width / height)
        array = array[:, :, (w - keep) // 2 : (w - keep) // 2 + keep]
    elif w * height < h * width:  # too tall
        keep = round(w * height / width)
        array = array[:, (h - keep) // 2 : (h - keep) // 2 + keep]
    x = torch.from_numpy(array.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (T, 3, h, w)
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1, 1).permute(1, 0, 2, 3)  # (3, T, H, W)


# 2. each family's objective -----------------------------------------------------------------------------------


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


# 3. the noise levels ------------------------------------------------------------------------------------------


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


@dataclass
class Draw:
    """One step's randomness for the whole global batch, the same on every rank: which examples, the posterior
    sample, the noise and the noise level of each."""

    index: torch.Tensor  # (B,) example indexes
    eps: torch.Tensor  # (B, ...) for the posterior sample
    noise: torch.Tensor  # (B, ...)
    u: torch.Tensor  # (B,) in (0, 1), before the shift


def draw(step: int, cfg: LoraTrainConfig, count: int, shape: tuple[int, ...]) -> Draw:
    """Step `step`'s draw from the seed alone (not the rank): examples go in a fresh random order every epoch."""
    first = step * cfg.batch_size
    index = []
    for position in range(first, first + cfg.batch_size):
        epoch, offset = divmod(position, count)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        index.append(int(order[offset]))
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * step + 1)
    b = cfg.batch_size
    eps = torch.randn((b, *shape), generator=gen)
    noise = torch.randn((b, *shape), generator=gen)
    if cfg.weighting == "logit_normal":
        u = torch.sigmoid(torch.randn((b,), generator=gen))
    else:
        u = torch.rand((b,), generator=gen)
    return Draw(torch.tensor(index), eps, noise, u.clamp(1e-4, 1 - 1e-4))


# 4. training --------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    out: Path
    losses: list[float] = field(default_factory=list)  # the global batch's mean loss at each step
    loss_before: float = math.nan  # eval_loss without the adapter and with it (rank 0 only)
    loss_after: float = math.nan
    seconds: float = 0.0


def load_pipeline(cfg: LoraTrainConfig) -> Any:
    """The family's text-to-video (or image) pipeline from the weights dir, on the CPU, frozen."""
    import diffusers
    import transformers
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bar, under the training bars
    family = families.get(cfg.family)
    mode = "image" if family.kind == "image" else "t2v"
    cls = getattr(diffusers, family.pipelines[mode])
    pipe = cls.from_pretrained(cfg.model_path, dtype=getattr(torch, cfg.dtype))
    pipe.set_progress_bar_config(disable=True)
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            part.requires_grad_(False)
            part.eval()
    return pipe


def max_sequence_length(pipe: Any) -> int:
    """The prompt length the pipeline's __call__ encodes at by default: the adapter learns on the same embeddings."""
    default = inspect.signature(pipe.__call__).parameters["max_sequence_length"].default
    return int(default)


@dataclass
class Prepared:
    """The frozen parts' work, done once: every caption's text conditioning and every example's latents."""

    text: Cond  # each (N, ...)
    latents: Latents
    tokens: int  # image tokens an example has


def prepare(
    pipe: Any, cfg: LoraTrainConfig, examples: list[Example], device: Any, report: OnStep | None = None
) -> Prepared:
    """Encode the captions (text encoders) and the media (VAE) on `device`, moving each part there only while it
    works (the transformer trains alone on the device)."""
    objective = OBJECTIVES[cfg.family]
    video = families.get(cfg.family).kind == "video"
    names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    encoders = [getattr(pipe, n) for n in names if getattr(pipe, n, None) is not None]
    with torch.no_grad():
        for encoder in encoders:
            encoder.to(device)
        text = objective.encode_text(pipe, [e.caption for e in examples], max_sequence_length(pipe), device)
        for encoder in encoders:
            encoder.to("cpu")
        pipe.vae.to(device)
        parts = []
        for i, example in enumerate(examples):
            pixels = load_pixels([example], cfg.width, cfg.height, cfg.frames, video)
            parts.append(objective.encode_media(pipe, pixels.to(device)))
            if report:
                report("encode", i, len(examples), 0.0)
        pipe.vae.to("cpu")
    latents = Latents(torch.cat([p.mean for p in parts]), torch.cat([p.std for p in parts]), parts[0].grid)
    return Prepared(text, latents, objective.tokens(latents))


def eval_loss(pipe: Any, transformer: Any, prepared: Prepared, cfg: LoraTrainConfig) -> float:
    """The objective on every example at `cfg.eval_levels` fixed noise levels (evenly spaced draws, shifted as in
    training) with fixed noise and the posterior mean: the same figure before and after training, and for any
    transformer holding the adapter (a pipeline that loaded it gives the trained one's figure)."""
    objective, latents = OBJECTIVES[cfg.family], prepared.latents
    device = latents.mean.device
    count, levels = len(latents.mean), cfg.eval_levels
    gen = torch.Generator().manual_seed(cfg.seed + 424_242)
    noise = torch.randn((levels, *latents.mean.shape), generator=gen).to(device)
    u = (torch.arange(levels, dtype=torch.float32) + 0.5) / levels
    sigmas = shifted_sigmas(u, pipe.scheduler.config, prepared.tokens).to(device)
    total = 0.0
    with torch.no_grad():
        for k in range(levels):
            sigma = sigmas[k].expand(count)
            s = sigma.view(-1, *([1] * (latents.mean.ndim - 1)))
            x = ((1 - s) * latents.mean + s * noise[k]).to(transformer.dtype)
            pred = objective.predict(pipe, transformer, x, sigma, prepared.text, latents.grid, cfg).float()
            total += float(F.mse_loss(pred, noise[k] - latents.mean))
    return total / levels


def evaluate(pipe: Any, cfg: LoraTrainConfig, examples: list[Example]) -> float:
    """`eval_loss` of a loaded pipeline's transformer (with whatever adapters it holds) on `examples`."""
    return eval_loss(pipe, pipe.transformer, prepare(pipe, cfg, examples, pipe.transformer.device), cfg)


def train(
    cfg: LoraTrainConfig,
    examples: list[Example],
    out: Path,
    on_step: OnStep | None = None,
    group: Group = SINGLE,
) -> TrainResult:
    """Fine-tune a LoRA on `examples` and (on rank 0) write it to `out`. `cfg` must be checked (`cfg.check()`)."""
    from peft import LoraConfig

    objective = OBJECTIVES[cfg.family]
    started = time.perf_counter()
    device = group.device if group.distributed or not torch.cuda.is_available() else torch.device("cuda")
    report = on_step if group.is_main else None

    # 1. the frozen pipeline; the captions and media encoded once (the text encoders and the VAE are not trained)
    pipe = load_pipeline(cfg)
    prepared = prepare(pipe, cfg, examples, device, report)
    latents, text = prepared.latents, prepared.text
    shape = tuple(latents.mean.shape[1:])
    result = TrainResult(out)

    # 2. the adapter on the transformer's attention projections; only its weights train, in float32
    transformer = pipe.transformer.to(device)
    if group.is_main:
        result.loss_before = eval_loss(pipe, transformer, prepared, cfg)
    torch.manual_seed(cfg.seed)  # the LoRA's initial A matrices: the same on every rank
    transformer.add_adapter(
        LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha or cfg.rank,
            init_lora_weights="gaussian",  # A random, B zero: the adapter starts as the identity
            target_modules=list(cfg.target_modules),
        )
    )
    params = [p for p in transformer.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    transformer.train()
    model = group.wrap(transformer)  # DDP: the LoRA gradients averaged over the ranks in backward
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    mine = group.shard(cfg.batch_size)

    # 3. the flow-matching steps: every rank draws the global batch and trains on its share
    for step in range(cfg.steps):
        d = draw(step, cfg, len(examples), shape)
        index = d.index[mine]
        x0 = latents.mean[index] + latents.std[index] * d.eps[mine].to(device)  # a posterior sample
        noise = d.noise[mine].to(device)
        sigma = shifted_sigmas(d.u[mine], pipe.scheduler.config, prepared.tokens).to(device)  # (b,)
        s = sigma.view(-1, *([1] * len(shape)))
        x = ((1 - s) * x0 + s * noise).to(transformer.dtype)
        cond = {k: v[index] for k, v in text.items()}
        pred = objective.predict(pipe, model, x, sigma, cond, latents.grid, cfg).float()
        loss = F.mse_loss(pred, noise - x0)  # the velocity the Euler scheduler integrates
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        result.losses.append(group.mean(float(loss.detach())))
        if report:
            report("lora", step, cfg.steps, result.losses[-1])
    transformer.eval()

    # 4. the adapter in diffusers' format (with its rank and alpha), and the resolved config beside it
    if group.is_main:
        result.loss_after = eval_loss(pipe, transformer, prepared, cfg)
        result.seconds = time.perf_counter() - started
        save_adapter(pipe, transformer, cfg, examples, out, result)
    group.barrier()
    return result


def train_on_rank(
    group: Group,
    cfg: LoraTrainConfig,
    examples: list[Example],
    out: Path,
    bars: Callable[[], AbstractContextManager[OnStep]] | None = None,
) -> TrainResult:
    """`train` on one rank of `group` (what `noor.engine.ddp.launch` runs), with `bars()` (the CLI's progress bars)
    shown on rank 0 alone."""
    with group.on_main(bars) as on_step:
        return train(cfg, examples, out, on_step, group)


def run(
    cfg: LoraTrainConfig,
    examples: list[Example],
    out: Path,
    bars: Callable[[], AbstractContextManager[OnStep]] | None = None,
) -> TrainResult:
    """Train on `cfg.nproc` local processes (torch's elastic launcher, gloo on CPU, nccl on CUDA); rank 0's result.
    Every example is decoded at the training shape first, so a bad file is one DataError before any process starts."""
    for example in examples:
        load_pixels([example], cfg.width, cfg.height, cfg.frames, families.get(cfg.family).kind == "video")
    return launch(cfg.nproc, train_on_rank, cfg, examples, out, bars)


def save_adapter(
    pipe: Any, transformer: Any, cfg: LoraTrainConfig, examples: list[Example], out: Path, result: TrainResult
) -> None:
    from peft.utils import get_peft_model_state_dict

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in get_peft_model_state_dict(transformer).items()}
    type(pipe).save_lora_weights(
        out,
        transformer_lora_layers=state,
        transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict(),
        weight_name=WEIGHT_NAME,
        safe_serialization=True,
    )
    record = {
        "config": asdict(cfg),
        "family": cfg.family,
        "pipeline": type(pipe).__name__,
        "weights": WEIGHT_NAME,
        "examples": [{"file": str(e.path), "caption": e.caption} for e in examples],
        "eval_loss_before": round(result.loss_before, 6),
        "eval_loss_after": round(result.loss_after, 6),
        "losses": [round(v, 6) for v in result.losses],
        "seconds": round(result.seconds, 2),
    }
    (out / CONFIG_NAME).write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

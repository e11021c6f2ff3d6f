"""Fine-tune a LoRA adapter on an open model's transformer: `noor train lora`.

A handful of captioned clips (or images, for an image family) teach the transformer's attention projections a
concept; the base weights stay frozen. The objective is the family's own rectified flow: encode the media with the
pipeline's VAE, draw a noise level sigma, mix `x_sigma = (1 - sigma) * x_0 + sigma * noise`, and regress the
velocity `noise - x_0` that the pipeline's FlowMatchEuler scheduler integrates at sampling time (MSE).

The adapter is saved in diffusers' LoRA format beside the resolved config:

    OUT/pytorch_lora_weights.safetensors   `pipe.load_lora_weights(OUT)` loads it (rank and alpha in its metadata)
    OUT/lora_config.json                   the LoraTrainConfig, the family, the loss curve, the time taken

The training data is a folder of captioned clips or images (`noor.engine.examples`, the one format every model's
`noor train lora` reads).

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

import torch
import torch.nn.functional as F

from noor.engine.ddp import SINGLE, Group, launch
from noor.engine.diffusers import families
from noor.engine.diffusers.objectives import OBJECTIVES, Cond, Latents, shifted_sigmas
from noor.engine.examples import CONFIG_NAME, WEIGHT_NAME, Example, load_pixels

# The attention projections every supported transformer names this way (self- and cross-attention; FLUX, SD3 and
# HunyuanVideo's joint blocks add add_*_proj for the text stream, left frozen): diffusers' own LoRA scripts'
# default targets.
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
WEIGHTINGS = ("logit_normal", "uniform")
OnStep = Callable[[str, int, int, float], None]  # (stage, step, total, loss), as noor train tiny/world


class ConfigError(ValueError):
    """A LoraTrainConfig field out of range: names the field and the bad value."""

    def __init__(self, field: str, value: object, message: str):
        super().__init__(f"{field}: {message}, got {value!r}")
        self.field, self.value, self.message = field, value, message


class UnsupportedFamily(ValueError):
    pass


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


# 2. each step's draws -----------------------------------------------------------------------------------------


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


# 3. training --------------------------------------------------------------------------------------------------


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

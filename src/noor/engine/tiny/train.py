"""Train noor-tiny from scratch on clips rendered from the synthetic world.

Five stages, all derived from `TrainConfig.seed` (so a run is reproducible on one machine):
1. the VAE (diffusers' AutoencoderKL at toy size) learns to squeeze 64x64 frames into 4x16x16 latents;
2. its decoder alone is sharpened further (own random stream; the latent space does not change); optionally
   (`canvas_decoder_steps`, also on a VAE from `init_vae`) then taught canvases of other sizes than 64x64, its
   native output held (`noor.engine.tiny.canvases`);
3. a pool of rendered clips is encoded once (encoding on the fly would cost ~40% more per step);
4. the denoiser and text encoder learn flow matching on those latents, with fresh captions, caption
   dropout and random keyframes drawn for every batch. Every `save_every` steps the EMA weights are
   saved as a complete pipeline in the output directory;
5. optionally (`tune_steps`), a second phase continues from stage 4's EMA weights with other noise
   levels and loss weights, on its own random streams (so it can start from saved weights).
A round from saved weights with no stage 5 (`init_denoiser`, `tune_steps` 0) is a round of the VAE alone: it saves
the saved denoiser beside the new VAE, encoding no pool.

On N processes (`noor.engine.ddp.launch`), stages 1-2 (and 2b) run identically on every rank
(the same seed gives the same VAE with no communication; a small share of a run), stage 3 is shared (each rank
encodes every Nth chunk of clips, then broadcasts it), and in stages
4-5 every rank draws the whole global batch from the same random streams (indices, captions, keyframes, noise
levels, noise: cheap beside the model) and runs the model on its own rows, gradients averaged by
DistributedDataParallel: the run follows one process's random streams, so its loss curve is one process's (to
float rounding), for any N that divides the batches. With `checkpoint_every`, stages 4-5 save a checkpoint (models,
EMA, optimiser, random streams, step) in `out/checkpoints`; `resume` continues from it (`noor.engine.checkpoint`).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

from noor.engine.checkpoint import Checkpoints, restore_stage, stage_state, vae_config
from noor.engine.ddp import SINGLE, Group
from noor.engine.tiny.canvases import canvas_decoder
from noor.engine.tiny.captions import caption, vocabulary_corpus
from noor.engine.tiny.decoder import cosine, fit_decoder
from noor.engine.tiny.pipeline import NoorTinyPipeline, encode_frames, frame_noise
from noor.engine.tiny.scene import NUM_FRAMES, SIZE, Scene, render, sample_scene
from noor.engine.tiny.text_encoder import TinyTextEncoder
from noor.engine.tiny.tokenizer import WordTokenizer, words
from noor.engine.tiny.transformer import TinyVideoTransformer

# on_step(stage, step, total, loss): stage is "vae", "encode" or "denoiser"
OnStep = Callable[[str, int, int, float], None]


class ConfigError(ValueError):
    """A TrainConfig field out of range: names the field and the bad value."""

    def __init__(self, field: str, value: object, message: str):
        super().__init__(f"{field}: {message}, got {value!r}")
        self.field, self.value, self.message = field, value, message


@dataclass
class TrainConfig:
    steps: int = 5500  # denoiser steps
    # The cosine learning-rate schedule spans max(steps, schedule_steps): a run may stop before its schedule ends
    schedule_steps: int = 6500  # the shipped weights stopped at 5,500 of a 6,500-step schedule (README)
    batch_size: int = 32
    lr: float = 4e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    hidden_size: int = 128
    patch_size: int = 4  # latent patch: 4x4 of a 16x16 latent = 16 tokens a frame
    num_layers: int = 6
    num_heads: int = 4
    # "joint" (the shipped weights): space-time attention with 3D rotary positions, or "factorised" (transformer.py)
    attention: str = "joint"
    # >0: a conv stem and head of this width at full latent resolution around the transformer (transformer.py)
    conv_channels: int = 0
    text_layers: int = 2
    vae_channels: tuple[int, ...] = (16, 32, 32)
    vae_steps: int = 1200
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    decoder_steps: int = 1200  # stage 4: sharpen the decoder on posterior means, encoder frozen
    decoder_lr: float = 5e-4
    # stage 2b: refine the decoder on canvases of other sizes (a reframe's, an edit's of another aspect), native
    # frames held to its output before (`canvases`); it runs on a VAE given by `init_vae` too. 0: none
    canvas_decoder_steps: int = 0
    canvas_decoder_lr: float = 2e-4
    pool_clips: int = 12000
    caption_dropout: float = 0.1
    # Noise-level shift, sigma -> shift*sigma / (1 + (shift-1)*sigma), in training and in the saved sampler (as
    # SD3 and Wan shift for large inputs): 16 frames together reveal an object's path through noise that hides
    # it in any one frame, so at shift 1 the model read motion from the noisy input and never from the prompt.
    shift: float = 3.0
    # Share of each frame's noise common to all frames of a clip, in training and sampling (PYoCo's mixed noise):
    # frames then start from correlated noise and break symmetry (where the object is) the same way.
    shared_noise: float = 0.0
    two_objects_p: float = 0.25
    image_p: float = 0.0  # share of batches that are single frames (images) instead of clips
    # Single first frames (images) trained beside every clip batch: a frame is 1/16 of a clip's tokens, so
    # images cost little, and the text-to-image half of two-stage sampling (`image_first`) learns from many.
    image_batch: int = 128
    # Sample text-to-video in two stages, as Emu Video factorises it: first frame from the prompt, then the
    # clip from the prompt and that frame (saved in the pipeline's config; see NoorTinyPipeline).
    image_first: bool = True
    # The saved pipeline's guidance for clips (None: the call's guidance_scale; see NoorTinyPipeline), applied at
    # noise levels >= clip_guidance_min_sigma only (a guidance interval). Both set sampling, not training: the
    # shipped values were chosen on the shipped weights (README).
    clip_guidance_scale: float | None = 3.0
    clip_guidance_min_sigma: float = 0.7
    start_frame_p: float = 0.5  # only the first frame given (two-stage sampling always gives it)
    end_frame_p: float = 0.1  # only the last frame given
    both_frames_p: float = 0.1  # first and last given
    loop_p: float = 0.05  # share of the pool that plays there and back (first = last)
    # autocast matmuls to bfloat16: 1.34x faster a step on an AVX512-BF16 EPYC (2026-11-28), 2.6x slower on an
    # Intel Xeon without it (2026-12-03)
    bf16: bool = False
    save_every: int = 500
    # Start from a trained VAE (a pipeline dir or its vae/ folder) instead of stages 1-2. Those stages are
    # deterministic for a seed, so reusing the VAE of a run with the same seed and VAE settings changes nothing.
    init_vae: str | None = None
    # Stage 5, a second denoiser phase: continue from stage 4's EMA weights with a fresh optimiser, its own random
    # stream, and noise levels that cover the low end (where edges and corners are drawn), optionally with extra
    # loss weight where the clip changes over time (motion_weight). Its own stream lets it start from saved
    # weights (`init_denoiser`: a pipeline dir) and give what a from-scratch run gives.
    tune_steps: int = 1500
    tune_lr: float = 2e-4
    tune_warmup_steps: int = 50
    # share of noise levels drawn uniformly from [0, 1] rather than from the high-leaning shifted logit-normal
    uniform_sigma_p: float = 0.1
    tune_uniform_sigma_p: float = 0.5
    tune_motion_weight: float = 0.0
    tune_ema_decay: float = 0.998
    # stage 5 adds the denoiser's input skip (transformer.py: a gated blend toward c_skip * x_t, zero at first)
    tune_input_skip: bool = True
    # stage 5 adds keyframe concatenation (transformer.py: each token also sees the given first and last frames'
    # patch at its place, as SVD and Wan's image-to-video models concatenate the image; zero at first)
    tune_keyframe_concat: bool = False
    init_denoiser: str | None = None

    def __post_init__(self) -> None:
        checks = (
            ("attention", self.attention in ("factorised", "joint"), "must be factorised or joint"),
            ("shift", 0.1 <= self.shift <= 20, "must be between 0.1 and 20"),
            ("conv_channels", 0 <= self.conv_channels <= 256, "must be between 0 and 256"),
            ("shared_noise", 0 <= self.shared_noise < 1, "must be at least 0 and below 1"),
            ("image_batch", 0 <= self.image_batch <= 4096, "must be between 0 and 4096"),
            ("schedule_steps", self.schedule_steps >= 0, "must not be negative"),
            (
                "clip_guidance_scale",
                self.clip_guidance_scale is None or 0 <= self.clip_guidance_scale <= 30,
                "must be between 0 and 30",
            ),
            ("clip_guidance_min_sigma", 0 <= self.clip_guidance_min_sigma <= 1, "must be between 0 and 1"),
            ("tune_steps", self.tune_steps >= 0, "must not be negative"),
            ("tune_lr", 0 < self.tune_lr <= 0.1, "must be above 0 and at most 0.1"),
            ("uniform_sigma_p", 0 <= self.uniform_sigma_p <= 1, "must be between 0 and 1"),
            ("tune_uniform_sigma_p", 0 <= self.tune_uniform_sigma_p <= 1, "must be between 0 and 1"),
            ("tune_motion_weight", 0 <= self.tune_motion_weight <= 100, "must be between 0 and 100"),
            ("tune_ema_decay", 0 <= self.tune_ema_decay < 1, "must be at least 0 and below 1"),
            ("canvas_decoder_steps", self.canvas_decoder_steps >= 0, "must not be negative"),
            ("canvas_decoder_lr", 0 < self.canvas_decoder_lr <= 0.1, "must be above 0 and at most 0.1"),
            (
                "init_denoiser",
                self.init_denoiser is None or self.tune_steps > 0 or self.canvas_decoder_steps > 0,
                "needs tune_steps (or canvas_decoder_steps) above 0",
            ),
            ("init_vae", self.init_vae is None or _vae_folder(Path(self.init_vae)) is not None, "holds no VAE"),
            (
                "init_denoiser",
                self.init_denoiser is None
                or all((Path(self.init_denoiser) / part / "config.json").is_file() for part in DENOISER_PARTS),
                "holds no transformer/ and text_encoder/",
            ),
        )
        for name, ok, message in checks:
            if not ok:
                raise ConfigError(name, getattr(self, name), message)


DENOISER_PARTS = ("transformer", "text_encoder")


def _vae_folder(path: Path) -> Path | None:
    """`path/vae` of a pipeline dir, or `path` itself if it holds a VAE; None if neither."""
    for folder in (path / "vae", path):
        config = folder / "config.json"
        if config.is_file() and json.loads(config.read_text()).get("_class_name") == "AutoencoderKL":
            return folder
    return None


@dataclass
class Pool:
    latents: torch.Tensor  # (N, C, T, h, w) normalised VAE latents
    scenes: list[Scene]
    pingpong: np.ndarray  # (N,) bool


@dataclass
class Batch:
    latents: torch.Tensor  # (B, C, T, h, w)
    known: torch.Tensor  # (B, T) bool: keyframes given clean
    prompts: list[str]


def held_out_prompts() -> set[str]:
    """Normalised eval prompts: training never shows these strings verbatim."""
    from noor.engine.tiny.eval import eval_prompts

    return {" ".join(words(p.prompt)) for p in eval_prompts()}


def build_vae(cfg: TrainConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=min(8, cfg.vae_channels[0]),
        sample_size=SIZE,
    )


def build_models(cfg: TrainConfig) -> tuple[TinyVideoTransformer, TinyTextEncoder]:
    vocab = WordTokenizer.build(vocabulary_corpus()).vocab
    text_encoder = TinyTextEncoder(vocab=vocab, hidden_size=cfg.hidden_size, num_layers=cfg.text_layers)
    transformer = TinyVideoTransformer(
        in_channels=4,
        patch_size=cfg.patch_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        text_dim=cfg.hidden_size,
        attention=cfg.attention,
        conv_channels=cfg.conv_channels,
    )
    return transformer, text_encoder


def _frames(clips: np.ndarray) -> torch.Tensor:
    """(N, T, H, W, 3) in [0, 1] -> (N*T, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(clips.reshape(-1, *clips.shape[2:])).permute(0, 3, 1, 2) * 2.0 - 1.0


def _frame_batch(cfg: TrainConfig, rng: np.random.Generator) -> torch.Tensor:
    """One random frame from each of `vae_batch_size` random scenes, (B, 3, H, W) in [-1, 1]."""
    scenes = [sample_scene(rng, cfg.two_objects_p) for _ in range(cfg.vae_batch_size)]
    return _frames(np.stack([render(s, NUM_FRAMES)[int(rng.integers(NUM_FRAMES))][None] for s in scenes]))


def train_vae(vae: AutoencoderKL, cfg: TrainConfig, rng: np.random.Generator, on_step: OnStep | None) -> list[float]:
    """A deterministic autoencoder (decode the posterior mean) on L1 + MSE; then set latent shift/scale from data.

    Sampling the posterior during training, as a KL-VAE does, taught the encoder to merge nearby colours
    (red, orange, yellow and pink landed within the posterior noise of each other) and the denoiser can
    only draw what the latent keeps apart. A light penalty on the mean's size stands in for the KL term.
    """
    optim = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
    losses = []
    for step in range(cfg.vae_steps):
        x = _frame_batch(cfg, rng)
        for group in optim.param_groups:
            group["lr"] = cosine(cfg.vae_lr, 0.1, step, cfg.vae_steps)
        z = vae.encode(x).latent_dist.mean
        recon = vae.decode(z).sample
        loss = (recon - x).abs().mean() + ((recon - x) ** 2).mean() + 1e-4 * (z**2).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses.append(loss.item())
        if on_step:
            on_step("vae", step, cfg.vae_steps, losses[-1])
    with torch.no_grad():
        scenes = [sample_scene(rng, cfg.two_objects_p) for _ in range(256)]
        z = vae.encode(_frames(np.stack([render(s, 2)[:1] for s in scenes]))).latent_dist.mean
    vae.register_to_config(shift_factor=float(z.mean()), scaling_factor=float(1.0 / z.std()))
    return losses


def refine_decoder(vae: AutoencoderKL, cfg: TrainConfig, on_step: OnStep | None) -> list[float]:
    """Train only the decoder on the encoder's posterior means (slightly jittered): sharper frames.

    The encoder, and so the latent space the denoiser learnt, is unchanged (as with SD's ft-MSE VAE).
    It draws from its own random stream, so it gives the same result wherever in the run it happens.
    """
    rng = np.random.default_rng([cfg.seed, 4])
    generator = torch.Generator().manual_seed(cfg.seed + 4)
    return fit_decoder(
        vae, lambda _: _frame_batch(cfg, rng), cfg.decoder_steps, cfg.decoder_lr, generator, "decoder", on_step
    )


def load_vae(path: Path) -> AutoencoderKL:
    """A trained VAE from a pipeline dir or its `vae/` folder."""
    folder = _vae_folder(path)
    if folder is None:
        raise ConfigError("init_vae", str(path), "holds no VAE")
    return AutoencoderKL.from_pretrained(folder)


def load_canvas_vae(path: Path) -> AutoencoderKL | None:
    """A pipeline dir's `canvas_vae/` (`noor.engine.tiny.canvases`), or None if it has none."""
    folder = path / "canvas_vae"
    return AutoencoderKL.from_pretrained(folder) if (folder / "config.json").is_file() else None


def _skip_vae_stage(cfg: TrainConfig, rng: np.random.Generator) -> None:
    """Draw from `rng` and torch's seed exactly as stage 1 would (without rendering or training), so the
    clip pool and the denoiser's initial weights match a from-scratch run."""
    build_vae(cfg)
    for _ in range(cfg.vae_steps):
        for _ in range(cfg.vae_batch_size):
            sample_scene(rng, cfg.two_objects_p)
        for _ in range(cfg.vae_batch_size):
            rng.integers(NUM_FRAMES)
    for _ in range(256):
        sample_scene(rng, cfg.two_objects_p)


@torch.no_grad()
def encode_clips(vae: AutoencoderKL, clips: np.ndarray) -> torch.Tensor:
    """(N, T, H, W, 3) in [0, 1] -> (N, C, T, h, w) normalised latents (posterior means)."""
    N, T = clips.shape[:2]
    z = encode_frames(vae, _frames(clips))  # (N*T, C, h, w)
    return z.reshape(N, T, *z.shape[1:]).transpose(1, 2).contiguous()


def make_pool(
    vae: AutoencoderKL, cfg: TrainConfig, rng: np.random.Generator, on_step: OnStep | None, group: Group = SINGLE
) -> Pool:
    """`pool_clips` rendered clips, encoded in chunks of 32. On N ranks each renders and encodes every Nth chunk,
    then every chunk is broadcast from the rank that encoded it; every rank draws every scene, so the random stream
    and the pool are one process's."""
    scenes, flags, chunks = [], [], []
    chunk = 32
    h = SIZE // 2 ** (len(vae.config.block_out_channels) - 1)  # latent side: each block but the last halves it
    for k, start in enumerate(range(0, cfg.pool_clips, chunk)):
        n = min(chunk, cfg.pool_clips - start)
        batch_scenes = [sample_scene(rng, cfg.two_objects_p) for _ in range(n)]
        batch_flags = rng.random(n) < cfg.loop_p
        if k % group.world_size == group.rank:
            pairs = zip(batch_scenes, batch_flags, strict=True)
            clips = np.stack([render(scene, NUM_FRAMES, pingpong=bool(flag)) for scene, flag in pairs])
            chunks.append(encode_clips(vae, clips))
        else:  # another rank's chunk: filled by the broadcast below
            chunks.append(torch.empty(n, vae.config.latent_channels, NUM_FRAMES, h, h))
        scenes += batch_scenes
        flags.append(batch_flags)
        if on_step:
            on_step("encode", start + n - 1, cfg.pool_clips, 0.0)
    for k, latents in enumerate(chunks):
        group.broadcast(latents, src=k % group.world_size)
    return Pool(torch.cat(chunks), scenes, np.concatenate(flags))


def _fresh_caption(cfg: TrainConfig, rng: np.random.Generator, scene: Scene, exclude: set[str]) -> str:
    """A random English or Arabic caption of the scene that is not an eval prompt; "" at the dropout rate."""
    text = ""
    if rng.random() >= cfg.caption_dropout:
        for _ in range(10):
            text = caption(scene, "ar" if rng.random() < 0.5 else "en", rng)
            if " ".join(words(text)) not in exclude:
                break
    return text


def make_batch(cfg: TrainConfig, rng: np.random.Generator, pool: Pool, image: bool, exclude: set[str]) -> Batch:
    """Clips (or single frames) from the pool, each with a fresh caption and random keyframes."""
    index = rng.integers(len(pool.scenes), size=cfg.batch_size)
    latents = pool.latents[index]  # (B, C, T, h, w)
    T = latents.shape[2]
    if image:
        latents = latents[torch.arange(len(index)), :, torch.from_numpy(rng.integers(T, size=len(index)))][:, :, None]
    known = np.zeros((len(index), latents.shape[2]), dtype=bool)
    prompts = []
    for row, i in enumerate(index):
        u = rng.random()
        if not image:
            if pool.pingpong[i] or u < cfg.both_frames_p:
                known[row, [0, -1]] = True
            elif u < cfg.both_frames_p + cfg.start_frame_p:
                known[row, 0] = True
            elif u < cfg.both_frames_p + cfg.start_frame_p + cfg.end_frame_p:
                known[row, -1] = True
        prompts.append(_fresh_caption(cfg, rng, pool.scenes[i], exclude))
    return Batch(latents, torch.from_numpy(known), prompts)


def make_image_batch(cfg: TrainConfig, rng: np.random.Generator, pool: Pool, exclude: set[str]) -> Batch:
    """`image_batch` first frames of random pool clips, each with a fresh caption (a one-frame clip, nothing known).

    First frames, not random ones: two-stage sampling draws a clip's first frame from the prompt, and a
    first frame is where its motion starts (an object that will move left starts on the right)."""
    index = rng.integers(len(pool.scenes), size=cfg.image_batch)
    prompts = [_fresh_caption(cfg, rng, pool.scenes[i], exclude) for i in index]
    latents = pool.latents[torch.from_numpy(index), :, :1]
    return Batch(latents, torch.zeros(len(index), 1, dtype=torch.bool), prompts)


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow-matching timestep shift (SD3, Wan): more of the schedule at high noise for shift > 1."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def training_loss(
    transformer: TinyVideoTransformer,
    text_encoder: TinyTextEncoder,
    batch: Batch,
    generator: torch.Generator,
    shift: float = 1.0,
    shared_noise: float = 0.0,
    uniform_p: float = 0.1,
    motion_weight: float = 0.0,
    rows: slice = slice(None),
    teacher: Callable[..., torch.Tensor] | None = None,
    taught: torch.Tensor | None = None,
) -> torch.Tensor:
    """Flow-matching loss on x0 predictions, keyframes excluded; on the batch's `rows` only (one rank's share of a
    global batch: the noise levels and noise are drawn for the whole batch, so each row gets what it would in one
    process).

    Noise levels lean high (logit-normal centred at sigma ~0.69, shifted; `uniform_p` of them uniform):
    layout, colour and motion are decided at high noise, and sampling starts from pure noise, so that
    regime must be learnt well. The weight leans gently toward low noise, where detail (edges, shape)
    is decided. With `motion_weight` > 0, each latent pixel's error also weighs
    1 + motion_weight * |x0 - x0's mean over the clip| (channel mean): more where the clip changes.

    With a `teacher` (a frozen model: the same arguments as `transformer`, its x0 prediction back) the rows
    `taught` (bool, (B,)) regress its prediction at the same noisy input instead of the clip: prior preservation
    by distillation, for an adapter that must leave those prompts as the frozen model draws them.
    """
    x0 = batch.latents
    B = x0.shape[0]
    logit_normal = torch.sigmoid(0.8 + torch.randn(B, generator=generator))
    uniform = torch.rand(B, generator=generator)
    sigma = torch.where(torch.rand(B, generator=generator) < uniform_p, uniform, shift_sigma(logit_normal, shift))
    sigma_frames = torch.where(batch.known, 0.0, sigma[:, None])  # (B, T)
    s = sigma_frames[:, None, :, None, None]
    noise = frame_noise(tuple(x0.shape), shared_noise, generator)
    x0, s, noise, sigma, known = x0[rows], s[rows], noise[rows], sigma[rows], batch.known[rows]  # this rank's rows
    sigma_frames = sigma_frames[rows]
    x_t = (1 - s) * x0 + s * noise
    text, mask = text_encoder.encode(batch.prompts[rows])
    pred = transformer(x_t, sigma_frames * 1000.0, text, mask)[0]
    weight = 1.0 / (sigma**2 + 0.25)  # 4 at sigma=0, 0.8 at sigma=1
    target = x0
    if teacher is not None and taught is not None and bool(taught[rows].any()):
        pick = taught[rows]  # the teacher runs on the taught rows only
        with torch.no_grad():
            frozen = teacher(x_t[pick], sigma_frames[pick] * 1000.0, text[pick], mask[pick]).float()
        target = x0.clone()
        target[pick] = frozen
    error = (pred.float() - target) ** 2
    if motion_weight:
        change = (x0 - x0.mean(dim=2, keepdim=True)).abs().mean(dim=1, keepdim=True)  # (B, 1, T, h, w)
        error = error * (1.0 + motion_weight * change)
    per_frame = error.mean(dim=(1, 3, 4))  # (B, T)
    free = (~known).float()
    per_clip = (per_frame * free).sum(1) / free.sum(1).clamp(min=1)
    return (per_clip * weight).mean()


def save_pipeline(
    transformer: TinyVideoTransformer,
    text_encoder: TinyTextEncoder,
    vae: AutoencoderKL,
    out: Path,
    cfg: TrainConfig,
    history: list[dict[str, Any]] | None = None,
    canvas_vae: AutoencoderKL | None = None,
) -> None:
    """Save a complete pipeline (with `canvas_vae`, its decoder for other canvases, if there is one) and, in
    `train_config.json`, the config that made it, with `history` (the configs of the runs its starting weights came
    from, oldest first) as `earlier_rounds`: the file tells the whole recipe."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=cfg.shift)
    pipe = NoorTinyPipeline(
        transformer=transformer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        shared_noise=cfg.shared_noise,
        image_first=cfg.image_first,
        clip_guidance_scale=cfg.clip_guidance_scale,
        clip_guidance_min_sigma=cfg.clip_guidance_min_sigma,
        canvas_vae=canvas_vae,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    record = asdict(cfg) | ({"earlier_rounds": history} if history else {})
    (out / "train_config.json").write_text(json.dumps(record, indent=2) + "\n")


def earlier_rounds(init: Path) -> list[dict[str, Any]]:
    """The chain of training configs behind a saved pipeline, oldest first (empty if it has no record)."""
    saved = init / "train_config.json"
    if not saved.is_file():
        return []
    record = json.loads(saved.read_text())
    return [*record.pop("earlier_rounds", []), record]


class StepLoss(torch.nn.Module):
    """The denoiser and text encoder as one module whose forward is a step's loss on this rank's rows, so that
    DistributedDataParallel sees one forward a step (clips and images together)."""

    def __init__(self, transformer: TinyVideoTransformer, text_encoder: TinyTextEncoder):
        super().__init__()
        self.transformer, self.text_encoder = transformer, text_encoder

    def forward(
        self,
        cfg: TrainConfig,
        clips: Batch,
        images: Batch | None,
        generator: torch.Generator,
        uniform_p: float,
        motion_weight: float,
        group: Group,
    ) -> torch.Tensor:
        rows = group.shard(len(clips.prompts))
        loss = training_loss(
            self.transformer,
            self.text_encoder,
            clips,
            generator,
            cfg.shift,
            cfg.shared_noise,
            uniform_p,
            motion_weight,
            rows,
        )
        if images is not None:
            rows = group.shard(len(images.prompts))
            loss = loss + training_loss(
                self.transformer, self.text_encoder, images, generator, cfg.shift, 0.0, uniform_p, rows=rows
            )
        return loss


def fit_denoiser(
    cfg: TrainConfig,
    transformer: TinyVideoTransformer,
    text_encoder: TinyTextEncoder,
    pool: Pool,
    rng: np.random.Generator,
    generator: torch.Generator,
    stage: str,
    save: Callable[[tuple[Any, ...]], None],
    on_step: OnStep | None = None,
    group: Group = SINGLE,
    checkpoints: Checkpoints | None = None,
    resumed: dict[str, Any] | None = None,
) -> tuple[list[float], tuple[Any, ...]]:
    """Train the denoiser and text encoder in place, stage 4 ("denoiser") or stage 5 ("tune"); return the losses
    and the EMA copies (which `save` gets every `save_every` steps and at the end). `checkpoints` saves this stage's
    state when due; `resumed` (a checkpoint of this stage) continues from it."""
    tune = stage == "tune"
    steps = cfg.tune_steps if tune else cfg.steps
    peak, warmup = (cfg.tune_lr, cfg.tune_warmup_steps) if tune else (cfg.lr, cfg.warmup_steps)
    horizon = max(1, steps if tune else max(cfg.steps, cfg.schedule_steps))
    uniform_p = cfg.tune_uniform_sigma_p if tune else cfg.uniform_sigma_p
    motion_weight = cfg.tune_motion_weight if tune else 0.0
    models: tuple[torch.nn.Module, ...] = (transformer, text_encoder)
    ema: tuple[Any, ...] = tuple(copy.deepcopy(m).requires_grad_(False) for m in models)
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    optim = torch.optim.AdamW(params, lr=peak, betas=(0.9, 0.99), weight_decay=0.0)
    first, losses = 0, list[float]()
    if resumed is not None:
        first, losses = restore_stage(resumed, models + ema, optim, rng, generator)
    step_loss = group.wrap(StepLoss(transformer, text_encoder))

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, warmup))
        cosine = 0.5 * (1 + math.cos(math.pi * step / horizon))
        return peak * warm * (0.1 + 0.9 * cosine)

    exclude = held_out_prompts()
    for step in range(first, steps):
        # 1. the whole global batch, drawn on every rank alike (each trains on its rows)
        batch = make_batch(cfg, rng, pool, bool(rng.random() < cfg.image_p), exclude)
        images = make_image_batch(cfg, rng, pool, exclude) if cfg.image_batch else None
        for group_ in optim.param_groups:
            group_["lr"] = lr_at(step)
        # 2. loss on this rank's rows; backward averages the gradients over the ranks
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = step_loss(cfg, batch, images, generator, uniform_p, motion_weight, group)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        # 3. the average weights (stage 5 starts from averaged weights, so its average needs no short-memory start)
        decay = cfg.tune_ema_decay if tune else min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for averaged, model in zip(ema, models, strict=True):
                for p_ema, p in zip(averaged.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - decay)
        # 4. log, save, checkpoint
        losses.append(group.mean(loss.item()))
        if on_step is not None:
            on_step(stage, step, steps, losses[-1])
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < steps:
            save(ema)
        if checkpoints is not None:
            checkpoints.record(stage, step, losses[-1])
            if checkpoints.due(step, steps):
                checkpoints.save(stage_state(stage, step + 1, losses, models + ema, optim, rng, generator))
    save(ema)
    return losses, ema


def load_denoiser(path: Path) -> tuple[TinyVideoTransformer, TinyTextEncoder]:
    """The denoiser and text encoder of a saved pipeline, to train further."""
    transformer = TinyVideoTransformer.from_pretrained(path / DENOISER_PARTS[0])
    text_encoder = TinyTextEncoder.from_pretrained(path / DENOISER_PARTS[1])
    return transformer.requires_grad_(True).train(), text_encoder.requires_grad_(True).train()


def train(
    cfg: TrainConfig,
    out: Path,
    on_step: OnStep | None = None,
    group: Group = SINGLE,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> list[float]:
    """Train all stages, save the pipeline (EMA denoiser weights) in `out`; return the denoiser's losses (stage 4,
    then stage 5; none in a round of the VAE alone). On a rank of `group`, rank 0 alone writes; `checkpoint_every`
    steps of stages 4-5 a checkpoint goes to `out/checkpoints`, and `resume` continues from the last one there (from
    scratch if there is none)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    started = time.perf_counter()
    checkpoints = Checkpoints(out / "checkpoints", checkpoint_every, asdict(cfg), group)
    resumed = checkpoints.start(resume)

    # 1. VAE, then frozen
    vae_losses: list[float] = []
    canvas_vae: AutoencoderKL | None = None
    if resumed is not None:  # stages 1-2 as the checkpointed run ended them, and the random stream after them
        vae = AutoencoderKL.from_config(resumed["vae_config"])
        vae.load_state_dict(resumed["vae"])
        rng.bit_generator.state = resumed["pool_random"]
        if resumed.get("canvas_vae") is not None:
            canvas_vae = AutoencoderKL.from_config(resumed["vae_config"])
            canvas_vae.load_state_dict(resumed["canvas_vae"])
    elif cfg.init_vae:
        vae = load_vae(Path(cfg.init_vae))
        canvas_vae = load_canvas_vae(Path(cfg.init_vae))  # kept, or taught further in stage 2b
        _skip_vae_stage(cfg, rng)
    else:
        vae = build_vae(cfg)
        vae_losses = train_vae(vae, cfg, rng, on_step)
        vae.requires_grad_(False).eval()
        # 2. a sharper decoder for the same latent space (the encoder, and so the latents, do not change)
        if cfg.decoder_steps:
            refine_decoder(vae, cfg, on_step)
    # 2b. a decoder for canvases of other sizes, from the one there is (its own random streams: the same wherever
    # it runs)
    canvas_losses: list[float] = []
    if cfg.canvas_decoder_steps and resumed is None:
        start = canvas_vae if canvas_vae is not None else vae
        canvas_vae, canvas_losses = canvas_decoder(
            start, cfg.canvas_decoder_steps, cfg.canvas_decoder_lr, cfg.seed, on_step, cfg.two_objects_p
        )
    vae.requires_grad_(False).eval()
    if group.is_main:
        vae.save_pretrained(out / "vae")  # every checkpoint below is a complete pipeline
        if canvas_vae is not None:
            canvas_vae.save_pretrained(out / "canvas_vae")
    checkpoints.context = {
        "vae": vae.state_dict(),
        "vae_config": vae_config(vae),
        "canvas_vae": canvas_vae.state_dict() if canvas_vae is not None else None,
        "pool_random": rng.bit_generator.state,
    }

    history = earlier_rounds(Path(cfg.init_denoiser)) if cfg.init_denoiser else []

    def save(ema: tuple[Any, ...]) -> None:
        if group.is_main:
            save_pipeline(ema[0], ema[1], vae, out, cfg, history, canvas_vae)

    def write_log(losses: list[float]) -> None:
        if group.is_main:
            log = {
                "seconds": time.perf_counter() - started,
                "vae_final_loss_avg50": float(np.mean(vae_losses[-50:])) if vae_losses else None,
                "canvas_decoder_final_loss_avg50": float(np.mean(canvas_losses[-50:])) if canvas_losses else None,
                "denoiser_final_loss_avg100": float(np.mean(losses[-100:])) if losses else None,
            }
            (out / "train_log.json").write_text(json.dumps(log) + "\n")

    if cfg.init_denoiser and not cfg.tune_steps:  # a round of the VAE alone: the saved denoiser with the new VAE
        save(load_denoiser(Path(cfg.init_denoiser)))
        write_log([])
        return []

    # 3. a pool of encoded clips
    pool = make_pool(vae, cfg, rng, on_step, group)

    def at(stage: str) -> dict[str, Any] | None:
        return resumed if resumed is not None and resumed["stage"] == stage else None

    # 4. denoiser + text encoder
    losses: list[float] = []
    if cfg.init_denoiser:
        transformer, text_encoder = load_denoiser(Path(cfg.init_denoiser))
    elif at("tune"):  # stage 4 ended before the checkpoint: stage 5 loads its own weights below
        transformer, text_encoder = build_models(cfg)
        losses = list(resumed["stage4_losses"]) if resumed else []
    else:
        transformer, text_encoder = build_models(cfg)
        losses, ema = fit_denoiser(
            cfg, transformer, text_encoder, pool, rng, generator, "denoiser", save, on_step, group, checkpoints,
            at("denoiser"),
        )  # fmt: skip
        transformer, text_encoder = (copy.deepcopy(m).requires_grad_(True) for m in ema)

    # 5. the second phase, from stage 4's averaged weights, on its own random streams
    if cfg.tune_steps:
        if cfg.tune_input_skip and not transformer.config.input_skip:
            transformer = transformer.with_input_skip()
        if cfg.tune_keyframe_concat and not transformer.config.keyframe_concat:
            transformer = transformer.with_keyframe_concat()
        rng5 = np.random.default_rng([cfg.seed, 5])
        generator5 = torch.Generator().manual_seed(cfg.seed + 5)
        checkpoints.context["stage4_losses"] = losses
        tuned, _ = fit_denoiser(
            cfg, transformer, text_encoder, pool, rng5, generator5, "tune", save, on_step, group, checkpoints,
            at("tune"),
        )  # fmt: skip
        losses += tuned
    write_log(losses)
    return losses

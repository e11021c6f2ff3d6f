"""Train noor-world-tiny from the procedural terrain: `noor train world`, reproducible from a seed.

Stages:
1. Maps: `maps_per_biome` maps of each biome from training seeds (the eval's seeds are others).
2. VAE: an `AutoencoderTiny` (no attention, no normalisation), on 96x96 crops of the maps' ground (no player):
   the latent's middle 16x16 is decoded and compared with the middle 64x64, so a view decodes the same from a
   whole map's latent as from its own; pixels at an edge weigh 9x. Then every map is encoded once, around the
   torus, into a 16x128x128 latent map, normalised by the spread of its detail (`encode_maps`).
3. Denoiser and text encoder, on windows of `context_frames + 1` frames cut from walks on the latent maps
   (Diffusion Forcing: every frame its own noise level; context frames mostly clean, as they are in play).
   Each frame's memory is the latent map where the walk has already been (the canvas it would have); in
   `memory_off_p` of the walks it is empty, so the model also learns to carry the scene along from the frames
   before alone. Each frame's place on the torus goes with it (the rotary positions are the world's). Walks hold
   each action for a few steps (as a player holds a key) and a share start at their first frame (the
   opening frame: from the caption only).

On N processes (`noor.engine.ddp.launch`), stages 1-2 run identically on every rank
(the same seed gives the same maps and VAE with no communication), and in stage 3 every rank draws the whole global
batch from the same random streams and runs the model on its own rows, gradients averaged by
DistributedDataParallel: the run follows one process's random streams, so its loss curve is one process's (to
float rounding). With `checkpoint_every`, stage 3 saves a checkpoint in `out/checkpoints`; `resume` continues from
it (`noor.engine.checkpoint`).
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
from diffusers import AutoencoderTiny, FlowMatchEulerDiscreteScheduler

from noor.engine.checkpoint import Checkpoints, restore_stage, stage_state, vae_config
from noor.engine.ddp import SINGLE, Group
from noor.engine.tiny.text_encoder import TinyTextEncoder
from noor.engine.tiny.tokenizer import WordTokenizer
from noor.engine.world_tiny.actions import ACTIONS, MOVES, STEP_PX
from noor.engine.world_tiny.captions import LANGS, sample_caption, vocabulary_corpus
from noor.engine.world_tiny.memory import WORLD_LATENT
from noor.engine.world_tiny.model import ACTION_IDS, WorldTransformer
from noor.engine.world_tiny.pipeline import LATENT, NoorWorldPipeline
from noor.engine.world_tiny.readers import EDGE_LEVELS
from noor.engine.world_tiny.terrain import BIOMES, MAP_SIZE, TerrainMap, make_map

OnStep = Callable[[str, int, int, float], None]  # (stage, step, total, loss)
MARGIN = 16  # pixels of map around a VAE training crop's middle view (beyond the encoder's reach)
EVAL_SEED_BASE = 1000  # the eval's maps use seeds from here on; training never does


class ConfigError(ValueError):
    def __init__(self, field: str, value: object, message: str):
        self.field = field
        super().__init__(f"{field}: {message}, got {value!r}")


@dataclass
class TrainConfig:
    seed: int = 0
    maps_per_biome: int = 16
    vae_channels: int = 32  # every block of the VAE's encoder and decoder
    latent_channels: int = 16
    vae_steps: int = 1000
    vae_edge_weight: float = 8.0  # extra loss weight of pixels at an edge (lit windows, palms, shorelines)
    vae_batch_size: int = 16
    vae_lr: float = 2e-3
    hidden_size: int = 128
    num_layers: int = 6
    num_heads: int = 4
    mlp_ratio: int = 3
    text_hidden: int = 64
    text_layers: int = 1
    context_frames: int = 2
    steps: int = 3000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 100
    ema: float = 0.998
    max_history: int = 48  # steps walked before a window (its memory)
    mean_hold: float = 4.0  # steps an action is held, on average
    start_p: float = 0.2  # windows that begin at the walk's first frame
    memory_off_p: float = 0.2  # walks with no memory
    memory_noise: float = 0.0  # std of noise on remembered latents (normalised units): it taught smoothing, not copying
    known_weight: float = (
        2.0  # loss weight of the cells the memory knows (copying them exactly keeps the scene's shift)
    )
    clean_context_p: float = 0.6  # context frames given clean, as in play
    save_every: int = 0  # write the pipeline (averaged weights) every this many denoiser steps (0: at the end only)

    def __post_init__(self) -> None:
        for name in ("maps_per_biome", "vae_batch_size", "hidden_size", "num_layers", "num_heads", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be at least 1")
        for name in ("vae_steps", "steps", "context_frames", "max_history", "warmup", "vae_edge_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(name, getattr(self, name), "must be 0 or more")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 8:
            raise ConfigError(
                "num_heads", self.num_heads, f"must split hidden_size {self.hidden_size} into heads of a multiple of 8"
            )
        for name in ("start_p", "memory_off_p", "clean_context_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(name, getattr(self, name), "must be in 0..1")


def train_maps(cfg: TrainConfig) -> list[TerrainMap]:
    return [make_map(biome, seed) for biome in BIOMES for seed in range(cfg.maps_per_biome)]


def build_vae(cfg: TrainConfig) -> AutoencoderTiny:
    """diffusers' `AutoencoderTiny` (TAESD's layout) at 4x: convolutions and ReLUs, no normalisation layer. An
    `AutoencoderKL` was tried first: its GroupNorms take statistics over the whole frame, so the same ground decoded
    from two views one step apart came out differently, and the eval's phase correlation read 39% of true steps
    from decoded true latents (this one: 100%)."""
    c = cfg.vae_channels
    return AutoencoderTiny(
        encoder_block_out_channels=(c, c, c),
        decoder_block_out_channels=(c, c, c),
        num_encoder_blocks=(1, 2, 2),
        num_decoder_blocks=(2, 2, 1),
        latent_channels=cfg.latent_channels,
    )


def _wrapped_crops(maps: list[TerrainMap], picks: np.ndarray, xy: np.ndarray, size: int) -> np.ndarray:
    """(B, size, size, 3) uint8 crops of maps[picks] with top-left xy, wrapped around the torus."""
    out = np.empty((len(picks), size, size, 3), np.uint8)
    for i, (m, (x, y)) in enumerate(zip(picks, xy, strict=True)):
        rows, cols = (np.arange(size) + y) % MAP_SIZE, (np.arange(size) + x) % MAP_SIZE
        out[i] = maps[m].rgb[np.ix_(rows, cols)]
    return out


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _cosine(lr: float, step: int, total: int, warmup: int = 0, floor: float = 0.05) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def edge_mask(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) 1 where a pixel of x (B, 3, H, W) in [-1, 1] differs from a neighbour by more than EDGE_LEVELS."""
    grey = x.mean(1, keepdim=True)
    step = 2.0 * EDGE_LEVELS / 255.0
    rows, cols = (grey.diff(dim=-2).abs() > step).float(), (grey.diff(dim=-1).abs() > step).float()
    edge = torch.zeros_like(grey)
    edge[..., 1:, :] += rows
    edge[..., :-1, :] += rows
    edge[..., :, 1:] += cols
    edge[..., :, :-1] += cols
    return (edge > 0).float()


def train_vae(vae: AutoencoderTiny, maps: list[TerrainMap], cfg: TrainConfig, on_step: OnStep | None) -> list[float]:
    """L1 + MSE on a view decoded from the middle of a larger crop's latent, edge pixels weighted up, and a light
    penalty on the latent's size (in place of a KL term, as noor-tiny's).

    Unweighted, the loss let the decoder drop what is small and sparse: lit windows (a few pixels each, 8% of a
    city view's edges) vanished and a city view came back at 18.7 dB. With edges weighted 8x it comes back at
    26.4 dB with its windows (the same 1,000 steps; docs/world.md)."""
    rng = np.random.default_rng([cfg.seed, 2])
    optim = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
    m = MARGIN // STEP_PX
    losses = []
    for step in range(cfg.vae_steps):
        picks = rng.integers(0, len(maps), cfg.vae_batch_size)
        xy = rng.integers(0, MAP_SIZE, (cfg.vae_batch_size, 2))
        x = _pixels(_wrapped_crops(maps, picks, xy, 64 + 2 * MARGIN))
        for group in optim.param_groups:
            group["lr"] = _cosine(cfg.vae_lr, step, cfg.vae_steps)
        z = vae.encode(x).latents
        middle = z[:, :, m:-m, m:-m]
        recon = vae.decode(middle).sample
        target = x[:, :, MARGIN:-MARGIN, MARGIN:-MARGIN]
        weight = 1.0 + cfg.vae_edge_weight * edge_mask(target)
        error = recon - target
        loss = (weight * (error.abs() + error**2)).mean() + 1e-4 * (middle**2).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses.append(loss.item())
        if on_step:
            on_step("vae", step, cfg.vae_steps, losses[-1])
    return losses


@torch.no_grad()
def latent_map(vae: AutoencoderTiny, terrain: TerrainMap) -> torch.Tensor:
    """The whole map's latent (C, 128, 128), encoded around the torus (wrapped by MARGIN pixels)."""
    padded = np.pad(terrain.rgb, ((MARGIN, MARGIN), (MARGIN, MARGIN), (0, 0)), mode="wrap")
    m = MARGIN // STEP_PX
    return vae.encode(_pixels(padded[None])).latents[0, :, m:-m, m:-m]


def encode_maps(vae: AutoencoderTiny, maps: list[TerrainMap], on_step: OnStep | None) -> torch.Tensor:
    """(N, C, 128, 128) latent maps, normalised; also sets the VAE's shift and scale to that normalisation.

    The scale is the spread of the latents around each map's own channel means (the ground's detail), not
    around the mean of all maps: most of the latents' variance is which biome a map is (a few channel means), and
    scaled by that, the palms, tents and lit windows were a small fraction of the unit noise the denoiser starts
    from, visible only at the last noise levels, and it learnt to draw a blur of the biome's colours."""
    latents = []
    for i, terrain in enumerate(maps):
        latents.append(latent_map(vae, terrain))
        if on_step:
            on_step("encode", i, len(maps), 0.0)
    z = torch.stack(latents)
    shift, spread = float(z.mean()), float((z - z.mean(dim=(2, 3), keepdim=True)).std())
    vae.register_to_config(shift_factor=shift, scaling_factor=1.0 / spread)
    return (z - shift) / spread


# -- walks and windows ------------------------------------------------------------------------------------------

_STEPS = np.array([(MOVES[a][0] // STEP_PX, MOVES[a][1] // STEP_PX) for a in ACTIONS])  # latent pixels per action


def walk(rng: np.random.Generator, n: int, mean_hold: float) -> np.ndarray:
    """n action indexes (into ACTIONS), each held for a geometric number of steps."""
    out: list[int] = []
    while len(out) < n:
        out += [int(rng.integers(len(ACTIONS)))] * int(rng.geometric(1 / mean_hold))
    return np.array(out[:n], np.int64)


def seen_mask(positions: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(16, 16) float: the cells of the view at `at` that the views at `positions` (K, 2) covered (on the torus)."""
    mask = np.zeros((LATENT, LATENT), np.float32)
    for dx, dy in {
        (int(v[0]), int(v[1])) for v in (positions - at + WORLD_LATENT // 2) % WORLD_LATENT - WORLD_LATENT // 2
    }:
        if abs(dx) < LATENT and abs(dy) < LATENT:
            mask[max(0, dy) : LATENT + min(0, dy), max(0, dx) : LATENT + min(0, dx)] = 1.0
    return mask


@dataclass
class Batch:
    x0: torch.Tensor  # (B, T, C, 16, 16) clean latents of the window
    memory: torch.Tensor  # (B, T, C, 16, 16)
    known: torch.Tensor  # (B, T, 1, 16, 16)
    actions: torch.Tensor  # (B, T) ids
    origin: torch.Tensor  # (B, T, 2) each view's top-left latent pixel (x, y) on the torus
    captions: list[str]


def make_batch(cfg: TrainConfig, rng: np.random.Generator, latents: torch.Tensor, biomes: list[str]) -> Batch:
    T, B, C = cfg.context_frames + 1, cfg.batch_size, latents.shape[1]
    x0 = torch.empty(B, T, C, LATENT, LATENT)
    memory = torch.zeros(B, T, C, LATENT, LATENT)
    known = torch.zeros(B, T, 1, LATENT, LATENT)
    actions = torch.empty(B, T, dtype=torch.long)
    origin = torch.empty(B, T, 2)
    captions = []
    for b in range(B):
        m = int(rng.integers(len(latents)))
        history = 0 if rng.random() < cfg.start_p else int(rng.integers(1, cfg.max_history + 1))
        moves = walk(rng, history + T - 1, cfg.mean_hold)
        start = rng.integers(0, WORLD_LATENT, 2)
        positions = np.concatenate([start[None], start + np.cumsum(_STEPS[moves], axis=0)]) % WORLD_LATENT
        names = ["start"] + [ACTIONS[i] for i in moves]
        remember = rng.random() >= cfg.memory_off_p
        rows = np.arange(LATENT)
        for t in range(T):
            k = history + t
            x, y = positions[k]
            crop = latents[m][:, ((rows + y) % WORLD_LATENT)[:, None], ((rows + x) % WORLD_LATENT)[None, :]]
            x0[b, t] = crop
            actions[b, t] = ACTION_IDS[names[k]]
            origin[b, t] = torch.tensor([float(x), float(y)])
            if remember and k > 0:
                mask = torch.from_numpy(seen_mask(positions[:k], positions[k]))
                known[b, t, 0] = mask
                memory[b, t] = crop * mask
        captions.append(sample_caption(biomes[m], LANGS[int(rng.integers(len(LANGS)))], rng))
    noise = torch.from_numpy(rng.normal(0.0, cfg.memory_noise, memory.shape).astype(np.float32))
    return Batch(x0, (memory + noise) * known, known, actions, origin, captions)


def frame_sigmas(cfg: TrainConfig, rng: np.random.Generator, B: int, T: int) -> torch.Tensor:
    """(B, T): the last frame of a window at a level play uses or any level; earlier ones clean or any level."""
    sigma = rng.uniform(0.02, 1.0, (B, T))
    sigma[rng.random((B, T)) < 0.2] = 1.0
    context = rng.random((B, T)) < cfg.clean_context_p
    context[:, -1] = False
    sigma[context] = 0.0
    return torch.from_numpy(sigma.astype(np.float32))


def training_loss(
    transformer: WorldTransformer,
    text_encoder: TinyTextEncoder,
    batch: Batch,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    known_weight: float = 1.0,
    rows: slice = slice(None),
    world_size: int = 1,
) -> torch.Tensor:
    """The batch's loss (mean squared error over its noised frames) on its `rows` only, one of `world_size` equal
    shares: scaled so that the mean over the shares is the whole batch's loss, and DDP's mean of their gradients
    the whole batch's gradient."""
    weight = (sigma > 0).float()  # (B, T) of the whole batch: the loss divides by its noised frames
    x0, sigma, noise, known = batch.x0[rows], sigma[rows], noise[rows], batch.known[rows]  # this rank's rows
    s = sigma[..., None, None, None]
    noisy = (1 - s) * x0 + s * noise
    states, mask = text_encoder.encode(batch.captions[rows])
    w = mask[..., None].to(states.dtype)
    text = (states * w).sum(1) / w.sum(1).clamp(min=1)
    pred = transformer(noisy, batch.memory[rows], known, sigma, batch.actions[rows], text, batch.origin[rows])
    cell = 1.0 + (known_weight - 1.0) * known
    per_frame = (cell * (pred - x0) ** 2).mean(dim=(2, 3, 4))
    return (per_frame * weight[rows]).sum() / (weight.sum().clamp(min=1) / world_size)


class StepLoss(torch.nn.Module):
    """The denoiser and text encoder as one module whose forward is a step's loss on this rank's rows (what
    DistributedDataParallel wraps)."""

    def __init__(self, transformer: WorldTransformer, text_encoder: TinyTextEncoder):
        super().__init__()
        self.transformer, self.text_encoder = transformer, text_encoder

    def forward(
        self, batch: Batch, sigma: torch.Tensor, noise: torch.Tensor, known_weight: float, group: Group
    ) -> torch.Tensor:
        rows = group.shard(len(batch.captions))
        return training_loss(
            self.transformer, self.text_encoder, batch, sigma, noise, known_weight, rows, group.world_size
        )


def build_models(cfg: TrainConfig) -> tuple[WorldTransformer, TinyTextEncoder]:
    vocab = WordTokenizer.build(vocabulary_corpus()).vocab
    text_encoder = TinyTextEncoder(vocab=vocab, hidden_size=cfg.text_hidden, num_layers=cfg.text_layers, num_heads=2)
    transformer = WorldTransformer(
        latent_channels=cfg.latent_channels,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        text_dim=cfg.text_hidden,
        context_frames=cfg.context_frames,
    )
    return transformer, text_encoder


def scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


def fit(
    cfg: TrainConfig,
    transformer: WorldTransformer,
    text_encoder: TinyTextEncoder,
    latents: torch.Tensor,
    biomes: list[str],
    on_step: OnStep | None,
    save: Callable[[WorldTransformer, TinyTextEncoder], None] | None = None,
    group: Group = SINGLE,
    checkpoints: Checkpoints | None = None,
    resumed: dict[str, Any] | None = None,
) -> tuple[list[float], WorldTransformer, TinyTextEncoder]:
    rng = np.random.default_rng([cfg.seed, 3])
    generator = torch.Generator().manual_seed(cfg.seed + 3)
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema_t, ema_e = copy.deepcopy(transformer).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    ema_params = list(ema_t.parameters()) + list(ema_e.parameters())
    models = (transformer, text_encoder, ema_t, ema_e)
    first, losses = 0, list[float]()
    if resumed is not None:
        first, losses = restore_stage(resumed, models, optim, rng, generator)
    step_loss = group.wrap(StepLoss(transformer, text_encoder))
    for step in range(first, cfg.steps):
        # 1. the whole global batch, drawn on every rank alike (each trains on its rows)
        batch = make_batch(cfg, rng, latents, biomes)
        sigma = frame_sigmas(cfg, rng, *batch.actions.shape)
        noise = torch.randn(batch.x0.shape, generator=generator)
        for group_ in optim.param_groups:
            group_["lr"] = _cosine(cfg.lr, step, cfg.steps, cfg.warmup)
        # 2. loss on this rank's rows; backward averages the gradients over the ranks
        loss = step_loss(batch, sigma, noise, cfg.known_weight, group)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        # 3. log, save, checkpoint
        losses.append(group.mean(loss.item()))
        if on_step:
            on_step("denoiser", step, cfg.steps, losses[-1])
        if save and cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save(ema_t, ema_e)
        if checkpoints is not None:
            checkpoints.record("denoiser", step, losses[-1])
            if checkpoints.due(step, cfg.steps):
                checkpoints.save(stage_state("denoiser", step + 1, losses, models, optim, rng, generator))
    return losses, ema_t, ema_e


def train(
    cfg: TrainConfig,
    out: Path,
    on_step: OnStep | None = None,
    group: Group = SINGLE,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> dict[str, float]:
    """All stages; the pipeline saved in `out` (Hugging Face layout) with train_config.json and train_log.json. On a
    rank of `group`, rank 0 alone writes; every `checkpoint_every` denoiser steps a checkpoint goes to
    `out/checkpoints`, and `resume` continues from the last one there (from scratch if there is none)."""
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    checkpoints = Checkpoints(out / "checkpoints", checkpoint_every, asdict(cfg), group)
    resumed = checkpoints.start(resume)
    maps = train_maps(cfg)
    vae_losses: list[float] = []
    if resumed is not None:  # the VAE the checkpointed run trained
        vae = AutoencoderTiny.from_config(resumed["vae_config"])
        vae.load_state_dict(resumed["vae"])
    else:
        vae = build_vae(cfg)
        vae_losses = train_vae(vae, maps, cfg, on_step)
    vae.requires_grad_(False).eval()
    latents = encode_maps(vae, maps, on_step)
    checkpoints.context = {"vae": vae.state_dict(), "vae_config": vae_config(vae)}
    transformer, text_encoder = build_models(cfg)

    def save(transformer: WorldTransformer, text_encoder: TinyTextEncoder) -> None:
        if not group.is_main:
            return
        pipe = NoorWorldPipeline(
            vae=vae, transformer=transformer.eval(), text_encoder=text_encoder.eval(), scheduler=scheduler()
        )
        pipe.save_pretrained(out)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    losses, transformer, text_encoder = fit(
        cfg, transformer, text_encoder, latents, [m.biome for m in maps], on_step, save, group, checkpoints, resumed
    )
    save(transformer, text_encoder)
    log = {
        "seconds": round(time.perf_counter() - started, 1),
        "vae_final_loss_avg50": float(np.mean(vae_losses[-50:])) if vae_losses else float("nan"),
        "denoiser_final_loss_avg100": float(np.mean(losses[-100:])) if losses else float("nan"),
        "threads": torch.get_num_threads(),
    }
    if group.is_main:
        (out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    return log


def toy_config(seed: int = 0) -> TrainConfig:
    """A model small and short enough for tests: every stage runs, in seconds."""
    return TrainConfig(
        seed=seed, maps_per_biome=1, vae_channels=8, latent_channels=4, vae_steps=2, vae_batch_size=2, hidden_size=32,
        num_layers=1, num_heads=4, mlp_ratio=2, text_hidden=16, steps=2, batch_size=2, max_history=6,
    )  # fmt: skip


def save_toy_weights(out: Path, seed: int = 0) -> Path:
    """A complete noor-world-tiny pipeline with untrained toy-size weights in `out` (for tests of what serves it)."""
    cfg = toy_config(seed)
    torch.manual_seed(seed)
    vae = build_vae(cfg).eval()
    vae.register_to_config(shift_factor=0.0, scaling_factor=1.0)
    transformer, text_encoder = build_models(cfg)
    NoorWorldPipeline(
        vae=vae, transformer=transformer.eval(), text_encoder=text_encoder.eval(), scheduler=scheduler()
    ).save_pretrained(out)
    return out

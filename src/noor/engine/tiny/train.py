"""Train noor-tiny from scratch on clips rendered from the synthetic world.

`noor train tiny` calls `train`. Everything derives from `TrainConfig.seed`, so a run is
reproducible on one machine (bf16 matmuls on other CPUs round differently).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from noor.engine.tiny.captions import caption, vocabulary_corpus
from noor.engine.tiny.pipeline import NoorTinyPipeline
from noor.engine.tiny.text_encoder import TinyTextEncoder
from noor.engine.tiny.tokenizer import WordTokenizer, words
from noor.engine.tiny.transformer import TinyVideoTransformer
from noor.engine.tiny.world import NUM_FRAMES, render, sample_scene


@dataclass
class TrainConfig:
    steps: int = 6000
    batch_size: int = 24
    lr: float = 4e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    hidden_size: int = 128
    num_layers: int = 6
    num_heads: int = 4
    text_layers: int = 2
    caption_dropout: float = 0.1
    two_objects_p: float = 0.25
    start_frame_p: float = 0.25  # only the first frame given
    end_frame_p: float = 0.1  # only the last frame given
    both_frames_p: float = 0.1  # first and last given
    loop_p: float = 0.05  # a there-and-back clip with first = last given
    bf16: bool = True  # autocast matmuls to bfloat16 (fast on CPUs with AMX/AVX512-BF16)
    save_every: int = 1000


@dataclass
class Batch:
    video: torch.Tensor  # (B, 3, T, H, W) in [-1, 1]
    known: torch.Tensor  # (B, T) bool: keyframes given clean
    prompts: list[str]


def held_out_prompts() -> set[str]:
    """Normalised eval prompts: training never shows these strings verbatim."""
    from noor.engine.tiny.eval import eval_prompts

    return {" ".join(words(p.prompt)) for p in eval_prompts()}


def make_batch(cfg: TrainConfig, rng: np.random.Generator, num_frames: int, exclude: set[str]) -> Batch:
    clips, known, prompts = [], [], []
    for _ in range(cfg.batch_size):
        scene = sample_scene(rng, two_objects_p=cfg.two_objects_p)
        u = rng.random()
        pingpong = num_frames > 1 and u < cfg.loop_p
        clips.append(render(scene, num_frames, pingpong=pingpong))
        row = np.zeros(num_frames, dtype=bool)
        if num_frames > 1:
            if pingpong or u < cfg.loop_p + cfg.both_frames_p:
                row[[0, -1]] = True
            elif u < cfg.loop_p + cfg.both_frames_p + cfg.start_frame_p:
                row[0] = True
            elif u < cfg.loop_p + cfg.both_frames_p + cfg.start_frame_p + cfg.end_frame_p:
                row[-1] = True
        known.append(row)
        text = ""
        if rng.random() >= cfg.caption_dropout:
            for _ in range(10):
                text = caption(scene, "ar" if rng.random() < 0.5 else "en", rng)
                if " ".join(words(text)) not in exclude:
                    break
        prompts.append(text)
    video = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3) * 2.0 - 1.0  # (B, 3, T, H, W)
    return Batch(video, torch.from_numpy(np.stack(known)), prompts)


def build_models(cfg: TrainConfig) -> tuple[TinyVideoTransformer, TinyTextEncoder]:
    vocab = WordTokenizer.build(vocabulary_corpus()).vocab
    text_encoder = TinyTextEncoder(vocab=vocab, hidden_size=cfg.hidden_size, num_layers=cfg.text_layers)
    transformer = TinyVideoTransformer(
        hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads, text_dim=cfg.hidden_size
    )
    return transformer, text_encoder


def training_loss(
    transformer: TinyVideoTransformer, text_encoder: TinyTextEncoder, batch: Batch, generator: torch.Generator
) -> torch.Tensor:
    """Flow-matching loss on x0 predictions, keyframes excluded.

    Noise levels lean high (logit-normal centred at sigma ~0.69, plus 10% uniform): layout, colour and
    motion are decided at high noise, and sampling starts from pure noise, so that regime must be
    learnt well. The weight leans gently toward low noise, where detail (edges, shape) is decided.
    """
    x0 = batch.video
    B = x0.shape[0]
    logit_normal = torch.sigmoid(0.8 + torch.randn(B, generator=generator))
    uniform = torch.rand(B, generator=generator)
    sigma = torch.where(torch.rand(B, generator=generator) < 0.1, uniform, logit_normal)
    sigma_frames = torch.where(batch.known, 0.0, sigma[:, None])  # (B, T)
    s = sigma_frames[:, None, :, None, None]
    noise = torch.randn(x0.shape, generator=generator)
    x_t = (1 - s) * x0 + s * noise
    text, mask = text_encoder.encode(batch.prompts)
    pred = transformer(x_t, sigma_frames * 1000.0, text, mask)[0]
    weight = 1.0 / (sigma**2 + 0.25)  # 4 at sigma=0, 0.8 at sigma=1
    per_frame = ((pred.float() - x0) ** 2).mean(dim=(1, 3, 4))  # (B, T)
    free = (~batch.known).float()
    per_clip = (per_frame * free).sum(1) / free.sum(1).clamp(min=1)
    return (per_clip * weight).mean()


def save_pipeline(
    transformer: TinyVideoTransformer, text_encoder: TinyTextEncoder, out: Path, cfg: TrainConfig
) -> None:
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    pipe = NoorTinyPipeline(transformer=transformer, text_encoder=text_encoder, scheduler=scheduler)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")


def train(
    cfg: TrainConfig,
    out: Path,
    on_step: Callable[[int, float], None] | None = None,
    frame_choices: tuple[tuple[int, float], ...] = ((NUM_FRAMES, 0.9), (1, 0.1)),
) -> list[float]:
    """Train, save the EMA weights as a pipeline in `out`, and return the loss of every step."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    transformer, text_encoder = build_models(cfg)
    ema = {name: copy.deepcopy(m).requires_grad_(False) for name, m in (("t", transformer), ("e", text_encoder))}
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    optim = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.steps)))
        return cfg.lr * warm * (0.1 + 0.9 * cosine)

    exclude = held_out_prompts()
    counts, probs = zip(*frame_choices, strict=True)
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(cfg.steps):
        num_frames = int(rng.choice(counts, p=np.array(probs) / sum(probs)))
        batch = make_batch(cfg, rng, num_frames, exclude)
        for group in optim.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = training_loss(transformer, text_encoder, batch, generator)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, model in (("t", transformer), ("e", text_encoder)):
                for p_ema, p in zip(ema[name].parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save_pipeline(ema["t"], ema["e"], out, cfg)
    save_pipeline(ema["t"], ema["e"], out, cfg)
    (out / "train_log.json").write_text(
        json.dumps({"seconds": time.perf_counter() - started, "final_loss_avg100": float(np.mean(losses[-100:]))})
        + "\n"
    )
    return losses

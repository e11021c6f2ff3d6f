"""Trained concepts for noor-tiny: teach the built-in model a shape it never saw, and load it for one task only.

A concept is pivotal tuning (new words' embeddings learnt together with a LoRA, the recipe of diffusers' advanced
DreamBooth LoRA script; Custom Diffusion, Kumari et al. 2023, likewise learns a new word with the attention) at
noor-tiny's size:

- its trigger words (English and Arabic, the words of the example captions the base vocabulary lacks) join the
  text encoder's vocabulary with learned embedding rows; the base rows stay frozen;
- a peft LoRA on the denoiser's attention projections (self- and cross-attention) and MLPs learns to draw it;
- the VAE stays frozen: a round trip through it keeps a rendered crescent a crescent (24 of 24 read back by the
  detector, 28.4 dB against 34.4 dB for circles, 2026-12-06), so it needs no adapter.

The objective is noor-tiny's own (`train.training_loss`): clips with a known first frame half the time and first
frames alone (the two-stage sampler's image stage). Prior preservation: the data folder `render_data` writes holds
some clips of the base shapes too, so base prompts keep their figures with the adapter loaded.

An adapter folder (what `noor train lora --model tiny` writes, `noor generate --concept` and `Task.concepts` load):

    OUT/pytorch_lora_weights.safetensors  diffusers' LoRA format (keys "transformer.…", peft config in metadata)
    OUT/word_embeddings.safetensors       "embeddings" (words, hidden size); its metadata lists the words
    OUT/lora_config.json                  model "tiny", the words per language, a suggested key, the loss curve...

`loaded(pipe, folders)` adds the words and the LoRA, and on leaving takes them out again: the pipeline's weights and
vocabulary afterwards are its weights and vocabulary before, bitwise.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from noor.arabic import normalize_word
from noor.engine.concepts import read_adapter
from noor.engine.examples import CONFIG_NAME, WEIGHT_NAME
from noor.engine.tiny import invariance
from noor.engine.tiny.captions import caption
from noor.engine.tiny.scene import COLOURS, MOTIONS, NEW_SHAPES, NUM_FRAMES, SHAPES, SIZE, render, sample_scene
from noor.engine.tiny.tokenizer import WordTokenizer

EMBEDDINGS_NAME = "word_embeddings.safetensors"
MODEL = "tiny"
# the denoiser's attention projections (self and cross) and its MLPs: with the MLPs the crescent was drawn in 8 of 16
# held-out prompts after 250 steps, without them in 7 with worse colours (2026-12-06)
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0", "mlp.0", "mlp.2")
MAX_BYTES = 1_000_000  # an adapter's files together
MAX_WORDS = 8
OnStep = Callable[[str, int, int, float], None]  # (stage, step, total, loss), as the other trainers

# (colour, motion) pairs the concept data never shows its new shape in: the concept eval's prompts
HELD_OUT = frozenset((colour, MOTIONS[(3 * i + k) % len(MOTIONS)]) for i, colour in enumerate(COLOURS) for k in (0, 4))


class ConceptError(ValueError):
    """An adapter folder that is not a noor-tiny concept; the message names the file and what is wrong."""


def is_arabic(word: str) -> bool:
    return any("\u0600" <= ch <= "\u06ff" for ch in word)


# 1. the data --------------------------------------------------------------------------------------------------


def render_data(
    out: Path,
    shape: str = "crescent",
    clips: int = 200,
    prior: float = 0.25,
    seed: int = 0,
    on_clip: OnStep | None = None,
) -> dict[str, int]:
    """Write a LoRA data folder (`noor train lora`'s: clips + captions.jsonl) teaching `shape`: `clips` rendered
    clips across colours, motions and backgrounds, `prior` of them of the base shapes (prior preservation), each
    with an English and an Arabic caption. The new shape is never shown in a HELD_OUT (colour, motion) pair."""
    from noor.engine.media import write_video

    if shape not in NEW_SHAPES:
        raise ValueError(f"shape must be one of {', '.join(NEW_SHAPES)}, got {shape!r}")
    if not 1 <= clips <= 200:
        raise ValueError(f"clips must be between 1 and 200, got {clips!r}")
    if not 0.0 <= prior < 1.0:
        raise ValueError(f"prior must be at least 0 and below 1, got {prior!r}")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    new = clips - round(prior * clips)
    lines, counts = [], {"clips": clips, shape: new, "prior": clips - new}
    pairs = [(c, m) for c in COLOURS for m in MOTIONS if (c, m) not in HELD_OUT]
    for i in range(clips):
        if i < new:  # every allowed pair in turn, in a shuffled order: balanced colours and motions
            if i % len(pairs) == 0:
                rng.shuffle(pairs)
            colour, motion = pairs[i % len(pairs)]
            scene = sample_scene(rng, 0.2, shape=shape, colour=colour, motion=motion)
        else:
            scene = sample_scene(rng, 0.25, shape=str(rng.choice(SHAPES)))
        name = f"clip_{i:03d}.mp4"
        write_video(out / name, (render(scene) * 255.0).round().astype(np.uint8), fps=8, crf=0)
        for lang in ("en", "ar"):
            lines.append(json.dumps({"file": name, "caption": caption(scene, lang, rng)}, ensure_ascii=False))
        if on_clip:
            on_clip("render", i, clips, 0.0)
    (out / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return counts


# 2. the words and the embedding -------------------------------------------------------------------------------


class ExtendedEmbedding(nn.Module):
    """A frozen embedding with rows appended: ids past the base vocabulary read `rows`."""

    def __init__(self, base: nn.Embedding, rows: torch.Tensor):
        super().__init__()
        self.base = base
        self.rows = nn.Parameter(rows.to(base.weight.dtype), requires_grad=rows.requires_grad)

    @property
    def weight(self) -> torch.Tensor:  # the text encoder reads its dtype
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, torch.cat([self.base.weight, self.rows]), padding_idx=self.base.padding_idx)


def new_words(tokenizer: WordTokenizer, captions: Sequence[str]) -> list[str]:
    """The words of `captions` the vocabulary lacks, normalised as the tokenizer looks them up, first seen first."""
    found = [normalize_word(w) for text in captions for w in tokenizer.unknown_words(text)]
    return list(dict.fromkeys(w for w in found if w))


def _base_shape_rows(text_encoder: Any) -> torch.Tensor:
    """The mean embedding of the base shape words: where a new shape word starts."""
    from noor.engine.tiny.captions import AR_SHAPE, EN_SHAPE

    tok = text_encoder.tokenizer
    words = [w for options in EN_SHAPE.values() for w in options] + [w for w, _ in AR_SHAPE.values()]
    ids = [tok.ids[normalize_word(w)] for w in words if normalize_word(w) in tok.ids]
    return text_encoder.embed.weight.detach()[ids].mean(0)


@contextmanager
def words_added(text_encoder: Any, words: Sequence[str], rows: torch.Tensor) -> Iterator[ExtendedEmbedding]:
    """The text encoder with `words` in its vocabulary, read as `rows`; as it was on leaving (the same objects)."""
    tokenizer, embed = text_encoder.tokenizer, text_encoder.embed
    clash = [w for w in words if w in tokenizer.ids]
    if clash:
        raise ConceptError(f"the words {', '.join(clash)} are already in the vocabulary")
    extended = ExtendedEmbedding(embed, rows)
    text_encoder.tokenizer = WordTokenizer([*tokenizer.vocab, *words], tokenizer.max_length)
    text_encoder.embed = extended
    try:
        yield extended
    finally:
        text_encoder.tokenizer, text_encoder.embed = tokenizer, embed


# 3. the adapter folder ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    path: Path
    words: list[str]
    rows: torch.Tensor  # (words, hidden)
    config: dict[str, Any]


def adapter_bytes(path: Path) -> int:
    """The adapter's files together, bytes."""
    return sum((path / name).stat().st_size for name in (WEIGHT_NAME, CONFIG_NAME, EMBEDDINGS_NAME))


def read(path: str | Path, pipe: Any) -> Adapter:
    """Read and check an adapter folder against a loaded noor-tiny pipeline; ConceptError says what is wrong."""
    path = Path(path)
    try:  # the folder's files, as the concepts registry checks any adapter's
        files = (WEIGHT_NAME, CONFIG_NAME, EMBEDDINGS_NAME)
        config = read_adapter(path, files, "a noor-tiny adapter", "noor train lora --model tiny")
    except ValueError as err:
        raise ConceptError(str(err)) from None
    if config.get("model") != MODEL:
        raise ConceptError(f"{path / CONFIG_NAME} is an adapter for model {config.get('model')!r}, not {MODEL!r}")
    try:
        with safe_open(str(path / EMBEDDINGS_NAME), framework="pt") as f:
            words = json.loads((f.metadata() or {}).get("words", "null"))
            rows = f.get_tensor("embeddings")
        with safe_open(str(path / WEIGHT_NAME), framework="pt") as f:
            lora = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise ConceptError(f"{path}: cannot read its safetensors files ({err})") from None
    hidden = pipe.text_encoder.config.hidden_size
    if not isinstance(words, list) or not words or rows.shape != (len(words), hidden):
        raise ConceptError(f"{path / EMBEDDINGS_NAME}: needs one {hidden}-wide row per word, got {tuple(rows.shape)}")
    clash = [w for w in words if w in pipe.text_encoder.tokenizer.ids]
    if clash:
        raise ConceptError(f"{path / EMBEDDINGS_NAME}: the words {', '.join(clash)} are already in the vocabulary")
    modules = dict(pipe.transformer.named_modules())
    for key, shape in lora.items():
        name, _, kind = key.removeprefix("transformer.").rpartition(".lora_")
        target = modules.get(name)
        if not key.startswith("transformer.") or not isinstance(target, nn.Linear) or len(shape) != 2:
            raise ConceptError(f"{path / WEIGHT_NAME}: {key} is not a LoRA weight of noor-tiny's denoiser")
        fits = shape[1] == target.in_features if kind.startswith("A") else shape[0] == target.out_features
        if not fits:
            raise ConceptError(f"{path / WEIGHT_NAME}: {key} has shape {shape}, not {name}'s")
    if not lora:
        raise ConceptError(f"{path / WEIGHT_NAME} holds no LoRA weights")
    return Adapter(path, words, rows, config)


@contextmanager
def loaded(pipe: Any, folders: Sequence[str | Path]) -> Iterator[list[Adapter]]:
    """The pipeline with the adapters in `folders` loaded (their words and their LoRAs), unloaded on leaving."""
    if not folders:
        yield []
        return
    adapters = [read(folder, pipe) for folder in folders]
    words = [w for a in adapters for w in a.words]
    if len(set(words)) < len(words):
        raise ConceptError(f"two concepts add the same word: {', '.join(sorted(words))}")
    transformer, was_invariant = pipe.transformer, invariance.is_enabled(pipe.transformer)
    rows = torch.cat([a.rows for a in adapters]).to(pipe.text_encoder.embed.weight.device)
    with words_added(pipe.text_encoder, words, rows):
        names = [f"concept_{i}" for i in range(len(adapters))]
        try:
            for name, adapter in zip(names, adapters, strict=True):
                transformer.load_lora_adapter(
                    str(adapter.path), weight_name=WEIGHT_NAME, prefix="transformer", adapter_name=name
                )
            if len(names) > 1:
                transformer.set_adapters(names)
            if was_invariant:  # the LoRA's own Linears too
                invariance.enable(transformer)
            yield adapters
        finally:
            if getattr(transformer, "peft_config", None):
                transformer.unload_lora()


# 4. training --------------------------------------------------------------------------------------------------


PRIOR_TARGETS = ("clip", "frozen")


@dataclass(frozen=True)
class TinyLoraConfig:
    steps: int = 1200
    rank: int = 8
    alpha: int = 8
    lr: float = 5e-3  # the LoRA's
    embed_lr: float = 2e-2  # the new words' rows
    batch_size: int = 8  # clips a step (half of them with their first frame given)
    image_batch: int = 32  # first frames a step (the image stage of two-stage sampling)
    start_frame_p: float = 0.5
    # the share of each batch drawn from the examples whose captions bring no new word (the base shapes: prior
    # preservation); 0 or a folder without such examples: uniform over all examples
    prior_p: float = 0.5
    # what a base-shape example teaches: "clip" its rendered clip; "frozen" the frozen model's own prediction at the
    # same noisy input (prior preservation by distillation: the adapter learns to leave base prompts as they were)
    prior_target: str = "clip"
    seed: int = 0
    max_grad_norm: float = 1.0
    target_modules: tuple[str, ...] = TARGET_MODULES

    def check(self) -> TinyLoraConfig:
        for name in ("steps", "rank", "alpha", "batch_size", "image_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)!r}")
        if self.prior_target not in PRIOR_TARGETS:
            raise ValueError(f"prior_target: must be one of {', '.join(PRIOR_TARGETS)}, got {self.prior_target!r}")
        for name in ("lr", "embed_lr"):
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name}: must be a positive number, got {value!r}")
        return self


@dataclass
class TinyLoraResult:
    out: Path
    words: dict[str, list[str]]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    clips: int = 0
    examples: int = 0
    size_bytes: int = 0


def read_data(data: Path, tokenizer: WordTokenizer) -> tuple[list[Any], list[str]]:
    """The data folder's examples (noor.engine.examples.read_examples) and the new words they bring; a
    DataError (lora's) names what is wrong."""
    from noor.engine import examples as training_data

    examples = training_data.read_examples(data)
    words = new_words(tokenizer, [e.caption for e in examples])
    if not words:
        raise training_data.DataError(f"the captions in {data} bring no new word: nothing to name a concept by")
    if len(words) > MAX_WORDS:
        raise training_data.DataError(
            f"the captions in {data} bring {len(words)} new words (at most {MAX_WORDS}): {words}"
        )
    return examples, words


def frozen_model(transformer: Any) -> Callable[..., torch.Tensor]:
    """The denoiser with its adapter off, as a function of the denoiser's arguments to its x0 prediction: the
    teacher of prior preservation by distillation (`TinyLoraConfig.prior_target` "frozen")."""

    def predict(*args: Any) -> torch.Tensor:
        transformer.disable_adapters()
        try:
            return transformer(*args)[0]
        finally:
            transformer.enable_adapters()

    return predict


def train(weights: Path, data: Path, out: Path, cfg: TinyLoraConfig, on_step: OnStep | None = None) -> TinyLoraResult:
    """Train a concept on the data folder `data` for the noor-tiny weights in `weights`, write it to `out`."""
    from diffusers.utils import logging as diffusers_logging
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from noor.engine import examples as training_data
    from noor.engine.tiny.pipeline import NoorTinyPipeline, encode_frames
    from noor.engine.tiny.train import Batch, training_loss

    started = time.perf_counter()
    cfg = cfg.check()
    diffusers_logging.disable_progress_bar()  # its loading bar, under the training bars
    pipe = NoorTinyPipeline.from_pretrained(str(weights))
    for part in (pipe.transformer, pipe.text_encoder, pipe.vae):
        part.requires_grad_(False)
        part.eval()
    examples, words = read_data(data, pipe.text_encoder.tokenizer)
    prior = np.array([not new_words(pipe.text_encoder.tokenizer, [e.caption]) for e in examples])  # base shapes
    record = (
        json.loads((Path(weights) / "train_config.json").read_text())
        if (weights / "train_config.json").is_file()
        else {}
    )
    shift = float(record.get("shift", pipe.scheduler.config.shift))

    # 1. the clips, encoded once by the frozen VAE (a clip that two captions share, once)
    files = list(dict.fromkeys(e.path for e in examples))
    latents = []
    with torch.no_grad():
        for i, path in enumerate(files):
            pixels = training_data.load_pixels([training_data.Example(path, "")], SIZE, SIZE, NUM_FRAMES, True)[
                0
            ]  # (3, T, H, W)
            z = encode_frames(pipe.vae, pixels.transpose(0, 1))  # (T, C, h, w)
            latents.append(z.transpose(0, 1))
            if on_step:
                on_step("encode", i, len(files), 0.0)
    pool = torch.stack(latents)  # (N, C, T, h, w)
    clip_of = torch.tensor([files.index(e.path) for e in examples])

    # 2. the new words (rows start at the base shape words' mean) and the LoRA (B zero: starts as the base)
    torch.manual_seed(cfg.seed)
    start = _base_shape_rows(pipe.text_encoder)
    rows = start[None].repeat(len(words), 1).clone().requires_grad_(True)
    transformer, text_encoder = pipe.transformer, pipe.text_encoder
    transformer.add_adapter(
        LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            init_lora_weights="gaussian",
            target_modules=list(cfg.target_modules),
        )
    )
    result = TinyLoraResult(
        out, {"en": [w for w in words if not is_arabic(w)], "ar": [w for w in words if is_arabic(w)]}
    )
    with words_added(text_encoder, words, rows) as embed:
        lora_params = [p for p in transformer.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [
                {"params": lora_params, "lr": cfg.lr, "weight_decay": 1e-4},
                {"params": [embed.rows], "lr": cfg.embed_lr, "weight_decay": 0.0},
            ]
        )
        rng = np.random.default_rng(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)

        def draw(n: int) -> np.ndarray:
            """`n` example indexes, `prior_p` of them (on average) from the prior examples."""
            if not prior.any() or prior.all() or not cfg.prior_p:
                return rng.integers(len(examples), size=n)
            from_prior = rng.random(n) < cfg.prior_p
            pools = np.flatnonzero(prior), np.flatnonzero(~prior)
            return np.where(from_prior, rng.choice(pools[0], size=n), rng.choice(pools[1], size=n))

        teacher = frozen_model(transformer) if cfg.prior_target == "frozen" else None
        transformer.train()
        for step in range(cfg.steps):
            warm = min(1.0, (step + 1) / max(1, cfg.steps // 10))
            decay = 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            for group, base_lr in zip(optimizer.param_groups, (cfg.lr, cfg.embed_lr), strict=True):
                group["lr"] = base_lr * warm * (0.1 + 0.9 * decay)
            pick = draw(cfg.batch_size)
            known = torch.zeros(cfg.batch_size, NUM_FRAMES, dtype=torch.bool)
            known[:, 0] = torch.from_numpy(rng.random(cfg.batch_size) < cfg.start_frame_p)
            clips = Batch(pool[clip_of[pick]], known, [examples[i].caption for i in pick])
            firsts = draw(cfg.image_batch)
            images = Batch(
                pool[clip_of[firsts], :, :1],
                torch.zeros(cfg.image_batch, 1, dtype=torch.bool),
                [examples[i].caption for i in firsts],
            )
            taught, taught_images = torch.from_numpy(prior[pick]), torch.from_numpy(prior[firsts])
            loss = training_loss(transformer, text_encoder, clips, generator, shift, teacher=teacher, taught=taught)
            loss = loss + training_loss(
                transformer, text_encoder, images, generator, shift, teacher=teacher, taught=taught_images
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora_params, cfg.max_grad_norm)
            optimizer.step()
            result.losses.append(float(loss.detach()))
            if not math.isfinite(result.losses[-1]):
                raise FloatingPointError(f"the loss is {result.losses[-1]} at step {step}: try a lower --lr")
            if on_step:
                on_step("lora", step, cfg.steps, result.losses[-1])
        transformer.eval()
        learnt = embed.rows.detach().float().contiguous().clone()

    # 3. the adapter: diffusers' LoRA format, the words' rows, the record
    out.mkdir(parents=True, exist_ok=True)
    state = {
        f"transformer.{k}": v.detach().float().contiguous() for k, v in get_peft_model_state_dict(transformer).items()
    }
    peft_config = transformer.peft_config["default"].to_dict()
    # diffusers' LoRA metadata: the peft config with each key under its component's prefix
    metadata = {
        "format": "pt",
        "lora_adapter_metadata": json.dumps(
            {f"transformer.{k}": v for k, v in _jsonable(peft_config).items()}, sort_keys=True
        ),
    }
    save_file(state, str(out / WEIGHT_NAME), metadata=metadata)
    save_file(
        {"embeddings": learnt}, str(out / EMBEDDINGS_NAME), metadata={"words": json.dumps(words, ensure_ascii=False)}
    )
    transformer.unload_lora()
    result.seconds = time.perf_counter() - started
    result.clips, result.examples = len(files), len(examples)
    key = (result.words["en"] or words)[0]
    config = {
        "model": MODEL,
        "words": result.words,
        "key": key,
        "weights": WEIGHT_NAME,
        "embeddings": EMBEDDINGS_NAME,
        "config": asdict(cfg),
        "data": str(data),
        "clips": result.clips,
        "examples": result.examples,
        "steps": cfg.steps,
        "seconds": round(result.seconds, 2),
        "losses": [round(v, 6) for v in result.losses],
    }
    (out / CONFIG_NAME).write_text(json.dumps(config, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    result.size_bytes = adapter_bytes(out)
    return result


def _jsonable(value: Any) -> Any:
    """A peft config dict with sets as sorted lists (what json writes)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset, tuple, list)):
        items = [_jsonable(v) for v in value]
        return sorted(items) if isinstance(value, (set, frozenset)) else items
    return value

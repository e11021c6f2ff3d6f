from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from noor.engine.tiny.pipeline import NoorTinyPipeline
from noor.engine.tiny.tokenizer import words
from noor.engine.tiny.train import TrainConfig, build_models, held_out_prompts, make_batch, train, training_loss

TOY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "text_layers": 1, "batch_size": 4}


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(**TOY)
    transformer, text_encoder = build_models(cfg)
    batch = make_batch(cfg, np.random.default_rng(0), 16, set())
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    optim = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for _ in range(25):
        loss = training_loss(transformer, text_encoder, batch, torch.Generator().manual_seed(1))  # same noise each step
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_batches_mark_keyframes_and_never_show_eval_prompts() -> None:
    cfg = TrainConfig(**{**TOY, "batch_size": 200})
    exclude = held_out_prompts()
    batch = make_batch(cfg, np.random.default_rng(0), 16, exclude)
    assert batch.video.shape == (200, 3, 16, 64, 64) and batch.video.min() >= -1.0 and batch.video.max() <= 1.0
    assert batch.known[:, 0].any() and batch.known[:, -1].any() and not batch.known[:, 1:-1].any()
    assert not {" ".join(words(p)) for p in batch.prompts} & exclude
    assert sum(p == "" for p in batch.prompts) > 5  # caption dropout for classifier-free guidance
    assert {"en", "ar"} == {("ar" if any("\u0600" <= ch <= "\u06ff" for ch in p) else "en") for p in batch.prompts if p}


def test_train_writes_a_loadable_pipeline_with_its_config(tmp_path: Path) -> None:
    cfg = TrainConfig(**TOY, steps=3, save_every=0, warmup_steps=1)
    losses = train(cfg, tmp_path, frame_choices=((8, 1.0),))
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert json.loads((tmp_path / "train_config.json").read_text())["steps"] == 3
    pipe = NoorTinyPipeline.from_pretrained(str(tmp_path))
    assert pipe.transformer.config.hidden_size == 32


def test_training_is_reproducible_from_the_seed(tmp_path: Path) -> None:
    cfg = TrainConfig(**TOY, steps=2, save_every=0, warmup_steps=1, bf16=False)
    a = train(cfg, tmp_path / "a", frame_choices=((4, 1.0),))
    b = train(cfg, tmp_path / "b", frame_choices=((4, 1.0),))
    assert a == b

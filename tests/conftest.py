from __future__ import annotations

from pathlib import Path

import pytest
import torch

from noor.engine.tiny.train import TrainConfig, build_models, build_vae, save_pipeline

# noor-tiny's real classes at toy size
TOY = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "text_layers": 1,
    "vae_channels": (8, 8, 8),
    "batch_size": 4,
    "vae_batch_size": 4,
    "pool_clips": 12,
    "vae_steps": 2,
    "decoder_steps": 2,
}


@pytest.fixture(scope="session")
def toy_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy noor-tiny with random weights, saved in Hugging Face layout."""
    torch.manual_seed(0)
    cfg = TrainConfig(**TOY)  # type: ignore[arg-type]
    transformer, text_encoder = build_models(cfg)
    # adaLN-Zero starts at an exact zero output; perturb so toy outputs depend on their inputs
    with torch.no_grad():
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    out = tmp_path_factory.mktemp("toy-tiny")
    save_pipeline(transformer, text_encoder, build_vae(cfg), out, cfg)
    return out

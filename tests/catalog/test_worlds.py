"""The world-model catalog: cited, consistent sizes, and noor-world-tiny as issue #27's design gives it."""

from __future__ import annotations

import json
from pathlib import Path

from noor import catalog

REPO = Path(__file__).resolve().parents[2]


def test_every_world_model_cites_its_sources_and_has_whole_tokens() -> None:
    worlds = catalog.worlds()
    assert set(worlds) >= {"noor-world-tiny", "self-forcing-chunk", "self-forcing-frame", "matrix-game-2"}
    for w in worlds.values():
        assert w.sources["transformer"] and w.sources["defaults"]
        assert w.width % (w.vae.spatial * w.patch[1]) == 0 and w.height % (w.vae.spatial * w.patch[0]) == 0
        if w.base != "own":  # built on a catalog clip model: the same transformer sizes
            base = catalog.model(w.base)
            assert (w.layers, w.hidden_size, w.heads, w.ffn_size) == (
                base.layers,
                base.hidden_size,
                base.heads,
                base.ffn_size,
            )
    assert "genie-3" not in worlds and "oasis-500m" not in worlds  # unpublished architectures stay out


def test_noor_world_tiny_is_the_shipped_model() -> None:
    w = catalog.world("noor-world-tiny")
    shipped = json.loads((REPO / "src/noor/engine/world_tiny/weights/transformer/config.json").read_text())
    assert (
        w.tokens_per_latent_frame == (shipped["grid"] // shipped["patch_size"]) ** 2 == 64 and w.frames_per_chunk == 1
    )
    assert (w.hidden_size, w.layers, w.heads, w.context_frames) == (
        shipped["hidden_size"],
        shipped["num_layers"],
        shipped["num_heads"],
        shipped["context_frames"],
    )
    assert w.ffn_size == shipped["mlp_ratio"] * shipped["hidden_size"]
    assert w.memory_tokens == 0 and (w.steps, w.cache_pass) == (4, True)  # memory: input channels, not tokens
    assert catalog.world("self-forcing-chunk").tokens_per_latent_frame == 30 * 52  # 832x480 / 8 / 2
    assert catalog.world("matrix-game-2").frames_per_chunk == 12  # 3 latent frames x 4

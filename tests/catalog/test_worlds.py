"""The world-model catalog: cited, consistent sizes, and noor-world-tiny as issue #27's design gives it."""

from __future__ import annotations

from noor import catalog


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


def test_noor_world_tiny_is_64_tokens_a_frame_on_noor_tinys_vae() -> None:
    w = catalog.world("noor-world-tiny")
    assert w.vae == catalog.model("tiny").vae  # 64x64 <-> 4x16x16
    assert w.tokens_per_latent_frame == 64 and w.frames_per_chunk == 1
    assert (w.hidden_size, w.layers, w.heads, w.context_frames, w.memory_tokens, w.steps, w.cache_pass) == (
        128,
        6,
        4,
        3,
        64,
        4,
        True,
    )
    assert catalog.world("self-forcing-chunk").tokens_per_latent_frame == 30 * 52  # 832x480 / 8 / 2
    assert catalog.world("matrix-game-2").frames_per_chunk == 12  # 3 latent frames x 4

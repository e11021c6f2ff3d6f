from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb

from noor.engine.tiny.transformer import TinyVideoTransformer, rope_3d


def test_rotary_scores_depend_only_on_the_offset_between_tokens() -> None:
    T, hp, wp, d = 6, 3, 4, 32
    cos, sin = rope_3d(T, hp, wp, d)
    assert cos.shape == sin.shape == (T * hp * wp, d)
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, d).expand(1, 1, T * hp * wp, d), torch.randn(1, 1, 1, d).expand(1, 1, T * hp * wp, d)
    scores = apply_rotary_emb(q, (cos, sin))[0, 0] @ apply_rotary_emb(k, (cos, sin))[0, 0].T

    def at(t: int, y: int, x: int) -> int:
        return (t * hp + y) * wp + x

    # one frame later and one column to the left, from two different places in the clip
    assert scores[at(0, 1, 2), at(1, 1, 1)] == pytest.approx(scores[at(3, 0, 3), at(4, 0, 2)].item(), abs=1e-4)
    # a different offset scores differently (the positions are not ignored)
    assert abs(scores[at(0, 1, 2), at(1, 1, 1)] - scores[at(0, 1, 2), at(1, 1, 3)]) > 1e-3


@pytest.mark.parametrize("attention", ["joint", "factorised"])
def test_both_attention_layouts_denoise_a_clip_of_any_length(attention: str) -> None:
    torch.manual_seed(0)
    model = TinyVideoTransformer(in_channels=4, patch_size=4, hidden_size=32, num_layers=1, attention=attention)
    for frames in (1, 5):
        x = torch.randn(2, 4, frames, 8, 12)
        out = model(x, torch.full((2, frames), 500.0), torch.randn(2, 3, 128), torch.ones(2, 3, dtype=torch.bool))[0]
        assert out.shape == x.shape


def test_an_unknown_attention_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="attention"):
        TinyVideoTransformer(attention="sparse")

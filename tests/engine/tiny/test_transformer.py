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


@pytest.mark.parametrize(("attention", "conv_channels"), [("joint", 0), ("factorised", 0), ("joint", 8)])
def test_every_layout_denoises_a_clip_of_any_length(attention: str, conv_channels: int) -> None:
    torch.manual_seed(0)
    model = TinyVideoTransformer(
        in_channels=4, patch_size=4, hidden_size=32, num_layers=1, attention=attention, conv_channels=conv_channels
    )
    for frames in (1, 5):
        x = torch.randn(2, 4, frames, 8, 12)
        out = model(x, torch.full((2, frames), 500.0), torch.randn(2, 3, 128), torch.ones(2, 3, dtype=torch.bool))[0]
        assert out.shape == x.shape


def test_an_unknown_attention_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="attention"):
        TinyVideoTransformer(attention="sparse")


def test_the_conv_head_sees_the_noisy_input_at_full_resolution() -> None:
    """With a conv stem and head, an output latent pixel depends most on the input right there (through the
    skip, not only through its 4x4 token); the output starts at zero (zero-initialised, as adaLN-Zero)."""
    torch.manual_seed(0)
    model = TinyVideoTransformer(in_channels=4, patch_size=4, hidden_size=32, num_layers=1, conv_channels=8)
    x = torch.randn(1, 4, 2, 8, 8)
    args = (torch.full((1, 2), 300.0), torch.randn(1, 3, 128), torch.ones(1, 3, dtype=torch.bool))
    assert model(x, *args)[0].abs().max() == 0.0
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)
    x = x.requires_grad_(True)
    model(x, *args)[0][0, :, 0, 5, 5].sum().backward()
    grad = x.grad[0, :, 0].abs().sum(0)  # (8, 8)
    assert divmod(int(grad.argmax()), 8) == (5, 5)


def _trained_looking_denoiser() -> TinyVideoTransformer:
    """A one-layer joint denoiser whose output head is not zero (as a trained one's is not)."""
    torch.manual_seed(0)
    plain = TinyVideoTransformer(in_channels=4, patch_size=4, hidden_size=32, num_layers=1, attention="joint")
    torch.nn.init.normal_(plain.proj_out.weight, std=0.1)
    return plain


def test_the_input_skip_starts_closed_and_open_copies_a_nearly_clean_input() -> None:
    """The gate starts at zero (the network's own x0, as without the skip); opened, the estimate at noise
    sigma is c_skip(sigma) * x_t, which is x_t itself on a clean (t=0) frame."""
    plain = _trained_looking_denoiser()
    skipped = plain.with_input_skip()
    assert skipped.config.input_skip and not plain.config.input_skip
    x = torch.randn(1, 4, 3, 8, 8)
    args = (torch.tensor([[0.0, 500.0, 1000.0]]), torch.randn(1, 3, 128), torch.ones(1, 3, dtype=torch.bool))
    assert torch.equal(plain(x, *args)[0], skipped(x, *args)[0])
    torch.nn.init.constant_(skipped.skip_gate.bias, 1.0)  # fully open
    out = skipped(x, *args)[0]
    assert torch.allclose(out[:, :, 0], x[:, :, 0], atol=1e-5)  # clean: c_skip = 1
    assert torch.allclose(out[:, :, 1], x[:, :, 1], atol=1e-5)  # sigma 0.5: c_skip = 0.5 / (0.25 + 0.25) = 1
    assert torch.allclose(out[:, :, 2], torch.zeros_like(out[:, :, 2]), atol=1e-5)  # pure noise: c_skip = 0


def test_keyframe_concat_starts_silent_and_shows_every_token_the_given_frames_at_its_place() -> None:
    """Zero at first (the copy predicts what the original does); then each token of every frame sees the given
    first and last frames' patch at the same place, and nothing of a frame that is not given (t > 0)."""
    plain = _trained_looking_denoiser()
    concat = plain.with_keyframe_concat()
    assert concat.config.keyframe_concat and not plain.config.keyframe_concat
    x = torch.randn(2, 4, 3, 8, 8)
    timestep = torch.tensor([[0.0, 500.0, 500.0], [500.0, 500.0, 500.0]])  # clip 0: first frame given; clip 1: none
    args = (torch.randn(2, 3, 128), torch.ones(2, 3, dtype=torch.bool))
    assert torch.equal(plain(x, timestep, *args)[0], concat(x, timestep, *args)[0])

    features = concat._keyframes(x, timestep)  # (B, S, 2 * (C*p*p + 1))
    assert features.shape == (2, 4, 2 * 65)
    first = x[0, :, 0, 4:8, 0:4].reshape(-1)  # token (row 1, column 0) of clip 0's first frame
    assert torch.equal(features[0, 2, :64], first) and features[0, 2, 64] == 1.0
    assert features[0, :, 65:].abs().sum() == 0  # its last frame is not given
    assert features[1].abs().sum() == 0  # clip 1 gives nothing

    torch.nn.init.normal_(concat.keyframe_embed.weight, std=0.1)
    x = x.requires_grad_(True)
    concat(x, timestep, *args)[0][0, :, 2, 4:8, 0:4].sum().backward()  # frame 2, token (1, 0)
    grad = x.grad[0, :, 0].abs().sum(0)  # (8, 8) over the first frame
    assert grad[4:8, 0:4].sum() > 100 * (grad.sum() - grad[4:8, 0:4].sum())  # mostly through its own place

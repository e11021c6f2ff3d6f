"""noor-world-tiny at toy size: the causal transformer and its cache, the memory canvas, the pipeline, training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from noor.engine.task import TaskError
from noor.engine.world_tiny.backend import WorldTinyBackend, walk
from noor.engine.world_tiny.memory import Canvas
from noor.engine.world_tiny.model import ACTION_IDS, Cache, WorldTransformer
from noor.engine.world_tiny.pipeline import NoorWorldPipeline
from noor.engine.world_tiny.terrain import player_mask
from noor.engine.world_tiny.train import (
    TrainConfig,
    make_batch,
    save_toy_weights,
    seen_mask,
    toy_config,
    train,
)
from noor.engine.world_tiny.train import (
    walk as training_walk,
)


def _toy_transformer(context: int = 2, layers: int = 2) -> WorldTransformer:
    torch.manual_seed(0)
    model = WorldTransformer(
        hidden_size=32, num_layers=layers, num_heads=4, mlp_ratio=2, text_dim=8, context_frames=context
    )
    for p in model.parameters():  # adaLN-Zero starts as the identity: wake every weight so the checks can fail
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def _window(B: int = 2, T: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "noisy": torch.randn(B, T, 4, 16, 16, generator=g),
        "memory": torch.randn(B, T, 4, 16, 16, generator=g),
        "known": (torch.rand(B, T, 1, 16, 16, generator=g) > 0.5).float(),
        "sigma": torch.rand(B, T, generator=g),
        "actions": torch.randint(0, len(ACTION_IDS), (B, T), generator=g),
        "text": torch.randn(B, 8, generator=g),
        "origin": torch.randint(0, 128, (B, 1, 2), generator=g)
        + torch.randint(-1, 2, (B, T, 2), generator=g).cumsum(1),  # a walk: each frame within a step of the last
    }


def test_a_frame_never_sees_a_later_one_nor_one_beyond_its_context() -> None:
    model, w = _toy_transformer(context=1, layers=1), _window()  # one layer: deeper ones pass it on, as the cache does
    with torch.no_grad():
        base = model(**w)
        later = dict(w, noisy=w["noisy"].clone())
        later["noisy"][:, 3] += 1.0  # change the last frame only
        changed = model(**later)
        assert torch.allclose(base[:, :3], changed[:, :3], atol=1e-5)  # earlier frames: untouched
        assert not torch.allclose(base[:, 3], changed[:, 3], atol=1e-3)
        far = dict(w, noisy=w["noisy"].clone())
        far["noisy"][:, 0] += 1.0  # frame 0 is beyond frame 2's context of one frame, inside frame 1's
        moved = model(**far)
        assert torch.allclose(base[:, 2:], moved[:, 2:], atol=1e-5)
        assert not torch.allclose(base[:, 1], moved[:, 1], atol=1e-3)


def test_playing_with_the_cache_gives_what_the_window_gives() -> None:
    """Frame by frame against cached keys and values = the whole window at once (context frames clean)."""
    model, w = _toy_transformer(context=2), _window(B=1, T=4)
    sigma = torch.tensor([[0.0, 0.0, 0.0, 0.7]])
    x0 = w["noisy"].clone()
    with torch.no_grad():
        window = model(x0, w["memory"], w["known"], sigma, w["actions"], w["text"], w["origin"])
        cache = Cache([], [])
        at = [tuple(int(v) for v in w["origin"][0, t]) for t in range(4)]
        for t in range(3):  # commit frames 0..2 clean, as the pipeline does
            _, kv = model.denoise(
                x0[:, t], w["memory"][:, t], w["known"][:, t], 0.0, int(w["actions"][0, t]), w["text"], t, cache, at[t]
            )
            cache = model.remember(cache, kv, t)
        assert cache.frames == [1, 2]  # two frames of context kept
        last, _ = model.denoise(
            x0[:, 3], w["memory"][:, 3], w["known"][:, 3], 0.7, int(w["actions"][0, 3]), w["text"], 3, cache, at[3]
        )
    assert torch.allclose(last, window[:, 3], atol=1e-4)


def test_positions_are_the_worlds_only_where_frames_are_relative_to_each_other_around_the_torus() -> None:
    """The same ground has the same position in every frame: moving the whole walk, or taking it once round the
    torus, changes nothing; moving one frame against the others changes what is drawn."""
    model, w = _toy_transformer(context=2), _window()
    with torch.no_grad():
        base = model(**w)
        moved = model(**dict(w, origin=w["origin"] + torch.tensor([37, -5])))
        round_ = model(**dict(w, origin=w["origin"] + torch.tensor([128, 0])))
        shifted = w["origin"].clone()
        shifted[:, 3] += torch.tensor([1, 0])  # the last frame one latent pixel further right than it was
        apart = model(**dict(w, origin=shifted))
    assert torch.allclose(base, moved, atol=1e-4) and torch.allclose(base, round_, atol=1e-4)
    assert torch.allclose(base[:, :3], apart[:, :3], atol=1e-5)
    assert not torch.allclose(base[:, 3], apart[:, 3], atol=1e-3)


def test_the_canvas_keeps_what_it_saw_and_wraps_around_the_torus() -> None:
    canvas = Canvas(channels=1, size=32, view=16)
    canvas.write(24, 0, torch.full((1, 16, 16), 1.0))  # spans columns 24..31 and 0..7
    latents, known = canvas.crop(0, 0)
    assert known[0, :, :8].all() and not known[0, :, 8:].any()
    canvas.write(0, 0, torch.full((1, 16, 16), 2.0))  # what was known stays; the rest is written
    latents, known = canvas.crop(0, 0)
    assert (latents[0, :, :8] == 1.0).all() and (latents[0, :, 8:] == 2.0).all() and known.all()
    off = Canvas(channels=1, size=32, view=16, enabled=False)
    off.write(0, 0, torch.ones(1, 16, 16))
    assert not off.crop(0, 0)[1].any() and off.seen == 0.0


def test_seen_mask_is_the_union_of_earlier_views_on_the_torus() -> None:
    at = np.array([0, 0])
    earlier = np.array([[1, 0], [127, 127], [60, 60]])  # right one, up-left one (wrapped), far away
    mask = seen_mask(earlier, at)
    brute = np.zeros((16, 16), np.float32)
    for x, y in earlier:
        for r in range(16):
            for c in range(16):
                if (c - x) % 128 < 16 and (r - y) % 128 < 16:
                    brute[r, c] = 1.0
    assert (mask == brute).all() and mask.sum() == 16 * 16 - 1  # all but the bottom-left cell (row 15, column 0)
    assert seen_mask(np.zeros((0, 2), int), at).sum() == 0


def test_training_windows_carry_the_memory_of_the_walk_before_them() -> None:
    cfg = TrainConfig(batch_size=16, max_history=10, start_p=0.5, memory_off_p=0.0, memory_noise=0.0)
    latents = torch.randn(2, 4, 128, 128)
    batch = make_batch(cfg, np.random.default_rng(0), latents, ["desert", "coast"])
    assert batch.x0.shape == (16, 3, 4, 16, 16) and len(batch.captions) == 16
    starts = batch.actions[:, 0] == ACTION_IDS["start"]
    assert starts.any() and (batch.known[starts, 0] == 0).all()  # an opening frame remembers nothing
    later = batch.known[:, 1:]
    assert (later.flatten(1).sum(1) > 0).all()  # a later frame always knows some of its view (the frame before)
    known = batch.known.bool().expand_as(batch.x0)
    assert torch.equal(batch.memory[known], batch.x0[known])  # memory holds the true latents where it knows
    held = training_walk(np.random.default_rng(1), 400, mean_hold=4.0)
    assert 2.5 < len(held) / (1 + np.count_nonzero(np.diff(held))) < 6  # actions held ~4 steps (some runs repeat)


@pytest.fixture(scope="module")
def toy_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_toy_weights(tmp_path_factory.mktemp("world") / "weights")


def test_a_world_walks_with_one_frame_per_action_and_the_player_at_the_centre(toy_weights: Path) -> None:
    backend = WorldTinyBackend(toy_weights)
    world = backend.start("a desert with palm trees", seed=3)
    frames = walk(world, ["right", "up", "none", "left", "down"])
    assert frames.shape == (6, 64, 64, 3) and frames.dtype == np.uint8 and world.steps == 5
    assert world.position == (0, 0)  # a closed path: back where it began
    mask = player_mask(64)
    assert (frames[:, mask] == frames[0, mask]).all()  # the player never moves on screen
    again = walk(
        WorldTinyBackend(toy_weights).start("a desert with palm trees", seed=3), ["right", "up", "none", "left", "down"]
    )
    assert np.array_equal(frames, again)  # same seed, same world
    other = WorldTinyBackend(toy_weights).start("a desert with palm trees", seed=4).frame
    assert not np.array_equal(frames[0], other)


def test_image_to_world_opens_on_the_image(toy_weights: Path) -> None:
    image = np.zeros((80, 120, 3), np.uint8)
    image[:, :60] = (200, 40, 40)
    world = WorldTinyBackend(toy_weights).start("", seed=0, start_image=image)  # no caption needed with an image
    assert world.frame.shape == (64, 64, 3) and world.remembered > 0
    with pytest.raises(TaskError, match="start_image"):
        WorldTinyBackend(toy_weights).start("x", 0, np.zeros((8, 8, 3), np.uint8))


@pytest.mark.parametrize(
    ("prompt", "seed", "field"), [("", 0, "prompt"), ("   ", 0, "prompt"), ("a", -1, "seed"), ("x" * 501, 0, "prompt")]
)
def test_bad_input_names_the_field(toy_weights: Path, prompt: str, seed: int, field: str) -> None:
    with pytest.raises(TaskError) as err:
        WorldTinyBackend(toy_weights).start(prompt, seed)
    assert err.value.field == field


def test_an_unknown_action_is_refused_and_the_world_goes_on(toy_weights: Path) -> None:
    world = WorldTinyBackend(toy_weights).start("a coast", 0)
    with pytest.raises(ValueError, match="jump"):
        world.step("jump")
    assert world.step("right").shape == (64, 64, 3) and world.steps == 1


def test_memory_off_forgets_and_memory_on_remembers(toy_weights: Path) -> None:
    on, off = WorldTinyBackend(toy_weights), WorldTinyBackend(toy_weights, memory=False)
    a, b = on.start("a coast", 1), off.start("a coast", 1)
    for action in ["right"] * 3:
        a.step(action), b.step(action)
    assert a.remembered > 0 and b.remembered == 0


def test_a_step_keeps_what_the_canvas_knew_exactly_and_draws_only_the_strip_it_reveals(toy_weights: Path) -> None:
    pipe = NoorWorldPipeline.from_pretrained(toy_weights)
    rollout = pipe.open("a sandy beach", 2)
    before = rollout.latents.clone()
    after = pipe.step(rollout, "right")  # the view moves one latent pixel right: columns 1..15 were seen
    assert torch.equal(after[..., :15], before[..., 1:])
    assert not torch.equal(after[..., 15], before[..., 15])  # the revealed column is the model's
    off = pipe.open("a sandy beach", 2, memory=False)  # without the memory every cell is the model's own
    assert torch.equal(off.latents, before)
    assert not torch.equal(pipe.step(off, "right")[..., :15], before[..., 1:])


def test_a_view_the_canvas_knows_whole_is_the_frame_without_a_denoising_pass(
    toy_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Standing still or stepping back: the frame is the canvas's crop, exactly what the full path keeps, and only
    the cache pass runs; the seed's stream moves on as it would, so the next new strip is drawn the same."""
    pipe = NoorWorldPipeline.from_pretrained(toy_weights)
    rollout = pipe.open("a snowy ridge", 3)
    walk = ["right", "none", "left", "right", "down"]  # the middle three go where the canvas has been: known whole
    passes = [5, 1, 1, 1, 5]  # 4 denoising passes and the cache pass, or the cache pass alone
    calls: list[float] = []
    denoise = pipe.transformer.denoise
    monkeypatch.setattr(pipe.transformer, "denoise", lambda *a, **k: calls.append(a[3]) or denoise(*a, **k))
    frames = []
    for action, want in zip(walk, passes, strict=True):
        calls.clear()
        before = rollout.latents.clone()
        frames.append(pipe.step(rollout, action))
        assert len(calls) == want and calls[-1] == 0.0, (action, calls)
        if action == "none":
            assert torch.equal(frames[-1], before)
    monkeypatch.setattr(torch.Tensor, "all", lambda self, *a, **k: torch.tensor(False))  # the full path everywhere
    full = pipe.open("a snowy ridge", 3)
    assert all(torch.equal(pipe.step(full, action), frame) for action, frame in zip(walk, frames, strict=True))


def test_the_pipeline_saves_and_loads_in_hugging_face_layout(toy_weights: Path, tmp_path: Path) -> None:
    index = json.loads((toy_weights / "model_index.json").read_text())
    assert index["_class_name"] == "NoorWorldPipeline"
    assert {k for k in index if not k.startswith("_")} == {"vae", "transformer", "text_encoder", "scheduler"}
    pipe = NoorWorldPipeline.from_pretrained(toy_weights)
    pipe.save_pretrained(tmp_path / "again")
    reloaded = NoorWorldPipeline.from_pretrained(tmp_path / "again")
    r1, r2 = pipe.open("a green oasis", 5), reloaded.open("a green oasis", 5)
    assert torch.equal(pipe.step(r1, "down"), reloaded.step(r2, "down"))


def test_training_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    logs = [train(toy_config(seed=7), tmp_path / name) for name in ("a", "b")]
    assert logs[0]["denoiser_final_loss_avg100"] == logs[1]["denoiser_final_loss_avg100"]
    weights = [(tmp_path / n / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes() for n in ("a", "b")]
    assert weights[0] == weights[1]
    assert json.loads((tmp_path / "a" / "train_config.json").read_text())["seed"] == 7

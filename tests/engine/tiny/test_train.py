from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from noor.engine.tiny.canvases import canvas_frames
from noor.engine.tiny.pipeline import NoorTinyPipeline
from noor.engine.tiny.tokenizer import words
from noor.engine.tiny.train import (
    Batch,
    Pool,
    TrainConfig,
    build_models,
    build_vae,
    held_out_prompts,
    make_batch,
    make_image_batch,
    make_pool,
    shift_sigma,
    train,
    train_vae,
    training_loss,
)
from tests.conftest import TOY


def _toy(**overrides: object) -> TrainConfig:
    """TOY, with image batches of 8 first frames (TrainConfig's 128 would be two thirds of a toy step's work); the
    tests of image batches set their own size."""
    return TrainConfig(**{**TOY, "image_batch": 8, **overrides})  # type: ignore[arg-type]


# a short first round that the reproducibility and second-phase tests share (run once for the module)
ROUND_ONE = {"steps": 2, "save_every": 0, "warmup_steps": 1, "tune_warmup_steps": 1, "tune_lr": 1e-3}


@pytest.fixture(scope="module")
def round_one(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """`train(_toy(**ROUND_ONE))` once: its output folder (read, never written, by the tests) and its losses."""
    out = tmp_path_factory.mktemp("round-one")
    return out, train(_toy(**ROUND_ONE), out)


@pytest.fixture(scope="module")
def pool_of_64() -> tuple[TrainConfig, Pool]:
    """A 64-clip pool from an untrained toy VAE, which the batch tests read (never change)."""
    cfg = _toy(pool_clips=64)
    vae = build_vae(cfg).requires_grad_(False)
    return cfg, make_pool(vae, cfg, np.random.default_rng(0), None)


@pytest.mark.slow
@pytest.mark.parametrize(("attention", "conv_channels"), [("factorised", 0), ("joint", 8)])
def test_a_few_steps_lower_the_denoiser_loss(attention: str, conv_channels: int) -> None:
    torch.manual_seed(0)
    cfg = _toy(attention=attention, conv_channels=conv_channels)
    vae = build_vae(cfg).requires_grad_(False)
    pool = make_pool(vae, cfg, np.random.default_rng(0), None)
    transformer, text_encoder = build_models(cfg)
    batch = make_batch(cfg, np.random.default_rng(0), pool, False, set())
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


@pytest.mark.slow
def test_a_few_steps_lower_the_vae_loss() -> None:
    torch.manual_seed(0)
    cfg = _toy(vae_channels=(16, 32, 32), vae_steps=60, vae_batch_size=8)
    vae = build_vae(cfg)
    losses = train_vae(vae, cfg, np.random.default_rng(0), None)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), losses
    assert vae.config.scaling_factor != 0.18215  # set from data, not diffusers' SD default


@pytest.mark.slow
def test_batches_mark_keyframes_and_never_show_eval_prompts(pool_of_64: tuple[TrainConfig, Pool]) -> None:
    pool_cfg, pool = pool_of_64
    cfg = replace(pool_cfg, batch_size=200)
    assert pool.latents.shape == (64, 4, 16, 16, 16)
    exclude = held_out_prompts()
    batch = make_batch(cfg, np.random.default_rng(0), pool, False, exclude)
    assert batch.latents.shape == (200, 4, 16, 16, 16)
    assert batch.known[:, 0].any() and batch.known[:, -1].any() and not batch.known[:, 1:-1].any()
    assert not {" ".join(words(p)) for p in batch.prompts} & exclude
    assert sum(p == "" for p in batch.prompts) > 5  # caption dropout for classifier-free guidance
    langs = {("ar" if any("\u0600" <= ch <= "\u06ff" for ch in p) else "en") for p in batch.prompts if p}
    assert langs == {"en", "ar"}
    images = make_batch(cfg, np.random.default_rng(1), pool, True, exclude)
    assert images.latents.shape == (200, 4, 1, 16, 16) and not images.known.any()


@pytest.mark.slow
def test_image_batches_are_first_frames_with_fresh_captions(pool_of_64: tuple[TrainConfig, Pool]) -> None:
    pool_cfg, pool = pool_of_64
    cfg = replace(pool_cfg, image_batch=300)
    exclude = held_out_prompts()
    images = make_image_batch(cfg, np.random.default_rng(2), pool, exclude)
    assert images.latents.shape == (300, 4, 1, 16, 16) and images.known.shape == (300, 1) and not images.known.any()
    # every image is the first frame of some pool clip (where the clip's motion starts), never a later one
    firsts, lasts = pool.latents[:, :, 0].flatten(1), pool.latents[:, :, -1].flatten(1)
    for latent in images.latents[:, :, 0].flatten(1)[:20]:
        assert (firsts == latent).all(1).any() and not ((lasts == latent).all(1) & ~(firsts == latent).all(1)).any()
    assert not {" ".join(words(p)) for p in images.prompts} & exclude
    assert 5 < sum(p == "" for p in images.prompts) < 60  # caption dropout at 10%
    assert len(set(images.prompts)) > 50  # captions drawn afresh, not one per clip


@pytest.mark.slow
def test_image_batches_train_beside_the_clips(tmp_path: Path) -> None:
    base = _toy(steps=2, save_every=0, warmup_steps=1, image_batch=0)
    with_images = _toy(steps=2, save_every=0, warmup_steps=1, image_batch=16, image_first=True, clip_guidance_scale=1.5)
    plain, mixed = train(base, tmp_path / "a"), train(with_images, tmp_path / "b")
    assert plain != mixed and all(np.isfinite(mixed))  # the image loss is added to each step's
    two_stage, one_stage = (NoorTinyPipeline.from_pretrained(str(tmp_path / d)) for d in "ba")
    assert two_stage.config.image_first is True and two_stage.config.clip_guidance_scale == 1.5
    assert one_stage.config.image_first is False and one_stage.config.clip_guidance_scale is None


@pytest.mark.slow
def test_train_writes_a_loadable_pipeline_with_its_config(tmp_path: Path) -> None:
    cfg = _toy(steps=3, save_every=0, warmup_steps=1, shared_noise=0.3)
    seen: set[str] = set()
    losses = train(cfg, tmp_path, on_step=lambda stage, step, total, loss: seen.add(stage))
    assert len(losses) == 3 and all(np.isfinite(losses)) and seen == {"vae", "encode", "denoiser", "decoder"}
    assert json.loads((tmp_path / "train_config.json").read_text())["steps"] == 3
    pipe = NoorTinyPipeline.from_pretrained(str(tmp_path))
    assert pipe.transformer.config.hidden_size == 32
    assert pipe.scheduler.config.shift == cfg.shift  # the sampler uses the noise shift it was trained with
    assert pipe.config.shared_noise == 0.3  # and the noise it was trained on


def test_the_noise_shift_moves_training_toward_high_noise() -> None:
    sigma = torch.linspace(0, 1, 11)
    assert torch.equal(shift_sigma(sigma, 1.0), sigma)
    shifted = shift_sigma(sigma, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and torch.all(shifted[1:-1] > sigma[1:-1])
    assert torch.all(shifted[1:] > shifted[:-1])  # monotone: the same noise levels, spent differently
    assert shifted[5].item() == 0.75  # 3 x 0.5 / (1 + 2 x 0.5)


@pytest.mark.slow
def test_training_is_reproducible_from_the_seed(tmp_path: Path, round_one: tuple[Path, list[float]]) -> None:
    first_dir, first_losses = round_one  # the same config, trained once already in this process
    assert train(_toy(**ROUND_ONE), tmp_path / "b") == first_losses
    a = NoorTinyPipeline.from_pretrained(str(first_dir))
    b = NoorTinyPipeline.from_pretrained(str(tmp_path / "b"))
    for x, y in zip(a.vae.parameters(), b.vae.parameters(), strict=True):
        assert torch.equal(x, y)


@pytest.mark.slow
def test_a_run_shorter_than_its_schedule_is_the_start_of_the_full_run(tmp_path: Path) -> None:
    full = train(_toy(steps=6, schedule_steps=0, save_every=0, warmup_steps=1), tmp_path / "full")
    stopped = train(_toy(steps=3, schedule_steps=6, save_every=0, warmup_steps=1), tmp_path / "stopped")
    assert stopped == full[:3]  # the same learning rates (the schedule spans 6 steps), cut short
    short = train(_toy(steps=3, schedule_steps=0, save_every=0, warmup_steps=1), tmp_path / "short")
    assert short[:2] == stopped[:2] and short[2] != stopped[2]  # its own schedule decays faster from step 1
    assert json.loads((tmp_path / "stopped" / "train_config.json").read_text())["schedule_steps"] == 6


def test_a_config_out_of_range_is_refused_naming_the_field() -> None:
    from noor.engine.tiny.train import ConfigError

    bad: list[tuple[str, object]] = [("shift", 0.0), ("attention", "sparse"), ("conv_channels", -8)]
    bad += [("shared_noise", 1.0), ("image_batch", -1), ("clip_guidance_scale", -1.0), ("schedule_steps", -1)]
    bad += [("clip_guidance_min_sigma", 1.5), ("tune_steps", -1), ("tune_lr", 0.0), ("uniform_sigma_p", 1.5)]
    bad += [("tune_uniform_sigma_p", -0.1), ("tune_motion_weight", -1.0), ("init_denoiser", "weights")]
    bad += [("init_vae", "/nonexistent"), ("init_vae", str(Path(__file__).parent))]
    bad += [("canvas_decoder_steps", -1), ("canvas_decoder_lr", 0.0)]
    for field, value in bad:
        with pytest.raises(ConfigError, match=field) as caught:
            _toy(**{field: value})
        assert caught.value.field == field and caught.value.value == value


@pytest.mark.slow
def test_the_second_phase_from_saved_weights_is_the_second_phase_of_a_full_run(
    tmp_path: Path, round_one: tuple[Path, list[float]]
) -> None:
    """Stage 5 draws from its own streams, so starting it from stage 4's saved weights gives what one run gives."""
    base = ROUND_ONE
    seen: list[str] = []
    full = train(_toy(**base, tune_steps=2, tune_motion_weight=2.0), tmp_path / "full", lambda s, *_: seen.append(s))
    assert len(full) == 4 and seen.count("tune") == 2
    first_path, first = round_one  # train(_toy(**base)): the first round alone
    assert first == full[:2]
    first_dir = str(first_path)
    resumed = _toy(**base, tune_steps=2, tune_motion_weight=2.0, init_vae=first_dir, init_denoiser=first_dir)
    assert train(resumed, tmp_path / "resumed") == full[2:]
    a = NoorTinyPipeline.from_pretrained(str(tmp_path / "full"))
    b = NoorTinyPipeline.from_pretrained(str(tmp_path / "resumed"))
    c = NoorTinyPipeline.from_pretrained(first_dir)
    full_weights, resumed_weights, first_weights = (list(p.transformer.parameters()) for p in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(full_weights, resumed_weights, strict=True))
    assert not all(torch.equal(x, z) for x, z in zip(full_weights, first_weights, strict=True))  # stage 5 trained


@pytest.mark.slow
def test_the_second_phase_can_add_keyframe_concat_and_train_it(
    tmp_path: Path, round_one: tuple[Path, list[float]]
) -> None:
    """`tune_keyframe_concat` adds the zero-initialised keyframe input in stage 5, trains it, and saves it so that
    it loads; a later round from those weights keeps it rather than adding it again."""
    base = ROUND_ONE
    first = str(round_one[0])  # train(_toy(**base))
    cfg = _toy(**base, tune_steps=2, tune_keyframe_concat=True, init_vae=first, init_denoiser=first)
    train(cfg, tmp_path / "concat")
    transformer = NoorTinyPipeline.from_pretrained(str(tmp_path / "concat")).transformer
    assert transformer.config.keyframe_concat and transformer.keyframe_embed.weight.abs().sum() > 0
    again = str(tmp_path / "concat")
    train(_toy(**base, tune_steps=1, tune_keyframe_concat=True, init_vae=again, init_denoiser=again), tmp_path / "2")
    assert NoorTinyPipeline.from_pretrained(str(tmp_path / "2")).transformer.config.keyframe_concat
    # the third run's record holds the whole recipe: the runs its weights came from, oldest first
    record = json.loads((tmp_path / "2" / "train_config.json").read_text())
    assert [r["init_denoiser"] for r in record["earlier_rounds"]] == [None, first]
    assert [r["tune_steps"] for r in record["earlier_rounds"]] == [0, 2] and record["tune_steps"] == 1
    assert all("earlier_rounds" not in r for r in record["earlier_rounds"])
    assert "earlier_rounds" not in json.loads((round_one[0] / "train_config.json").read_text())


def test_the_motion_weight_weighs_only_what_changes_over_the_clip() -> None:
    torch.manual_seed(0)
    cfg = _toy()
    transformer, text_encoder = build_models(cfg)
    torch.nn.init.normal_(transformer.proj_out.weight, std=0.1)  # a non-zero prediction
    still = torch.randn(2, 4, 1, 4, 4).expand(2, 4, 3, 4, 4).contiguous()
    moving = torch.randn(2, 4, 3, 4, 4)
    known = torch.zeros(2, 3, dtype=torch.bool)

    def loss(latents: torch.Tensor, weight: float) -> float:
        batch = Batch(latents, known, ["a red circle", "a blue square"])
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            return training_loss(transformer, text_encoder, batch, generator, motion_weight=weight).item()

    assert loss(still, 5.0) == pytest.approx(loss(still, 0.0))  # nothing changes: the plain loss
    assert loss(moving, 5.0) > 1.5 * loss(moving, 0.0)


def test_uniform_noise_levels_reach_the_low_end() -> None:
    """The share of noise levels drawn uniformly decides how often training sees nearly clean clips."""
    torch.manual_seed(0)
    cfg = _toy()
    transformer, text_encoder = build_models(cfg)
    seen: list[torch.Tensor] = []
    transformer.register_forward_pre_hook(lambda _m, args: seen.append(args[1][:, 0]))
    batch = Batch(torch.zeros(512, 4, 1, 4, 4), torch.zeros(512, 1, dtype=torch.bool), [""] * 512)
    low = {}
    for p in (0.0, 0.5):
        with torch.no_grad():
            training_loss(transformer, text_encoder, batch, torch.Generator().manual_seed(0), 3.0, uniform_p=p)
        low[p] = float((seen[-1] < 300).float().mean())  # sigma < 0.3
    assert low[0.0] < 0.02 and 0.1 < low[0.5] < 0.2  # about half of the uniform half: 0.15


def test_canvas_frames_are_whole_patches_of_one_size_a_batch() -> None:
    frames = canvas_frames(np.random.default_rng(3), 4)
    n, H, W, _ = frames.shape
    assert n == 4 and frames.dtype == np.uint8 and H % 16 == 0 and W % 16 == 0 and 64 <= min(H, W) <= max(H, W) <= 256
    np.testing.assert_array_equal(frames, canvas_frames(np.random.default_rng(3), 4))  # the seed decides
    sizes = {canvas_frames(np.random.default_rng(seed), 1).shape[1:3] for seed in range(8)}
    assert len(sizes) > 4  # canvases of many sizes, not one
    spread = frames.reshape(n, -1, 3).std(axis=1).max(axis=1)
    assert (spread > 10).all()  # each holds a scene, not a flat colour


@pytest.mark.slow
def test_a_round_of_the_vae_alone_teaches_the_decoder_canvases(
    tmp_path: Path, round_one: tuple[Path, list[float]]
) -> None:
    """`init_denoiser` with `tune_steps` 0 and `canvas_decoder_steps`: the saved denoiser and VAE as they were, beside
    them a copy of the VAE whose decoder learnt canvases of other sizes (used for those alone), no pool encoded, the
    round recorded after the earlier ones; a later round from those weights keeps it."""
    first = str(round_one[0])
    seen: set[str] = set()
    cfg = _toy(**ROUND_ONE, init_vae=first, init_denoiser=first, tune_steps=0, canvas_decoder_steps=4)
    assert train(cfg, tmp_path, lambda stage, *_: seen.add(stage)) == [] and seen == {"canvases"}
    before, after = (NoorTinyPipeline.from_pretrained(p) for p in (first, str(tmp_path)))
    for part in ("transformer", "text_encoder"):
        pairs = zip(getattr(before, part).parameters(), getattr(after, part).parameters(), strict=True)
        assert all(torch.equal(x, y) for x, y in pairs)
    assert before.canvas_vae is None and after.canvas_vae is not None
    for a, b in ((before.vae, after.vae), (before.vae.encoder, after.canvas_vae.encoder)):
        assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    pairs = zip(before.vae.decoder.parameters(), after.canvas_vae.decoder.parameters(), strict=True)
    assert not all(torch.equal(x, y) for x, y in pairs)  # a decoder of its own
    native, wide = torch.randn(1, 4, 1, 16, 16), torch.randn(1, 4, 1, 16, 28)
    assert torch.equal(before.decode_latents(native), after.decode_latents(native))  # 64x64: the VAE's decoder
    assert not torch.equal(before.decode_latents(wide), after.decode_latents(wide))  # other canvases: canvas_vae's
    record = json.loads((tmp_path / "train_config.json").read_text())
    assert record["canvas_decoder_steps"] == 4 and record["tune_steps"] == 0 and len(record["earlier_rounds"]) == 1
    assert json.loads((tmp_path / "train_log.json").read_text())["canvas_decoder_final_loss_avg50"] > 0
    again = str(tmp_path)
    train(_toy(**ROUND_ONE, init_vae=again, init_denoiser=again, tune_steps=1), tmp_path / "next")
    kept = NoorTinyPipeline.from_pretrained(str(tmp_path / "next")).canvas_vae
    assert kept is not None and all(
        torch.equal(x, y) for x, y in zip(kept.parameters(), after.canvas_vae.parameters(), strict=True)
    )

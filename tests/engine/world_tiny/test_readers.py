from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from noor.engine.world_tiny.actions import STEP_PX, random_actions
from noor.engine.world_tiny.readers import (
    MIN_PEAK,
    SIGNATURE_SEEDS,
    action_of_shift,
    check_windows,
    colour_histogram,
    expected_shift,
    ground_detail,
    read_actions,
    read_biome,
    read_shifts,
    scene_shift,
    scene_shifts,
    signatures,
    true_detail,
)
from noor.engine.world_tiny.terrain import BIOMES, make_map, rollout, view


def test_phase_correlation_recovers_every_action_of_true_rollouts() -> None:
    rng = np.random.default_rng(11)
    for biome in BIOMES:
        for seed in (21, 22):
            terrain = make_map(biome, seed)
            actions = random_actions(rng, 100)
            frames, _ = rollout(terrain, (int(rng.integers(512)), int(rng.integers(512))), actions)
            shifts = scene_shifts(frames)  # (T - 1, 2)
            expected = np.array([expected_shift(a) for a in actions])
            assert np.abs(shifts - expected).max() < 0.25, biome  # none = 0 px, a move = exactly the step
            assert [action_of_shift(dx, dy) for dx, dy in shifts] == actions, biome
            assert read_actions(frames) == actions, biome


def test_phase_correlation_reads_no_action_between_noise_frames() -> None:
    rng = np.random.default_rng(15)
    noise = rng.integers(0, 256, size=(40, 64, 64, 3), dtype=np.uint8)
    reading = read_shifts(noise)
    assert reading.peaks.max() < MIN_PEAK and read_actions(noise) == [None] * 39
    frames, _ = rollout(make_map("coast", 9), (0, 0), ["right", "none"])
    assert read_shifts(frames).peaks.min() > 3 * MIN_PEAK  # true steps stand far above


def test_the_shift_follows_the_camera_convention() -> None:
    terrain = make_map("desert", 3)
    frames, _ = rollout(terrain, (100, 100), ["right", "up"])
    dx, dy = scene_shift(frames[0], frames[1])
    assert round(dx) == -STEP_PX and round(dy) == 0  # the player went right: the scene moved left
    dx, dy = scene_shift(frames[1], frames[2])
    assert round(dx) == 0 and round(dy) == STEP_PX  # the player went up: the scene moved down
    # frames as floats in [0, 1] (a model's output) read the same
    as_floats = scene_shift(frames[0] / 255.0, frames[1] / 255.0)
    assert as_floats == pytest.approx(scene_shift(frames[0], frames[1]), abs=0.05)
    assert action_of_shift(0.6, -0.4) == "none" and action_of_shift(-3.0, 1.0) == "right"
    assert action_of_shift(0.5, 3.0) == "up" and action_of_shift(0.5, -3.0) == "down"
    assert action_of_shift(2, 0) == "left"


def test_a_shift_is_read_across_the_map_edge_and_for_larger_moves() -> None:
    terrain = make_map("oasis", 5)
    a, b = view(terrain, 510, 1), view(terrain, 510 + 9, 1 - 5)
    dx, dy = scene_shift(a, b)
    assert (round(dx), round(dy)) == (-9, 5)


def test_biome_reader_names_the_biome_of_true_views_on_unseen_seeds() -> None:
    rng = np.random.default_rng(12)
    right, total = 0, 0
    for biome in BIOMES:
        for seed in range(40, 42):
            assert seed not in SIGNATURE_SEEDS
            terrain = make_map(biome, seed)
            for x, y in rng.integers(0, 512, size=(60, 2)):
                right += read_biome(view(terrain, int(x), int(y))).biome == biome
                total += 1
    assert right / total >= 0.95, right / total


def test_biome_reader_refuses_noise_and_blanks() -> None:
    rng = np.random.default_rng(13)
    for _ in range(5):
        reading = read_biome(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
        assert reading.biome is None and set(reading.kl) == set(BIOMES)
    assert read_biome(np.full((64, 64, 3), 128, np.uint8)).biome is None
    assert read_biome(np.zeros((64, 64, 3), np.float32)).biome is None
    with pytest.raises(ValueError, match="frame must be"):
        read_biome(np.zeros((64, 64), np.uint8))


def test_signatures_come_from_generated_maps() -> None:
    sig = signatures()
    for i, biome in enumerate(BIOMES):
        whole = colour_histogram(make_map(biome, SIGNATURE_SEEDS[0]).rgb, skip_player=False)
        top = np.argsort(whole)[-3:]  # the map's commonest colours are among its signature's commonest
        assert set(top) <= set(np.argsort(sig.log_p[i])[-12:]), biome


def test_long_true_rollouts_stay_within_their_biome_colour_range_and_collapses_do_not() -> None:
    rng = np.random.default_rng(14)
    for biome in ("desert", "coast"):
        terrain = make_map(biome, 50)
        frames, _ = rollout(terrain, (0, 0), random_actions(rng, 599))
        checks = check_windows(frames, biome)
        assert [c.start for c in checks] == [0, 100, 200, 300, 400, 500] and all(c.ok for c in checks), checks
        other = "city_night"
        assert not any(c.ok for c in check_windows(frames, other))  # a desert is not a night city
        grey = np.full_like(frames, 128)
        assert not any(c.ok for c in check_windows(grey, biome))  # washed out to grey
        noise = rng.integers(0, 256, size=frames.shape, dtype=np.uint8)
        assert not any(c.ok for c in check_windows(noise, biome))  # dissolved into noise
    with pytest.raises(ValueError, match="window"):
        check_windows(frames[:50], "coast")
    with pytest.raises(ValueError, match="biome must be"):
        check_windows(frames, "moon")


def test_bad_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="frames must be"):
        scene_shifts(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="frames must be uint8 or float"):
        scene_shifts(np.zeros((2, 64, 64, 3), np.int64))
    with pytest.raises(ValueError, match="action must be one of"):
        expected_shift("jump")


def test_detail_counts_edges_not_grain_nor_a_blur_of_the_right_colours() -> None:
    city = make_map("city_night", 4321)
    views = [view(city, x, 200) for x in range(0, 480, 40)]
    sharp = np.mean([ground_detail(v) for v in views])
    soft = [np.asarray(Image.fromarray(v).filter(ImageFilter.GaussianBlur(2))) for v in views]
    blurred = np.mean([ground_detail(v) for v in soft])
    assert sharp > 0.04 and blurred < sharp / 4  # lit windows are edges; blurred away, they are not
    grain = np.clip(np.random.default_rng(0).normal(120, 3, (64, 64, 3)), 0, 255).astype(np.uint8)
    assert ground_detail(grain) == 0.0
    assert true_detail("city_night") > true_detail("desert") > 0  # lights and roads against dunes and a few palms

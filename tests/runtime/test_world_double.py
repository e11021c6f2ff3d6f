"""The test double of a world model draws the real terrain and scrolls it the way the actions say."""

from __future__ import annotations

import numpy as np
import pytest

from noor.engine import registry
from noor.engine.task import TaskError
from noor.engine.world_tiny import terrain
from tests import world_double


def test_double_draws_the_terrain_and_scrolls_it() -> None:
    world = world_double.TerrainDouble().start("a city at night", seed=3)
    tmap = terrain.make_map("city_night", 3)
    assert np.array_equal(world.frame, terrain.view(tmap, tmap.width // 2, tmap.height // 2))
    before = world.frame.copy()
    after = world.step("right")
    # the camera follows the player: moving right scrolls the scene left by the step
    assert np.array_equal(after[:20, :-4], before[:20, 4:])
    assert world.steps == 1 and world.actions == ["right"]
    with pytest.raises(ValueError, match="jump"):
        world.step("jump")


def test_double_registers_and_refuses_bad_input() -> None:
    spec = world_double.register(max_fps=5)
    try:
        assert registry.get_world("terrain-double").max_fps == 5
        double = spec.load()
        with pytest.raises(TaskError, match="prompt"):
            double.start("  ")
        image = np.zeros((20, 30, 3), np.uint8)
        image[:, :15] = 200
        world = double.start("", start_image=image)
        assert world.frame.shape == (64, 64, 3)
    finally:
        world_double.unregister()
    assert "terrain-double" not in [w.id for w in registry.worlds()]


def test_double_fails_when_asked() -> None:
    world = world_double.TerrainDouble(fail_at_step=2).start("x")
    world.step("up")
    with pytest.raises(RuntimeError, match="fail at step 2"):
        world.step("up")

from __future__ import annotations

import numpy as np
import pytest

from noor.engine.world_tiny.actions import (
    ACTIONS,
    MOVES,
    STEP_PX,
    check_actions,
    closed_path,
    parse_actions,
    random_actions,
)


def test_moves_are_one_step_each_way_and_none_stays() -> None:
    assert MOVES == {
        "none": (0, 0),
        "up": (0, -STEP_PX),
        "down": (0, STEP_PX),
        "left": (-STEP_PX, 0),
        "right": (STEP_PX, 0),
    }
    assert STEP_PX == 4


def test_actions_are_parsed_from_the_cli_form() -> None:
    assert parse_actions("right:2,up:1,left, down:2") == ["right", "right", "up", "left", "down", "down"]
    assert parse_actions("NONE:3") == ["none"] * 3
    assert parse_actions("right:8,up:8,left:8,down:8") == closed_path(8)
    for bad, message in [
        ("jump:2", r"action must be one of none, up, down, left, right, got 'jump'"),
        ("right:x", r"count must be a whole number in 1\.\.10000, got 'x' in 'right:x'"),
        ("right:0", r"got '0'"),
        ("right:-1", r"got '-1'"),
        ("right,,up", r"actions must be ACTION\[:COUNT\] separated by commas"),
        ("", r"actions must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_actions(bad)


def test_a_closed_path_sums_to_no_move_and_a_random_walk_uses_every_action() -> None:
    for n in (1, 8, 16):
        path = closed_path(n)
        assert len(path) == 4 * n and np.sum([MOVES[a] for a in path], axis=0).tolist() == [0, 0]
    with pytest.raises(ValueError, match="n must be at least 1, got 0"):
        closed_path(0)
    walk = random_actions(np.random.default_rng(0), 500)
    assert set(walk) == set(ACTIONS) and walk == random_actions(np.random.default_rng(0), 500)
    assert check_actions(("up", "none")) == ["up", "none"]

"""Keyframes at indexes on a task: what it may pin, the Agents API's 24 fps grid, and what a model refuses."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from noor.engine import registry
from noor.engine.task import MAX_KEYFRAMES, Media, Task, TaskError, frames_from_grid, nearest_frames


def _frame(value: int = 0, side: int = 64) -> np.ndarray:
    return np.full((side, side, 3), value, np.uint8)


def _refusal(**options: Any) -> TaskError:
    with pytest.raises(TaskError) as err:
        Task(prompt="a red circle", **options)
    return err.value


def test_pinned_lists_start_keyframes_and_end_by_index() -> None:
    start, middle, end = _frame(1), _frame(2), _frame(3)
    task = Task(prompt="a", num_frames=40, start_frame=start, end_frame=end, keyframes=((20, middle), (5, start)))
    assert list(task.pinned) == [0, 5, 20, 39]
    assert task.pinned[20] is middle and task.pinned[39] is end
    assert Task(prompt="a").pinned == {}


@pytest.mark.parametrize(
    ("options", "value", "reason"),
    [
        ({"keyframes": tuple((i, _frame()) for i in range(MAX_KEYFRAMES + 1)), "num_frames": 100}, "<65 keyframes>",
         "at most 64"),
        ({"keyframes": ((3, _frame()), (3, _frame()))}, [3], "unique"),
        ({"keyframes": ((16, _frame()),)}, 16, "within 0..15"),
        ({"keyframes": ((-1, _frame()),)}, -1, "within 0..15"),
        ({"keyframes": ((True, _frame()),)}, True, "integer"),
        ({"keyframes": ((4, _frame().astype(np.float32)),)}, 4, "uint8"),
        ({"keyframes": ((4, np.zeros((64, 64, 4), np.uint8)),)}, 4, "not (H, W, 3)"),
        ({"keyframes": ((4, np.zeros((0, 64, 3), np.uint8)),)}, 4, "not (H, W, 3)"),
        ({"keyframes": ((0, _frame()),), "start_frame": _frame()}, 0, "pinned by start_frame"),
        ({"keyframes": ((15, _frame()),), "end_frame": _frame()}, 15, "pinned by end_frame"),
        ({"keyframes": ((15, _frame()),), "loop": True}, 15, "a loop ends on its first frame"),
        ({"keyframes": ((0, _frame()),), "num_frames": 1}, "<1 keyframes>", "an image has no frames to pin"),
        ({"keyframes": [3, 4]}, "list", "(index, frame) pairs"),
    ],
)  # fmt: skip
def test_a_task_refuses_keyframes_it_cannot_hold_naming_the_field(
    options: dict[str, Any], value: object, reason: str
) -> None:
    err = _refusal(**options)
    assert err.field == "keyframes" and err.value == value and reason in str(err)


@pytest.mark.parametrize("operation", [{"edit_mode": "flex_1"}, {"reframe": True}, {}])
def test_an_edit_a_reframe_or_an_upscale_takes_its_frames_from_its_source(operation: dict[str, Any]) -> None:
    source = Media(frames=np.zeros((16, 64, 64, 3), np.uint8), fps=8)
    err = _refusal(source=source, keyframes=((8, _frame()),), **operation)
    assert err.field == "keyframes" and "from the source" in str(err)


def test_a_loop_may_pin_its_first_frame_and_frames_inside_it() -> None:
    task = Task(prompt="a", loop=True, keyframes=((0, _frame()), (8, _frame())))
    assert list(task.pinned) == [0, 8]


def test_the_grid_maps_ends_onto_ends_and_the_rest_in_proportion() -> None:
    # a 5 s clip: the Agents API's grid is 0..120; the task has 40 frames (5 s at noor-tiny's 8 fps)
    assert frames_from_grid([0, 120], 5.0, 40) == [0, 39]
    assert frames_from_grid([60, 0, 30], 5.0, 40) == [20, 0, 10]  # 19.5 and 9.75: halves up, the rest rounded
    assert frames_from_grid([0, 240], 10.0, 80) == [0, 79]
    assert frames_from_grid(list(range(0, 121, 24)), 5.0, 121) == list(range(0, 121, 24))  # a 24 fps clip: as is


def test_the_grid_refuses_two_keyframes_on_one_frame_and_indexes_off_it() -> None:
    with pytest.raises(TaskError) as err:
        frames_from_grid([0, 9, 10], 5.0, 40)
    assert err.value.field == "keyframe_indexes" and err.value.value == [9, 10]
    assert "both land on frame 3 of the 40-frame clip" in str(err.value) and "at least 4 grid frames apart" in str(
        err.value
    )
    for bad in (121, -1):
        with pytest.raises(TaskError, match=r"within 0\.\.120 for 5 s") as err:
            frames_from_grid([bad], 5.0, 40)
        assert err.value.value == bad
    with pytest.raises(TaskError, match="at least two frames"):
        frames_from_grid([0], 5.0, 1)


@pytest.mark.parametrize(("seconds", "num_frames"), [(5.0, 40), (10.0, 80), (5.0, 16), (5.0, 121)])
def test_keyframes_as_far_apart_as_the_refusal_says_always_fit(seconds: float, num_frames: int) -> None:
    last = round(seconds * 24)
    spacing = -(-last // (num_frames - 1))
    for start in range(spacing):
        indexes = list(range(start, last + 1, spacing))
        frames = frames_from_grid(indexes, seconds, num_frames)
        assert len(set(frames)) == len(frames) and frames == sorted(frames)


def test_nearest_frames_keeps_the_ends() -> None:
    assert list(nearest_frames(16, 16)) == list(range(16))
    shown = nearest_frames(16, 40)
    assert shown[0] == 0 and shown[-1] == 15 and list(shown) == sorted(shown) and set(shown) == set(range(16))


def test_tiny_takes_keyframes_and_notes_where_it_pins_them() -> None:
    spec = registry.get("tiny")
    assert spec.check(Task(prompt="a red circle", keyframes=((8, _frame()),))) == []
    notes = spec.check(Task(prompt="a red circle", num_frames=40, keyframes=((20, _frame()), (39, _frame()))))
    assert notes == [
        "tiny draws 16 frames; retimed to 40",
        "tiny pins the clip's frames at its own 16 frames: frame 20 at 8, frame 39 at 15",
    ]


@pytest.mark.parametrize(
    ("options", "value", "reason"),
    [
        ({"keyframes": ((10, _frame()), (11, _frame()))}, [10, 11], "both fall on frame 4 of the 16"),
        ({"keyframes": ((1, _frame()),), "start_frame": _frame()}, [0, 1], "both fall on frame 0 of the 16"),
        ({"keyframes": ((38, _frame()),), "loop": True}, 38, "which a loop ends on its first frame"),
    ],
)
def test_tiny_refuses_pins_that_land_on_one_of_its_frames(options: dict[str, Any], value: object, reason: str) -> None:
    task = Task(prompt="a red circle", num_frames=40, **options)  # the task itself may hold them
    with pytest.raises(TaskError) as err:
        registry.get("tiny").check(task)
    assert err.value.field == "keyframes" and err.value.value == value and reason in str(err.value)
    if isinstance(value, list):
        assert "pin frames at least 3 apart" in str(err.value)


def test_a_model_without_the_capability_refuses_keyframes() -> None:
    tiny = registry.get("tiny")
    plain = registry.ModelSpec(id="plain", description="no keyframes", load=tiny.load)
    assert registry.KEYFRAMES not in plain.capabilities
    task = Task(prompt="a red circle", keyframes=((8, _frame()),))
    with pytest.raises(TaskError) as err:
        plain.check(task)
    assert err.value.field == "keyframes" and "model 'plain' cannot do keyframes" in str(err.value)
    assert plain.check(Task(prompt="a red circle", start_frame=_frame())) == []  # its start frames as before

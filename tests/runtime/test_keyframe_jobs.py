"""The worker's keyframes at indexes (#29): a stored task's `keyframes` read back into `Task.keyframes` (an image, or
a frame of an earlier video, as start and end frames are), each named in the output's manifest as an input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noor.engine import media
from noor.engine.task import TaskError
from noor.jobs.assets import AssetStore, asset_key
from noor.jobs.store import Store
from noor.runtime.worker import ingredients, task_from_json


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def stored(parts: tuple[Store, AssetStore], tmp_path: Path) -> dict[str, str]:
    _, assets = parts
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    frames[-1] = (0, 0, 255)  # the earlier video ends blue
    clip = media.write_video(tmp_path / "earlier.mp4", frames, 8).read_bytes()
    return {
        "green": assets.put(asset_key("acme", "uploads", "green.png"), _png((0, 255, 0))),
        "video": assets.put(asset_key("acme", "g1", "video.mp4"), clip),
        "start": assets.put(asset_key("acme", "uploads", "start.png"), _png((255, 0, 0))),
    }


def _task(stored: dict[str, str], keyframes: list[dict[str, object]]) -> dict[str, object]:
    return {"prompt": "a red circle", "width": 64, "height": 64, "num_frames": 40, "fps": 8, "seed": 1,
            "start": {"asset": stored["start"]}, "keyframes": keyframes}  # fmt: skip


def test_keyframes_at_indexes_are_read_back_and_named_in_the_manifest(
    parts: tuple[Store, AssetStore], stored: dict[str, str]
) -> None:
    _, assets = parts
    data = _task(stored, [{"index": 20, "asset": stored["green"]},
                          {"index": 30, "asset": stored["video"], "frame": "last"}])  # fmt: skip
    task = task_from_json(data, assets)
    assert [index for index, _ in task.keyframes] == [20, 30]
    green, blue = (frame for _, frame in task.keyframes)
    assert green.shape == (32, 32, 3) and (green == (0, 255, 0)).all()
    assert np.abs(blue.astype(int) - (0, 0, 255)).mean() < 8  # the earlier video's last frame (H.264 decoded)
    assert list(task.pinned) == [0, 20, 30]  # with the start frame
    made_of = ingredients(data, assets)
    assert [(i.title, i.relationship, i.mime) for i in made_of] == [
        (f"start keyframe {stored['start']}", "inputTo", "image/png"),
        (f"keyframe at frame 20 {stored['green']}", "inputTo", "image/png"),
        (f"keyframe at frame 30 {stored['video']}", "inputTo", "video/mp4"),
    ]
    assert made_of[1].data == assets.get(stored["green"])


def test_a_stored_keyframe_the_task_cannot_hold_is_the_engines_refusal(
    parts: tuple[Store, AssetStore], stored: dict[str, str]
) -> None:
    _, assets = parts
    with pytest.raises(TaskError) as err:  # index 0 is the start frame's
        task_from_json(_task(stored, [{"index": 0, "asset": stored["green"]}]), assets)
    assert err.value.field == "keyframes" and "start_frame" in str(err.value)

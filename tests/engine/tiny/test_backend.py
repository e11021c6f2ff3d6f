"""noor-tiny behind the Backend protocol: other aspects are filled, never stretched."""

from __future__ import annotations

import numpy as np
import pytest

from noor.engine.task import Task
from noor.engine.tiny.backend import TinyBackend, centre_square, fit
from noor.engine.tiny.detector import detect
from noor.engine.tiny.scene import BACKGROUNDS, Scene, Thing, render


def _extent(frame: np.ndarray, background: np.ndarray) -> tuple[int, int]:
    """Width and height in pixels of what differs from the background in one uint8 frame."""
    ys, xs = np.nonzero(np.abs(frame.astype(int) - background.astype(int)).sum(axis=-1) > 60)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (720, 1280), (640, 640)])
def test_fit_keeps_a_circle_round_and_fills_with_the_background(width: int, height: int) -> None:
    scene = Scene("white", (Thing("circle", "red", "still", 32.0, 32.0, 12.0, 0.0),))
    clip = (render(scene, 4) * 255).round().astype(np.uint8)  # (4, 64, 64, 3)
    out = fit(clip, width, height)
    assert out.shape == (4, height, width, 3)
    white = np.array(BACKGROUNDS["white"], np.uint8)
    w, h = _extent(out[0], white)
    assert abs(w - h) <= 2, (w, h)  # the resize before this fix made it an oval (w/h = 16/9)
    side = min(width, height)
    assert w == pytest.approx(side * 24 / 64, rel=0.05)  # scaled to the short side (a 24 px circle in 64)
    margin = (max(width, height) - side) // 2
    sides = out[:, :, :margin] if width > height else out[:, :margin]
    assert (sides == white).all()
    assert detect(centre_square(out[0])[None].repeat(4, 0) / 255.0).shape == "circle"
    assert detect(out / 255.0).stretch == pytest.approx(1.0, abs=0.05)  # read on the whole filled frame


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_every_shape_spreads_evenly_so_stretch_reads_one(shape: str) -> None:
    scene = Scene("black", (Thing(shape, "green", "still", 32.0, 32.0, 10.0, 0.0),))
    assert detect(render(scene, 4)).stretch == pytest.approx(1.0, abs=0.06)


def test_centre_square_crops_a_keyframe_to_what_the_model_draws() -> None:
    wide = np.zeros((72, 128, 3), np.uint8)
    wide[:, 28:100] = 200
    assert centre_square(wide).shape == (72, 72, 3) and (centre_square(wide) == 200).all()
    assert centre_square(wide[:64, :64]).shape == (64, 64, 3)
    assert centre_square(None) is None


@pytest.mark.slow
def test_the_shipped_model_draws_a_round_circle_at_16_9() -> None:
    """The Luma SDKs' default aspect: the object keeps its shape and the sides are flat background."""
    backend = TinyBackend()
    media = backend.generate([Task(prompt="a red circle on a white background", width=256, height=144, seed=3)])[0]
    frames = media.frames  # (16, 144, 256, 3)
    assert frames.shape == (16, 144, 256, 3)
    side_columns = frames[:, :, :50].reshape(-1, 3).astype(int)
    assert np.ptp(side_columns, axis=0).max() <= 2  # one flat colour
    found = detect(np.stack([centre_square(f) for f in frames]) / 255.0)
    assert found.colour == "red" and found.shape == "circle", found

"""A finished clip on the canvas a model draws, for the work done on a source (`Task.source`: an edit, a reframe)
by any backend: the source retimed and brought to the canvas (`on_canvas`), and a reframe's output with the
source's own pixels back in its region (`keep_source`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noor.engine.resample import resize
from noor.engine.task import Task, nearest_frames


def retime(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """Nearest-frame resampling in time: (T, ...) -> (num_frames, ...), first and last kept."""
    if len(frames) == num_frames:
        return frames
    return frames[nearest_frames(len(frames), num_frames)]


@dataclass(frozen=True)
class Placed:
    """A task's source on the canvas a model draws: frames (T, H, W, 3) uint8, and where the source is ((H, W)
    bool; None: all of it, an edit)."""

    frames: np.ndarray
    mask: np.ndarray | None
    notes: tuple[str, ...] = ()


def keep_source(frames: np.ndarray, task: Task) -> np.ndarray:
    """A reframe's output (T, H, W, 3) uint8 with its source's own pixels in the source's region (`reframe_box`),
    as inpainting pipelines paste the original back (diffusers' `VaeImageProcessor.apply_overlay`): a model draws
    the canvas at its own scale and the source's region comes back blurred by that and its VAE (noor-tiny's 64
    pixels: `noor eval tiny --edits`); the drawn surround was denoised to continue it."""
    assert task.source is not None
    x, y, w, h = task.reframe_box()
    out = frames.copy()
    out[:, y : y + h, x : x + w] = resize(retime(task.source.frames, len(frames)), w, h)
    return out


def on_canvas(task: Task, num_frames: int, width: int, height: int) -> Placed | None:
    """An edit's or a reframe's source, retimed to `num_frames` and brought to the width x height canvas: an
    edit's resized to it; a reframe's scaled by the canvas's scale and placed at its `reframe_box`, the rest of the
    canvas its edge pixels repeated (where a reframe's denoising of the rest starts from: it continues the source's
    background)."""
    if task.operation not in ("edit", "reframe") or task.source is None:
        return None
    frames = retime(task.source.frames, num_frames)  # (T, H, W, 3) uint8
    if task.operation == "edit":
        return Placed(resize(frames, width, height), None)
    x, y, w, h = task.reframe_box()
    sx, sy = width / task.width, height / task.height  # the canvas is the task's frame at noor-tiny's scale
    left, top = round(x * sx), round(y * sy)
    right, bottom = min(width, round((x + w) * sx)), min(height, round((y + h) * sy))
    placed = resize(frames, right - left, bottom - top)
    padding = ((0, 0), (top, height - bottom), (left, width - right), (0, 0))
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    notes: tuple[str, ...] = (f"source placed at x={x}, y={y} as {w}x{h} of the {task.width}x{task.height} canvas",)
    if (w, h) != (task.source.width, task.source.height):
        notes = (f"source scaled from {task.source.width}x{task.source.height} to {w}x{h} to fit the canvas", *notes)
    return Placed(np.pad(placed, padding, mode="edge"), mask, notes)

"""A pixel-level reader for clips of the synthetic world: colour segmentation and a centroid track.

It knows nothing about the model; it reads frames the way the eval needs: which palette colour the
foreground is, which of circle/square/triangle of the same area and centre overlaps it best, and how
its centroid and area move over time. The foreground is cut at half the object's contrast, so a
slightly soft edge (a decoder's) neither grows nor shrinks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noor.engine.tiny.scene import COLOURS, coverage

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)  # (K, 3)
_NAMES = list(COLOURS)


@dataclass(frozen=True)
class Detection:
    colour: str | None
    shape: str | None
    motion: str | None
    track: list[tuple[float, float, float]]  # (x, y, area) per frame with an object


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def _background(frames: np.ndarray) -> np.ndarray:
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)  # (T, N, 3)
    return np.median(border.reshape(-1, 3), axis=0)


# area of each shape per r^2, for the shapes as world.render draws them
_AREA_PER_R2 = {"circle": np.pi, "square": (2 * 0.88) ** 2, "triangle": 3 * np.sqrt(3) / 4 * 1.25**2}


def _shape(mask: np.ndarray) -> str | None:
    """The shape whose same-area, same-centre template overlaps the mask best (IoU)."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 12:
        return None
    cx, cy, area = xs.mean() + 0.5, ys.mean() + 0.5, float(len(xs))
    py, px = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]].astype(np.float64) + 0.5
    best, best_iou = None, -1.0
    for shape, per_r2 in _AREA_PER_R2.items():
        r = np.sqrt(area / per_r2)
        template = coverage(shape, px, py, np.array([cx]), np.array([cy]), np.array([r]))[0] > 0.5
        iou = np.logical_and(template, mask).sum() / max(1, np.logical_or(template, mask).sum())
        if iou > best_iou:
            best, best_iou = shape, iou
    return best


def detect(clip: np.ndarray) -> Detection:
    """Read colour, shape and motion from a clip (T, H, W, 3) in [0, 1] holding one object."""
    frames = np.asarray(clip, dtype=np.float32) * 255.0
    T, W = frames.shape[0], frames.shape[2]
    bg = _background(frames)
    distance = np.linalg.norm(frames - bg, axis=-1)  # (T, H, W)
    fg = distance > 60.0
    if fg.any():  # cut at half the object's own contrast against the background
        fg = distance > 0.5 * float(np.median(distance[fg]))

    # 1. colour: the palette entry most foreground pixels are nearest to (and near enough)
    pixels = frames[fg]
    colour = None
    if len(pixels):
        dist = np.linalg.norm(pixels[:, None, :] - _PALETTE[None], axis=-1)  # (N, K)
        close = dist.min(axis=1) < 70.0
        if close.any():
            colour = _NAMES[int(np.bincount(dist[close].argmin(axis=1), minlength=len(_NAMES)).argmax())]

    # 2. track: centroid and area per frame, on frames with a visible object
    scale = 64.0 / W
    track = []
    for t in range(T):
        ys, xs = np.nonzero(fg[t])
        if len(xs) >= 12:
            track.append((float(xs.mean()) * scale, float(ys.mean()) * scale, float(len(xs)) * scale * scale))
    if len(track) < max(2, T // 2):
        return Detection(colour, None, None, track)

    # 3. shape: the most common verdict over frames
    verdicts = [s for s in (_shape(fg[t]) for t in range(T)) if s is not None]
    shape = max(set(verdicts), key=verdicts.count) if verdicts else None

    # 4. motion: net displacement, area change, vertical hops
    xs_, ys_, areas = (np.array(v) for v in zip(*track, strict=True))
    k = max(1, len(track) // 5)
    dx = xs_[-k:].mean() - xs_[:k].mean()
    dy = ys_[-k:].mean() - ys_[:k].mean()
    growth = areas[-k:].mean() / max(areas[:k].mean(), 1.0)
    if growth > 1.6:
        motion = "grow"
    elif growth < 0.6:
        motion = "shrink"
    elif max(abs(dx), abs(dy)) > 8.0:
        motion = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    elif ys_.max() - ys_.min() > 6.0:
        motion = "bounce"
    else:
        motion = "still"
    return Detection(colour, shape, motion, track)

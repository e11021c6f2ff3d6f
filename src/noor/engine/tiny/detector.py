"""A pixel-level reader for clips of the synthetic world: colour segmentation and a centroid track.

It knows nothing about the model; it reads frames the way the eval needs: which palette colour the
foreground is, which of circle/square/triangle of the same area and centre overlaps it best, and how
its centroid and area move over time. The foreground is cut at half the object's contrast, so a
slightly soft edge (a decoder's) neither grows nor shrinks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noor.engine.tiny.scene import (
    COLOURS,
    CRESCENT_CUT,
    CRESCENT_INNER,
    CRESCENT_OUTER,
    SHAPES,
    coverage,
)

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)  # (K, 3)
_NAMES = list(COLOURS)


@dataclass(frozen=True)
class Detection:
    colour: str | None
    shape: str | None
    motion: str | None
    track: list[tuple[float, float, float]]  # (x, y, area) per frame with an object
    # width over height of the object's spread (second moments), median over frames: 1 for a circle, a square
    # or an equilateral triangle alike (regular shapes spread evenly), 16/9 for one stretched to 16:9
    stretch: float | None = None


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def _background(frames: np.ndarray) -> np.ndarray:
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)  # (T, N, 3)
    return np.median(border.reshape(-1, 3), axis=0)


def _lens(a: float, b: float, d: float) -> float:
    """The area two discs of radii a and b, centres d apart, share (they overlap partly)."""
    alpha = np.arccos((d * d + a * a - b * b) / (2 * d * a))
    beta = np.arccos((d * d + b * b - a * a) / (2 * d * b))
    kite = 0.5 * np.sqrt((-d + a + b) * (d + a - b) * (d - a + b) * (d + a + b))
    return float(a * a * alpha + b * b * beta - kite)


# area of each shape per r^2, for the shapes as scene.render draws them
_AREA_PER_R2 = {
    "circle": np.pi,
    "square": (2 * 0.88) ** 2,
    "triangle": 3 * np.sqrt(3) / 4 * 1.25**2,
    "crescent": np.pi * CRESCENT_OUTER**2 - _lens(CRESCENT_OUTER, CRESCENT_INNER, CRESCENT_CUT),
}


def _shape(mask: np.ndarray, shapes: tuple[str, ...] = SHAPES) -> tuple[str, float] | None:
    """The shape among `shapes` whose same-area, same-centre template overlaps the mask best, and that IoU."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 12:
        return None
    cx, cy, area = xs.mean() + 0.5, ys.mean() + 0.5, float(len(xs))
    py, px = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]].astype(np.float64) + 0.5
    best, best_iou = None, -1.0
    for shape in shapes:
        r = np.sqrt(area / _AREA_PER_R2[shape])
        template = coverage(shape, px, py, np.array([cx]), np.array([cy]), np.array([r]))[0] > 0.5
        iou = np.logical_and(template, mask).sum() / max(1, np.logical_or(template, mask).sum())
        if iou > best_iou:
            best, best_iou = shape, float(iou)
    return (best, best_iou) if best is not None else None


def _foreground(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) mask of what stands out from the background, cut at half the objects' own contrast."""
    distance = np.linalg.norm(frames - _background(frames), axis=-1)  # (T, H, W)
    fg = distance > 60.0
    if fg.any():
        fg = distance > 0.5 * float(np.median(distance[fg]))
    return fg


def _nearest_palette(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pixels (..., 3) in 0..255: the index of the nearest palette colour and whether it is near enough."""
    dist = np.linalg.norm(pixels[..., None, :] - _PALETTE, axis=-1)  # (..., K)
    return dist.argmin(axis=-1), dist.min(axis=-1) < 70.0


def _read(fg: np.ndarray, colour: str | None, shapes: tuple[str, ...] = SHAPES) -> Detection:
    """Shape (one of `shapes`) and motion of the object a foreground mask (T, H, W) holds, named `colour`."""
    T, side = fg.shape[0], min(fg.shape[1:3])
    # 1. track: centroid and area per frame, on frames with a visible object
    scale = 64.0 / side  # native pixels: a non-square clip holds its square at the short side
    track, spreads = [], []
    for t in range(T):
        ys, xs = np.nonzero(fg[t])
        if len(xs) >= 12:
            track.append((float(xs.mean()) * scale, float(ys.mean()) * scale, float(len(xs)) * scale * scale))
            spreads.append(float(np.sqrt((xs.var() + 1 / 12) / (ys.var() + 1 / 12))))  # 1/12: a pixel's own spread
    if len(track) < max(2, T // 2):
        return Detection(colour, None, None, track)
    stretch = float(np.median(spreads))

    # 2. shape: the most common verdict over frames; a tie goes to the shape that fits its frames best (summed IoU),
    # not to the order of a set of strings, which Python's hash randomisation changes from process to process
    fits: dict[str, list[float]] = {}
    for verdict in (_shape(fg[t], shapes) for t in range(T)):
        if verdict is not None:
            fits.setdefault(verdict[0], []).append(verdict[1])
    shape = max(fits, key=lambda s: (len(fits[s]), sum(fits[s]))) if fits else None

    # 3. motion: net displacement, area change, vertical hops
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
    return Detection(colour, shape, motion, track, stretch)


def detect(clip: np.ndarray, shapes: tuple[str, ...] = SHAPES) -> Detection:
    """Read colour, shape and motion from a clip (T, H, W, 3) in [0, 1] holding one object. `shapes`: the
    candidates the shape is read as (the base shapes; add scene.NEW_SHAPES to read a trained concept's too)."""
    unknown = [s for s in shapes if s not in _AREA_PER_R2]
    if unknown or not shapes:
        raise ValueError(f"shapes must be some of {', '.join(_AREA_PER_R2)}, got {shapes!r}")
    frames = np.asarray(clip, dtype=np.float32) * 255.0
    fg = _foreground(frames)
    # colour: the palette entry most foreground pixels are nearest to (and near enough)
    colour = None
    if fg.any():
        nearest, close = _nearest_palette(frames[fg])
        if close.any():
            colour = _NAMES[int(np.bincount(nearest[close], minlength=len(_NAMES)).argmax())]
    return _read(fg, colour, tuple(shapes))


def detect_colour(clip: np.ndarray, colour: str) -> Detection:
    """Read the object of one palette colour from a clip that may hold others: its shape and motion from the
    foreground pixels nearest that colour (colour None where it is not on at least half the frames)."""
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {', '.join(COLOURS)}, got {colour!r}")
    frames = np.asarray(clip, dtype=np.float32) * 255.0
    nearest, close = _nearest_palette(frames)  # (T, H, W) each
    mask = _foreground(frames) & close & (nearest == _NAMES.index(colour))
    found = _read(mask, colour)
    return found if found.shape is not None else Detection(None, None, None, found.track)

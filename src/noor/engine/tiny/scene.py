"""The synthetic world that noor-tiny learns from: flat shapes moving on flat backgrounds.

Everything here is plain NumPy. A `Scene` is a few attributes (shapes, colours, motions, a
background); `render` turns it into frames. The same palette drives the captions and the eval
detector, so all three agree on what "red" or "moves left" means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SIZE = 64  # native frame side, pixels
NUM_FRAMES = 16  # native clip length

# RGB in 0..255. Chosen to be far apart from each other and from every background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 190, 60),
    "blue": (40, 80, 235),
    "yellow": (245, 220, 30),
    "orange": (250, 135, 20),
    "purple": (140, 50, 200),
    "cyan": (30, 205, 215),
    "pink": (250, 120, 195),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 12),
    "white": (240, 240, 240),
    "gray": (120, 120, 120),
}
SHAPES = ("circle", "square", "triangle")
# Shapes `coverage` and `render` draw that the base model never saw (not in SHAPES: its training data and `noor eval
# tiny` stay as they are): what a trained concept teaches it (noor.engine.tiny.concept).
NEW_SHAPES = ("crescent",)
# The crescent: a disc of radius 1.3 r with a disc of radius 1.05 r cut out 0.7 r to its right (opening right). The
# outer disc's centre sits 0.495 r right of the thing's centre, so the area centroid is at the centre (the detector
# fits same-area, same-centre templates); it reaches 1.3 r up and down, 0.8 r left, 1.27 r right; area 2.65 r^2.
CRESCENT_OUTER, CRESCENT_INNER, CRESCENT_CUT, CRESCENT_SHIFT = 1.3, 1.05, 0.7, 0.495
MOTIONS = ("left", "right", "up", "down", "still", "grow", "shrink", "bounce")


@dataclass(frozen=True)
class Thing:
    """One object and its trajectory. Positions and radius are in pixels of the native frame."""

    shape: str
    colour: str
    motion: str
    x: float  # centre at t=0
    y: float
    radius: float
    travel: float  # pixels moved over the clip (left/right/up/down), hop height (bounce)


@dataclass(frozen=True)
class Scene:
    background: str
    things: tuple[Thing, ...] = field(default_factory=tuple)


def trajectory(thing: Thing, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre x, centre y and radius at clip times t in [0, 1] (arrays shaped like t)."""
    x = np.full_like(t, thing.x)
    y = np.full_like(t, thing.y)
    r = np.full_like(t, thing.radius)
    if thing.motion == "left":
        x = thing.x - thing.travel * t
    elif thing.motion == "right":
        x = thing.x + thing.travel * t
    elif thing.motion == "up":
        y = thing.y - thing.travel * t
    elif thing.motion == "down":
        y = thing.y + thing.travel * t
    elif thing.motion == "grow":
        r = thing.radius * (1.0 + 0.8 * t)
    elif thing.motion == "shrink":
        r = thing.radius * (1.0 - 0.45 * t)
    elif thing.motion == "bounce":  # two hops up from a floor at y
        y = thing.y - thing.travel * np.abs(np.sin(2.0 * np.pi * t))
    return x, y, r


def coverage(shape: str, px: np.ndarray, py: np.ndarray, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance, shapes (T, H, W)."""
    dx = px[None] - x[:, None, None]  # (T, H, W)
    dy = py[None] - y[:, None, None]
    rr = r[:, None, None]
    if shape == "circle":
        sdf = np.sqrt(dx * dx + dy * dy) - rr
    elif shape == "square":  # half-side 0.88 r: about the circle's area
        sdf = np.maximum(np.abs(dx), np.abs(dy)) - 0.88 * rr
    elif shape == "triangle":  # upright equilateral triangle with circumradius 1.25 r
        R = 1.25 * rr
        k = np.sqrt(3.0) / 2.0
        e1 = dy - 0.5 * R  # base
        e2 = -k * dx - 0.5 * dy - 0.5 * R  # left edge
        e3 = k * dx - 0.5 * dy - 0.5 * R  # right edge
        sdf = np.maximum(np.maximum(e1, e2), e3)
    elif shape == "crescent":  # outside the cut disc and inside the outer one
        ox = dx - CRESCENT_SHIFT * rr
        outer = np.sqrt(ox * ox + dy * dy) - CRESCENT_OUTER * rr
        cx = ox - CRESCENT_CUT * rr
        inner = np.sqrt(cx * cx + dy * dy) - CRESCENT_INNER * rr
        sdf = np.maximum(outer, -inner)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip(0.5 - sdf, 0.0, 1.0)


def render(scene: Scene, num_frames: int = NUM_FRAMES, size: int = SIZE, pingpong: bool = False) -> np.ndarray:
    """Frames of the scene as float32 in [0, 1], shape (T, H, W, 3).

    `pingpong` plays the motion forward over the first half and back over the second, so the last
    frame equals the first (training examples for loops).
    """
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    if pingpong:
        t = 1.0 - np.abs(2.0 * t - 1.0)
    scale = size / SIZE
    py, px = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    bg = np.array(BACKGROUNDS[scene.background], dtype=np.float64) / 255.0
    frames = np.broadcast_to(bg, (num_frames, size, size, 3)).copy()
    for thing in scene.things:
        x, y, r = trajectory(thing, t)
        cov = coverage(thing.shape, px, py, x * scale, y * scale, r * scale)[..., None]  # (T, H, W, 1)
        colour = np.array(COLOURS[thing.colour], dtype=np.float64) / 255.0
        frames = frames * (1.0 - cov) + colour * cov
    return frames.astype(np.float32)


def _sample_thing(rng: np.random.Generator, shape: str, colour: str, motion: str) -> Thing:
    if motion == "grow":
        radius = rng.uniform(6.0, 7.5)
        reach = radius * 1.8
    elif motion == "shrink":
        radius = rng.uniform(10.0, 12.0)
        reach = radius
    else:
        radius = rng.uniform(8.0, 10.5)
        reach = radius
    margin = 1.3 * reach + 1.0  # the triangle reaches 1.25 r from its centre
    travel = rng.uniform(22.0, 30.0) if motion in ("left", "right", "up", "down") else rng.uniform(12.0, 18.0)
    lo, hi = margin, SIZE - margin
    x = rng.uniform(lo, hi)
    y = rng.uniform(lo, hi)
    if motion == "left":
        x = rng.uniform(lo + travel, hi)
    elif motion == "right":
        x = rng.uniform(lo, hi - travel)
    elif motion == "up":
        y = rng.uniform(lo + travel, hi)
    elif motion == "down":
        y = rng.uniform(lo, hi - travel)
    elif motion == "bounce":
        y = rng.uniform(lo + travel, hi)
    return Thing(shape, colour, motion, float(x), float(y), float(radius), float(travel))


def _apart(a: Thing, b: Thing) -> bool:
    t = np.linspace(0.0, 1.0, NUM_FRAMES)
    ax, ay, ar = trajectory(a, t)
    bx, by, br = trajectory(b, t)
    gap = np.hypot(ax - bx, ay - by) - 1.3 * (ar + br)
    return bool(gap.min() > 2.0)


def sample_scene(
    rng: np.random.Generator,
    two_objects_p: float = 0.25,
    shape: str | None = None,
    colour: str | None = None,
    motion: str | None = None,
    background: str | None = None,
) -> Scene:
    """A random scene; fixed attributes of the first object (and the background) may be given."""
    bg = background or str(rng.choice(list(BACKGROUNDS)))
    first = _sample_thing(
        rng,
        shape or str(rng.choice(SHAPES)),
        colour or str(rng.choice(list(COLOURS))),
        motion or str(rng.choice(MOTIONS)),
    )
    things = [first]
    if rng.random() < two_objects_p:
        for _ in range(20):
            second = _sample_thing(
                rng,
                str(rng.choice([s for s in SHAPES if s != first.shape])),
                str(rng.choice([c for c in COLOURS if c != first.colour])),
                str(rng.choice(MOTIONS)),
            )
            if _apart(first, second):
                things.append(second)
                break
    return Scene(bg, tuple(things))

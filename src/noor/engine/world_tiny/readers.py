"""Pixel readers for frames of the procedural terrain: what `noor world eval` reads from a model's frames.

They know nothing about the model; they read frames the way the eval needs:

- `scene_shift` / `read_shifts`: how far the scene moved between two consecutive frames, by phase
  correlation (NumPy FFT), in pixels (dx, dy), with the correlation peak's height; `action_of_shift`
  and `read_actions` turn shifts into the actions they imply under the camera convention (the camera
  follows the player, so a scene moving left means the player went right).
- `read_biome`: the biome whose colour distribution a frame is nearest to. Each biome's signature is
  the colour histogram of maps drawn by `terrain.make_map` (computed on first use, never typed in).
- `ground_detail` / `true_detail`: the share of a frame's neighbouring pixels that make an edge, and the same
  for true views of a biome: a blurred world reads far below the truth.
- `check_windows`: whether each window of frames (100 in the eval) keeps its colour histogram within
  the range that true views of the same biome span: the "no collapse" check.

Frames are (H, W, 3) or (T, H, W, 3): uint8 in 0..255, or floats in [0, 1] (a model's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from noor.engine.world_tiny.actions import MOVES, check_actions
from noor.engine.world_tiny.terrain import (
    BIOMES,
    PLAYER_RADIUS_PX,
    TerrainMap,
    make_map,
    player_box,
    view,
)

# --- scene shift ---------------------------------------------------------------------------------


def _as_uint8(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"frames must be uint8 or float in [0, 1], got dtype {frames.dtype}")
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


HOLE_RAMP_PX = 10.0  # the hole over the player rises from zero to one over this many pixels


@lru_cache(maxsize=4)
def _taper(h: int, w: int) -> np.ndarray:
    """(h, w) weights: a Hann window (content enters and leaves at the edges) with a smooth hole over the
    player, zero on its sprite and rising to one over HOLE_RAMP_PX. The player is drawn still at the
    centre, so left in it would pull the peak towards zero shift; a hard-edged hole does the same, since
    whitening the spectrum amplifies its edges (a box blanked outright let a spurious peak tie the true
    one; with this hole the true peak stands at least 4x above any other on 3,200 true steps)."""
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.hypot(xx - w // 2, yy - h // 2)
    ramp = np.clip((d - (PLAYER_RADIUS_PX + 1.0)) / HOLE_RAMP_PX, 0.0, 1.0)
    return np.outer(np.hanning(h), np.hanning(w)) * (0.5 - 0.5 * np.cos(np.pi * ramp))


def _prepared(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) grey frames, zero-mean, tapered by `_taper`."""
    grey = _as_uint8(frames).astype(np.float64).mean(axis=-1)  # (T, H, W)
    grey -= grey.mean(axis=(1, 2), keepdims=True)
    return grey * _taper(grey.shape[1], grey.shape[2])


def _subpixel(c_minus: np.ndarray, c0: np.ndarray, c_plus: np.ndarray) -> np.ndarray:
    """Offset of a parabola's vertex through three samples at -1, 0, +1 (0 where it is flat)."""
    denom = c_minus - 2.0 * c0 + c_plus
    safe = np.where(np.abs(denom) > 1e-12, denom, 1.0)
    return np.where(np.abs(denom) > 1e-12, np.clip(0.5 * (c_minus - c_plus) / safe, -0.5, 0.5), 0.0)


# A correlation peak below this is no shift at all: between independent noise frames the peak is ~0.06
# (at most 0.13 over 200 pairs); on true steps of the terrain it is at least 0.69 (800 walks of 200 steps).
MIN_PEAK = 0.2


@dataclass(frozen=True)
class ShiftReading:
    shifts_px: np.ndarray  # (T - 1, 2): the scene's shift (dx, dy) from each frame to the next
    peaks: np.ndarray  # (T - 1,): the correlation peak's height, 1 for a whole frame shifted exactly


def read_shifts(frames: np.ndarray) -> ShiftReading:
    """The scene's shift in pixels from each frame to the next in frames (T, H, W, 3), and how sure it is.

    A positive dx means the scene moved right in the picture, a positive dy that it moved down."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 2 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T >= 2, H, W, 3), got shape {frames.shape}")
    # 1. normalised cross-power spectrum of each consecutive pair
    spectra = np.fft.fft2(_prepared(frames))  # (T, H, W)
    cross = spectra[1:] * np.conj(spectra[:-1])
    cross /= np.maximum(np.abs(cross), 1e-12)
    surface = np.fft.ifft2(cross).real  # (T - 1, H, W): a peak at the displacement
    # 2. integer peak, then a parabola through its neighbours on each axis
    n, h, w = surface.shape
    flat = surface.reshape(n, -1).argmax(axis=1)
    py, px = flat // w, flat % w
    k = np.arange(n)
    fx = _subpixel(surface[k, py, (px - 1) % w], surface[k, py, px], surface[k, py, (px + 1) % w])
    fy = _subpixel(surface[k, (py - 1) % h, px], surface[k, py, px], surface[k, (py + 1) % h, px])
    dx = (px + w // 2) % w - w // 2 + fx  # wrap to signed: a peak at w - 4 is a shift of -4
    dy = (py + h // 2) % h - h // 2 + fy
    return ShiftReading(np.stack([dx, dy], axis=1), surface[k, py, px])


def scene_shifts(frames: np.ndarray) -> np.ndarray:
    """(T - 1, 2) shifts (dx, dy) in pixels of the scene from each frame to the next in frames (T, H, W, 3)."""
    return read_shifts(frames).shifts_px


def read_actions(frames: np.ndarray, still_px: float = 1.0, min_peak: float = MIN_PEAK) -> list[str | None]:
    """The action each step of frames (T, H, W, 3) implies (see `action_of_shift`), None where the frames
    hold no common scene to correlate (a peak below `min_peak`: noise, a cut, a collapse)."""
    reading = read_shifts(frames)
    return [
        action_of_shift(float(dx), float(dy), still_px) if peak >= min_peak else None
        for (dx, dy), peak in zip(reading.shifts_px, reading.peaks, strict=True)
    ]


def scene_shift(prev: np.ndarray, next_: np.ndarray) -> tuple[float, float]:
    """The scene's shift (dx, dy) in pixels from frame `prev` to frame `next_`, each (H, W, 3)."""
    dx, dy = scene_shifts(np.stack([prev, next_]))[0]
    return float(dx), float(dy)


def action_of_shift(dx: float, dy: float, still_px: float = 1.0) -> str:
    """The action a scene shift implies: the camera follows the player, so the scene moves against it.

    A shift below `still_px` on both axes is `none`; otherwise the larger axis decides."""
    if max(abs(dx), abs(dy)) < still_px:
        return "none"
    if abs(dx) >= abs(dy):
        return "right" if dx < 0 else "left"
    return "up" if dy > 0 else "down"


def expected_shift(action: str) -> tuple[int, int]:
    """The scene's shift in pixels that `action` should cause: the player's move, reversed."""
    check_actions([action])
    dx, dy = MOVES[action]
    return -dx, -dy


# --- biome from colours --------------------------------------------------------------------------

LEVELS = 8  # histogram levels per channel: 8 x 8 x 8 = 512 colour bins
SIGNATURE_SEEDS = (9001, 9002)  # maps the signatures are computed from (eval seeds are others)


def colour_counts(frames: np.ndarray, skip_player: bool = True) -> np.ndarray:
    """(T, LEVELS**3) colour counts of each frame in frames (T, H, W, 3), by default without the player's
    square at the centre (it is the same in every biome)."""
    frames = _as_uint8(frames)
    q = frames // (256 // LEVELS)  # (T, H, W, 3) uint8 levels
    index = (q[..., 0].astype(np.int32) * LEVELS + q[..., 1]) * LEVELS + q[..., 2]  # (T, H, W)
    index += (np.arange(frames.shape[0], dtype=np.int32) * LEVELS**3)[:, None, None]  # one block of bins per frame
    if skip_player and frames.shape[1] == frames.shape[2]:
        rows, cols = player_box(frames.shape[1])
        keep = np.ones(frames.shape[1:3], bool)
        keep[rows, cols] = False
        index = index[:, keep]
    return np.bincount(index.ravel(), minlength=frames.shape[0] * LEVELS**3).reshape(frames.shape[0], -1)


def colour_histogram(frames: np.ndarray, skip_player: bool = True) -> np.ndarray:
    """Normalised (LEVELS**3,) colour histogram of a frame (H, W, 3) or of all frames (T, H, W, 3) together."""
    frames = np.asarray(frames)
    counts = colour_counts(frames[None] if frames.ndim == 3 else frames, skip_player).sum(axis=0).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def _window_histograms(frames: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts (N,) and normalised histograms (N, bins) of the windows of frames (T, H, W, 3)."""
    counts = np.cumsum(colour_counts(frames), axis=0, dtype=np.float64)  # (T, bins)
    counts = np.concatenate([np.zeros((1, counts.shape[1])), counts])
    starts = np.arange(0, frames.shape[0] - window + 1, stride)
    sums = counts[starts + window] - counts[starts]  # (N, bins)
    return starts, sums / sums.sum(axis=1, keepdims=True)


def _entropy(hist: np.ndarray) -> float:
    p = hist[hist > 0]
    return float(-(p * np.log(p)).sum())


def _kl(hist: np.ndarray, log_signature: np.ndarray) -> np.ndarray:
    """KL divergence (nats) of a histogram from each signature, (B,) for log signatures (B, bins)."""
    return -_entropy(hist) - log_signature @ hist


CALIBRATION_VIEWS = 256  # random views per signature map that calibrate the colour ranges
KL_MARGIN = 1.5  # a model's softer colours stray further than the truth's: this much is still the biome
ENTROPY_MARGIN = 0.75


@dataclass(frozen=True)
class ColourRange:
    """What single true views of a biome span: the most their colours stray from the biome's signature
    (KL, nats) and the fewest colours they hold (entropy of the histogram, nats), with the margins above.

    A window of frames lies in the range whenever each of its frames does: KL divergence is convex and
    entropy concave in the histogram, and a window's histogram is the mean of its frames'."""

    kl_max: float
    entropy_min: float


@dataclass(frozen=True)
class Signatures:
    biomes: tuple[str, ...]
    log_p: np.ndarray  # (B, bins): log of each biome's smoothed colour distribution
    ranges: dict[str, ColourRange]


@lru_cache(maxsize=len(BIOMES) * len(SIGNATURE_SEEDS))
def _signature_map(biome: str, seed: int) -> TerrainMap:
    return make_map(biome, seed)


@lru_cache(maxsize=1)
def signatures() -> Signatures:
    """Each biome's colour distribution over its whole maps (SIGNATURE_SEEDS), smoothed so that no colour
    is impossible, and the range its views span (computed once, about 1 s)."""
    # 1. distributions from whole maps
    hists = np.stack(
        [
            np.mean([colour_histogram(_signature_map(b, s).rgb, skip_player=False) for s in SIGNATURE_SEEDS], axis=0)
            for b in BIOMES
        ]
    )  # (B, bins)
    floor = 1e-6  # about one pixel in a million: colours a biome never shows weigh heavily but finitely
    log_p = np.log((hists + floor) / (1.0 + floor * hists.shape[1]))
    # 2. ranges from random views of the same maps
    rng = np.random.default_rng(0)
    ranges = {}
    for i, b in enumerate(BIOMES):
        kls, entropies = [], []
        for s in SIGNATURE_SEEDS:
            terrain = _signature_map(b, s)
            xy = rng.integers(0, terrain.width, size=(CALIBRATION_VIEWS, 2))
            counts = colour_counts(np.stack([view(terrain, int(x), int(y)) for x, y in xy])).astype(np.float64)
            for hist in counts / counts.sum(axis=1, keepdims=True):
                kls.append(float(_kl(hist, log_p[i : i + 1])[0]))
                entropies.append(_entropy(hist))
        ranges[b] = ColourRange(KL_MARGIN * max(kls), ENTROPY_MARGIN * min(entropies))
    return Signatures(BIOMES, log_p, ranges)


@dataclass(frozen=True)
class BiomeReading:
    biome: str | None  # None: no biome is near enough (noise, a blank or a collapsed frame)
    kl: dict[str, float]  # divergence of the frame's colours from each biome's, nats


def read_biome(frame: np.ndarray) -> BiomeReading:
    """The biome whose colour signature is nearest (KL divergence) to a frame (H, W, 3), if the frame
    lies within that biome's colour range."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame must be (H, W, 3), got shape {frame.shape}")
    sig = signatures()
    kl = _kl(colour_histogram(frame), sig.log_p)  # (B,)
    best = sig.biomes[int(kl.argmin())]
    near = float(kl.min()) <= sig.ranges[best].kl_max
    return BiomeReading(best if near else None, {b: float(v) for b, v in zip(sig.biomes, kl, strict=True)})


# --- detail ---------------------------------------------------------------------------------------


EDGE_LEVELS = 16  # grey levels between neighbours that make an edge: 4 sigma of the terrain grain's difference


def ground_detail(frame: np.ndarray) -> float:
    """The share of neighbouring pixel pairs of a frame (H, W, 3) more than EDGE_LEVELS grey levels apart, the
    player's square left out: palms, tents, lit windows, roads and shorelines make edges; the terrain's grain
    (which no model is asked to draw) and a blur of the right colours do not."""
    grey = _as_uint8(frame).astype(np.float64).mean(axis=-1)
    keep = np.ones(grey.shape, bool)
    if grey.shape[0] == grey.shape[1]:
        keep[player_box(grey.shape[0])] = False
    dy = (np.abs(np.diff(grey, axis=0)) > EDGE_LEVELS)[keep[1:] & keep[:-1]]
    dx = (np.abs(np.diff(grey, axis=1)) > EDGE_LEVELS)[keep[:, 1:] & keep[:, :-1]]
    return float((dy.sum() + dx.sum()) / (dy.size + dx.size))


@lru_cache(maxsize=len(BIOMES))
def true_detail(biome: str) -> float:
    """`ground_detail` of true views of a biome: the mean over CALIBRATION_VIEWS random views of its signature maps."""
    rng = np.random.default_rng(1)
    values = []
    for s in SIGNATURE_SEEDS:
        terrain = _signature_map(biome, s)
        xy = rng.integers(0, terrain.width, (CALIBRATION_VIEWS // 2, 2))
        values += [ground_detail(view(terrain, int(x), int(y))) for x, y in xy]
    return float(np.mean(values))


# --- no collapse over long rollouts --------------------------------------------------------------


@dataclass(frozen=True)
class WindowCheck:
    start: int  # first frame of the window
    kl: float  # divergence of the window's colours from the biome's, nats
    entropy: float  # of the window's colour histogram, nats
    ok: bool  # within the biome's colour range


def check_windows(frames: np.ndarray, biome: str, window: int = 100) -> list[WindowCheck]:
    """Each consecutive `window` of frames (T, H, W, 3) against the colour range of `biome` (a last,
    shorter remainder is not checked)."""
    if biome not in BIOMES:
        raise ValueError(f"biome must be one of {', '.join(BIOMES)}, got {biome!r}")
    frames = np.asarray(frames)
    if window < 1 or frames.ndim != 4 or frames.shape[0] < window:
        raise ValueError(f"frames must be (T >= window = {window}, H, W, 3), got shape {frames.shape}")
    sig = signatures()
    bounds, log_p = sig.ranges[biome], sig.log_p[BIOMES.index(biome)][None]
    checks = []
    for start, hist in zip(*_window_histograms(frames, window, window), strict=True):
        kl, entropy = float(_kl(hist, log_p)[0]), _entropy(hist)
        checks.append(WindowCheck(int(start), kl, entropy, kl <= bounds.kl_max and entropy >= bounds.entropy_min))
    return checks

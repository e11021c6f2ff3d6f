"""The procedural terrain noor-world-tiny learns from: a top-down map much larger than the view.

A `TerrainMap` is drawn once from a biome and a seed (plain NumPy, deterministic): smooth terrain
fields from periodic value noise, roads as lines, and landmarks (palm trees, tents, wells, buildings,
street lamps, boats) stamped as small procedural sprites with their shadows. Every pixel also carries
its class (`CLASSES`), so the readers and later the model's eval can ask what is where.

Geometry and the camera convention:

- The map is a torus: it wraps around at every edge (the noise, the roads and the sprites are all
  drawn periodically, so there is no seam). The player can walk forever in any direction without a
  wall, a special case at the border or a patch of undrawn space, and a walk needs no collision
  rule: a closed path of actions (right n, up n, left n, down n) ends exactly where it began.
- Positions are integer map pixels (x to the right, y downwards), always kept in [0, W) x [0, H).
- One action (`actions.MOVES`) moves the player `STEP_PX` = 4 pixels: `right` +x, `left` -x, `down` +y, `up` -y,
  `none` stays.
- **The camera follows the player, so moving right scrolls the scene left** (and moving up scrolls
  it down). The view of side `size` centred on (x, y) covers map columns x - size//2 .. x + size//2 - 1
  and the player is drawn at view pixel (size//2, size//2), the same in every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noor.engine.world_tiny.actions import MOVES, check_actions

MAP_SIZE = 512  # map side, pixels
VIEW_SIZE = 64  # view side, pixels
BIOMES = ("desert", "city_night", "coast", "oasis")

# Semantic class of each map pixel: terrain first, then the landmarks' parts.
CLASSES = ("sand", "water", "grass", "road", "rock", "pavement", "building", "light", "palm", "tent", "well", "boat")
_C = {name: i for i, name in enumerate(CLASSES)}

# RGB in 0..255 of each class in each biome; a pixel's colour is this times its shade, plus grain. The
# biomes keep their ground colours apart (orange dune sand, pale beach sand, green grass, night asphalt),
# so a frame's colours alone tell the biome (readers.read_biome).
PALETTES: dict[str, dict[str, tuple[int, int, int]]] = {
    "desert": {
        "sand": (218, 168, 100),
        "rock": (132, 100, 78),
        "road": (178, 136, 90),
        "water": (44, 96, 128),
        "palm": (70, 128, 46),
        "tent": (82, 58, 44),
        "well": (150, 142, 130),
    },
    "city_night": {
        "road": (40, 42, 56),
        "pavement": (66, 66, 80),
        "building": (34, 36, 60),
        "light": (255, 212, 104),
        "grass": (26, 58, 38),
        "palm": (20, 44, 30),
    },
    "coast": {
        "water": (34, 112, 186),
        "sand": (236, 222, 184),
        "grass": (132, 170, 88),
        "rock": (104, 100, 98),
        "palm": (50, 124, 58),
        "boat": (170, 104, 58),
    },
    "oasis": {
        "grass": (74, 150, 58),
        "water": (28, 92, 96),
        "road": (148, 116, 76),
        "sand": (204, 188, 136),
        "palm": (32, 96, 40),
        "tent": (236, 230, 212),
        "well": (132, 132, 136),
    },
}


@dataclass(frozen=True)
class Landmark:
    kind: str  # palm, tent, well, building, lamp, boat
    x: int  # centre, map pixels
    y: int


@dataclass(frozen=True, eq=False)
class TerrainMap:
    """One generated map: its colours, its classes and its landmarks (arrays are read-only)."""

    biome: str
    seed: int
    rgb: np.ndarray  # (H, W, 3) uint8
    classes: np.ndarray  # (H, W) uint8, indexes into CLASSES
    landmarks: tuple[Landmark, ...]
    padded: np.ndarray  # (H + VIEW_SIZE, W + VIEW_SIZE, 3) uint8: rgb wrapped around, so a view is one slice

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


# --- noise ---------------------------------------------------------------------------------------


def _lerp_weights(n: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of n pixels: its two lattice neighbours (wrapped) and the smoothstep weight of the second."""
    t = (np.arange(n) + 0.5) * cells / n
    i0 = np.floor(t).astype(np.int64)
    f = t - i0
    return i0 % cells, (i0 + 1) % cells, (f * f * (3.0 - 2.0 * f)).astype(np.float32)


def value_noise(rng: np.random.Generator, n: int, cells: tuple[int, ...], gain: float = 0.5) -> np.ndarray:
    """Periodic fractal value noise on an n x n torus, one octave per lattice size, scaled to [0, 1]."""
    field = np.zeros((n, n), np.float32)
    amplitude = 1.0
    for c in cells:
        lattice = rng.random((c, c), dtype=np.float32)
        a, b, w = _lerp_weights(n, c)
        rows = lattice[a] + w[:, None] * (lattice[b] - lattice[a])  # (n, c): along y
        field += amplitude * (rows[:, a] + w[None, :] * (rows[:, b] - rows[:, a]))  # (n, n): along x
        amplitude *= gain
    lo, hi = field.min(), field.max()
    return (field - lo) / max(float(hi - lo), 1e-9)


def _wrapped_line(n: int, rng: np.random.Generator, width_px: float, waves: int, amplitude_px: float) -> np.ndarray:
    """(n, n) mask of a wavy line across the torus along x (periodic: a whole number of waves)."""
    x = np.arange(n)
    y0 = rng.uniform(0, n)
    centre = y0 + amplitude_px * np.sin(2 * np.pi * waves * x / n + rng.uniform(0, 2 * np.pi))  # (n,)
    dy = (np.arange(n)[:, None] - centre[None, :] + n / 2) % n - n / 2  # (n, n) signed, wrapped
    return np.abs(dy) < width_px / 2


# --- sprites (top-down, drawn procedurally; -1 = transparent) -------------------------------------


def _disc_grid(r: float) -> tuple[np.ndarray, np.ndarray]:
    k = int(np.ceil(r))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1].astype(np.float64)
    return yy, xx


def _palm(r: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _disc_grid(r)
    d, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    fronds = np.cos(6 * theta)  # six fronds radiating from the crown
    inside = (d <= r) & ((fronds > -0.2) | (d < 0.4 * r))
    cls = np.where(inside, _C["palm"], -1)
    shade = 0.75 + 0.45 * (1 - d / r) + 0.15 * fronds  # lighter crown, darker tips and gaps
    return cls, shade


def _well(r: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _disc_grid(r)
    d = np.hypot(xx, yy)
    cls = np.where(d <= 0.55 * r, _C["water"], np.where(d <= r, _C["well"], -1))
    shade = np.where(d <= 0.55 * r, 0.55, 1.0 + 0.2 * (xx - yy) / r)  # dark water, stone lit from the top left
    return cls, shade


def _tent(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    yy = np.mgrid[0:h, 0:w][0].astype(np.float64)
    cls = np.full((h, w), _C["tent"])
    shade = np.where(yy < (h - 1) / 2, 1.15, 0.8)  # two slopes of the roof either side of the ridge
    shade[np.abs(yy - (h - 1) / 2) < 0.6] = 1.3
    return cls, shade


def _boat(length: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _disc_grid(length / 2)
    hull = (xx / (length / 2)) ** 2 + (yy / (length / 5)) ** 2 <= 1.0
    cls = np.where(hull, _C["boat"], -1)
    shade = np.where(np.abs(yy) < 0.8, 1.35, 0.9)
    return cls, shade


def _lamp() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _disc_grid(1.5)
    cls = np.where(np.hypot(xx, yy) <= 1.5, _C["light"], -1)
    return cls, np.ones_like(yy)


class _Canvas:
    """The class map and shade map under construction, with wrapped stamping."""

    def __init__(self, n: int, ground: str) -> None:
        self.n = n
        self.classes = np.full((n, n), _C[ground], np.uint8)
        self.shade = np.ones((n, n), np.float64)
        self.landmarks: list[Landmark] = []

    def rows_cols(self, cx: int, cy: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        return (cy - h // 2 + np.arange(h)) % self.n, (cx - w // 2 + np.arange(w)) % self.n

    def stamp(self, kind: str, cx: int, cy: int, sprite: tuple[np.ndarray, np.ndarray], shadow: int = 0) -> None:
        cls, shade = sprite
        h, w = cls.shape
        mask = cls >= 0
        if shadow:  # darken the ground below and to the right: light comes from the top left
            ys, xs = self.rows_cols(cx + shadow, cy + shadow, h, w)
            block = np.ix_(ys, xs)
            self.shade[block] = np.where(mask, self.shade[block] * 0.62, self.shade[block])
        ys, xs = self.rows_cols(cx, cy, h, w)
        block = np.ix_(ys, xs)
        self.classes[block] = np.where(mask, cls, self.classes[block])
        self.shade[block] = np.where(mask, shade, self.shade[block])
        self.landmarks.append(Landmark(kind, int(cx % self.n), int(cy % self.n)))

    def spots(
        self,
        rng: np.random.Generator,
        count: int,
        on: tuple[str, ...],
        near: np.ndarray | None = None,
        spread_px: float = 0.0,
    ) -> list[tuple[int, int]]:
        """Up to `count` centres whose pixel is of a class in `on`; around `near` points when given."""
        allowed = np.isin(self.classes, [_C[c] for c in on])
        tries = 8 * count + 16
        if near is None:
            xy = rng.integers(0, self.n, size=(tries, 2))
        else:
            base = near[rng.integers(0, len(near), size=tries)]
            xy = np.rint(base + rng.normal(0, spread_px, size=(tries, 2))).astype(np.int64) % self.n
        ok = allowed[xy[:, 1], xy[:, 0]]
        return [(int(x), int(y)) for x, y in xy[ok][:count]]


# --- biomes --------------------------------------------------------------------------------------


def _desert(rng: np.random.Generator, n: int) -> _Canvas:
    canvas = _Canvas(n, "sand")
    # 1. dunes: long ripples bent by noise (whole waves across the map, so they wrap)
    bend = value_noise(rng, n, (4, 8))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    ripples = np.sin(2 * np.pi * (3 * xx + 5 * yy) / n + 9.0 * bend)
    canvas.shade = 0.9 + 0.1 * ripples + 0.12 * (value_noise(rng, n, (8, 16, 32)) - 0.5)
    # 2. rock outcrops and a camel track
    canvas.classes[value_noise(rng, n, (8, 16, 32)) > 0.8] = _C["rock"]
    canvas.classes[_wrapped_line(n, rng, 6, 2, 24)] = _C["road"]
    canvas.classes[_wrapped_line(n, rng, 6, 1, 30).T] = _C["road"]
    # 3. palm groves, each with a well, and tents around them
    groves = np.array(canvas.spots(rng, 6, ("sand",)), np.float64)
    for x, y in groves.astype(int):
        canvas.stamp("well", x, y, _well(4.5), shadow=1)
    for x, y in canvas.spots(rng, 36, ("sand",), near=groves, spread_px=22):
        canvas.stamp("palm", x, y, _palm(rng.uniform(5, 7.5)), shadow=3)
    for x, y in canvas.spots(rng, 10, ("sand",), near=groves, spread_px=40):
        canvas.stamp("tent", x, y, _tent(int(rng.integers(11, 16)), int(rng.integers(7, 10))), shadow=2)
    return canvas


def _grid_lines(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    """Road positions around the torus, lo..hi pixels apart (the wrap-around gap too)."""
    while True:
        gaps = rng.integers(lo, hi + 1, size=n // lo + 1)
        ends = np.cumsum(gaps)
        k = int(np.searchsorted(ends, n - lo, side="right"))
        if k >= 2 and n - ends[k - 1] <= hi:
            return np.concatenate([[0], ends[: k - 1]]) + int(rng.integers(0, n))


def _city_night(rng: np.random.Generator, n: int) -> _Canvas:
    canvas = _Canvas(n, "pavement")
    canvas.shade = 0.92 + 0.16 * value_noise(rng, n, (16, 32))
    xs, ys = _grid_lines(rng, n, 64, 104) % n, _grid_lines(rng, n, 64, 104) % n
    road_w, walk_w = 10, 4
    # 1. blocks between the roads: a park, or buildings with lit windows
    x_edges, y_edges = np.sort(xs), np.sort(ys)
    for i, x0 in enumerate(x_edges):
        x1 = x_edges[i + 1] if i + 1 < len(x_edges) else x_edges[0] + n
        for j, y0 in enumerate(y_edges):
            y1 = y_edges[j + 1] if j + 1 < len(y_edges) else y_edges[0] + n
            bx0, bx1 = int(x0) + road_w // 2 + walk_w, int(x1) - road_w // 2 - walk_w
            by0, by1 = int(y0) + road_w // 2 + walk_w, int(y1) - road_w // 2 - walk_w
            rows, cols = np.arange(by0, by1) % n, np.arange(bx0, bx1) % n
            if rng.random() < 0.15:
                canvas.classes[np.ix_(rows, cols)] = _C["grass"]
                for _ in range(4):
                    cx, cy = int(rng.integers(bx0 + 6, bx1 - 6)), int(rng.integers(by0 + 6, by1 - 6))
                    canvas.stamp("palm", cx, cy, _palm(rng.uniform(4, 6)))
                continue
            # split the block into 1-3 buildings along its longer side
            parts = int(rng.integers(1, 4))
            for p in range(parts):
                if bx1 - bx0 >= by1 - by0:
                    px0 = bx0 + (bx1 - bx0) * p // parts + (2 if p else 0)
                    px1, py0, py1 = bx0 + (bx1 - bx0) * (p + 1) // parts, by0, by1
                else:
                    py0 = by0 + (by1 - by0) * p // parts + (2 if p else 0)
                    py1, px0, px1 = by0 + (by1 - by0) * (p + 1) // parts, bx0, bx1
                block = np.ix_(np.arange(py0, py1) % n, np.arange(px0, px1) % n)
                canvas.classes[block] = _C["building"]
                canvas.shade[block] = rng.uniform(0.75, 1.35)
                # windows: a 2x2 light on a 5-pixel grid, about 40% lit
                wy, wx = np.mgrid[py0 + 2 : py1 - 2 : 5, px0 + 2 : px1 - 2 : 5]
                lit = rng.random(wy.shape) < 0.4
                for oy in (0, 1):
                    for ox in (0, 1):
                        canvas.classes[(wy[lit] + oy) % n, (wx[lit] + ox) % n] = _C["light"]
                canvas.landmarks.append(Landmark("building", int((px0 + px1) // 2 % n), int((py0 + py1) // 2 % n)))
    # 2. roads with dashed centre lines, then street lamps along them with their glow
    yy, xx = np.mgrid[0:n, 0:n]
    on_road = np.zeros((n, n), bool)
    dashes = np.zeros((n, n), bool)
    for x in xs:
        d = (xx - x + n // 2) % n - n // 2
        on_road |= np.abs(d) <= road_w // 2
        dashes |= (d == 0) & (yy % 16 < 8)  # a period that divides the map side: no seam
    for y in ys:
        d = (yy - y + n // 2) % n - n // 2
        on_road |= np.abs(d) <= road_w // 2
        dashes |= (d == 0) & (xx % 16 < 8)
    canvas.classes[on_road] = _C["road"]
    canvas.shade[on_road] = 0.9 + 0.2 * value_noise(rng, n, (32, 64))[on_road]
    canvas.shade[dashes] = 3.2
    for x in xs:
        for y in range(0, n, 32):
            lamp_x, lamp_y = int(x) + road_w // 2 + 2, y + int(rng.integers(0, 8))
            _glow(canvas, lamp_x, lamp_y)
            canvas.stamp("lamp", lamp_x, lamp_y, _lamp())
    return canvas


def _glow(canvas: _Canvas, cx: int, cy: int, r: float = 7.0) -> None:
    yy, xx = _disc_grid(r)
    boost = 1.0 + 0.9 * np.clip(1 - np.hypot(xx, yy) / r, 0, 1) ** 2
    ys, xs = canvas.rows_cols(cx, cy, *boost.shape)
    canvas.shade[np.ix_(ys, xs)] *= boost


def _coast(rng: np.random.Generator, n: int) -> _Canvas:
    canvas = _Canvas(n, "sand")
    # 1. height: noise plus one slow wave across the map, so sea and land each form a band that wraps
    xx = np.arange(n)[None, :]
    wave = 0.5 + 0.5 * np.cos(2 * np.pi * xx / n + rng.uniform(0, 2 * np.pi))  # (1, n)
    height = 0.55 * value_noise(rng, n, (4, 8, 16, 32)) + 0.45 * wave
    sea, wet, dune = np.quantile(height, [0.38, 0.43, 0.78])
    canvas.classes[height < sea] = _C["water"]
    canvas.classes[height > dune] = _C["grass"]
    detail = value_noise(rng, n, (32, 64, 128))
    canvas.shade = 0.92 + 0.16 * detail
    water = height < sea
    canvas.shade[water] = (0.62 + 0.5 * height / sea + 0.1 * detail)[water]  # deep water darker, shallows lighter
    canvas.shade[(height >= sea) & (height < wet)] *= 0.84  # wet sand along the waterline
    foam = np.abs(height - sea * 0.985) < 0.004
    canvas.classes[foam] = _C["sand"]
    canvas.shade[foam] = 1.06
    canvas.classes[(value_noise(rng, n, (16, 32, 64)) > 0.86) & ~water] = _C["rock"]
    # 2. palms behind the beach, boats on the sea
    for x, y in canvas.spots(rng, 24, ("grass",)):
        canvas.stamp("palm", x, y, _palm(rng.uniform(5, 7)), shadow=3)
    for x, y in canvas.spots(rng, 10, ("water",)):
        canvas.stamp("boat", x, y, _boat(int(rng.integers(9, 14))), shadow=2)
    return canvas


def _oasis(rng: np.random.Generator, n: int) -> _Canvas:
    canvas = _Canvas(n, "grass")
    height = value_noise(rng, n, (4, 8, 16, 32))
    canvas.shade = 0.82 + 0.36 * value_noise(rng, n, (16, 32, 64))
    pond, rim = np.quantile(height, [0.13, 0.17])
    canvas.classes[height < rim] = _C["sand"]
    canvas.classes[height < pond] = _C["water"]
    water = height < pond
    canvas.shade[water] = (0.7 + 0.5 * height / pond)[water]
    canvas.classes[_wrapped_line(n, rng, 5, 2, 40)] = _C["road"]
    canvas.classes[_wrapped_line(n, rng, 5, 3, 20).T] = _C["road"]
    # dense palms around the ponds, a few wells and white tents
    ponds = np.argwhere(water)[:, ::-1].astype(np.float64)  # (N, 2) x, y
    for x, y in canvas.spots(rng, 70, ("grass",), near=ponds, spread_px=14):
        canvas.stamp("palm", x, y, _palm(rng.uniform(5, 7.5)), shadow=3)
    for x, y in canvas.spots(rng, 4, ("grass",)):
        canvas.stamp("well", x, y, _well(4.5), shadow=1)
    for x, y in canvas.spots(rng, 6, ("grass",)):
        canvas.stamp("tent", x, y, _tent(int(rng.integers(10, 14)), int(rng.integers(7, 10))), shadow=2)
    return canvas


_LAYOUTS = {"desert": _desert, "city_night": _city_night, "coast": _coast, "oasis": _oasis}


def make_map(biome: str, seed: int, size: int = MAP_SIZE) -> TerrainMap:
    """Draw the map of `biome` from `seed`: the same arguments always give the same map."""
    if biome not in _LAYOUTS:
        raise ValueError(f"biome must be one of {', '.join(BIOMES)}, got {biome!r}")
    if size < VIEW_SIZE or size % 64:
        raise ValueError(f"size must be a multiple of 64 and at least {VIEW_SIZE}, got {size}")
    # 1. layout: classes and shade (the biome index keeps two biomes with one seed apart)
    rng = np.random.default_rng([seed, BIOMES.index(biome)])
    canvas = _LAYOUTS[biome](rng, size)
    # 2. colour: palette by class, times shade, plus a fixed grain so that no patch is flat
    lut = np.full((len(CLASSES), 3), 128.0)
    for name, colour in PALETTES[biome].items():
        lut[_C[name]] = colour
    grain = rng.normal(0.0, 3.0, size=(size, size, 1))
    rgb = np.clip(lut[canvas.classes] * canvas.shade[..., None] + grain, 0, 255).astype(np.uint8)  # (H, W, 3)
    padded = np.pad(rgb, ((0, VIEW_SIZE), (0, VIEW_SIZE), (0, 0)), mode="wrap")
    for array in (rgb, canvas.classes, padded):
        array.flags.writeable = False
    return TerrainMap(biome, seed, rgb, canvas.classes, tuple(canvas.landmarks), padded)


# --- the player and the view ---------------------------------------------------------------------

PLAYER_RADIUS_PX = 3.5
PLAYER_RGB = (236, 64, 48)  # red-orange with a white heart and a dark rim: no biome uses these colours


def _player_sprite() -> tuple[np.ndarray, np.ndarray]:
    """(k, k) bool mask and (k, k, 3) colours of the player, centred on its middle pixel."""
    yy, xx = _disc_grid(PLAYER_RADIUS_PX)
    d = np.hypot(xx, yy)
    mask = d <= PLAYER_RADIUS_PX
    rgb = np.empty((*d.shape, 3), np.uint8)
    rgb[:] = PLAYER_RGB
    rgb[d > PLAYER_RADIUS_PX - 1.0] = (30, 20, 20)
    rgb[d <= 1.0] = (250, 245, 235)
    return mask, rgb


_PLAYER_MASK, _PLAYER_RGB = _player_sprite()


def player_box(size: int = VIEW_SIZE) -> tuple[slice, slice]:
    """Rows and columns of a view that the player's sprite covers (its bounding square)."""
    k = _PLAYER_MASK.shape[0]
    lo = size // 2 - k // 2
    return slice(lo, lo + k), slice(lo, lo + k)


def player_mask(size: int = VIEW_SIZE) -> np.ndarray:
    """(size, size) bool: the view pixels the player's sprite covers."""
    mask = np.zeros((size, size), bool)
    mask[player_box(size)] = _PLAYER_MASK
    return mask


def draw_player(frame: np.ndarray) -> np.ndarray:
    """`frame` ((size, size, 3) uint8, written in place and returned) with the player at its centre: the model
    draws the ground and the player is drawn on it, as the camera that follows it sees it (always there)."""
    rows, cols = player_box(frame.shape[0])
    frame[rows, cols][_PLAYER_MASK] = _PLAYER_RGB[_PLAYER_MASK]  # a basic slice is a view: this writes into frame
    return frame


def ground(terrain: TerrainMap, x: int, y: int, size: int = VIEW_SIZE) -> np.ndarray:
    """The (size, size, 3) uint8 map around the player at (x, y), without the player."""
    x0, y0 = (int(x) - size // 2) % terrain.width, (int(y) - size // 2) % terrain.height
    return terrain.padded[y0 : y0 + size, x0 : x0 + size].copy()


def view(terrain: TerrainMap, x: int, y: int, size: int = VIEW_SIZE) -> np.ndarray:
    """The (size, size, 3) uint8 view centred on the player at map pixel (x, y), player drawn on top."""
    if not 16 <= size <= VIEW_SIZE:  # at least the player and some ground; at most the wrapped margin
        raise ValueError(f"size must be in 16..{VIEW_SIZE}, got {size}")
    return draw_player(ground(terrain, x, y, size))  # one slice of the wrapped copy, the player on top


def step(terrain: TerrainMap, x: int, y: int, action: str) -> tuple[int, int]:
    """The player's position after one action (wrapped onto the torus)."""
    check_actions([action])
    dx, dy = MOVES[action]
    return (x + dx) % terrain.width, (y + dy) % terrain.height


def rollout(
    terrain: TerrainMap, start_xy: tuple[int, int], actions: list[str] | tuple[str, ...], size: int = VIEW_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Walk `actions` from `start_xy`: frames (T, size, size, 3) uint8 and positions (T, 2) int (x, y), with
    T = len(actions) + 1: frames[0] is the start view and frames[t + 1] the view after actions[t]."""
    # 1. positions: validate every action first, then a cumulative sum of the moves
    check_actions(actions)
    moves = np.array([(0, 0)] + [MOVES[a] for a in actions], np.int64)  # (T, 2)
    start = np.array([start_xy[0] % terrain.width, start_xy[1] % terrain.height], np.int64)
    positions = (start + np.cumsum(moves, axis=0)) % np.array([terrain.width, terrain.height])
    # 2. frames: one view per position
    frames = np.stack([view(terrain, int(px), int(py), size) for px, py in positions])
    return frames, positions

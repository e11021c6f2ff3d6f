"""A test double of an interactive world model: the real procedural terrain, drawn without a model.

The serving layer (sessions in `noor serve`, the studio's Play page) drives a world only through
`noor.engine.interactive` (`Interactive.start -> World`, `World.step`). This double implements that contract
by walking the real terrain of `noor.engine.world_tiny.terrain` (the biome picked from the prompt by
`captions.biome_of`, "desert" for any other text), so protocol tests see real, scrolling pictures (moving
right scrolls the scene left) in microseconds a frame, with no weights. It is never shipped.

Use it in a test process with `register()`, or start a `noor serve` that knows it with
`python -m tests.world_double serve --port N ...` (the arguments after the module are `noor`'s).
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from noor.engine import registry
from noor.engine.interactive import Interactive, WorldSpec
from noor.engine.task import TaskError
from noor.engine.world_tiny import terrain
from noor.engine.world_tiny.actions import check_actions
from noor.engine.world_tiny.captions import biome_of

MODEL_ID = "terrain-double"
DEFAULT_BIOME = "desert"


class TerrainWorld:
    """One open world of the double (`World`): a position on a terrain map, a view around it."""

    def __init__(self, tmap: terrain.TerrainMap, fail_at_step: int | None = None, step_delay_s: float = 0.0):
        self.map = tmap
        self.x, self.y = tmap.width // 2, tmap.height // 2
        self._steps = 0
        self._frame = terrain.view(tmap, self.x, self.y)
        self._fail_at_step = fail_at_step
        self._step_delay = threading.Event()  # never set: waiting on it is an interruptible pause
        self._step_delay_s = step_delay_s
        self.closed = False
        self.actions: list[str] = []  # every action applied, in order (tests read it)

    @property
    def frame(self) -> np.ndarray:
        return self._frame

    @property
    def steps(self) -> int:
        return self._steps

    def step(self, action: str) -> np.ndarray:
        check_actions([action])
        if self._fail_at_step is not None and self._steps + 1 >= self._fail_at_step:
            raise RuntimeError(f"terrain-double: asked to fail at step {self._fail_at_step}")
        if self._step_delay_s:
            self._step_delay.wait(self._step_delay_s)  # a slow model
        self.x, self.y = terrain.step(self.map, self.x, self.y, action)
        self._frame = terrain.view(self.map, self.x, self.y)
        self._steps += 1
        self.actions.append(action)
        return self._frame

    def close(self) -> None:
        self.closed = True


class TerrainDouble:
    """Opens `TerrainWorld`s (`Interactive`). `worlds` lists every world it opened (tests inspect them)."""

    def __init__(self, fail_at_step: int | None = None, step_delay_s: float = 0.0):
        self.fail_at_step, self.step_delay_s = fail_at_step, step_delay_s
        self.worlds: list[TerrainWorld] = []

    def start(self, prompt: str, seed: int = 0, start_image: np.ndarray | None = None) -> TerrainWorld:
        if not prompt.strip() and start_image is None:
            raise TaskError("prompt", prompt, "must not be empty (or give a start image)")
        if seed < 0:
            raise TaskError("seed", seed, "must be 0 or more")
        if start_image is None:
            tmap = terrain.make_map(biome_of(prompt) or DEFAULT_BIOME, seed)
        else:
            tmap = _image_map(start_image, seed)
        world = TerrainWorld(tmap, self.fail_at_step, self.step_delay_s)
        self.worlds.append(world)
        return world


def _image_map(image: np.ndarray, seed: int) -> terrain.TerrainMap:
    """Image-to-world for the double: the start image (nearest-neighbour to the view's size) tiled into a map."""
    if image.ndim != 3 or image.shape[2] < 3 or min(image.shape[:2]) < 16:
        raise TaskError("start_image", tuple(image.shape), "must be an RGB image of at least 16x16 pixels")
    n = terrain.VIEW_SIZE
    rows = np.arange(n) * image.shape[0] // n
    cols = np.arange(n) * image.shape[1] // n
    tile = np.ascontiguousarray(image[rows][:, cols, :3]).astype(np.uint8)  # (n, n, 3)
    reps = terrain.MAP_SIZE // n
    rgb = np.tile(tile, (reps, reps, 1))
    padded = np.pad(rgb, ((0, n), (0, n), (0, 0)), mode="wrap")
    classes = np.zeros(rgb.shape[:2], np.uint8)
    return terrain.TerrainMap("image", seed, rgb, classes, (), padded)


def spec(double: Interactive | None = None, **fields: object) -> WorldSpec:
    """The double's `WorldSpec`; `load` returns `double` (one shared instance) or a fresh `TerrainDouble`."""

    def load(threads: int | None = None, weights: object = None) -> Interactive:
        return double if double is not None else TerrainDouble()

    values: dict[str, object] = {
        "id": MODEL_ID,
        "description": "terrain-double: the procedural terrain without a model (tests only)",
        "load": load,
        "source": "tests",
    }
    values.update(fields)
    return WorldSpec(**values)  # type: ignore[arg-type]


def register(double: Interactive | None = None, **fields: object) -> WorldSpec:
    """Register the double under "terrain-double" in this process (fields override the spec's: max_fps...)."""
    world_spec = spec(double, **fields)
    registry.register_world(world_spec)
    return world_spec


def unregister() -> None:
    registry._WORLDS.pop(MODEL_ID, None)


if __name__ == "__main__":  # python -m tests.world_double serve --port N: a `noor serve` that knows the double
    from noor import cli

    register()
    sys.argv = ["noor", *sys.argv[1:]]
    cli.main()

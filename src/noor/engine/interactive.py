"""The contract between Noor and an interactive world model: a stream, not a batch.

A generating backend turns tasks into finished media (`noor.engine.backend`). An interactive one opens a
world from a prompt (or a start image) and then draws one frame per action, as fast as it can, for as long
as the player plays. Sessions in `noor serve`, `noor world run` and the eval all drive a world through this
protocol only, so a large open world model on a GPU can replace the built-in one without touching them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from noor.engine.task import TaskError
from noor.engine.world_tiny.actions import ACTIONS


class World(Protocol):
    """One open world: its first frame is drawn when it opens; each `step` draws the next."""

    @property
    def frame(self) -> np.ndarray:
        """The latest frame, (H, W, 3) uint8 (the opening frame before any step)."""
        ...

    @property
    def steps(self) -> int:
        """Frames drawn after the opening one."""
        ...

    def step(self, action: str) -> np.ndarray:
        """Apply `action` (one of the model's `actions`) and return the frame it leads to, (H, W, 3) uint8."""
        ...

    def close(self) -> None:
        """Free what the world holds (caches, memory)."""
        ...


class Interactive(Protocol):
    """Loads a world model once; opens any number of worlds, one per session."""

    def start(self, prompt: str, seed: int = 0, start_image: np.ndarray | None = None) -> World:
        """A world from a caption (text-to-world) or from a start image (image-to-world, (H, W, 3) uint8 of
        any size: the model fits it), drawn with `seed`."""
        ...


@dataclass(frozen=True)
class WorldSpec:
    """An interactive model as the registry knows it (what `noor world`, sessions and `noor perf` read)."""

    id: str
    description: str
    load: Callable[..., Interactive] = field(repr=False)  # load(threads=N, weights=DIR|None)
    actions: tuple[str, ...] = ACTIONS
    width: int = 64
    height: int = 64
    default_fps: int = 15  # the pace a session ticks at unless it asks for another
    max_fps: int = 30
    perf_id: str | None = None  # its entry in noor perf's model catalog
    source: str = "built in"


class UnknownWorldModel(TaskError):
    def __init__(self, model_id: str, known: list[str]):
        super().__init__("model", model_id, f"unknown world model; available: {', '.join(known)}")

"""What a backend is asked to make (`Task`) and what it gives back (`Media`), as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Dream Machine's names for frame shapes (see docs/reference/luma-api.md).
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
RESOLUTIONS = {"540p": 540, "720p": 720, "1080p": 1080, "4k": 2160}


class TaskError(ValueError):
    """A request a model cannot take; names the field and the bad value."""

    def __init__(self, field_name: str, value: object, message: str):
        self.field = field_name
        self.value = value
        super().__init__(f"{field_name}: {message}, got {value!r}")


@dataclass(frozen=True)
class Task:
    prompt: str
    negative_prompt: str = ""
    width: int = 64
    height: int = 64
    num_frames: int = 16
    fps: int = 8
    steps: int | None = None  # None: the model's default
    guidance: float | None = None
    seed: int = 0
    start_frame: np.ndarray | None = field(default=None, repr=False)  # (H, W, 3) uint8
    end_frame: np.ndarray | None = field(default=None, repr=False)
    loop: bool = False
    source: Media | None = field(default=None, repr=False)  # a finished clip to work from (upscale)

    @property
    def is_image(self) -> bool:
        return self.num_frames == 1


@dataclass
class Media:
    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: int
    notes: list[str] = field(default_factory=list)  # what the backend changed, e.g. "resized from 64x64"

    @property
    def is_image(self) -> bool:
        return self.frames.shape[0] == 1

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])


def size_from_aspect(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    """(width, height) for an aspect ratio and a resolution named by its short side: 16:9 at 720p -> 1280x720."""
    if aspect_ratio not in ASPECT_RATIOS:
        raise TaskError("aspect_ratio", aspect_ratio, f"must be one of {', '.join(ASPECT_RATIOS)}")
    if resolution not in RESOLUTIONS:
        raise TaskError("resolution", resolution, f"must be one of {', '.join(RESOLUTIONS)}")
    return fit_aspect(aspect_ratio, RESOLUTIONS[resolution])


def fit_aspect(aspect_ratio: str, short: int) -> tuple[int, int]:
    """(width, height), even sides, for an aspect ratio "W:H" whose short side is `short`: 16:9 at 360 -> 640x360."""
    a, b = (int(x) for x in aspect_ratio.split(":"))
    long = 2 * round(short * max(a, b) / min(a, b) / 2)
    return (long, short) if a >= b else (short, long)

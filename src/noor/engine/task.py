"""What a backend is asked to make (`Task`) and what it gives back (`Media`), as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Dream Machine's names for frame shapes (see docs/reference/luma-api.md).
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
RESOLUTIONS = {"540p": 540, "720p": 720, "1080p": 1080, "4k": 2160}

# An edit (SDEdit, Meng et al. 2022) noises its source to a level and denoises it under the new prompt from there:
# the level is the flow-matching noise sigma in [0, 1] the source is taken to (x_t = (1 - sigma) x_src + sigma
# noise), so 0 returns the source and 1 ignores it. Dream Machine's Modify Video names nine modes: adhere keeps
# the most of the source, reimagine the least. The numbers are noor-tiny's, measured 2026-12-05 on 8 held-out
# prompts per level (docs/noor-tiny.md "Edit and reframe"): below 0.75 it barely recolours (a colour edit took in
# 2 of 8 at 0.5, 3 of 8 at 0.7), from 0.8 it does (6 of 8; 8 of 8 at 0.9); the prompt's motion replaces the
# source's from about 0.9 (4 of 8 at 0.8, 7 of 8 at 0.9). A model runs only its schedule's steps at or below the
# level, so levels between two of its steps act alike: these are noor-tiny's 16-step levels from 0.75 up (0.75,
# 0.79, 0.83, 0.87, 0.90, 0.93, 0.95, 0.98, 1), one a mode.
EDIT_LEVELS: dict[str, float] = {
    "adhere_1": 0.75,
    "adhere_2": 0.8,
    "adhere_3": 0.84,
    "flex_1": 0.87,
    "flex_2": 0.9,
    "flex_3": 0.93,
    "reimagine_1": 0.96,
    "reimagine_2": 0.98,
    "reimagine_3": 1.0,
}


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
    # a finished clip to work from: resized alone (upscale), redrawn under the prompt (`edit_mode`), or placed on
    # a new canvas of width x height and the rest drawn around it (`reframe`)
    source: Media | None = field(default=None, repr=False)
    edit_mode: str | None = None  # a key of EDIT_LEVELS: how far an edit may stray from its source
    reframe: bool = False
    # reframe: (x, y), the source's top-left corner in pixels of the width x height canvas; None: centred. A
    # source larger than the canvas is first scaled down to fit it (`reframe_box`)
    source_position: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.edit_mode is not None and self.edit_mode not in EDIT_LEVELS:
            raise TaskError("edit_mode", self.edit_mode, f"must be one of {', '.join(EDIT_LEVELS)}")
        if (self.edit_mode is not None or self.reframe) and self.source is None:
            raise TaskError("source", None, "an edit or a reframe needs a source clip")
        if self.edit_mode is not None and self.reframe:
            raise TaskError("reframe", True, "a task is an edit or a reframe, not both")
        if (self.edit_mode is not None or self.reframe) and (
            self.start_frame is not None or self.end_frame is not None
        ):
            raise TaskError(
                "start_frame" if self.start_frame is not None else "end_frame",
                True,
                "an edit or a reframe takes its frames from the source, not from keyframes",
            )
        if (self.edit_mode is not None or self.reframe) and self.loop:
            raise TaskError("loop", True, "an edit or a reframe keeps its source's timing and cannot loop")
        if self.source_position is not None and not self.reframe:
            raise TaskError("source_position", self.source_position, "only a reframe places its source")
        if self.reframe:
            self.reframe_box()  # refuses a position that puts the source outside the canvas

    @property
    def is_image(self) -> bool:
        return self.num_frames == 1

    @property
    def operation(self) -> str:
        """ "generate" (from the prompt and keyframes), or what is done to `source`: "edit", "reframe", "upscale"."""
        if self.source is None:
            return "generate"
        return "edit" if self.edit_mode is not None else "reframe" if self.reframe else "upscale"

    @property
    def edit_level(self) -> float:
        """The noise level (sigma) an edit takes its source to: EDIT_LEVELS[edit_mode]."""
        if self.edit_mode is None:
            raise TaskError("edit_mode", None, "this task is not an edit")
        return EDIT_LEVELS[self.edit_mode]

    def reframe_box(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the source on a reframe's canvas, in the canvas's pixels. The source keeps its
        size, or is scaled down (aspect kept) to the largest that fits the canvas; centred unless
        `source_position` says where its top-left corner goes. TaskError when that puts it outside the canvas."""
        if self.source is None:
            raise TaskError("source", None, "a reframe needs a source clip")
        w, h = self.source.width, self.source.height
        scale = min(1.0, self.width / w, self.height / h)
        w, h = min(self.width, round(w * scale)), min(self.height, round(h * scale))
        if self.source_position is None:
            return (self.width - w) // 2, (self.height - h) // 2, w, h
        position = self.source_position
        if len(position) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in position):
            raise TaskError("source_position", position, "must be two integers (x, y) in pixels")
        x, y = position
        if not (0 <= x <= self.width - w and 0 <= y <= self.height - h):
            raise TaskError(
                "source_position",
                position,
                f"puts the {w}x{h} source outside the {self.width}x{self.height} canvas "
                f"(x must be 0..{self.width - w}, y 0..{self.height - h})",
            )
        return x, y, w, h


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

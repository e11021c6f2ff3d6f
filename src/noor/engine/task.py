"""What a backend is asked to make (`Task`) and what it gives back (`Media`), as plain data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Dream Machine's names for frame shapes (see docs/reference/luma-api.md).
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
RESOLUTIONS = {"540p": 540, "720p": 720, "1080p": 1080, "4k": 2160}

# An edit starts from a level: the flow-matching noise sigma in [0, 1] its source is taken to (SDEdit, Meng et al.
# 2022: x_t = (1 - sigma) x_src + sigma noise, denoised under the new prompt), or from which FlowEdit moves it
# (noor.engine.flowedit: adhere and flex edits whose source's prompt is known), so 0 returns the source and 1
# (SDEdit) ignores it. Dream Machine's Modify Video names nine modes: adhere keeps
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


# Keyframes at indexes: at most this many frames pinned in one clip (Luma's Agents API allows 64).
MAX_KEYFRAMES = 64
# The Agents API counts keyframe indexes on a 24 fps grid of the clip's duration: 0 the opening frame, seconds x 24
# the closing one (5 s: 0..120). `frames_from_grid` maps them onto a task's num_frames.
KEYFRAME_GRID_FPS = 24


@dataclass(frozen=True)
class Concept:
    """A trained concept a task draws with: an adapter folder (`noor train lora`, registered by `noor concepts add`)
    that the backend loads for this task only and unloads afterwards. `path` holds the diffusers LoRA file
    (pytorch_lora_weights.safetensors) and lora_config.json; for noor-tiny also the new words' embeddings
    (noor.engine.tiny.concept)."""

    key: str
    path: str


class TaskError(ValueError):
    """A request a model cannot take; names the field and the bad value."""

    def __init__(self, field_name: str, value: object, message: str):
        self.field = field_name
        self.value = value
        # "got None" tells nothing about a thing that is missing (no source, no audio model): the message says it
        super().__init__(f"{field_name}: {message}" + ("" if value is None else f", got {value!r}"))


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
    # an edit's source's own prompt, when known (the source is a generation): a model that can (noor-tiny: FlowEdit)
    # then draws only what the new prompt changes, and keeps what the two share
    source_prompt: str | None = None
    reframe: bool = False
    # reframe: (x, y), the source's top-left corner in pixels of the width x height canvas; None: centred. A
    # source larger than the canvas is first scaled down to fit it (`reframe_box`)
    source_position: tuple[int, int] | None = None
    # frames pinned at indexes of the clip, (index, (H, W, 3) uint8) pairs, at most MAX_KEYFRAMES; index 0 and the
    # last index are where start_frame and end_frame pin theirs (one frame is pinned once: `pinned`). The indexes
    # count the task's num_frames (the Agents API's 24 fps grid: `frames_from_grid`)
    keyframes: tuple[tuple[int, np.ndarray], ...] = field(default=(), repr=False)
    # trained concepts (adapters) loaded for this task only; a backend never draws tasks with different concepts in
    # one call, and its weights after the task are its weights before it
    concepts: tuple[Concept, ...] = ()

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
        if self.source_prompt is not None and self.edit_mode is None:
            raise TaskError("source_prompt", self.source_prompt, "only an edit has a source prompt")
        if self.source_position is not None and not self.reframe:
            raise TaskError("source_position", self.source_position, "only a reframe places its source")
        if self.reframe:
            self.reframe_box()  # refuses a position that puts the source outside the canvas
        if self.keyframes:
            self._check_keyframes()
        keys = [c.key for c in self.concepts]
        if len(set(keys)) != len(keys):
            raise TaskError("concepts", keys, "a concept may be given once")

    def _check_keyframes(self) -> None:
        """TaskError (field "keyframes") for pins this task cannot hold; see `keyframes`."""
        pairs = self.keyframes
        if not isinstance(pairs, Sequence) or not all(isinstance(p, Sequence) and len(p) == 2 for p in pairs):
            raise TaskError("keyframes", type(pairs).__name__, "must be (index, frame) pairs")
        if len(pairs) > MAX_KEYFRAMES:
            raise TaskError("keyframes", f"<{len(pairs)} keyframes>", f"at most {MAX_KEYFRAMES} frames may be pinned")
        if self.source is not None:
            raise TaskError(
                "keyframes", f"<{len(pairs)} keyframes>", f"an {self.operation} takes its frames from the source"
            )
        if self.is_image:
            raise TaskError("keyframes", f"<{len(pairs)} keyframes>", "an image has no frames to pin (num_frames 1)")
        indexes = [index for index, _ in pairs]
        last = self.num_frames - 1
        for index, frame in pairs:
            if not isinstance(index, int | np.integer) or isinstance(index, bool) or not 0 <= index <= last:
                raise TaskError("keyframes", index, f"an index must be an integer within 0..{last}")
            if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3):
                raise TaskError("keyframes", index, "the frame at this index must be an (H, W, 3) uint8 array")
            if frame.shape[2] != 3 or 0 in frame.shape:
                raise TaskError("keyframes", index, f"the frame at this index is {frame.shape}, not (H, W, 3)")
        repeated = sorted({int(i) for i in indexes if indexes.count(i) > 1})
        if repeated:
            raise TaskError("keyframes", repeated, "the indexes must be unique (one frame pinned once)")
        taken = {0: "start_frame" if self.start_frame is not None else None}
        taken[last] = "end_frame" if self.end_frame is not None else "loop" if self.loop else None
        for index in indexes:
            if taken.get(int(index)) == "loop":
                raise TaskError("keyframes", index, "a loop ends on its first frame, so its last cannot be pinned")
            if taken.get(int(index)):
                raise TaskError("keyframes", index, f"this index is pinned by {taken[int(index)]} already")

    @property
    def pinned(self) -> dict[int, np.ndarray]:
        """Every frame the task pins, by index in order: its start frame at 0, its end frame at the last index, and
        its keyframes (a loop's end, which repeats its start, is not listed)."""
        pins = {int(index): frame for index, frame in self.keyframes}
        if self.start_frame is not None:
            pins[0] = self.start_frame
        if self.end_frame is not None:
            pins[self.num_frames - 1] = self.end_frame
        return dict(sorted(pins.items()))

    def drawn_pins(self, drawn: int) -> dict[int, int]:
        """Each pinned frame's index (`pinned`) -> the frame of a model's `drawn` frames the output shows there,
        its clip retimed to num_frames by nearest frame (`nearest_frames`): where that model pins it. TaskError
        (field "keyframes") when two pins land on one drawn frame."""
        shown = nearest_frames(drawn, self.num_frames)
        out: dict[int, int] = {}
        for index in self.pinned:
            at = int(shown[index])
            if self.loop and at == drawn - 1:
                raise TaskError(
                    "keyframes",
                    index,
                    f"frame {index} of the {self.num_frames}-frame clip falls on the last of the {drawn} frames the "
                    "model draws, which a loop ends on its first frame",
                )
            earlier = next((i for i, d in out.items() if d == at), None)
            if earlier is not None:
                raise TaskError(
                    "keyframes",
                    [earlier, index],
                    f"frames {earlier} and {index} of the {self.num_frames}-frame clip both fall on frame {at} of the "
                    f"{drawn} the model draws; pin frames at least {-(-(self.num_frames - 1) // (drawn - 1))} apart",
                )
            out[index] = at
        return out

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


def frames_from_grid(
    indexes: Sequence[int], seconds: float, num_frames: int, grid_fps: int = KEYFRAME_GRID_FPS
) -> list[int]:
    """Keyframe indexes on a `grid_fps` grid of a `seconds` clip (the Agents API's: 0 the opening frame,
    round(seconds x grid_fps) the closing one) -> indexes of the task's num_frames, in the same order. The two
    ends map onto the ends and the rest in proportion, to the nearest frame (halves up): grid index i is frame
    round(i x (num_frames - 1) / last). TaskError (field "keyframe_indexes") for an index outside the grid, or two
    that land on one frame: a clip of num_frames frames has fewer places than the grid, and a frame is pinned once.
    Indexes at least ceil(last / (num_frames - 1)) apart never land on one frame."""
    last = round(seconds * grid_fps)
    if last < 1 or num_frames < 2:
        raise TaskError("keyframe_indexes", list(indexes), "keyframes at indexes need a video of at least two frames")
    frames: dict[int, int] = {}
    out = []
    for index in indexes:
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index <= last:
            raise TaskError("keyframe_indexes", index, f"must be an integer within 0..{last} for {seconds:g} s")
        frame = (2 * int(index) * (num_frames - 1) + last) // (2 * last)  # round half up, in integers
        if frame in frames:
            raise TaskError(
                "keyframe_indexes",
                [frames[frame], int(index)],
                f"both land on frame {frame} of the {num_frames}-frame clip ({grid_fps} fps grid 0..{last}); keep "
                f"keyframes at least {-(-last // (num_frames - 1))} grid frames apart",
            )
        frames[frame] = int(index)
        out.append(frame)
    return out


def nearest_frames(drawn: int, num_frames: int) -> np.ndarray:
    """Which of `drawn` frames each of `num_frames` output frames shows when a clip is retimed to the nearest frame,
    its first and last kept: (num_frames,) ints in 0..drawn-1."""
    return np.rint(np.linspace(0, drawn - 1, num_frames)).astype(int)


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

"""Keyframes at indexes on the open families (#29), through the conditioning diffusers has for them.

A task pins frames at indexes of its num_frames (`Task.pinned`: its keyframes, with its start and end frames). The
model draws `drawn` frames (its `t*k + 1`, `DiffusersSpec.fit`) and the output is retimed to num_frames by nearest
frame, so a pin at index i is drawn at frame `Task.drawn_pins(drawn)[i]` of the model's. Its VAE encodes frame 0
alone and then `t` frames a latent frame (frames 1..t the first, t+1..2t the second, ...; `t` is 8 for LTX-Video, 4
for Wan): two pins in one latent frame would be encoded into one latent, so they are refused (field "keyframes") with
the spacing that never does so (`pin_frames`).

How each family takes its pins:
- LTX-Video (`LTXConditionPipeline`): one `LTXVideoCondition(image, frame_index=d)` a pin. At frame 0 the image's
  latents replace the first latent frame, held at noise level 0; at any other frame d the image is encoded alone
  and joins the sequence as extra tokens at time position d (in pixel frames, so a pin between two latent frames'
  first frames sits where it is, not rounded), held at level 0 and dropped before decoding: LTX-Video's own
  keyframe conditioning (0.9.5 and later were trained on it), which the drawn latent frame ceil(d / t) follows.
- Wan 2.1 VACE (`WanVACEPipeline`): the context video is grey (VACE's "unknown", 128) with each pinned image at its
  frame, and the mask black (keep) on those frames and white (draw) elsewhere: VACE's first-last-frame and
  any-frame mode. The VAE encodes the pinned frames into their latent frames of the context.

A family declares "keyframes" in its capabilities and names the pipeline under "keyframes" in `Family.pipelines`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from noor.engine.resample import resize
from noor.engine.task import Task, TaskError, nearest_frames

GREY = 128  # VACE's unknown pixels (its examples' PIL grey; 127.5 in the original code's float arrays)


def latent_frame(frame: int, temporal: int) -> int:
    """The latent frame a VAE that encodes frame 0 alone and then `temporal` frames a latent puts `frame` in."""
    return -(-frame // temporal)


def spacing(num_frames: int, drawn: int, temporal: int) -> int:
    """The least distance between two of a clip's num_frames indexes that always lands them on different latent
    frames of the model's `drawn` frames (retimed by nearest frame)."""
    latents = [latent_frame(int(d), temporal) for d in nearest_frames(drawn, num_frames)]
    return next(
        s for s in range(1, num_frames) if all(latents[i + s] > latents[i] for i in range(num_frames - s))
    )  # latents[-1] > latents[0] for any video, so s = num_frames - 1 always qualifies


def pin_frames(task: Task, drawn: int, temporal: int) -> dict[int, int]:
    """Each pinned index of the task -> the frame of the model's `drawn` frames it is pinned at (`Task.drawn_pins`).
    TaskError (field "keyframes") for two pins on one drawn frame or in one latent frame, naming the spacing."""
    at = task.drawn_pins(drawn)
    taken: dict[int, int] = {}  # latent frame -> the index pinned there
    for index, frame in at.items():
        latent = latent_frame(frame, temporal)
        if task.loop and latent == latent_frame(drawn - 1, temporal):
            raise TaskError(
                "keyframes",
                index,
                f"frame {index} of the {task.num_frames}-frame clip falls on frame {frame} of the {drawn} the model "
                f"draws, in its last latent frame, which a loop ends on its first frame",
            )
        if latent in taken:
            earlier = taken[latent]
            first, last = max(1, (latent - 1) * temporal + 1), latent * temporal
            raise TaskError(
                "keyframes",
                [earlier, index],
                f"frames {earlier} and {index} of the {task.num_frames}-frame clip fall on frames {at[earlier]} and "
                f"{frame} of the {drawn} the model draws, both in its latent frame {latent} (frames {first}..{last}: "
                f"its VAE encodes {temporal} frames as one); pin frames at least "
                f"{spacing(task.num_frames, drawn, temporal)} apart",
            )
        taken[latent] = index
    return at


def placed(task: Task, drawn: int, temporal: int) -> str:
    """A note: where the model draws each pinned frame, when any moves."""
    moved = {i: d for i, d in pin_frames(task, drawn, temporal).items() if i != d}
    if not moved:
        return ""
    listed = ", ".join(f"frame {i} at {d} (latent frame {latent_frame(d, temporal)})" for i, d in moved.items())
    return f"pinned at the model's {drawn} frames: {listed}"


@dataclass(frozen=True)
class Pins:
    """A task's pinned frames as one family's pipeline takes them: drawn frame -> image (H, W, 3) uint8 at the
    drawn size."""

    task: Task
    drawn: int  # frames the model draws
    frames: dict[int, np.ndarray]
    notes: tuple[str, ...]

    mode = "keyframes"  # the key of the pipeline in `Family.pipelines`

    @classmethod
    def of(cls, task: Task, fitted: Task, temporal: int) -> Pins | None:
        """The pins of a task with keyframes (None without), drawn at `fitted`'s size and length."""
        if not task.keyframes:
            return None
        at = pin_frames(task, fitted.num_frames, temporal)
        frames, notes = {}, []
        for index, image in task.pinned.items():
            if image.shape[:2] != (fitted.height, fitted.width):
                frames[at[index]] = resize(image[None], fitted.width, fitted.height)[0]
                notes.append(f"keyframe {index}: {image.shape[1]}x{image.shape[0]} resized to the drawn size")
            else:
                frames[at[index]] = image
        if task.loop:  # a loop ends on its first frame: pinned at the last frame too (as `keyframe_kwargs` does)
            frames[fitted.num_frames - 1] = frames[0]
        note = placed(task, fitted.num_frames, temporal)
        return cls(task, fitted.num_frames, frames, (*notes, *([note] if note else [])))

    def kwargs(self, pipe: Any) -> dict[str, Any]:
        """The pipeline's conditioning arguments (they replace a start and end frame's: those are pins too)."""
        if type(pipe).__name__ == "WanVACEPipeline":
            h, w = next(iter(self.frames.values())).shape[:2]
            grey, keep, draw = (
                np.full((h, w, 3), GREY, np.uint8),
                Image.new("L", (w, h), 0),
                Image.new("L", (w, h), 255),
            )
            video = [Image.fromarray(self.frames.get(f, grey)) for f in range(self.drawn)]
            return {"video": video, "mask": [keep if f in self.frames else draw for f in range(self.drawn)]}
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        conditions = [
            LTXVideoCondition(image=Image.fromarray(image), frame_index=f) for f, image in self.frames.items()
        ]
        return {"conditions": conditions}

    def finish(self, frames: np.ndarray, notes: list[str]) -> np.ndarray:
        """The drawn frames (T, H, W, 3) at the task's length, retimed by nearest frame (where `Task.drawn_pins`
        put each pin). Notes where the pins went."""
        notes.extend(self.notes)
        if len(frames) != self.task.num_frames:
            notes.append(f"drawn as {len(frames)} frames; retimed to {self.task.num_frames} by nearest frame")
        return frames[nearest_frames(len(frames), self.task.num_frames)]

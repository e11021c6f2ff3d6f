"""The `tiny` backend: noor-tiny's pipeline behind the engine's Backend protocol."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from noor.engine.backend import Preview, Progress
from noor.engine.canvas import Placed, keep_source, on_canvas, retime
from noor.engine.flowedit import flow_edit
from noor.engine.resample import resize
from noor.engine.task import Media, Task, TaskError

NATIVE_SIZE = 64
NATIVE_FRAMES = 16
DEFAULT_STEPS = 16
DEFAULT_GUIDANCE = 4.0
# A reframe starts from its canvas (the source, its edge pixels repeated outward) noised to this level, the source's
# region re-injected at every step. From pure noise (1.0) noor-tiny drew another background around the source in 4
# of 16 square-to-16:9 reframes of `noor eval tiny --edits` (region 7-12 dB: the VAE decoder's group norms then shift
# the region too); from 0.93 or 0.98 in none of them, alike (2026-12-05). On the larger canvas `canvas` gives a wide
# source on a tall canvas, 0.98 redrew too much around it (16:9 -> 9:16 region 24.5 dB median, 14.1 lowest) and 0.93
# did not (28.1, 21.6; 0.9 alike), with square-to-16:9 unchanged (30.7 dB) (2026-12-06).
REFRAME_LEVEL = 0.93
# An SDEdit edit (reimagine, or a source without a prompt) is guided at every step, not only at noise >= 0.7 as a
# plain clip is: its shape is settled late, from a start that already holds the source's. On 32 held-out reimagine
# edits guidance at every step read shape 88% against 78% (colour 100% / 100%, motion 94% / 91%); guidance 5 within
# the interval, 81% (2026-12-06).
EDIT_GUIDANCE_MIN_SIGMA = 0.0
# A reframe's canvas is at most this long (pixels): its cost grows with its area (see `canvas`)
MAX_REFRAME_SIDE = 256


def centre_square(image: np.ndarray | None) -> np.ndarray | None:
    """The middle square of a keyframe (H, W, 3): the part of a non-square frame noor-tiny draws (see `fit`)."""
    if image is None or image.shape[0] == image.shape[1]:
        return image
    H, W = image.shape[:2]
    side = min(H, W)
    top, left = (H - side) // 2, (W - side) // 2
    return image[top : top + side, left : left + side]


def fit(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Square frames (T, S, S, 3) uint8 into (T, height, width, 3) without distortion: scaled to the short side,
    centred, the rest filled with the clip's background (the median of its border pixels). noor-tiny draws on a
    flat background, so the fill continues it; what it draws stays round, and nothing is invented at the sides."""
    side = min(width, height)
    square = resize(frames, side, side)
    if side == width == height:
        return square
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)  # (T, N, 3)
    background = np.median(border.reshape(-1, 3), axis=0).round().astype(np.uint8)
    out = np.broadcast_to(background, (len(frames), height, width, 3)).copy()
    top, left = (height - side) // 2, (width - side) // 2
    out[:, top : top + side, left : left + side] = square
    return out


def weights_dir() -> Path:
    """The weights that ship inside the package (Hugging Face layout)."""
    return Path(str(resources.files("noor.engine.tiny") / "weights"))


class TinyBackend:
    """Loads NoorTinyPipeline once (CPU, float32, batch-invariant) and serves batches of tasks."""

    def __init__(self, path: str | Path | None = None, threads: int | None = None, keep_source: bool = True):
        import torch
        from diffusers.utils import logging as diffusers_logging

        from noor.engine.tiny.pipeline import NoorTinyPipeline

        diffusers_logging.disable_progress_bar()

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.pipe = NoorTinyPipeline.from_pretrained(str(path or weights_dir()))
        self.pipe.set_progress_bar_config(disable=True)
        # a request's clip is the same bytes whether a worker batches it or runs it alone (noor.engine.tiny.invariance)
        self.pipe.enable_batch_invariance()
        # a reframe's output keeps the source's own pixels in its region (`keep_source`); off: the region as drawn,
        # which noor-tiny draws at 64 pixels on the short side (what `noor eval tiny --edits` reads)
        self.keep_source = keep_source

    def generate(
        self, tasks: Sequence[Task], progress: Progress | None = None, preview: Preview | None = None
    ) -> list[Media]:
        torch = self.torch

        # 1. group tasks that can share one batched call: same steps and guidance, and for work on a source, the
        # same canvas and the same edit level (an edit runs only the schedule's steps below its level)
        def key(i: int) -> tuple[Any, ...]:
            t = tasks[i]
            # (given, scale): none given, the pipeline's own (DEFAULT_GUIDANCE for images, its clip guidance for clips)
            guidance = (t.guidance is not None, t.guidance or 0.0)
            level = t.edit_level if t.operation == "edit" else REFRAME_LEVEL if t.operation == "reframe" else 1.0
            # tasks with other concepts never share a call: a group's adapters are loaded around its call alone
            concepts = tuple(c.path for c in t.concepts)
            sdedit = t.operation == "edit" and not flow_edit(t)  # guided at every step (EDIT_GUIDANCE_MIN_SIGMA)
            return (concepts, t.is_image, t.steps or DEFAULT_STEPS, guidance, level, canvas(t), flow_edit(t), sdedit)

        order = sorted(range(len(tasks)), key=key)
        groups = [(k, list(g)) for k, g in groupby(order, key=key)]
        # one step of a batched call advances all its clips; an edit runs only the steps below its level
        total = sum(k[2] - self.pipe.start_index(k[2], k[4]) for k, _ in groups)
        done = 0
        results: dict[int, Media] = {}
        for (_, is_image, steps, (given, scale), level, (width, height), flow, sdedit), group in groups:
            guidance = scale if given else None
            batch = [tasks[i] for i in group]
            num_frames = 1 if is_image else NATIVE_FRAMES
            sources = [on_canvas(t, num_frames, width, height) for t in batch]

            def on_step(
                pipe: Any, i: int, t: Any, kwargs: dict[str, Any], first: Task = batch[0], lead: bool = group[0] == 0
            ) -> dict[str, Any]:
                nonlocal done
                done += 1
                if progress is not None:
                    progress(done, total)
                if preview is not None and lead:  # the first task's clip, as it stands now
                    preview(lambda: self._draft(pipe, kwargs["x0"][:1], first))
                return kwargs

            # 2. denoise the batch at the native size, the group's concepts loaded for this call alone
            with self._concepts(batch[0]):
                out = self.pipe(
                    prompt=[t.prompt for t in batch],
                    negative_prompt=[t.negative_prompt for t in batch],
                    num_frames=num_frames,
                    height=height,
                    width=width,
                    num_inference_steps=steps,
                    # a task's guidance steers the whole clip, not only the image-first stage's first frame
                    guidance_scale=DEFAULT_GUIDANCE if guidance is None else guidance,
                    clip_guidance_scale=guidance,
                    generator=[torch.Generator().manual_seed(t.seed) for t in batch],
                    start_frame=[centre_square(t.start_frame) for t in batch],
                    end_frame=[centre_square(t.end_frame) for t in batch],
                    loop=[t.loop for t in batch],
                    callback_on_step_end=on_step,
                    **self._source_options(sources, level),
                    **({"source_prompt": [t.source_prompt for t in batch]} if flow else {}),
                    **({"clip_guidance_min_sigma": EDIT_GUIDANCE_MIN_SIGMA} if sdedit else {}),
                    **self._keyframe_options(batch, num_frames),
                )
            # 3. to uint8 at the requested length and size
            for index, task, clip, placed in zip(group, batch, out.frames, sources, strict=True):
                notes = list(placed.notes) if placed is not None else []
                frames = self._pixels(clip, task)
                if task.operation == "reframe" and self.keep_source:
                    frames = keep_source(frames, task)
                    notes.append("the source's own pixels kept in its region, the rest drawn around it")
                results[index] = Media(frames=frames, fps=task.fps, notes=notes)
        return [results[i] for i in range(len(tasks))]

    @contextmanager
    def _concepts(self, task: Task) -> Iterator[None]:
        """The task's concepts loaded around a call (none: nothing done), unloaded after it; a folder that is not a
        noor-tiny adapter is a TaskError naming the concept."""
        from noor.engine.tiny import concept

        for c in task.concepts:
            try:
                concept.read(c.path, self.pipe)
            except concept.ConceptError as err:
                raise TaskError("concepts", c.key, str(err)) from None
        with concept.loaded(self.pipe, [c.path for c in task.concepts]):
            yield

    def check_concept(self, path: Path) -> None:
        """Refuse (ValueError, one line naming what is wrong) a folder that is not a noor-tiny adapter fitting these
        weights (what `noor train lora --model tiny` writes)."""
        from noor.engine.tiny import concept

        concept.read(path, self.pipe)

    def _draft(self, pipe: Any, x0: Any, task: Task) -> np.ndarray:
        """A denoising step's clean-clip estimate (1, C, T, h, w) as the task's pixels."""
        with self.torch.no_grad():
            video = pipe.decode_latents(x0)[0].float().clamp(-1.0, 1.0)  # (3, T, H, W)
        return self._pixels(((video + 1.0) / 2.0).permute(1, 2, 3, 0).numpy(), task)

    @staticmethod
    def _source_options(sources: list[Placed | None], level: float) -> dict[str, Any]:
        """The pipeline's source arguments for a group (none for a group of plain generations: its call as before)."""
        if all(placed is None for placed in sources):
            return {}
        return {
            "source": [None if p is None else p.frames for p in sources],
            "source_mask": [None if p is None else p.mask for p in sources],
            "strength": level,
        }

    @staticmethod
    def _keyframe_options(batch: list[Task], num_frames: int) -> dict[str, Any]:
        """The pipeline's `keyframes` for a group: each task's keyframes at the frames noor-tiny draws
        (`Task.drawn_pins`; its start and end frames go as `start_frame` and `end_frame`, and a keyframe drawn at
        frame 0 is the clip's start to the pipeline, which a loop ends on). Nothing for a group without keyframes:
        its call as before."""
        if not any(t.keyframes for t in batch):
            return {}
        pins = []
        for task in batch:
            drawn = task.drawn_pins(num_frames)
            pins.append({drawn[index]: centre_square(frame) for index, frame in task.keyframes})
        return {"keyframes": pins}

    @staticmethod
    def _pixels(clip: np.ndarray, task: Task) -> np.ndarray:
        """(T, H, W, 3) floats in [0, 1] -> uint8 at the task's length and size (a square of another aspect: see
        `fit`; a canvas drawn at the task's aspect, an edit's or a reframe's, is resized)."""
        frames = retime((np.clip(clip, 0.0, 1.0) * 255.0).round().astype(np.uint8), task.num_frames)
        if task.operation in ("edit", "reframe"):
            return resize(frames, task.width, task.height)
        return fit(frames, task.width, task.height)


def canvas(task: Task) -> tuple[int, int]:
    """(width, height) noor-tiny draws a task at: 64x64, or for an edit or a reframe of another aspect, the task's
    aspect on its 16-pixel patch grid (the denoiser's: 4 latent pixels of 4 image pixels). An edit's short side is
    64 (16:9 at 112x64, 1.6% narrower, resized to the task's size). A reframe's canvas is scaled so that the
    source's region gets a short side of 64, as a square source has on a 64-pixel canvas: a 16:9 source on a
    9:16 canvas (region 144x81 of 144x256) is drawn at 112x208 with the region 112x63, not at 64x112 with it
    64x36; the long side at most MAX_REFRAME_SIDE."""
    if task.operation not in ("edit", "reframe") or (task.width == task.height and task.operation == "edit"):
        return NATIVE_SIZE, NATIVE_SIZE
    multiple = 16
    short = min(task.width, task.height)
    if task.operation == "reframe":
        _, _, w, h = task.reframe_box()
        short = min(w, h)
    scale = min(NATIVE_SIZE / short, MAX_REFRAME_SIDE / max(task.width, task.height))
    scale = max(scale, NATIVE_SIZE / min(task.width, task.height))  # never below an edit's canvas
    width, height = (max(multiple, multiple * round(side * scale / multiple)) for side in (task.width, task.height))
    return width, height

"""The `tiny` backend: noor-tiny's pipeline behind the engine's Backend protocol."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from noor.engine.backend import Preview, Progress
from noor.engine.resample import resize
from noor.engine.task import Media, Task

NATIVE_SIZE = 64
NATIVE_FRAMES = 16
DEFAULT_STEPS = 16
DEFAULT_GUIDANCE = 4.0


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


def retime(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """Nearest-frame resampling in time: (T, ...) -> (num_frames, ...), first and last kept."""
    if len(frames) == num_frames:
        return frames
    index = np.rint(np.linspace(0, len(frames) - 1, num_frames)).astype(int)
    return frames[index]


class TinyBackend:
    """Loads NoorTinyPipeline once (CPU, float32, batch-invariant) and serves batches of tasks."""

    def __init__(self, path: str | Path | None = None, threads: int | None = None):
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

    def generate(
        self, tasks: Sequence[Task], progress: Progress | None = None, preview: Preview | None = None
    ) -> list[Media]:
        torch = self.torch

        # 1. group tasks that can share one batched call
        def key(i: int) -> tuple[Any, ...]:
            t = tasks[i]
            return (t.is_image, t.steps or DEFAULT_STEPS, DEFAULT_GUIDANCE if t.guidance is None else t.guidance)

        order = sorted(range(len(tasks)), key=key)
        groups = [(k, list(g)) for k, g in groupby(order, key=key)]
        total = sum(k[1] for k, _ in groups)  # one step of a batched call advances all its clips
        done = 0
        results: dict[int, Media] = {}
        for (is_image, steps, guidance), group in groups:
            batch = [tasks[i] for i in group]

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

            # 2. denoise the batch at the native size
            out = self.pipe(
                prompt=[t.prompt for t in batch],
                negative_prompt=[t.negative_prompt for t in batch],
                num_frames=1 if is_image else NATIVE_FRAMES,
                height=NATIVE_SIZE,
                width=NATIVE_SIZE,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=[torch.Generator().manual_seed(t.seed) for t in batch],
                start_frame=[centre_square(t.start_frame) for t in batch],
                end_frame=[centre_square(t.end_frame) for t in batch],
                loop=[t.loop for t in batch],
                callback_on_step_end=on_step,
            )
            # 3. to uint8 at the requested length and size
            for index, task, clip in zip(group, batch, out.frames, strict=True):
                results[index] = Media(frames=self._pixels(clip, task), fps=task.fps)
        return [results[i] for i in range(len(tasks))]

    def _draft(self, pipe: Any, x0: Any, task: Task) -> np.ndarray:
        """A denoising step's clean-clip estimate (1, C, T, h, w) as the task's pixels."""
        with self.torch.no_grad():
            video = pipe.decode_latents(x0)[0].float().clamp(-1.0, 1.0)  # (3, T, H, W)
        return self._pixels(((video + 1.0) / 2.0).permute(1, 2, 3, 0).numpy(), task)

    @staticmethod
    def _pixels(clip: np.ndarray, task: Task) -> np.ndarray:
        """(T, H, W, 3) floats in [0, 1] -> uint8 at the task's length and size (non-square: see `fit`)."""
        frames = (np.clip(clip, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        return fit(retime(frames, task.num_frames), task.width, task.height)

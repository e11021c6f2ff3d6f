"""The resampler: Lanczos resizing of a finished clip to a new size (what `upscale` runs). No weights, no
learnt model, so the registry puts it on every worker (`ModelSpec.on_every_worker`)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from noor.engine.backend import Preview, Progress
from noor.engine.task import Media, Task, TaskError


def resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, height, width, 3) uint8, Lanczos."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([_resize_frame(f, width, height) for f in frames])


def _resize_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.LANCZOS))


class ResampleBackend:
    """Resizes each task's `source` clip to the task's width and height, keeping its frames and frame rate.

    Frames are resized on `threads` threads (Pillow releases the GIL while it resamples); progress is reported
    per frame, so a worker's heartbeat and a delete reach a long 4K upscale between frames."""

    def __init__(self, threads: int | None = None):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads or 1

    def generate(
        self, tasks: Sequence[Task], progress: Progress | None = None, preview: Preview | None = None
    ) -> list[Media]:
        # no preview: nothing is drawn, and the source clip already shows what the result will be
        out = []
        for task in tasks:
            source = task.source
            if source is None:
                raise TaskError("source", None, "the resampler upscales a finished clip; the task has none")
            out.append(Media(frames=self._resize(source.frames, task, progress), fps=task.fps))
        return out

    def _resize(self, frames: np.ndarray, task: Task, progress: Progress | None) -> np.ndarray:
        total = len(frames)  # frames: (T, H, W, 3) uint8
        resized = np.empty((total, task.height, task.width, 3), np.uint8)
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="resample")
        try:
            results = pool.map(_resize_frame, frames, [task.width] * total, [task.height] * total)
            for i, frame in enumerate(results):
                resized[i] = frame
                if progress is not None:
                    progress(i + 1, total)  # may raise Cancelled: the frames not started are dropped
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return resized

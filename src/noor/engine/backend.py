"""The contract between Noor and whatever makes pixels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from noor.engine.task import Media, Task

# progress(step, total) after each denoising step; it may raise `Cancelled` to stop the work.
Progress = Callable[[int, int], None]
# preview(render) after each denoising step: `render()` draws the current estimate of the first task's
# clip, (T, H, W, 3) uint8 at the task's size. It costs a decode, so the receiver decides when to call it.
Preview = Callable[[Callable[[], np.ndarray]], None]


class Cancelled(Exception):
    """Raised from a progress callback to stop a generation between denoising steps."""


class AttemptFailed(Exception):
    """Raised by a backend when this attempt failed for a reason outside the request (a rank process died or
    hung): the worker gives the job back to the queue, to be retried like a job whose worker was lost."""


class Backend(Protocol):
    """Loads a model once; turns a batch of tasks into media, one per task, in order."""

    def generate(
        self, tasks: Sequence[Task], progress: Progress | None = None, preview: Preview | None = None
    ) -> list[Media]: ...

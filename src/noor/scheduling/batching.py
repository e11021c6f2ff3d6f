"""Batching: compatible small jobs (same `batch_key`: same model and request shape) run as one call.

A batch starts from the job the policy put first and takes the next compatible jobs in policy order,
so batching never lets a job overtake one the policy ranks ahead of it for a different key. `take` is that
rule, over any jobs read one at a time: the live store's claim (`Store.claim_batch`), the Ray dispatcher and
`dispatch.assign` call it through `batch` (a list of `QueuedJob`s); the simulator's core calls it on its
per-class heaps. A request's key is `batch_key`, computed once when it is queued and stored with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from noor.scheduling.base import SchedulingError
from noor.scheduling.types import QueuedJob

J = TypeVar("J")


class Keyed(Protocol):
    """A job as a batch is checked: its id and its key (a QueuedJob, a store's Generation, a remote worker's copy)."""

    @property
    def id(self) -> str: ...
    @property
    def batch_key(self) -> str | None: ...


def batch_key(
    model: str,
    width: int,
    height: int,
    num_frames: int,
    steps: int | None = None,
    guidance: float | None = None,
    inputs: str = "text",
) -> str:
    """The shape two requests must share to run as one pipeline call: model, size, frames, steps and guidance
    (None: the model's default), and what they start from (`inputs`: "text", or the keyframes they carry).
    Prompts, negative prompts and seeds may differ: they are per request in a batched call."""
    for name, value in (("width", width), ("height", height), ("num_frames", num_frames)):
        if value < 1:
            raise SchedulingError(f"batch_key: {name} must be >= 1, got {value!r}")
    steps_s = "default" if steps is None else str(int(steps))
    guidance_s = "default" if guidance is None else repr(float(guidance))
    return f"{model} {width}x{height}x{num_frames} steps={steps_s} guidance={guidance_s} {inputs}"


def check_batch(jobs: Sequence[Keyed]) -> None:
    """Refuse a batch whose jobs cannot run as one call: a job never batched (no key), or mixed shapes."""
    if not jobs:
        raise SchedulingError("batch: no jobs")
    if len(jobs) == 1:
        return
    head = jobs[0]
    for job in jobs:
        if job.batch_key is None or job.batch_key != head.batch_key:
            raise SchedulingError(
                f"batch: mixed shapes, job {job.id} is {job.batch_key!r} and job {head.id} is {head.batch_key!r}"
            )


def compatible(head: QueuedJob, job: QueuedJob, max_predicted_s: float) -> bool:
    return (
        head.batch_key is not None
        and job.batch_key == head.batch_key
        and job.gpus == head.gpus
        and job.predicted_s <= max_predicted_s
        and head.predicted_s <= max_predicted_s
    )


def take(head: J, candidates: Iterable[J], max_batch: int, joins: Callable[[J], bool]) -> list[J]:
    """The batch `head` (the policy's first job) starts: `head` alone if `joins(head)` is false (a job never
    batched), else `head` and the next `candidates` (the rest of the queue, in policy order) that `joins`
    accepts, up to `max_batch` jobs. Candidates are read one at a time and none after the batch is full, so a
    queue that pops as it is read gives up only the jobs taken and the ones `joins` turned down."""
    if max_batch < 1:
        raise SchedulingError(f"max_batch: must be >= 1, got {max_batch!r}")
    out = [head]
    if max_batch == 1 or not joins(head):
        return out
    for job in candidates:
        if joins(job):
            out.append(job)
            if len(out) == max_batch:
                break
    return out


def batch(
    head: QueuedJob, ordered: Sequence[QueuedJob], max_batch: int = 1, max_predicted_s: float = float("inf")
) -> list[QueuedJob]:
    """`head` and up to `max_batch - 1` compatible jobs from `ordered` (the rest of the queue, in policy order)."""
    rest = (job for job in ordered if job is not head and job.id != head.id)
    return take(head, rest, max_batch, lambda job: compatible(head, job, max_predicted_s))

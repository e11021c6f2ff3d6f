"""Batching: compatible small jobs (same `batch_key`: same model and request shape) run as one call.

A batch starts from the job the policy put first and takes the next compatible jobs in policy order,
so batching never lets a job overtake one the policy ranks ahead of it for a different key.
"""

from __future__ import annotations

from collections.abc import Sequence

from noor.scheduling.base import SchedulingError
from noor.scheduling.types import QueuedJob


def compatible(head: QueuedJob, job: QueuedJob, max_predicted_s: float) -> bool:
    return (
        head.batch_key is not None
        and job.batch_key == head.batch_key
        and job.gpus == head.gpus
        and job.predicted_s <= max_predicted_s
        and head.predicted_s <= max_predicted_s
    )


def batch(
    head: QueuedJob, ordered: Sequence[QueuedJob], max_batch: int = 1, max_predicted_s: float = float("inf")
) -> list[QueuedJob]:
    """`head` and up to `max_batch - 1` compatible jobs from `ordered` (the rest of the queue, in policy order)."""
    if max_batch < 1:
        raise SchedulingError(f"max_batch: must be >= 1, got {max_batch!r}")
    out = [head]
    for job in ordered:
        if len(out) >= max_batch:
            break
        if job is not head and job.id != head.id and compatible(head, job, max_predicted_s):
            out.append(job)
    return out

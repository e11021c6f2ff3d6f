"""Shortest predicted job first, with aging so long jobs are not starved.

A job's rank is `predicted_s - aging_per_s * waited_s`: each second of waiting counts as `aging_per_s`
seconds less work. Since every queued job ages at the same rate, the order is the same as by
`predicted_s + aging_per_s * submitted_at_s`, which does not move with the clock (a static key: the
simulator keeps it in a heap). aging_per_s = 0 is pure SJF; a large value tends to FIFO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from noor.scheduling.base import Policy, SchedulingError, Usage, register
from noor.scheduling.types import QueuedJob


@register
class ShortestPredictedFirst(Policy):
    name = "sjf"

    def __init__(self, aging_per_s: float = 0.01):
        if not aging_per_s >= 0 or math.isinf(aging_per_s):
            raise SchedulingError(f"aging_per_s: must be a finite number >= 0, got {aging_per_s!r}")
        self.aging_per_s = aging_per_s

    def key(self, job: QueuedJob, now_s: float = 0.0, usage: Usage | None = None) -> tuple[Any, ...]:
        return (job.predicted_s * job.gpus + self.aging_per_s * job.submitted_at_s, job.submitted_at_s, job.id)

    def scans(self) -> list[tuple[tuple[str, ...], str | None]]:
        if self.aging_per_s == 0:
            return [(("predicted_gpu_s", "submitted_at_s"), None)]  # the key's own order
        # a sum of two fields: read the shortest and the oldest jobs side by side until `bound` says no unread job
        # can rank first (Fagin's threshold algorithm). Of the jobs predicted alike only the oldest can rank
        # first, so the shortest are read one per predicted length: a few rows when the lengths are few
        return [(("predicted_gpu_s", "submitted_at_s"), "predicted_gpu_s"), (("submitted_at_s",), None)]

    def bound(self, lasts: Sequence[QueuedJob], now_s: float = 0.0, usage: Usage | None = None) -> tuple[Any, ...]:
        if len(lasts) == 1:
            return self.key(lasts[0])
        # an unread job that is the oldest of its length has predicted GPU-seconds >= the last length read and a
        # submission >= the last oldest's (and, at the same submission, a later id), so its key is at least this;
        # any other job ranks behind the oldest of its length
        shortest, oldest = lasts
        floor = shortest.predicted_s * shortest.gpus + self.aging_per_s * oldest.submitted_at_s
        return (floor, oldest.submitted_at_s, oldest.id)

    def key_columns(self, submitted_at_s: Any, priority: Any, predicted_gpu_s: Any) -> list[Any]:
        return [predicted_gpu_s + self.aging_per_s * submitted_at_s, submitted_at_s]

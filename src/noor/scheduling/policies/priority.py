"""Priority tiers: lowest `priority` value first (as the live store's claim), FIFO within a tier."""

from __future__ import annotations

from typing import Any

from noor.scheduling.base import Policy, Usage, register
from noor.scheduling.types import QueuedJob


@register
class PriorityTiers(Policy):
    name = "priority"
    scan = ("priority", "submitted_at_s")

    def key(self, job: QueuedJob, now_s: float = 0.0, usage: Usage | None = None) -> tuple[Any, ...]:
        return (job.priority, job.submitted_at_s, job.id)

    def key_columns(self, submitted_at_s: Any, priority: Any, predicted_gpu_s: Any) -> list[Any]:
        return [priority, submitted_at_s]

"""Per-tenant fair share: start-time fair queueing over GPU-seconds.

Each tenant has a weight (default 1). A queued job's virtual start is
(GPU-seconds the tenant has been given + predicted GPU-seconds of its earlier queued jobs) / weight;
the lowest virtual start runs first, so tenants are served in proportion to their weights whatever
their arrival rates (Goyal, Vin & Cheng, "Start-time Fair Queueing", SIGCOMM 1996). Within a tenant,
FIFO. `usage` is the GPU-seconds given so far, kept by the caller (live store or simulator).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from noor.scheduling.base import Policy, SchedulingError, Usage, register
from noor.scheduling.types import QueuedJob


@register
class FairShare(Policy):
    name = "fair-share"
    static = False
    per_tenant = True  # the first job in `order` is always some tenant's oldest: only those are ranked

    def __init__(self, weights: Mapping[str, float] | None = None):
        self.weights = dict(weights or {})
        for tenant, w in self.weights.items():
            if not w > 0 or math.isinf(w):
                raise SchedulingError(f"weights.{tenant}: must be a finite number > 0, got {w!r}")

    def weight(self, tenant: str) -> float:
        return self.weights.get(tenant, 1.0)

    def tenant_rank(self, tenant: str, usage: Usage | None) -> float:
        """Virtual start of the tenant's oldest queued job: what the simulator compares across tenants."""
        return (usage or {}).get(tenant, 0.0) / self.weight(tenant)

    def key(self, job: QueuedJob, now_s: float = 0.0, usage: Usage | None = None) -> tuple[Any, ...]:
        """The job's rank as if it were its tenant's oldest queued job (`order` adds the work queued before it)."""
        return (self.tenant_rank(job.tenant, usage), job.submitted_at_s, job.id)

    def order(self, queue: Sequence[QueuedJob], now_s: float = 0.0, usage: Usage | None = None) -> list[QueuedJob]:
        ranked: list[tuple[float, float, str, QueuedJob]] = []
        ahead: dict[str, float] = {}  # GPU-seconds of the tenant's jobs already ranked
        for job in sorted(queue, key=lambda j: (j.submitted_at_s, j.id)):
            given = (usage or {}).get(job.tenant, 0.0) + ahead.get(job.tenant, 0.0)
            ranked.append((given / self.weight(job.tenant), job.submitted_at_s, job.id, job))
            ahead[job.tenant] = ahead.get(job.tenant, 0.0) + job.predicted_s * job.gpus
        ranked.sort(key=lambda r: r[:3])
        return [r[3] for r in ranked]

    def key_columns(self, submitted_at_s: Any, priority: Any, predicted_gpu_s: Any) -> list[Any]:
        return [submitted_at_s]

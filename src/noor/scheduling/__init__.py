"""Scheduling policies: pure functions over plain data, no I/O. The live store and the simulator call the same ones.

from noor import scheduling
policy = scheduling.get("sjf", aging_per_s=0.01)
scheduling.pick(worker, queue, now_s, policy)       # pull: what one free worker takes now (a batch)
scheduling.assign(queue, workers, now_s, policy)    # push: match free workers to the queue
"""

from noor.scheduling.base import POLICIES, Policy, SchedulingError, get
from noor.scheduling.batching import batch, compatible
from noor.scheduling.dispatch import assign, pick
from noor.scheduling.placement import eligible, fits, place, region_allowed
from noor.scheduling.types import Assignment, QueuedJob, WorkerView

__all__ = [
    "POLICIES",
    "Assignment",
    "Policy",
    "QueuedJob",
    "SchedulingError",
    "WorkerView",
    "assign",
    "batch",
    "compatible",
    "eligible",
    "fits",
    "get",
    "names",
    "pick",
    "place",
    "region_allowed",
]


def names() -> list[str]:
    """Registered policy names."""
    import noor.scheduling.policies  # noqa: F401

    return sorted(POLICIES)

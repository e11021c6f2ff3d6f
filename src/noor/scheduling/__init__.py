"""Scheduling policies: pure functions over plain data, no I/O. The live store and the simulator call the same ones.

from noor import scheduling
policy = scheduling.get("sjf", aging_per_s=0.01)
scheduling.frontier(policy, read, now_s, usage)     # the few queued jobs a store reads for a claim
policy.order(jobs, now_s, usage)                    # the queue order the live claim and the simulator follow
scheduling.assign(queue, workers, now_s, policy)    # push: match free workers to the queue (a batch each)
scheduling.place(job, workers)                      # best fit, the rule the simulator's sites apply too
scheduling.admit(free_slots, queued, max_queue)     # a session: start, queue (a position) or refuse (429)
scheduling.preemption_policy("priority").victims()  # training partitions that give their chips back to serving
"""

from noor.scheduling.admission import Admission, admit, meets_frame_slo
from noor.scheduling.base import POLICIES, Policy, SchedulingError, get
from noor.scheduling.batching import batch, compatible
from noor.scheduling.dispatch import assign
from noor.scheduling.frontier import frontier
from noor.scheduling.placement import Nodes, eligible, fits, place, region_allowed
from noor.scheduling.preemption import PREEMPTIONS, Partition, preemption_policy
from noor.scheduling.types import Assignment, QueuedJob, WorkerView

__all__ = [
    "POLICIES",
    "PREEMPTIONS",
    "Admission",
    "Assignment",
    "Nodes",
    "Partition",
    "Policy",
    "QueuedJob",
    "SchedulingError",
    "WorkerView",
    "admit",
    "assign",
    "batch",
    "compatible",
    "eligible",
    "fits",
    "frontier",
    "get",
    "meets_frame_slo",
    "names",
    "place",
    "preemption_policy",
    "region_allowed",
]


def names() -> list[str]:
    """Registered policy names."""
    import noor.scheduling.policies  # noqa: F401

    return sorted(POLICIES)

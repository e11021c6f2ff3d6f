"""Where a job may run: region (data residency), model, memory fit, k GPUs on one node.

`fits` is the one rule both the live store and the simulator apply; `place` picks among workers.
"""

from __future__ import annotations

from collections.abc import Sequence

from noor.scheduling.types import QueuedJob, WorkerView


def region_allowed(job: QueuedJob, region: str | None) -> bool:
    """Residency: a job bound to regions runs only in one of them; a worker of no region takes only unbound jobs."""
    return job.regions is None or (region is not None and region in job.regions)


def eligible(job: QueuedJob, worker: WorkerView) -> bool:
    """Could this job ever run on this worker (ignoring what is busy now)?"""
    return (
        region_allowed(job, worker.region)
        and (worker.models is None or job.model in worker.models)
        and (worker.memory_gb <= 0 or job.memory_gb <= worker.memory_gb)
    )


def fits(job: QueuedJob, worker: WorkerView) -> bool:
    """Can this job start on this worker now: eligible, and k free GPUs on this one node."""
    return job.gpus <= worker.free_gpus and eligible(job, worker)


def place(job: QueuedJob, workers: Sequence[WorkerView]) -> WorkerView | None:
    """Best fit: of the workers the job fits now, the one with the fewest free GPUs (keeps whole nodes free
    for k-GPU jobs), then the one listed first. None if no worker can take it now."""
    best: WorkerView | None = None
    for worker in workers:
        if fits(job, worker) and (best is None or worker.free_gpus < best.free_gpus):
            best = worker
    return best

"""The two entry points: pull (one free worker asks what to take) and push (match free workers to a queue).

pick(worker, queue, now_s, policy)    -> the job(s) this worker should start now   (live store's claim)
assign(queue, workers, now_s, policy) -> [Assignment(worker_id, jobs), ...]        (a dispatcher / simulator)

Both order the queue with the policy, keep only what the worker may run (residency, model, memory,
k GPUs on one node), and batch compatible small jobs behind the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from noor.scheduling.base import Policy, Usage, get
from noor.scheduling.batching import batch
from noor.scheduling.placement import eligible, fits, place
from noor.scheduling.types import Assignment, QueuedJob, WorkerView


def _policy(policy: Policy | str) -> Policy:
    return get(policy) if isinstance(policy, str) else policy


def pick(
    worker: WorkerView,
    queue: Sequence[QueuedJob],
    now_s: float = 0.0,
    policy: Policy | str = "fifo",
    usage: Usage | None = None,
    max_batch: int = 1,
    batch_max_predicted_s: float = float("inf"),
) -> list[QueuedJob]:
    """What `worker` should start now: the first job in policy order that fits it, plus compatible jobs
    to batch with it. Empty if nothing fits. Jobs this worker may never run do not block it."""
    ordered = [job for job in _policy(policy).order(queue, now_s, usage) if eligible(job, worker)]
    for i, job in enumerate(ordered):
        if fits(job, worker):
            return batch(job, ordered[i + 1 :], max_batch, batch_max_predicted_s)
    return []


def assign(
    queue: Sequence[QueuedJob],
    workers: Sequence[WorkerView],
    now_s: float = 0.0,
    policy: Policy | str = "fifo",
    usage: Usage | None = None,
    max_batch: int = 1,
    batch_max_predicted_s: float = float("inf"),
    backfill: bool = True,
) -> list[Assignment]:
    """Walk the queue in policy order and place each job by best fit on the workers' free GPUs.

    With `backfill`, a job that fits nowhere now is skipped and later (smaller) jobs may start; without,
    the first job that fits nowhere stops the walk (strict order, nothing overtakes it).
    """
    ordered = _policy(policy).order(queue, now_s, usage)
    free = {w.id: w for w in workers}
    taken: set[str] = set()
    out: list[Assignment] = []
    for i, job in enumerate(ordered):
        if job.id in taken:
            continue
        worker = place(job, list(free.values()))
        if worker is None:
            if backfill:
                continue
            break
        rest = [j for j in ordered[i + 1 :] if j.id not in taken and eligible(j, worker)]
        jobs = batch(job, rest, max_batch, batch_max_predicted_s)
        taken.update(j.id for j in jobs)
        out.append(Assignment(worker.id, tuple(jobs)))
        free[worker.id] = replace(worker, free_gpus=worker.free_gpus - job.gpus)
    return out

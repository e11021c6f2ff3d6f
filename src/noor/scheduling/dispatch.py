"""Push dispatch: match free workers to a queue (the Ray dispatcher).

assign(queue, workers, now_s, policy) -> [Assignment(worker_id, jobs), ...]

It orders the queue with the policy, places each job by `placement.place` (residency, model, memory, k GPUs
on one node, best fit), and batches compatible small jobs behind it. One free worker pulling work (the live
store's claim) is this with one worker; the store finds the policy's first jobs with `frontier`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from noor.scheduling.base import Policy, Usage, get
from noor.scheduling.batching import batch
from noor.scheduling.placement import eligible, place
from noor.scheduling.types import Assignment, QueuedJob, WorkerView


def _policy(policy: Policy | str) -> Policy:
    return get(policy) if isinstance(policy, str) else policy


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

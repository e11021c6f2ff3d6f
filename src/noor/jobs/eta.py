"""When a generation will be done, as this deployment runs: queue wait plus run time, learnt from what ran.

The perf model predicts a job's seconds of work on the catalog chip the workers are said to be (`eta_s`, stored
with the job: SJF orders by it). A deployment's workers run slower or faster than that prediction (a shared CPU,
other work, a different GPU clock), so the estimate a user sees scales it by what the last runs of the same
model took against their own predictions (the median ratio; 1 until something has run; for a running job, its
own worker's runs once it has made a few). Then:

- queued: the work ahead of it (queued jobs created before it, and what is left of the running ones), spread
  over the workers that took jobs lately, plus its own run time;
- dreaming: its run time less the share done (`progress`), but never less than one second while it runs;
- completed or failed: nothing left.

It is computed when a generation is read, so it moves while the job waits and runs. The queue is counted in
creation order: a policy that reorders (SJF, fair share) moves a job ahead of that estimate or behind it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from noor.jobs.generation import Generation, State

HISTORY = 50  # completed runs of a model whose durations it learns from
MIN_WORKER_RUNS = 3  # a worker's own runs of a model that it takes to learn that worker's speed
WORKERS_WINDOW = timedelta(minutes=10)  # a worker that started a job this recently counts as serving
MIN_RUNNING_S = 1.0


@dataclass(frozen=True)
class Timing:
    wait_s: float  # until it starts
    run_s: float  # its run time on this deployment's workers (learnt)
    left_s: float  # until it is done: wait and what is left of the run


@dataclass
class Clock:
    """What one read of the queue shares between the generations it answers for (a list page reads it once)."""

    session: Session
    now: datetime
    _ratios: dict[tuple[str | None, str | None], float] = field(default_factory=dict)
    _workers: int | None = None
    _running_left_s: float | None = None

    def ratio(self, model: str | None, worker: str | None = None) -> float:
        """Median of (measured run seconds / predicted seconds) over the model's last runs on `worker` (once it
        has run it MIN_WORKER_RUNS times; before that, or with no worker, on any worker); 1.0 before any."""
        key = (model, worker)
        if key not in self._ratios:
            g = Generation
            query = select(g.started_at, g.finished_at, g.eta_s).where(
                g.state == State.COMPLETED.value, g.started_at.is_not(None), g.finished_at.is_not(None), g.eta_s > 0
            )
            if model is not None:
                query = query.where(g.model == model)
            if worker is not None:
                query = query.where(g.worker == worker)
            rows = self.session.execute(query.order_by(g.finished_at.desc()).limit(HISTORY)).all()
            ratios = [(end - start).total_seconds() / eta for start, end, eta in rows if start and end and eta]
            if worker is not None and len(ratios) < MIN_WORKER_RUNS:
                self._ratios[key] = self.ratio(model)
            else:
                self._ratios[key] = statistics.median(ratios) if ratios else 1.0
        return self._ratios[key]

    def workers(self) -> int:
        """Workers serving now: those holding a job or that started one lately (at least one)."""
        if self._workers is None:
            g = Generation
            serving = or_(g.state == State.DREAMING.value, g.started_at >= self.now - WORKERS_WINDOW)
            distinct_workers = select(func.count(func.distinct(g.worker))).where(serving, g.worker.is_not(None))
            count = self.session.scalar(distinct_workers)
            self._workers = max(1, int(count or 0))
        return self._workers

    def running_left_s(self) -> float:
        """Seconds of work left in the jobs running now."""
        if self._running_left_s is None:
            g = Generation
            rows = self.session.execute(
                select(g.model, g.eta_s, g.progress).where(g.state == State.DREAMING.value, g.deleted_at.is_(None))
            ).all()
            self._running_left_s = sum(
                max(MIN_RUNNING_S, (eta or 0.0) * self.ratio(model) * (1.0 - (progress or 0.0)))
                for model, eta, progress in rows
            )
        return self._running_left_s

    def timing(self, job: Generation) -> Timing:
        if job.state not in (State.QUEUED.value, State.DREAMING.value):  # done: what it took
            took_s = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else 0.0
            return Timing(0.0, took_s, 0.0)
        # running: on its worker's speed; queued: the worker that will take it is not known yet
        run_s = (job.eta_s or 0.0) * self.ratio(job.model, job.worker if job.state == State.DREAMING.value else None)
        if job.state == State.DREAMING.value:
            left_s = max(MIN_RUNNING_S, run_s * (1.0 - (job.progress or 0.0)))
            return Timing(0.0, run_s, left_s)
        g = Generation
        ahead = self.session.execute(
            select(g.model, func.sum(g.eta_s))
            .where(g.state == State.QUEUED.value, g.deleted_at.is_(None), g.created_at < job.created_at)
            .group_by(g.model)
        ).all()
        queued_s = sum((eta or 0.0) * self.ratio(model) for model, eta in ahead)
        wait_s = (queued_s + self.running_left_s()) / self.workers()
        return Timing(wait_s, run_s, wait_s + run_s)

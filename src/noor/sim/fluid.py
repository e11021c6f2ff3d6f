"""The analytic mode's backlog: a site's queue as a fluid while its offered work exceeds its GPUs.

When a pool of GPUs is offered more work than it can do, a(t) > c(t) GPU-seconds per second, its queue grows at
a(t) - c(t) and drains afterwards at c(t) - a(t). Around that line the queue moves by about the square root of the
jobs in it, so for a pool of thousands of GPUs an hour over capacity is the line itself: the deterministic fluid
approximation of a queue with time-dependent arrivals (G. F. Newell, "Queues with time-dependent arrival rates
I-III", J. Appl. Prob. 5, 1968; W. Whitt, "Time-varying queues", Queueing Models and Service Management 1(2),
2018, §3). A job that finds W GPU-seconds of work queued ahead of it in a first-come-first-served pool of c GPUs
starts after W / c. This is the part of the wait that a steady state per hour cannot give: an hour above
capacity has none, and the queue it leaves is carried into the hours after. The stationary queue of a step
(`analytic.pool_stats`) applies to the steps that carry no backlog.

Training partitions move with it. A partition holds its GPUs from its start until its work is done. With a
pre-emption policy, once the backlog's wait reaches `preempt_after_s` and serving outranks a running partition,
the policy (`noor.scheduling.preemption`) names the victims for the GPUs the queued jobs need (the backlog's
GPU-seconds over the mean job length); a victim gives its GPUs to serving, rolls back to its last checkpoint and
asks again. A waiting partition is taken when no backlog is queued and the offered work fits in the site without
its GPUs (the event simulation's "whole free nodes, nothing queued that outranks it" as a fluid: the fragmentation
of nodes is not modelled), and then holds `restart_s` without work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtr

from noor import scheduling
from noor.sim.fleet import TrainingInfo

STEP_S = 60.0  # the backlog's time step; a step's arrival rate is the rate at its midpoint


@dataclass
class Backlog:
    """One site over the horizon, step by step (arrays of the steps' length)."""

    queued_s: np.ndarray  # GPU-seconds of serving work queued at each step's start
    slope: np.ndarray  # offered - capacity in the step (GPU-seconds per second): the queue's slope while > 0
    capacity: np.ndarray  # GPUs serving can use: (GPUs - training's) x availability
    held: np.ndarray  # GPUs training partitions hold
    served_s: np.ndarray  # GPU-seconds of serving work done in the step
    training: list[dict[str, Any]] = field(default_factory=list)  # per partition: what it did (Partitions.record's)

    def wait_s(self, step: np.ndarray, u: np.ndarray, step_len: np.ndarray) -> np.ndarray:
        """The fluid wait of jobs arriving a fraction `u` into steps `step`: the queue then over the capacity."""
        queued = np.maximum(self.queued_s[step] + self.slope[step] * u * step_len[step], 0.0)
        return np.divide(queued, self.capacity[step], out=np.zeros(len(step)), where=self.capacity[step] > 0)

    def carries(self) -> np.ndarray:
        """(step,) True where the step has a queue to carry or grows one: its wait is the fluid's."""
        return (self.queued_s > 0) | (self.slope > 0)


@dataclass
class _Partition:
    info: TrainingInfo
    state: str = "before"  # "before" its start, "waiting" for its GPUs, "held", "done"
    progress_s: float = 0.0
    restart_left_s: float = 0.0
    preemptions: int = 0
    lost_s: float = 0.0
    restart_s: float = 0.0
    waited_s: float = 0.0
    held_s: float = 0.0
    done_at_s: float | None = None

    def row(self) -> dict[str, Any]:
        info = self.info
        return {
            "name": info.name, "gpus": info.gpus, "priority": info.priority, "work_h": info.work_s / 3600,
            "progress_h": self.progress_s / 3600,
            "done_at_h": None if self.done_at_s is None else self.done_at_s / 3600, "preemptions": self.preemptions,
            "failures": None, "lost_gpu_h": self.lost_s * info.gpus / 3600,
            "restart_gpu_h": self.restart_s * info.gpus / 3600, "waited_h": self.waited_s / 3600,
            "held_gpu_h": self.held_s * info.gpus / 3600,
        }  # fmt: skip


def run_site(
    offered: np.ndarray,
    mean_job_s: np.ndarray,
    step_len: np.ndarray,
    gpus: int,
    availability: float,
    partitions: list[TrainingInfo],
    preemption: str,
    preempt_after_s: float,
    serving_priority: int | None,
) -> Backlog:
    """The site's backlog and partitions over the steps. `offered`: serving work offered per second (GPU-seconds);
    `mean_job_s`: the mean length of a job arriving in the step (the queue's GPUs needed = its GPU-seconds over
    it); `serving_priority`: the best (lowest) priority of the serving traffic here (None: no traffic)."""
    n = len(offered)
    queued_s, slope, capacity, held, served = (np.zeros(n) for _ in range(5))
    parts = [_Partition(info) for info in partitions]
    preempter = scheduling.preemption_policy(preemption)
    backlog = 0.0
    for i in range(n):
        t0, dt = float(i * STEP_S), float(step_len[i])
        # 1. partitions that ask now; waiting ones take their GPUs if serving leaves them
        for p in parts:
            if p.state == "before" and t0 >= p.info.start_s:
                p.state = "waiting"
        holding = sum(p.info.gpus for p in parts if p.state == "held")
        for p in sorted((p for p in parts if p.state == "waiting"), key=lambda p: p.info.priority):
            if backlog <= 0 and offered[i] <= (gpus - holding - p.info.gpus) * availability:
                p.state = "held"
                holding += p.info.gpus
        # 2. serving: the queue moves by offered - capacity, never below empty
        cap = (gpus - holding) * availability
        queued_s[i], slope[i], capacity[i], held[i] = backlog, offered[i] - cap, cap, holding
        served[i] = min(backlog + offered[i] * dt, cap * dt)
        backlog = max(backlog + (offered[i] - cap) * dt, 0.0)
        # 3. training: restarts first, then work; a partition whose work is done gives its GPUs back
        for p in parts:
            if p.state == "waiting":
                p.waited_s += dt
            if p.state != "held":
                continue
            p.held_s += dt
            restart = min(p.restart_left_s, dt)
            p.restart_left_s -= restart
            p.restart_s += restart
            work = min(dt - restart, p.info.work_s - p.progress_s)
            p.progress_s += work
            if p.progress_s >= p.info.work_s:
                p.state, p.done_at_s = "done", t0 + restart + work
        # 4. pre-emption: serving that has waited preempt_after_s (a job that arrived that long ago, whose wait was the
        #    queue then over the capacity then) takes back what the policy gives it
        then = i + 1 - int(preempt_after_s // STEP_S)
        waited = (backlog / cap if cap > 0 else 0.0) if then > i else (
            queued_s[then] / capacity[then] if then >= 0 and capacity[then] > 0 else 0.0)
        if serving_priority is not None and backlog > 0 and waited >= preempt_after_s:
            running = [scheduling.Partition(str(k), p.info.priority, p.info.gpus,
                                            p.progress_s - _checkpointed(p))
                       for k, p in enumerate(parts) if p.state == "held"]  # fmt: skip
            needed = math.ceil(backlog / mean_job_s[i]) if mean_job_s[i] > 0 else 0
            for victim in preempter.victims(running, needed, serving_priority):
                p = parts[int(victim.id)]
                p.preemptions += 1
                p.lost_s += p.progress_s - _checkpointed(p)
                p.progress_s = _checkpointed(p)
                p.state, p.restart_left_s = "waiting", p.info.restart_s
    return Backlog(queued_s, slope, capacity, held, served, [p.row() for p in parts])


def busy_integral(dist: str, sigma: float, y: np.ndarray) -> np.ndarray:
    """The integral of P(X > u) over u in (0, y) for a job's length over its mean, X (mean 1): "lognormal" (sigma of
    the log; 0: fixed), "exponential" or "fixed". For the lognormal, y P(X > y) + E[X; X < y] (closed form)."""
    if dist == "exponential":
        return 1.0 - np.exp(-y)
    if dist == "fixed" or sigma == 0:
        return np.minimum(y, 1.0)
    with np.errstate(divide="ignore"):
        log_y = np.log(y)
    return y * ndtr(-(log_y + sigma * sigma / 2) / sigma) + ndtr((log_y - sigma * sigma / 2) / sigma)


def occupancy(rate: np.ndarray, mean_s: float, dist: str, sigma: float) -> np.ndarray:
    """(step,) GPUs that jobs arriving at `rate` (per second, per step) keep busy at each step's end with as many
    GPUs as they want: the M_t/G/inf offered load m(t) = E[integral of rate over (t - S, t)] (Eick, Massey and
    Whitt, "The physics of the M_t/G/inf queue", Operations Research 41(4), 1993). It lags the arrival rate by
    about a job's length, as a real pool's busy GPUs do: an hour of sessions of 15 minutes fills a pool slowly."""
    n = len(rate)
    if mean_s <= 0 or not rate.any():
        return np.zeros(n)
    # H[j]: the mean time past the end of its step that a job arriving in that step j steps back is still running
    tail_y = {"exponential": 40.0, "fixed": 1.0}.get(dist, math.exp(8 * max(sigma, 1e-6)))  # P(X > tail_y) ~ 0
    lags = min(n, math.ceil(tail_y * mean_s / STEP_S) + 1)
    edges = np.arange(lags + 1) * STEP_S / mean_s
    h = mean_s * np.diff(busy_integral(dist, sigma, edges))  # (lag,) seconds of that step it still runs, exactly
    return np.convolve(rate, h)[:n]


def _checkpointed(p: _Partition) -> float:
    """The progress at the partition's last checkpoint."""
    return math.floor(p.progress_s / p.info.checkpoint_s + 1e-9) * p.info.checkpoint_s

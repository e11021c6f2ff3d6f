"""Training in the event simulator: partitions of whole nodes, their work and checkpoints, and pre-emption.

A `[[training]]` job (`Scenario.training`, resolved to `fleet.TrainingInfo`) holds a partition of whole nodes of
one site (`Nodes.take_whole`: all of it or none) and its GPUs count as busy while held. It asks at its start; a
waiting partition is taken when that many whole nodes are free and no serving job queued at the site outranks it,
checked when it asks, when another partition there ends and at every sample tick (there is no draining: best fit
keeps nodes whole as it can). Progress is checkpointed every `checkpoint_s` of work (the checkpoint's own write is
not modelled: asynchronous); an interruption rolls the work back to the last checkpoint (counted as lost
GPU-hours) and costs `restart_s` held without work when it runs again. A failed GPU in a partition interrupts it
there and then; the partition is assumed to swap in a spare at once (it keeps its size, and the GPU's repair is
not counted as down time).

Pre-emption (`noor.scheduling.preemption`): when a serving job is queued at a site with a running partition, the
site checks `preempt_after_s` later whether serving jobs that outrank a partition have waited that long; the
policy's victims release their nodes at once and the site dispatches.

The core (`noor.sim.core`) owns the clock, the heap and the serving queues; it hands this module's `Partitions`
the TRAINED, ASK and PREEMPT events, tells it when a serving job was queued (`watch`), when a GPU of a held node
fails (`on_gpu_failure`) and when a sample is taken (`on_tick`), and asks it for the per-job rows at the end
(`record`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from noor import scheduling
from noor.sim.events import ASK, PREEMPT, TRAINED
from noor.sim.fleet import TrainingInfo
from noor.sim.scenario import Scheduling

if TYPE_CHECKING:
    from noor.sim.core import _Queue, _Site

NAN = float("nan")
INF = float("inf")


class Partitions:
    """The training side of one run: every training job's state, what each site's partitions hold, and the
    handlers of the training events. Jobs are indices into `jobs` (the fleet's training order)."""

    __slots__ = (
        "arrival_s", "at", "dispatch", "horizon", "j_prio", "jobs", "preempt_after_s", "preempter", "push", "series",
        "sites", "trace",
    )  # fmt: skip

    def __init__(
        self,
        infos: list[TrainingInfo],
        sites: list[_Site],
        sched: Scheduling,
        horizon: float,
        j_prio: list[int],
        arrival_s: list[float],
        push: Callable[[tuple[Any, ...]], None],
        dispatch: Callable[[float, _Site], None],
        trace: list[tuple[float, str, tuple[int, ...], int, int]] | None,
    ):
        """`j_prio`, `arrival_s`: the serving jobs' priorities and arrival times (what pre-emption compares);
        `push` schedules an event on the core's heap, `dispatch` starts serving jobs at a site; `trace`: where
        events are recorded (None: not recorded). Each job's ASK event is pushed here, in the fleet's order."""
        self.jobs = [_Training(info) for info in infos]
        self.sites = sites
        self.at = [_SiteTraining() for _ in sites]  # per site, by index
        self.horizon = horizon
        self.j_prio = j_prio
        self.arrival_s = arrival_s
        self.push = push
        self.dispatch = dispatch
        self.trace = trace
        self.series: list[list[int]] = []  # per tick, per site: GPUs held by training
        self.preempter = scheduling.preemption_policy(sched.preemption)
        # None: no serving job ever checks for pre-emption (no training, or the "never" policy)
        self.preempt_after_s = sched.preempt_after_s if self.jobs and sched.preemption != "never" else None
        for t, info in enumerate(infos):
            push((info.start_s, ASK, 0, info.site, t, 0, 0.0, None))

    # --- handlers, one per training event kind ------------------------------------------------------

    def on_ask(self, now: float, event: tuple[Any, ...]) -> bool:
        """A training job asks for its partition: it takes it if it can, else it waits at its site."""
        t, site = event[4], self.sites[event[3]]
        tr = self.jobs[t]
        tr.asked_s = tr.waiting_since_s = now
        self.at[site.index].waiting.append(t)
        self.resume(now, site)
        return False

    def on_trained(self, now: float, event: tuple[Any, ...]) -> bool:
        """A training job's work is done (unless it was interrupted since: then the event is stale)."""
        t, version = event[4], event[5]
        tr = self.jobs[t]
        if version != tr.version:
            return False
        site = self.sites[tr.info.site]
        tr.done_s = tr.info.work_s
        tr.end_s = now
        self.release(now, site, t)
        if self.at[site.index].waiting:
            self.resume(now, site)
        self.dispatch(now, site)
        return False

    def on_preempt(self, now: float, event: tuple[Any, ...]) -> bool:
        """Serving jobs queued at a site with a running partition: those that outrank a partition and have
        waited `preempt_after_s` take back what the pre-emption policy gives them."""
        site = self.sites[event[3]]
        here = self.at[site.index]
        here.check_pending = False
        if not site.waiting or not here.running:
            return False
        after_s, arrival_s, j_prio, jobs = self.preempt_after_s, self.arrival_s, self.j_prio, self.jobs
        assert after_s is not None
        lowest = max(jobs[t].info.priority for t in here.running)
        needed, priority, next_check = -site.free, None, INF
        for q in site.queues:
            if not q.heap:
                continue
            j = q.heap[0][-1]
            if j_prio[j] >= lowest:
                continue  # outranks no partition here
            if now - arrival_s[j] >= after_s:
                needed += len(q.heap) * q.gpus
                priority = j_prio[j] if priority is None else max(priority, j_prio[j])
            else:
                next_check = min(next_check, arrival_s[j] + after_s)
        if priority is not None and needed > 0:
            running = [scheduling.Partition(str(t), jobs[t].info.priority, jobs[t].info.gpus,
                                            jobs[t].since_checkpoint_s(now)) for t in here.running]  # fmt: skip
            for victim in self.preempter.victims(running, needed, priority):
                t = int(victim.id)
                jobs[t].preemptions += 1
                self.interrupt(now, t, keep=False)
                if self.trace is not None:
                    self.trace.append((now, "preempt", (t,), site.index, -1))
            self.dispatch(now, site)
            if site.waiting and here.running:
                next_check = min(next_check, now + after_s)
        if next_check < INF:
            here.check_pending = True
            self.push((next_check, PREEMPT, 0, site.index, 0, 0, 0.0, None))
        return False

    # --- what the core tells it ----------------------------------------------------------------------

    def watch(self, now: float, q: _Queue) -> None:
        """A serving job was queued: its sites with a running partition check for pre-emption later."""
        assert self.preempt_after_s is not None
        for site in q.site_objs:
            here = self.at[site.index]
            if here.running and not here.check_pending:
                here.check_pending = True
                self.push((now + self.preempt_after_s, PREEMPT, 0, site.index, 0, 0, 0.0, None))

    def on_gpu_failure(self, now: float, site: _Site, node: int) -> bool:
        """A GPU of `node` failed: if a partition holds the node, its job goes back to its checkpoint and a spare
        takes the GPU's place (True); False: the node is serving's, the core handles the failure."""
        t = self.at[site.index].held.get(node)
        if t is None:
            return False
        site.failures += 1
        self.jobs[t].failures += 1
        self.interrupt(now, t, keep=True)
        if self.trace is not None:
            self.trace.append((now, "fail", (), site.index, node))
        return True

    def on_tick(self, now: float) -> None:
        """A sample: waiting partitions try again, GPUs held per site are counted; at the horizon each job's
        progress is kept."""
        if not self.jobs:
            return
        for site, here in zip(self.sites, self.at, strict=True):
            if here.waiting:
                self.resume(now, site)
        self.series.append([here.gpus for here in self.at])
        if now >= self.horizon:
            for tr in self.jobs:
                tr.progress_at_horizon_s = tr.progress(now)

    def record(self, now: float) -> list[dict[str, Any]]:
        """Per job, what it did by the horizon; partitions still held add their GPU-seconds up to the horizon to
        their site's busy area (call once, at the end, after the sites' own accounting)."""
        horizon = self.horizon
        rows = []
        for t, tr in enumerate(self.jobs):
            held_s = _clipped(tr.held_since_s, now, horizon) if tr.nodes else 0.0
            self.sites[tr.info.site].busy_area += tr.info.gpus * held_s  # partitions still held: up to the horizon
            waiting = any(t in here.waiting for here in self.at)
            waited_s = tr.waited_s + (_clipped(tr.waiting_since_s, now, horizon) if waiting else 0.0)
            rows.append({
                "name": tr.info.name, "site": tr.info.site, "gpus": tr.info.gpus, "priority": tr.info.priority,
                "work_h": tr.info.work_s / 3600, "progress_h": tr.progress_at_horizon_s / 3600,
                "done_at_h": tr.end_s / 3600 if tr.end_s == tr.end_s else None,
                "preemptions": tr.preemptions, "failures": tr.failures, "lost_gpu_h": tr.lost_s * tr.info.gpus / 3600,
                "restart_gpu_h": tr.restarts_s * tr.info.gpus / 3600, "waited_h": waited_s / 3600,
                "held_gpu_h": (tr.held_gpu_s + tr.info.gpus * held_s) / 3600,
            })  # fmt: skip
        return rows

    # --- partitions taken, worked on, interrupted and given back -------------------------------------

    def resume(self, now: float, site: _Site) -> None:
        """Waiting partitions, best ranked first, take whole free nodes while no queued serving job here
        outranks them."""
        here, jobs = self.at[site.index], self.jobs
        here.waiting.sort(key=lambda t: (jobs[t].info.priority, jobs[t].asked_s, t))
        heads = [self.j_prio[q.heap[0][-1]] for q in site.queues if q.heap]
        while here.waiting:
            t = here.waiting[0]
            tr = jobs[t]
            if any(p < tr.info.priority for p in heads) or site.free < tr.info.gpus:
                return
            nodes = site.take_whole(tr.info.nodes)
            if not nodes:
                return
            here.waiting.pop(0)
            tr.waited_s += _clipped(tr.waiting_since_s, now, self.horizon)
            tr.nodes, tr.held_since_s = nodes, now
            for node in nodes:
                here.held[node] = t
            here.running.append(t)
            site.free -= tr.info.gpus
            site.busy += tr.info.gpus
            here.gpus += tr.info.gpus
            self.work(now, t, tr.restart_next_s)
            if self.trace is not None:
                self.trace.append((now, "hold", (t,), site.index, -1))

    def work(self, now: float, t: int, restart_s: float) -> None:
        """The partition works from now + restart_s: its TRAINED event is due when the rest of the work is done."""
        tr = self.jobs[t]
        tr.version += 1
        tr.work_from_s = now + restart_s
        tr.restarts_s += restart_s
        self.push((tr.work_from_s + tr.info.work_s - tr.done_s, TRAINED, 0, tr.info.site, t, tr.version, 0.0, None))

    def interrupt(self, now: float, t: int, keep: bool) -> None:
        """Back to the last checkpoint (the work since is lost); `keep`: on its partition, after a restart
        (a failure); else the partition is given back and the job waits for it again (a pre-emption)."""
        tr = self.jobs[t]
        lost_s = tr.since_checkpoint_s(now)
        tr.done_s = tr.progress(now) - lost_s
        tr.lost_s += lost_s
        tr.restart_next_s = tr.info.restart_s
        if keep:
            self.work(now, t, tr.info.restart_s)
            return
        tr.version += 1  # its TRAINED event is stale now
        site = self.sites[tr.info.site]
        self.release(now, site, t)
        tr.waiting_since_s = now
        self.at[site.index].waiting.append(t)

    def release(self, now: float, site: _Site, t: int) -> None:
        """A partition's nodes are free again; its held GPU-seconds are counted as busy."""
        tr = self.jobs[t]
        here = self.at[site.index]
        k = tr.info.gpus
        held = k * _clipped(tr.held_since_s, now, self.horizon)
        site.busy_area += held
        tr.held_gpu_s += held
        site.give_back(tr.nodes)
        for node in tr.nodes:
            del here.held[node]
        tr.nodes = []
        tr.work_from_s = INF
        here.running.remove(t)
        site.free += k
        site.busy -= k
        here.gpus -= k


class _SiteTraining:
    """What training holds at one site (the site's nodes and counts are the core's `_Site`)."""

    __slots__ = ("check_pending", "gpus", "held", "running", "waiting")

    def __init__(self) -> None:
        self.held: dict[int, int] = {}  # node -> the training job holding it
        self.running: list[int] = []  # training jobs holding a partition here
        self.waiting: list[int] = []  # training jobs waiting for theirs
        self.gpus = 0  # GPUs held by training
        self.check_pending = False  # a PREEMPT event for this site is on the heap


class _Training:
    """A training job's state in a run: its partition, its work, and what happened to it."""

    __slots__ = (
        "asked_s", "done_s", "end_s", "failures", "held_gpu_s", "held_since_s", "info", "lost_s", "nodes",
        "preemptions", "progress_at_horizon_s", "restart_next_s", "restarts_s", "version", "waited_s",
        "waiting_since_s", "work_from_s",
    )  # fmt: skip

    def __init__(self, info: TrainingInfo):
        self.info = info
        self.nodes: list[int] = []  # held now ([]: not holding)
        self.done_s = 0.0  # work kept: at the last checkpoint or rollback (or at the start of this hold)
        self.work_from_s = INF  # when this hold's work (re)started
        self.version = 0  # its TRAINED event's: an interruption makes the pending one stale
        self.asked_s = self.waiting_since_s = self.held_since_s = self.end_s = NAN
        self.restart_next_s = 0.0  # the first hold starts at once; one after an interruption reloads first
        self.preemptions = self.failures = 0
        self.lost_s = self.restarts_s = self.waited_s = self.held_gpu_s = self.progress_at_horizon_s = 0.0

    def progress(self, now: float) -> float:
        """Work done by `now`: what was kept, plus this hold's work since it (re)started."""
        return min(self.done_s + max(0.0, now - self.work_from_s), self.info.work_s) if self.nodes else self.done_s

    def since_checkpoint_s(self, now: float) -> float:
        """Work since the last checkpoint (checkpoints every `checkpoint_s` of work): lost if interrupted now."""
        done = self.progress(now)
        return done - math.floor(done / self.info.checkpoint_s + 1e-9) * self.info.checkpoint_s


def _clipped(since: float, until: float, horizon: float) -> float:
    """Seconds of [since, until] inside [0, horizon]."""
    return max(0.0, min(until, horizon) - min(since, horizon))

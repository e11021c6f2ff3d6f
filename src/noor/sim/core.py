"""The discrete-event core: one heap ordered by (time, kind, seq), a loop of a few lines in which the clock
moves, and one handler per event kind (SimPy's shape).

Event kinds, in the order they run at one instant: a batch ends (END), a GPU is repaired (REPAIR), a GPU fails
(FAIL), a training job's work is done (TRAINED), a training job asks for its partition (ASK), a site checks
whether serving should pre-empt training (PREEMPT), a sample/horizon tick (TICK); arrivals come after them.
Arrivals are read from a sorted array and merged with the heap by the loop, so they cost no heap operations.
Jobs are integer indices into flat lists.

Scheduling is `noor.scheduling`'s, as the live store applies it: a queue is a heap per (region set, class), or
per (tenant, class) under fair share, ordered by the policy's key computed for all jobs at once
(`Policy.key_columns`, tested to order as `Policy.order` does); fair share ranks queue heads by
`FairShare.tenant_rank` over the GPU-seconds each tenant was given so far (ended runs, and running ones up to
now: what the live store's usage counts). A job that finds a free GPU and nothing queued at the first site it
may use starts at once, with no queue operation (what enqueue + dispatch would do). Placement inside a site is
`noor.scheduling.Nodes` (best fit, and a node kept for a wide job: backfill in the manner of EASY), the rule
`scheduling.place` applies to live workers. A batch is `scheduling.batching.take` over the head's queue, the
function the live claim's `scheduling.batch` calls: a queue is one class (one batch key, one GPU count), so a job
joins its head's batch when both are predicted short enough (`batch_max_predicted_s`) and not sessions.

Failures: each up GPU fails at rate 1 / MTBF (exponential), is repaired after an exponential time with
mean MTTR. A batch on a failed GPU is killed: its jobs go back to their queues with their original
keys, the work done is counted as GPU-hours lost, its other GPUs are freed, and its END event is cancelled
(counted when it comes up, never silently dropped).

Training (`Scenario.training`: partitions of whole nodes, their checkpoints, pre-emption by serving) is
`noor.sim.training`'s: the core hands it the TRAINED, ASK and PREEMPT events and tells it what it needs to know.
"""

from __future__ import annotations

import gc
import heapq
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from noor import scheduling
from noor.scheduling import Nodes, batching
from noor.sim.events import END, FAIL, REPAIR, TICK
from noor.sim.fleet import Fleet
from noor.sim.scenario import Scenario
from noor.sim.training import Partitions

NAN = float("nan")


@dataclass
class Record:
    """What happened, as flat arrays (one entry per job / per site / per tick)."""

    submitted_s: np.ndarray
    start_s: np.ndarray  # of the run that finished (nan: never)
    end_s: np.ndarray
    site: np.ndarray  # where it finished, -1: never
    tenant: np.ndarray
    cls: np.ndarray
    busy_gpu_s: list[float]  # per site, over [0, horizon]
    down_gpu_s: list[float]
    lost_gpu_s: list[float]  # work thrown away by failures, per site
    failures: list[int]
    requeued: int
    batches: int
    ticks_s: list[float]
    busy_series: list[list[int]]  # per tick, per site
    down_series: list[list[int]]
    queued_series: list[list[int]]  # per tick, per tenant
    events: int
    wall_s: float
    end_time_s: float
    trace: list[tuple[float, str, tuple[int, ...], int, int]] = field(default_factory=list)
    refused: np.ndarray | None = None  # per job: an interactive session refused at arrival (its queue was full)
    training: list[dict[str, Any]] = field(default_factory=list)  # per training job: what it did by the horizon
    training_series: list[list[int]] = field(default_factory=list)  # per tick, per site: GPUs held by training


class _Site(Nodes):
    """A site: its nodes (best fit, `noor.scheduling.Nodes`) and what it has counted."""

    __slots__ = (
        "busy",
        "busy_area",
        "down",
        "down_area",
        "fail_rate",
        "failures",
        "free",
        "index",
        "info",
        "last_t",
        "lost_gpu_s",
        "queues",
        "waiting",
    )

    def __init__(self, index: int, info: Any):
        sizes = [info.gpus_per_node] * (info.gpus // info.gpus_per_node)
        if info.gpus % info.gpus_per_node:
            sizes.append(info.gpus % info.gpus_per_node)
        super().__init__(sizes, info.gpus_per_node)
        self.index = index
        self.info = info
        self.waiting = 0  # queued jobs that may run here
        self.free = info.gpus
        self.busy = 0
        self.down = 0
        self.busy_area = 0.0
        self.down_area = 0.0
        self.last_t = 0.0
        self.lost_gpu_s = 0.0
        self.failures = 0
        self.fail_rate = info.gpus / info.mtbf_s if info.mtbf_s else 0.0
        self.queues: list[_Queue] = []

    def account(self, now: float) -> None:
        """Down GPU-seconds up to `now` (busy GPU-seconds are added per batch when it ends)."""
        dt = now - self.last_t
        if dt > 0:
            self.down_area += self.down * dt
            self.last_t = now


class _Queue:
    """Queued jobs of one (tenant or region set, class), a heap ordered by the policy key."""

    __slots__ = ("base_s", "cls", "gpus", "heap", "joins", "max_queue", "popped", "site_objs", "sites", "tenant")

    def __init__(self, tenant: int, cls: int, gpus: int, sites: list[int], max_queue: int | None = None):
        self.max_queue = max_queue  # interactive sessions: admission (`scheduling.admit`) refuses past this
        self.tenant = tenant  # -1: several tenants that share regions (static policies)
        self.cls = cls
        self.gpus = gpus
        self.sites = sites
        self.heap: list[tuple[Any, ...]] = []
        self.base_s: list[float] = []  # perf-model seconds of one request of its class, per site
        self.site_objs: list[_Site] = []
        self.joins: Callable[[int], bool] = bool  # may a job join a batch (set by the run: small, not a session)
        self.popped: list[tuple[Any, ...]] = []  # keys read off the heap by `take` while a batch is chosen

    def __iter__(self) -> Iterator[int]:
        """The queued jobs in policy order, each popped as it is read (what `batching.take` reads a batch's
        other jobs from); the keys are kept in `popped` until the batch is chosen."""
        heap, popped, heappop = self.heap, self.popped, heapq.heappop
        while heap:
            key = heappop(heap)
            popped.append(key)
            yield key[-1]


def policy_of(s: Scenario) -> scheduling.Policy:
    """The scenario's queue-order policy, built as a live store would be given it."""
    sched = s.scheduling
    if sched.policy == "fair-share":
        return scheduling.get("fair-share", weights={t.name: t.share for t in s.tenants})
    return scheduling.get(sched.policy, **({"aging_per_s": sched.aging_per_s} if sched.policy == "sjf" else {}))


def simulate(
    fleet: Fleet,
    progress: Callable[[float], None] | None = None,
    record_trace: bool = False,
) -> Record:
    """Run the scenario to the end: arrivals over [0, horizon), then until every job has finished."""
    # The run allocates millions of small tuples and makes no reference cycles: the cyclic garbage
    # collector would only walk the job lists again and again (reference counting still frees memory).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _simulate(fleet, progress, record_trace)
    finally:
        if collecting:
            gc.enable()


def _simulate(fleet: Fleet, progress: Callable[[float], None] | None, record_trace: bool) -> Record:
    """The core: the next event is the heap's first or the next arrival, whichever is first (the heap's on a
    tie); the clock moves here and nowhere else; each kind has its handler."""
    wall0 = time.perf_counter()
    run = _Run(fleet, progress, record_trace)
    # each returns True when the run is over
    tr = run.training
    handlers = (run.on_end, run.on_repair, run.on_fail, tr.on_trained, tr.on_ask, tr.on_preempt, run.on_tick)
    heap, heappop, arrival_s, on_arrival = run.heap, heapq.heappop, run.arrival_s, run.on_arrival
    j, next_arrival, now = 0, arrival_s[0], 0.0
    while True:
        if heap and heap[0][0] <= next_arrival:
            event = heappop(heap)
            now = event[0]
            if handlers[event[1]](now, event):
                break
        elif j < run.n_jobs:
            now = next_arrival
            on_arrival(now, j)
            j += 1
            next_arrival = arrival_s[j]  # a sentinel inf ends the list
        else:
            break
    return run.record(now, time.perf_counter() - wall0)


class _Run:
    """One run's state, and a handler per event kind. An event is (time, kind, seq, site, node, k GPUs,
    started, jobs); FAIL/REPAIR/TICK fill what they need. A batch's END event carries its jobs: an int for
    one job (the path almost every job takes), else a list."""

    __slots__ = (
        "arr", "arrival_s", "arrived", "batches", "busy_series", "cancelled", "cancelled_ends", "chips", "done",
        "down_at_horizon", "down_series", "end", "failures_on", "fair", "fleet", "given_gpu_s", "heap", "horizon",
        "inf", "j_cls", "j_key", "j_noise", "j_prio", "j_queue", "j_tenant", "max_batch", "n_jobs", "overhead",
        "policy", "progress", "queue_of", "queued_by_tenant", "queued_series", "record_trace", "refused",
        "requeued", "rng", "running", "running_gpus", "running_started_gpu_s", "seq", "sites", "small", "start",
        "tenants", "ticks_s", "trace", "training", "watch", "where",
    )  # fmt: skip

    def __init__(self, fleet: Fleet, progress: Callable[[float], None] | None, record_trace: bool):
        s = fleet.scenario
        self.fleet, self.progress, self.record_trace = fleet, progress, record_trace
        self.rng = random.Random(s.seed * 1_000_003 + 1)  # failures and repairs; arrivals have their own stream
        sched = s.scheduling
        policy = self.policy = policy_of(s)
        fair = self.fair = not policy.static
        self.max_batch = sched.max_batch
        self.horizon = s.horizon_h * 3600
        self.inf = float("inf")

        arr = self.arr = fleet.arrivals
        n_jobs = self.n_jobs = len(arr)
        self.arrival_s: list[float] = [*arr.t_s.tolist(), self.inf]
        self.j_tenant: list[int] = arr.tenant.tolist()
        self.j_cls: list[int] = arr.cls.tolist()
        self.j_noise: list[float] = arr.noise.tolist()
        self.start = [NAN] * n_jobs
        self.end = [NAN] * n_jobs
        self.where = [-1] * n_jobs
        self.refused: list[int] = []  # interactive sessions refused at arrival

        sites = self.sites = [_Site(i, info) for i, info in enumerate(fleet.sites)]
        self.chips = [info.chip for info in fleet.sites]
        self.overhead = [info.job_overhead_s for info in fleet.sites]  # per job, outside the model (not noisy)
        self.tenants = [t.name for t in s.tenants]
        regions_of = [tuple(t.regions) for t in s.tenants]
        prio_of = [t.priority for t in s.tenants]

        # 1. queues: per (tenant, class) for fair share, else per (region set, class); each knows its sites
        queues: dict[tuple[Any, int], _Queue] = {}
        self.queue_of: dict[tuple[int, int], _Queue] = {}
        for (ti, ci), ok in fleet.sites_for.items():
            if not ok:
                continue
            group: Any = ti if fair else regions_of[ti]
            q = queues.get((group, ci))
            if q is None:
                c = fleet.classes[ci]
                q = queues[(group, ci)] = _Queue(ti if fair else -1, ci, c.gpus, ok, c.max_queue)
                for k in ok:
                    sites[k].queues.append(q)
            self.queue_of[(ti, ci)] = q
        predicted = {pair: fleet.predicted_s(*pair) for pair in self.queue_of}
        # sessions are never batched: each holds its own slot
        self.small = {
            pair: p <= sched.batch_max_predicted_s and not fleet.classes[pair[1]].interactive
            for pair, p in predicted.items()
        }
        self.queued_by_tenant = [0] * len(self.tenants)
        # fair share's usage: GPU-seconds of ended runs, and of running ones as k x (now - started), per tenant
        self.given_gpu_s = [0.0] * len(self.tenants)
        self.running_gpus = [0] * len(self.tenants)
        self.running_started_gpu_s = [0.0] * len(self.tenants)  # sum of k x started over running batches
        # perf-model seconds of one request of each class on each site (batches: fleet.latency_s, cached)
        for q in queues.values():
            q.base_s = [fleet.classes[q.cls].latency_s.get(chip, 0.0) for chip in self.chips]
            q.site_objs = [sites[k] for k in q.sites]
            joins = [self.small.get((t, q.cls), False) for t in range(len(self.tenants))]  # by tenant
            q.joins = lambda j, joins=joins, j_tenant=self.j_tenant: joins[j_tenant[j]]  # type: ignore[misc]

        # every job's place in its queue: the policy's key, computed for all jobs at once, then the job index
        pred_gpu_s = np.zeros((len(self.tenants), len(fleet.classes)))
        for (ti, ci), p in predicted.items():
            pred_gpu_s[ti, ci] = p * fleet.classes[ci].gpus
        prio = np.array([c.priority for c in fleet.classes])[arr.cls] + np.array(prio_of)[arr.tenant]
        self.j_prio: list[int] = prio.tolist() if n_jobs else []  # what pre-emption compares with training's
        columns = policy.key_columns(arr.t_s, prio, pred_gpu_s[arr.tenant, arr.cls]) if n_jobs else []
        self.j_key: list[tuple[Any, ...]] = list(
            zip(*(np.asarray(c).tolist() for c in columns), range(n_jobs), strict=True)
        )
        self.j_queue: list[_Queue] = [self.queue_of[pair] for pair in zip(self.j_tenant, self.j_cls, strict=True)]

        self.heap: list[tuple[Any, ...]] = []
        self.seq = 0  # every push takes one: the tie-break after (time, kind), and a batch's id
        # batch -> its END event. Kept only where GPUs can fail (to find a failed GPU's batch); a killed batch
        # leaves it and its seq goes to `cancelled`, so its END event is recognised and counted when it comes up.
        self.running: dict[int, tuple[Any, ...]] = {}
        self.cancelled: set[int] = set()
        self.cancelled_ends = 0
        self.failures_on = any(site.fail_rate > 0 for site in sites)
        self.batches = 0
        self.requeued = 0
        self.trace: list[tuple[float, str, tuple[int, ...], int, int]] = []
        self.arrived = 0  # arrivals handled so far
        self.done = 0

        # 2. the first failures and ticks
        for site in sites:
            self.schedule_failure(site, 0.0)
        ticks = np.arange(0.0, self.horizon + 1e-9, s.sample_s).tolist()
        if ticks[-1] < self.horizon:
            ticks.append(self.horizon)
        for t in ticks:
            self.push((t, TICK, 0, 0, 0, 0, 0.0, None))
        self.ticks_s: list[float] = []
        self.busy_series: list[list[int]] = []
        self.down_series: list[list[int]] = []
        self.queued_series: list[list[int]] = []
        self.down_at_horizon: list[float] = [0.0] * len(sites)

        # 3. training: each asks for its partition at its start; `watch` (None: no pre-emption) is told of
        # every serving job that has to queue
        self.training = Partitions(fleet.training, sites, sched, self.horizon, self.j_prio, self.arrival_s,
                                   self.push, self.dispatch, self.trace if record_trace else None)  # fmt: skip
        self.watch = self.training.watch if self.training.preempt_after_s is not None else None

    def push(self, event: tuple[Any, ...]) -> None:
        """Schedule an event; its seq (the third field) is set here (`launch` does the same inline)."""
        self.seq += 1
        heapq.heappush(self.heap, (event[0], event[1], self.seq, *event[3:]))

    # --- handlers, one per event kind ------------------------------------------------------------

    def on_arrival(self, now: float, j: int) -> None:
        """A job arrives: it starts at once where nothing waits, else it is queued and its sites dispatch."""
        self.arrived = j + 1
        if self.record_trace:
            self.trace.append((now, "arrive", (j,), -1, -1))
        q = self.j_queue[j]
        if q.max_queue is not None:  # a session: a slot, a place in the queue, or refused (the server's 429)
            free = sum(site.free for site in q.site_objs)
            if scheduling.admit(free, len(q.heap), q.max_queue).decision == "refuse":
                self.refused.append(j)
                self.done += 1  # it will never run: the run ends without it
                if self.record_trace:
                    self.trace.append((now, "refuse", (j,), -1, -1))
                return
        # fast path: the first site with a free GPU has nothing waiting and a node with k free GPUs:
        # start here, as enqueue + dispatch would (this job would be the only one to choose from)
        for site in q.site_objs:
            if site.free:
                if not site.waiting and site.free >= q.gpus:
                    node = site.take(q.gpus)
                    if node >= 0:
                        self.launch(now, site, node, q, j)
                        return
                self.enqueue(j)
                sites, start = self.sites, self.start
                for k2 in q.sites:
                    if sites[k2].free:
                        self.dispatch(now, sites[k2])
                        if start[j] == start[j]:  # started (not nan)
                            break
                if self.watch is not None and start[j] != start[j]:
                    self.watch(now, q)
                return
        self.enqueue(j)
        if self.watch is not None:
            self.watch(now, q)

    def on_end(self, now: float, event: tuple[Any, ...]) -> bool:
        """A batch ends: its GPUs are freed, its jobs are done, its site dispatches. Kept short: once per job."""
        _, _, seq, site, node, k, started, jobs = event
        if self.failures_on:
            if seq in self.cancelled:  # killed by a failure: its jobs were re-queued then
                self.cancelled.remove(seq)
                self.cancelled_ends += 1
                return False
            del self.running[seq]
        si = site.index
        horizon = self.horizon
        # busy GPU-seconds within [0, horizon]
        site.busy_area += k * ((now if now < horizon else horizon) - (started if started < horizon else horizon))
        site.busy -= k
        site.free += k
        free_now = site.node_free[node] + k  # site.move, inline
        site.node_free[node] = free_now
        site.by_free[free_now].append(node)
        one = jobs.__class__ is int  # one job (the common case), else a list (a batch)
        if one:
            self.end[jobs] = now
            self.where[jobs] = si
            self.done += 1
        else:
            for j in jobs:
                self.end[j] = now
                self.where[j] = si
            self.done += len(jobs)
        if self.fair:
            self.given(self.j_tenant[jobs if one else jobs[0]], k, started, now)
        if self.record_trace:
            self.trace.append((now, "end", (jobs,) if one else tuple(jobs), si, node))
        if site.waiting:
            self.dispatch(now, site)
        return self.done == self.n_jobs and now >= horizon  # every job done: every job arrived

    def on_fail(self, now: float, event: tuple[Any, ...]) -> bool:
        """A GPU fails (uniformly among a site's GPUs; thinned if it is already down). A batch on it is
        killed and its jobs are queued again; it is repaired after an exponential time."""
        rng = self.rng
        site = self.sites[event[3]]  # a FAIL event carries the site's index
        if now < self.horizon or self.done < self.n_jobs or self.arrived < self.n_jobs:  # a site that only trains too
            self.schedule_failure(site, now)
        node = rng.randrange(site.info.gpus) // site.per_node  # a GPU, uniformly
        if self.training.on_gpu_failure(now, site, node):  # a partition's GPU: training's to handle
            return False
        size = site.node_size[node]
        up = size - site.node_down[node]
        if rng.random() * size >= up:
            return False  # thinning: that GPU is already down
        site.account(now)
        site.failures += 1
        if node == site.reserved:
            site.reserved, site.reserved_k = -1, 0  # keep another node instead
        busy_here = up - site.node_free[node]
        if rng.random() * up < busy_here:  # the failed GPU was running a batch: kill it
            self.kill(now, site, node)
        else:
            site.free -= 1
            site.move(node, site.node_free[node] - 1)
            if self.record_trace:
                self.trace.append((now, "fail", (), site.index, node))
        site.down += 1
        site.node_down[node] += 1
        self.push((now + rng.expovariate(1 / site.info.mttr_s), REPAIR, 0, site.index, node, 0, 0.0, None))
        return False

    def on_repair(self, now: float, event: tuple[Any, ...]) -> bool:
        """A GPU is back: its node has one more free GPU, and its site dispatches."""
        node = event[4]
        site = self.sites[event[3]]  # a REPAIR event carries the site's index and the node
        site.account(now)
        site.down -= 1
        site.node_down[node] -= 1
        site.free += 1
        site.move(node, site.node_free[node] + 1)
        if self.record_trace:
            self.trace.append((now, "repair", (), site.index, node))
        self.dispatch(now, site)
        return False

    def on_tick(self, now: float, event: tuple[Any, ...]) -> bool:
        """A sample of busy, down and queued; at the horizon, down GPU-seconds so far are kept."""
        for site in self.sites:
            site.account(now)
        self.ticks_s.append(now)
        self.busy_series.append([site.busy for site in self.sites])
        self.down_series.append([site.down for site in self.sites])
        self.queued_series.append(list(self.queued_by_tenant))
        self.training.on_tick(now)
        if now >= self.horizon:
            self.down_at_horizon = [site.down_area for site in self.sites]
        if self.progress is not None:
            self.progress(min(now / self.horizon, 1.0))
        return self.done == self.n_jobs and now >= self.horizon

    # --- what the handlers share ------------------------------------------------------------------

    def enqueue(self, j: int) -> None:
        q = self.j_queue[j]
        heapq.heappush(q.heap, self.j_key[j])
        self.queued_by_tenant[self.j_tenant[j]] += 1
        for k in q.sites:
            self.sites[k].waiting += 1

    def given(self, tenant: int, k: int, started: float, now: float) -> None:
        """A run of k GPUs since `started` ended (or was killed) now: fair share's usage counts it as given."""
        self.given_gpu_s[tenant] += k * (now - started)
        self.running_gpus[tenant] -= k
        if self.running_gpus[tenant]:
            self.running_started_gpu_s[tenant] -= k * started
        else:
            self.running_started_gpu_s[tenant] = 0.0  # no rounding left behind

    def usage(self, now: float) -> dict[str, float]:
        """GPU-seconds each tenant was given up to now (what the live store's `_usage` counts, with no window)."""
        return {
            name: self.given_gpu_s[t] + self.running_gpus[t] * now - self.running_started_gpu_s[t]
            for t, name in enumerate(self.tenants)
        }

    def launch(self, now: float, site: _Site, node: int, q: _Queue, jobs: Any) -> None:
        """Start a batch (one job as an int, or a list of several of one queue) on k GPUs of one node."""
        k = q.gpus
        site.free -= k
        site.busy += k
        if jobs.__class__ is int:
            self.start[jobs] = now
            first, duration = jobs, q.base_s[site.index] * self.j_noise[jobs]
        else:
            for j in jobs:
                self.start[j] = now
            first = jobs[0]
            duration = self.fleet.latency_s(q.cls, self.chips[site.index], len(jobs)) * self.j_noise[first]
        if self.fair:
            tenant = self.j_tenant[first]
            self.running_gpus[tenant] += k
            self.running_started_gpu_s[tenant] += k * now
        self.batches += 1
        end_s = now + duration + self.overhead[site.index]
        self.seq = seq = self.seq + 1  # self.push, inline: this runs once per job
        heapq.heappush(self.heap, (end_s, END, seq, site, node, k, now, jobs))
        if self.failures_on:
            self.running[seq] = (end_s, END, seq, site, node, k, now, jobs)
        if self.record_trace:
            self.trace.append((now, "start", (jobs,) if jobs.__class__ is int else tuple(jobs), site.index, node))

    def dispatch(self, now: float, site: _Site) -> None:
        """Start what the policy puts first on the site's free GPUs until nothing more fits."""
        if not site.waiting:
            return
        blocked: list[_Queue] = []
        if site.reserved >= 0 and not any(q.heap and q.gpus >= site.reserved_k for q in site.queues):
            site.reserved, site.reserved_k = -1, 0  # no job that wide waits here any more
        fair, heappop, j_tenant, take = self.fair, heapq.heappop, self.j_tenant, batching.take
        max_batch, queued_by_tenant, sites, launch = self.max_batch, self.queued_by_tenant, self.sites, self.launch
        if fair:
            usage, tenant_rank, tenants = self.usage(now), self.policy.tenant_rank, self.tenants  # type: ignore[attr-defined]
        while site.free:
            best: _Queue | None = None
            best_rank: Any = None
            for q in site.queues:
                if q.heap and not (blocked and q in blocked):
                    rank = (tenant_rank(tenants[q.tenant], usage), q.heap[0]) if fair else q.heap[0]
                    if best is None or rank < best_rank:
                        best, best_rank = q, rank
            if best is None:
                return
            node = site.take(best.gpus)
            if node < 0:
                # the first job waits for k GPUs on one node, with a node kept for it; later jobs may start
                # elsewhere meanwhile (backfill), never on that node, so they do not delay it
                site.reserve(best.gpus)
                blocked.append(best)
                continue
            jobs = take(heappop(best.heap)[-1], best, max_batch, best.joins)
            if best.popped:  # jobs read for the batch: those it turned down go back with their keys
                if len(best.popped) >= len(jobs):
                    for key in best.popped:
                        if key[-1] not in jobs:
                            heapq.heappush(best.heap, key)
                best.popped.clear()
            for j in jobs:
                queued_by_tenant[j_tenant[j]] -= 1
            for k2 in best.sites:
                sites[k2].waiting -= len(jobs)
            launch(now, site, node, best, jobs[0] if len(jobs) == 1 else jobs)

    def kill(self, now: float, site: _Site, node: int) -> None:
        """A failed GPU's batch (drawn by GPUs among the batches on its node) stops: the work done is lost,
        its jobs are queued again with their keys, its other GPUs are freed, its END event is cancelled."""
        on_node = sorted(b for b, r in self.running.items() if r[3] is site and r[4] == node)
        weights = [self.running[b][5] for b in on_node]
        victim = self.rng.choices(on_node, weights)[0]
        _, _, _, _, _, k, started, jobs = self.running.pop(victim)
        self.cancelled.add(victim)
        jobs = [jobs] if jobs.__class__ is int else jobs
        site.lost_gpu_s += k * (now - started)
        site.busy_area += k * (min(now, self.horizon) - min(started, self.horizon))
        site.busy -= k
        site.free += k - 1
        site.move(node, site.node_free[node] + k - 1)
        if self.fair:
            self.given(self.j_tenant[jobs[0]], k, started, now)
        self.requeued += len(jobs)
        if self.record_trace:
            self.trace.append((now, "fail", tuple(jobs), site.index, node))
        for j in jobs:
            self.start[j] = NAN
            self.enqueue(j)
        for j in jobs:
            for k2 in self.queue_of[(self.j_tenant[j], self.j_cls[j])].sites:
                if self.sites[k2].free:
                    self.dispatch(now, self.sites[k2])

    def schedule_failure(self, site: _Site, now: float) -> None:
        if site.fail_rate > 0:
            self.push((now + self.rng.expovariate(site.fail_rate), FAIL, 0, site.index, 0, 0, 0.0, None))

    def record(self, now: float, wall_s: float) -> Record:
        sites = self.sites
        for site in sites:
            site.account(now)
        training = self.training.record(now)
        return Record(
            submitted_s=self.arr.t_s,
            start_s=np.asarray(self.start, dtype=float),
            end_s=np.asarray(self.end, dtype=float),
            site=np.asarray(self.where, dtype=np.int64),
            tenant=self.arr.tenant,
            cls=self.arr.cls,
            busy_gpu_s=[site.busy_area for site in sites],
            down_gpu_s=self.down_at_horizon,
            lost_gpu_s=[site.lost_gpu_s for site in sites],
            failures=[site.failures for site in sites],
            requeued=self.requeued,
            batches=self.batches,
            ticks_s=self.ticks_s,
            busy_series=self.busy_series,
            down_series=self.down_series,
            queued_series=self.queued_series,
            events=self.arrived + self.seq - len(self.heap),  # arrivals + events popped (every push took a seq)
            wall_s=wall_s,
            end_time_s=now,
            trace=self.trace,
            refused=np.isin(np.arange(self.n_jobs), self.refused),
            training=training,
            training_series=self.training.series,
        )

"""The discrete-event core: one heap of (time, kind, seq, ...), the clock moves in one place.

Events: a batch ends (0), a GPU is repaired (1), a GPU fails (2), a sample/horizon tick (3). Arrivals are
read from a sorted array and merged with the heap (an arrival at the same instant as a heap event comes
after it), so they cost no heap operations. Jobs are integer indices into flat lists. A queue is a heap
per (region set, class), or per (tenant, class) under fair share, ordered by the policy's key computed
for all jobs at once (`Policy.key_columns`, tested to order as `Policy.order` does); fair share picks
among queue heads by its tenant rank. A job that finds a free GPU and nothing queued at the first site
it may use starts at once, with no queue operation (what enqueue + dispatch would do).

Placement inside a site: the node with the fewest free GPUs that still has k (best fit), as
`noor.scheduling.place`. If the first job in policy order needs more GPUs than any node has free, the
node nearest to that is kept for it (one per site) and later jobs may start on the other nodes meanwhile
(backfill in the manner of EASY: they cannot delay the kept node).

Failures: each up GPU fails at rate 1 / MTBF (exponential), is repaired after an exponential time with
mean MTTR. A batch on a failed GPU is killed: its jobs go back to their queues with their original
keys, the work done is counted as GPU-hours lost, its other GPUs are freed.
"""

from __future__ import annotations

import gc
import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from noor import scheduling
from noor.sim.fleet import Fleet

END, REPAIR, FAIL, TICK = 0, 1, 2, 3


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


class _Site:
    __slots__ = (
        "busy",
        "busy_area",
        "by_free",
        "down",
        "down_area",
        "fail_rate",
        "failures",
        "free",
        "index",
        "info",
        "last_t",
        "levels",
        "lost_gpu_s",
        "node_down",
        "node_free",
        "node_size",
        "per_node",
        "queues",
        "reserved",
        "reserved_k",
        "waiting",
    )

    def __init__(self, index: int, info: Any):
        self.index = index
        self.info = info
        self.per_node = info.gpus_per_node
        sizes = [info.gpus_per_node] * (info.gpus // info.gpus_per_node)
        if info.gpus % info.gpus_per_node:
            sizes.append(info.gpus % info.gpus_per_node)
        self.node_free = list(sizes)
        self.node_size = sizes
        self.levels = [range(k, self.per_node + 1) for k in range(self.per_node + 1)]  # free counts that fit k
        self.node_down = [0] * len(sizes)
        # by_free[c]: a stack of nodes that had c free GPUs when pushed; stale entries are dropped when met
        # (a set's next(iter()) slows down after many deletions; this stays O(1) amortised)
        self.by_free: list[list[int]] = [[] for _ in range(self.per_node + 1)]
        for n in reversed(range(len(sizes))):
            self.by_free[sizes[n]].append(n)
        self.waiting = 0  # queued jobs that may run here
        self.reserved = -1  # a node kept for the first job that needs more GPUs than any node has free
        self.reserved_k = 0
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

    def take(self, k: int) -> int:
        """Best fit: a node with the fewest free GPUs >= k (not the reserved node unless k is as wide as the
        job it is kept for); -1 if none."""
        by_free, node_free = self.by_free, self.node_free
        if self.reserved < 0:  # the common case, kept short: this runs once per job
            for c in self.levels[k]:
                stack = by_free[c]
                while stack:
                    node = stack.pop()
                    if node_free[node] == c:
                        node_free[node] = c - k
                        by_free[c - k].append(node)
                        return node
            return -1
        reserved = self.reserved
        for c in range(k, self.per_node + 1):
            stack = by_free[c]
            skipped = -1
            while stack:
                node = stack.pop()
                if node_free[node] != c:
                    continue  # stale
                if node == reserved and k < self.reserved_k:
                    skipped = node
                    continue
                if skipped >= 0:
                    stack.append(skipped)
                node_free[node] = c - k
                by_free[c - k].append(node)
                if k >= self.reserved_k:
                    self.reserved, self.reserved_k = -1, 0  # the wide job this was kept for (or its like) runs
                return node
            if skipped >= 0:
                stack.append(skipped)
        return -1

    def reserve(self, k: int) -> None:
        """Keep the node nearest to k free GPUs for a k-GPU job: narrower jobs may not start there meanwhile."""
        if self.reserved >= 0:
            return
        best = -1
        for c in range(self.per_node, -1, -1):  # the most free GPUs first: the top of each stack
            stack = self.by_free[c]
            while stack and self.node_free[stack[-1]] != c:
                stack.pop()  # stale
            for node in reversed(stack):
                if self.node_free[node] == c and self.node_size[node] - self.node_down[node] >= k:
                    best = node
                    break
            if best >= 0:
                break
        self.reserved, self.reserved_k = best, (k if best >= 0 else 0)

    def move(self, node: int, old: int, new: int) -> None:
        self.node_free[node] = new
        self.by_free[new].append(node)


class _Queue:
    """Queued jobs of one (tenant or region set, class), a heap ordered by the policy key."""

    __slots__ = ("base_s", "cls", "gpus", "heap", "site_objs", "sites", "tenant")

    def __init__(self, tenant: int, cls: int, gpus: int, sites: list[int]):
        self.tenant = tenant  # -1: several tenants that share regions (static policies)
        self.cls = cls
        self.gpus = gpus
        self.sites = sites
        self.heap: list[tuple[Any, ...]] = []
        self.base_s: list[float] = []  # perf-model seconds of one request of its class, per site
        self.site_objs: list[_Site] = []


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
    s = fleet.scenario
    wall0 = time.perf_counter()
    rng = random.Random(s.seed * 1_000_003 + 1)  # failures and repairs; arrivals have their own stream
    sched = s.scheduling
    policy = scheduling.get(sched.policy, **({"aging_per_s": sched.aging_per_s} if sched.policy == "sjf" else {}))
    if sched.policy == "fair-share":
        policy = scheduling.get("fair-share", weights={t.name: t.share for t in s.tenants})
    fair = not policy.static
    tenant_rank: Callable[[str, Any], float] = getattr(policy, "tenant_rank", lambda tenant, usage: 0.0)
    max_batch = sched.max_batch
    horizon = s.horizon_h * 3600

    arr = fleet.arrivals
    n_jobs = len(arr)
    sub_t: list[float] = arr.t_s.tolist()
    j_tenant: list[int] = arr.tenant.tolist()
    j_cls: list[int] = arr.cls.tolist()
    j_noise: list[float] = arr.noise.tolist()
    start = [float("nan")] * n_jobs
    end = [float("nan")] * n_jobs
    where = [-1] * n_jobs

    sites = [_Site(i, info) for i, info in enumerate(fleet.sites)]
    chips = [info.chip for info in fleet.sites]
    overhead = [info.job_overhead_s for info in fleet.sites]  # per job, outside the model (not noisy)
    tenants = [t.name for t in s.tenants]
    regions_of = [tuple(t.regions) for t in s.tenants]
    prio_of = [t.priority for t in s.tenants]

    # 1. queues: per (tenant, class) for fair share, else per (region set, class); each knows its sites
    queues: dict[tuple[Any, int], _Queue] = {}
    queue_of: dict[tuple[int, int], _Queue] = {}
    for (ti, ci), ok in fleet.sites_for.items():
        if not ok:
            continue
        group: Any = ti if fair else regions_of[ti]
        q = queues.get((group, ci))
        if q is None:
            q = queues[(group, ci)] = _Queue(ti if fair else -1, ci, fleet.classes[ci].gpus, ok)
            for k in ok:
                sites[k].queues.append(q)
        queue_of[(ti, ci)] = q
    predicted = {pair: fleet.predicted_s(*pair) for pair in queue_of}
    small = {pair: p <= sched.batch_max_predicted_s for pair, p in predicted.items()}
    usage = dict.fromkeys(tenants, 0.0)
    queued_by_tenant = [0] * len(tenants)
    # perf-model seconds of one request of each class on each site (batches: fleet.latency_s, cached)
    for q in queues.values():
        q.base_s = [fleet.classes[q.cls].latency_s.get(chip, 0.0) for chip in chips]
        q.site_objs = [sites[k] for k in q.sites]

    # every job's place in its queue: the policy's key, computed for all jobs at once, then the job index
    pred_gpu_s = np.zeros((len(tenants), len(fleet.classes)))
    for (ti, ci), p in predicted.items():
        pred_gpu_s[ti, ci] = p * fleet.classes[ci].gpus
    prio = np.array([c.priority for c in fleet.classes])[arr.cls] + np.array(prio_of)[arr.tenant]
    columns = policy.key_columns(arr.t_s, prio, pred_gpu_s[arr.tenant, arr.cls]) if n_jobs else []
    j_key: list[tuple[Any, ...]] = list(zip(*(np.asarray(c).tolist() for c in columns), range(n_jobs), strict=True))
    j_queue: list[_Queue] = [queue_of[pair] for pair in zip(j_tenant, j_cls, strict=True)]

    heap: list[tuple[Any, ...]] = []
    seq = 0
    # batch -> (site, node, k, start, jobs); the same tuple rides in the batch's END event. Kept only where GPUs
    # can fail (to find a failed GPU's batch); a killed batch leaves it, so its END event is then ignored.
    running: dict[int, tuple[Any, ...]] = {}
    failures_on = any(site.fail_rate > 0 for site in sites)
    launches = [0]  # batches started (a list: bumped inside launch without a nonlocal)
    requeued = 0
    trace: list[tuple[float, str, tuple[int, ...], int, int]] = []
    heappush, heappop = heapq.heappush, heapq.heappop

    def enqueue(j: int) -> _Queue:
        q = j_queue[j]
        heappush(q.heap, j_key[j])
        queued_by_tenant[j_tenant[j]] += 1
        for k in q.sites:
            sites[k].waiting += 1
        return q

    def launch(site: _Site, node: int, q: _Queue, jobs: list[int], now: float) -> None:
        """Start a batch (one job or several of one queue) on k GPUs of one node."""
        nonlocal seq
        k = q.gpus
        site.free -= k
        site.busy += k
        n = len(jobs)
        if n == 1:
            j = jobs[0]
            duration = q.base_s[site.index] * j_noise[j] + overhead[site.index]
            start[j] = now
        else:
            duration = fleet.latency_s(q.cls, chips[site.index], n) * j_noise[jobs[0]] + overhead[site.index]
            for j in jobs:
                start[j] = now
        if fair:
            for j in jobs:
                usage[tenants[j_tenant[j]]] += predicted[(j_tenant[j], q.cls)] * k / n
        launches[0] += 1
        seq += 1  # the END event's seq doubles as the batch id
        event = (now + duration, END, seq, site, node, k, now, jobs)
        if failures_on:
            running[seq] = event
        heappush(heap, event)
        if record_trace:
            trace.append((now, "start", tuple(jobs), site.index, node))

    def launch_one(site: _Site, node: int, q: _Queue, j: int, now: float) -> None:
        """`launch` for one job, without a batch: the path almost every job takes, kept short."""
        nonlocal seq
        k = q.gpus
        site.free -= k
        site.busy += k
        start[j] = now
        if fair:
            usage[tenants[j_tenant[j]]] += predicted[(j_tenant[j], q.cls)] * k
        launches[0] += 1
        seq += 1
        end_s = now + q.base_s[site.index] * j_noise[j] + overhead[site.index]
        event = (end_s, END, seq, site, node, k, now, j)  # jobs: an int
        if failures_on:
            running[seq] = event
        heappush(heap, event)
        if record_trace:
            trace.append((now, "start", (j,), site.index, node))

    def dispatch(site: _Site, now: float) -> None:
        if not site.waiting:
            return
        blocked: list[_Queue] = []
        if site.reserved >= 0 and not any(q.heap and q.gpus >= site.reserved_k for q in site.queues):
            site.reserved, site.reserved_k = -1, 0  # no job that wide waits here any more
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
            jobs = [heappop(best.heap)[-1]]
            if max_batch > 1 and small[(j_tenant[jobs[0]], best.cls)]:
                while len(jobs) < max_batch and best.heap and small[(j_tenant[best.heap[0][-1]], best.cls)]:
                    jobs.append(heappop(best.heap)[-1])
            for j in jobs:
                queued_by_tenant[j_tenant[j]] -= 1
            for k2 in best.sites:
                sites[k2].waiting -= len(jobs)
            if len(jobs) == 1:
                launch_one(site, node, best, jobs[0], now)
            else:
                launch(site, node, best, jobs, now)

    def schedule_failure(site: _Site, now: float) -> None:
        nonlocal seq
        if site.fail_rate > 0:
            seq += 1
            heappush(heap, (now + rng.expovariate(site.fail_rate), FAIL, seq, site.index, 0, 0, 0.0, None))

    # 2. the first failures and ticks
    for site in sites:
        schedule_failure(site, 0.0)
    ticks = np.arange(0.0, horizon + 1e-9, s.sample_s).tolist()
    if ticks[-1] < horizon:
        ticks.append(horizon)
    for t in ticks:
        seq += 1
        heappush(heap, (t, TICK, seq, 0, 0, 0, 0.0, None))
    ticks_s: list[float] = []
    busy_series: list[list[int]] = []
    down_series: list[list[int]] = []
    queued_series: list[list[int]] = []
    down_at_horizon: list[float] = [0.0] * len(sites)

    # 3. the loop: the next arrival or the next heap event, whichever is first
    a = 0
    inf = float("inf")
    sub_t.append(inf)
    next_arrival = sub_t[0]
    done = 0
    now = 0.0
    while True:
        if heap and heap[0][0] <= next_arrival:
            # (time, kind, seq, site, node, k GPUs, started, jobs); FAIL/REPAIR/TICK fill what they need
            now, kind, event_seq, site, node, k, started, jobs = heappop(heap)
            if kind == END:
                if failures_on and running.pop(event_seq, None) is None:
                    continue  # killed by a failure: its jobs were re-queued
                si = site.index
                # busy GPU-seconds within [0, horizon]
                site.busy_area += k * ((now if now < horizon else horizon)
                                       - (started if started < horizon else horizon))
                site.busy -= k
                site.free += k
                free_now = site.node_free[node] + k
                site.node_free[node] = free_now
                site.by_free[free_now].append(node)
                if jobs.__class__ is int:  # one job (launch_one), else a list (a batch)
                    end[jobs] = now
                    where[jobs] = si
                    done += 1
                else:
                    for j in jobs:
                        end[j] = now
                        where[j] = si
                    done += len(jobs)
                if record_trace:
                    trace.append((now, "end", (jobs,) if jobs.__class__ is int else tuple(jobs), si, node))
                if site.waiting:
                    dispatch(site, now)
                if done == n_jobs and a == n_jobs and now >= horizon:
                    break
            elif kind == FAIL:
                site = sites[site]  # a FAIL event carries the site's index
                if done < n_jobs or a < n_jobs:
                    schedule_failure(site, now)
                node = rng.randrange(site.info.gpus) // site.per_node  # a GPU, uniformly
                size = site.node_size[node]
                up = size - site.node_down[node]
                if rng.random() * size >= up:
                    continue  # thinning: that GPU is already down
                site.account(now)
                site.failures += 1
                if node == site.reserved:
                    site.reserved, site.reserved_k = -1, 0  # keep another node instead
                busy_here = up - site.node_free[node]
                if rng.random() * up < busy_here:  # the failed GPU was running a batch: kill it
                    on_node = sorted(b for b, r in running.items() if r[3] is site and r[4] == node)
                    weights = [running[b][5] for b in on_node]
                    victim = rng.choices(on_node, weights)[0]
                    _, _, _, _, _, k, started, jobs = running.pop(victim)
                    jobs = [jobs] if jobs.__class__ is int else jobs
                    site.lost_gpu_s += k * (now - started)
                    site.busy_area += k * (min(now, horizon) - min(started, horizon))
                    site.busy -= k
                    site.free += k - 1
                    site.move(node, site.node_free[node], site.node_free[node] + k - 1)
                    requeued += len(jobs)
                    if record_trace:
                        trace.append((now, "fail", tuple(jobs), site.index, node))
                    for j in jobs:
                        start[j] = float("nan")
                        enqueue(j)
                    for j in jobs:
                        for k2 in queue_of[(j_tenant[j], j_cls[j])].sites:
                            if sites[k2].free:
                                dispatch(sites[k2], now)
                else:
                    site.free -= 1
                    site.move(node, site.node_free[node], site.node_free[node] - 1)
                    if record_trace:
                        trace.append((now, "fail", (), site.index, node))
                site.down += 1
                site.node_down[node] += 1
                seq += 1
                heappush(heap, (now + rng.expovariate(1 / site.info.mttr_s), REPAIR, seq, site.index, node, 0, 0.0,
                               None))
            elif kind == REPAIR:
                site = sites[site]  # a REPAIR event carries the site's index and the node
                site.account(now)
                site.down -= 1
                site.node_down[node] -= 1
                site.free += 1
                site.move(node, site.node_free[node], site.node_free[node] + 1)
                if record_trace:
                    trace.append((now, "repair", (), site.index, node))
                dispatch(site, now)
            elif kind == TICK:
                for site in sites:
                    site.account(now)
                ticks_s.append(now)
                busy_series.append([site.busy for site in sites])
                down_series.append([site.down for site in sites])
                queued_series.append(list(queued_by_tenant))
                if now >= horizon:
                    down_at_horizon = [site.down_area for site in sites]
                if progress is not None:
                    progress(min(now / horizon, 1.0))
                if done == n_jobs and a == n_jobs and now >= horizon:
                    break
        elif a < n_jobs:
            now = next_arrival
            j = a
            a += 1
            next_arrival = sub_t[a]  # a sentinel inf ends the list
            if record_trace:
                trace.append((now, "arrive", (j,), -1, -1))
            q = j_queue[j]
            # fast path: the first site with a free GPU has nothing waiting and a node with k free GPUs:
            # start here, as enqueue + dispatch would (this job would be the only one to choose from)
            for site in q.site_objs:
                if site.free:
                    if not site.waiting and site.free >= q.gpus:
                        node = site.take(q.gpus)
                        if node >= 0:
                            launch_one(site, node, q, j, now)
                            break
                    enqueue(j)
                    for k2 in q.sites:
                        if sites[k2].free:
                            dispatch(sites[k2], now)
                            if start[j] == start[j]:  # started (not nan)
                                break
                    break
            else:
                enqueue(j)
        else:
            break

    for site in sites:
        site.account(now)
    busy_at_horizon = [site.busy_area for site in sites]
    return Record(
        submitted_s=arr.t_s,
        start_s=np.asarray(start, dtype=float),
        end_s=np.asarray(end, dtype=float),
        site=np.asarray(where, dtype=np.int64),
        tenant=arr.tenant,
        cls=arr.cls,
        busy_gpu_s=busy_at_horizon,
        down_gpu_s=down_at_horizon,
        lost_gpu_s=[site.lost_gpu_s for site in sites],
        failures=[site.failures for site in sites],
        requeued=requeued,
        batches=launches[0],
        ticks_s=ticks_s,
        busy_series=busy_series,
        down_series=down_series,
        queued_series=queued_series,
        events=a + seq - len(heap),  # arrivals + events popped (every push took a seq)
        wall_s=time.perf_counter() - wall0,
        end_time_s=now,
        trace=trace,
    )

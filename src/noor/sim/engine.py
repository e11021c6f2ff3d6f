"""The discrete-event core: one heap of (time, priority, seq), the clock moves in one place.

Events: a batch ends (0), a GPU is repaired (1), a GPU fails (2), a sample/horizon tick (3). Arrivals are
read from a sorted array and merged with the heap (an arrival at the same instant as a heap event comes
after it), so they cost no heap operations. Jobs are integer indices into flat lists; a queue is a heap
per (tenant or region set, class) ordered by the policy's own key, so the order is exactly what
`policy.order` gives (static policies) or what fair share's tenant rank gives (its head jobs).

Placement inside a site: the node with the fewest free GPUs that still has k (best fit), as
`noor.scheduling.place`. If the first job in policy order needs more GPUs than any node has free, the
node nearest to that is kept for it (one per site) and later jobs may start on the other nodes meanwhile
(backfill in the manner of EASY: they cannot delay the kept node).

Failures: each up GPU fails at rate 1 / MTBF (exponential), is repaired after an exponential time with
mean MTTR. A batch on a failed GPU is killed: its jobs go back to their queues with their original
keys, the work done is counted as GPU-hours lost, its other GPUs are freed.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from noor import scheduling
from noor.scheduling import QueuedJob
from noor.sim.world import World

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
        dt = now - self.last_t
        if dt > 0:
            self.busy_area += self.busy * dt
            self.down_area += self.down * dt
            self.last_t = now

    def take(self, k: int) -> int:
        """Best fit: a node with the fewest free GPUs >= k (not the reserved node unless k is as wide as the
        job it is kept for); -1 if none."""
        by_free, node_free, reserved = self.by_free, self.node_free, self.reserved
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
                if k >= self.reserved_k and reserved >= 0:
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

    __slots__ = ("cls", "gpus", "heap", "sites", "tenant")

    def __init__(self, tenant: int, cls: int, gpus: int, sites: list[int]):
        self.tenant = tenant  # -1: several tenants that share regions (static policies)
        self.cls = cls
        self.gpus = gpus
        self.sites = sites
        self.heap: list[tuple[Any, int]] = []


def simulate(
    world: World,
    progress: Callable[[float], None] | None = None,
    record_trace: bool = False,
) -> Record:
    """Run the scenario to the end: arrivals over [0, horizon), then until every job has finished."""
    s = world.scenario
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

    arr = world.arrivals
    n_jobs = len(arr)
    sub_t: list[float] = arr.t_s.tolist()
    j_tenant: list[int] = arr.tenant.tolist()
    j_cls: list[int] = arr.cls.tolist()
    j_noise: list[float] = arr.noise.tolist()
    start = [float("nan")] * n_jobs
    end = [float("nan")] * n_jobs
    where = [-1] * n_jobs
    j_key: list[Any] = [None] * n_jobs

    sites = [_Site(i, info) for i, info in enumerate(world.sites)]
    chips = [info.chip for info in world.sites]
    tenants = [t.name for t in s.tenants]
    regions_of = [tuple(t.regions) for t in s.tenants]
    prio_of = [t.priority for t in s.tenants]

    # 1. queues: per (tenant, class) for fair share, else per (region set, class); each knows its sites
    queues: dict[tuple[Any, int], _Queue] = {}
    queue_of: dict[tuple[int, int], _Queue] = {}
    for (ti, ci), ok in world.sites_for.items():
        if not ok:
            continue
        group: Any = ti if fair else regions_of[ti]
        q = queues.get((group, ci))
        if q is None:
            q = queues[(group, ci)] = _Queue(ti if fair else -1, ci, world.classes[ci].gpus, ok)
            for k in ok:
                sites[k].queues.append(q)
        queue_of[(ti, ci)] = q
    predicted = {pair: world.predicted_s(*pair) for pair in queue_of}
    small = {pair: p <= sched.batch_max_predicted_s for pair, p in predicted.items()}
    usage = dict.fromkeys(tenants, 0.0)
    queued_by_tenant = [0] * len(tenants)

    heap: list[tuple[float, int, int, int, Any]] = []
    seq = 0
    running: dict[int, tuple[int, int, int, float, list[int]]] = {}  # batch -> site, node, k, start, jobs
    next_batch = 0
    requeued = 0
    batches = 0
    events = 0
    trace: list[tuple[float, str, tuple[int, ...], int, int]] = []

    def enqueue(j: int) -> _Queue:
        ti, ci = j_tenant[j], j_cls[j]
        q = queue_of[(ti, ci)]
        key = j_key[j]
        if key is None:
            c = world.classes[ci]
            job = QueuedJob(str(j), tenants[ti], c.model, sub_t[j], predicted[(ti, ci)], c.priority + prio_of[ti],
                            c.gpus, regions=regions_of[ti])
            key = j_key[j] = (policy.key(job)[:-1], j)  # the policy's key; ties end on the integer id
        heapq.heappush(q.heap, key)
        queued_by_tenant[ti] += 1
        for k in q.sites:
            sites[k].waiting += 1
        return q

    def dispatch(site: _Site, now: float) -> None:
        nonlocal seq, next_batch, batches
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
            k = best.gpus
            node = site.take(k)
            if node < 0:
                # the first job waits for k GPUs on one node, with a node kept for it; later jobs may start
                # elsewhere meanwhile (backfill), never on that node, so they do not delay it
                site.reserve(k)
                blocked.append(best)
                continue
            jobs = [heapq.heappop(best.heap)[1]]
            pair = (j_tenant[jobs[0]], best.cls)
            if max_batch > 1 and small[pair]:
                while len(jobs) < max_batch and best.heap and small[(j_tenant[best.heap[0][1]], best.cls)]:
                    jobs.append(heapq.heappop(best.heap)[1])
            site.account(now)
            site.free -= k
            site.busy += k
            chip = chips[site.index]
            duration = world.latency_s(best.cls, chip, len(jobs)) * j_noise[jobs[0]]
            for j in jobs:
                start[j] = now
                queued_by_tenant[j_tenant[j]] -= 1
                if fair:
                    usage[tenants[j_tenant[j]]] += predicted[(j_tenant[j], best.cls)] * k / len(jobs)
            for k2 in best.sites:
                sites[k2].waiting -= len(jobs)
            b = next_batch
            next_batch += 1
            batches += 1
            running[b] = (site.index, node, k, now, jobs)
            seq += 1
            heapq.heappush(heap, (now + duration, END, seq, b, None))
            if record_trace:
                trace.append((now, "start", tuple(jobs), site.index, node))

    def schedule_failure(site: _Site, now: float) -> None:
        nonlocal seq
        if site.fail_rate > 0:
            seq += 1
            heapq.heappush(heap, (now + rng.expovariate(site.fail_rate), FAIL, seq, site.index, None))

    # 2. the first failures and ticks
    for site in sites:
        schedule_failure(site, 0.0)
    ticks = np.arange(0.0, horizon + 1e-9, s.sample_s).tolist()
    if ticks[-1] < horizon:
        ticks.append(horizon)
    for t in ticks:
        seq += 1
        heapq.heappush(heap, (t, TICK, seq, 0, None))
    ticks_s: list[float] = []
    busy_series: list[list[int]] = []
    down_series: list[list[int]] = []
    queued_series: list[list[int]] = []
    busy_at_horizon: list[float] = [0.0] * len(sites)
    down_at_horizon: list[float] = [0.0] * len(sites)

    # 3. the loop: the next arrival or the next heap event, whichever is first
    a = 0
    inf = float("inf")
    next_arrival = sub_t[0] if n_jobs else inf
    done = 0
    now = 0.0
    while True:
        if heap and heap[0][0] <= next_arrival:
            now, kind, _, arg, extra = heapq.heappop(heap)
            events += 1
            if kind == END:
                batch = running.pop(arg, None)
                if batch is None:
                    continue  # killed by a failure: its jobs were re-queued
                si, node, k, _, jobs = batch
                site = sites[si]
                site.account(now)
                site.busy -= k
                site.free += k
                site.move(node, site.node_free[node], site.node_free[node] + k)
                for j in jobs:
                    end[j] = now
                    where[j] = si
                done += len(jobs)
                if record_trace:
                    trace.append((now, "end", tuple(jobs), si, node))
                dispatch(site, now)
            elif kind == FAIL:
                site = sites[arg]
                if done < n_jobs or a < n_jobs:
                    schedule_failure(site, now)
                node = rng.randrange(len(site.node_free))
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
                    on_node = sorted(b for b, r in running.items() if r[0] == site.index and r[1] == node)
                    weights = [running[b][2] for b in on_node]
                    victim = rng.choices(on_node, weights)[0]
                    _, _, k, started, jobs = running.pop(victim)
                    site.lost_gpu_s += k * (now - started)
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
                heapq.heappush(heap, (now + rng.expovariate(1 / site.info.mttr_s), REPAIR, seq, arg, node))
            elif kind == REPAIR:
                site = sites[arg]
                site.account(now)
                site.down -= 1
                site.node_down[extra] -= 1
                site.free += 1
                site.move(extra, site.node_free[extra], site.node_free[extra] + 1)
                if record_trace:
                    trace.append((now, "repair", (), site.index, extra))
                dispatch(site, now)
            elif kind == TICK:
                for site in sites:
                    site.account(now)
                ticks_s.append(now)
                busy_series.append([site.busy for site in sites])
                down_series.append([site.down for site in sites])
                queued_series.append(list(queued_by_tenant))
                if now >= horizon:
                    busy_at_horizon = [site.busy_area for site in sites]
                    down_at_horizon = [site.down_area for site in sites]
                if progress is not None:
                    progress(min(now / horizon, 1.0))
        elif a < n_jobs:
            now = next_arrival
            j = a
            a += 1
            next_arrival = sub_t[a] if a < n_jobs else inf
            events += 1
            q = enqueue(j)
            if record_trace:
                trace.append((now, "arrive", (j,), -1, -1))
            for k in q.sites:
                if sites[k].free:
                    dispatch(sites[k], now)
                    if start[j] == start[j]:  # started (not nan)
                        break
        else:
            break
        if done == n_jobs and a == n_jobs and now >= horizon:
            break

    for site in sites:
        site.account(now)
    return Record(
        submitted_s=arr.t_s,
        start_s=np.asarray(start),
        end_s=np.asarray(end),
        site=np.asarray(where),
        tenant=arr.tenant,
        cls=arr.cls,
        busy_gpu_s=busy_at_horizon,
        down_gpu_s=down_at_horizon,
        lost_gpu_s=[site.lost_gpu_s for site in sites],
        failures=[site.failures for site in sites],
        requeued=requeued,
        batches=batches,
        ticks_s=ticks_s,
        busy_series=busy_series,
        down_series=down_series,
        queued_series=queued_series,
        events=events,
        wall_s=time.perf_counter() - wall0,
        end_time_s=now,
        trace=trace,
    )

"""Live and simulated scheduling are one thing: the store's claim and the simulator's core start the same jobs in
the same order, for every policy, on SQLite and PostgreSQL, and the claim sees the whole queue, not its head."""

from __future__ import annotations

import heapq
import random
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from noor import scheduling, sim
from noor.jobs.generation import Generation, now_utc
from noor.jobs.store import EPOCH, QUEUED_LIMIT, Store
from noor.sim.core import policy_of, simulate
from noor.sim.fleet import Fleet, resolve

CHIP = "h100-sxm"
POLICIES: list[tuple[str, dict[str, Any]]] = [
    ("fifo", {}), ("priority", {}), ("sjf", {"aging_per_s": 0.0}), ("sjf", {"aging_per_s": 0.5}), ("fair-share", {}),
]


def _queue(store: Store, jobs: list[tuple[str, float, int, datetime]]) -> list[str]:
    """Queue (tenant, eta_s, priority, created_at) jobs in one transaction, as `create` leaves them but stamped
    with the test's clock rather than the wall clock."""
    rows = [{"id": str(uuid.uuid4()), "tenant": tenant, "model": "tiny", "request": {}, "task": {}, "eta_s": eta_s,
             "priority": priority, "created_at": created_at, "updated_at": created_at}
            for tenant, eta_s, priority, created_at in jobs]
    with store.session.begin() as s:
        s.execute(insert(Generation), rows)
    return [row["id"] for row in rows]


# --- the issue's backlog: 300 queued 100 s jobs, then one 1 s job --------------------------------------------


def test_sjf_claims_the_short_job_behind_a_backlog(store: Store) -> None:
    store.scheduler = scheduling.get("sjf")  # aging 0.01: 300 s of waiting would be worth 3 s, not 99
    t0 = now_utc() - timedelta(seconds=400)
    _queue(store, [("acme", 100.0, 0, t0 + timedelta(seconds=i)) for i in range(300)])
    (short,) = _queue(store, [("acme", 1.0, 0, t0 + timedelta(seconds=300))])
    assert QUEUED_LIMIT < 301  # beyond what a claim of the queue's head used to see
    got = store.claim("w1", 30, now=t0 + timedelta(seconds=301))
    assert got is not None and got.id == short
    left = store.queued(10_000, order=("submitted_at_s",))
    assert len(left) == 300 and all(job.predicted_s == 100.0 for job in left)


def test_fair_share_claims_the_quiet_tenants_job_behind_a_backlog(store: Store) -> None:
    store.scheduler = scheduling.get("fair-share")
    t0 = now_utc() - timedelta(seconds=1000)
    (given,) = _queue(store, [("busy", 60.0, 0, t0)])
    assert store.claim("w1", 300, now=t0 + timedelta(seconds=1)) is not None
    assert store.complete(given, "w1", {"video": "v.mp4"}, now=t0 + timedelta(seconds=61))  # busy: 60 GPU-s given
    _queue(store, [("busy", 100.0, 0, t0 + timedelta(seconds=100 + i)) for i in range(300)])
    (quiet,) = _queue(store, [("quiet", 100.0, 0, t0 + timedelta(seconds=500))])
    got = store.claim("w1", 300, now=t0 + timedelta(seconds=600))
    assert got is not None and got.id == quiet
    # quiet's job has run 100 s by the next claim (usage counts a running job up to now): busy's oldest is next
    later = store.claim("w2", 300, now=t0 + timedelta(seconds=700))
    assert later is not None and later.tenant == "busy"
    assert later.created_at == t0 + timedelta(seconds=100)


@pytest.mark.slow
def test_a_claim_reads_a_few_rows_not_the_backlog() -> None:
    """`frontier` stops as soon as no unread job can come first: one round of 16 rows per scan here (SJF with
    aging reads one job per predicted length, fair share one per tenant), and finds what `order` puts first."""
    rng = random.Random(0)
    queue = [scheduling.QueuedJob(f"{i:05d}", f"t{i % 7}", "m", float(i), rng.choice([60.0, 100.0, 300.0]),
                                  priority=rng.randint(0, 2)) for i in range(2000)]
    queue.append(scheduling.QueuedJob("short", "t0", "m", 2000.0, 1.0))
    reads: list[tuple[tuple[str, ...], int | None, str | None, int]] = []
    field = {"submitted_at_s": lambda j: j.submitted_at_s, "priority": lambda j: j.priority,
             "predicted_gpu_s": lambda j: j.predicted_s * j.gpus, "tenant": lambda j: j.tenant}

    def read(order: tuple[str, ...], depth: int | None, group: str | None) -> list[scheduling.QueuedJob]:
        ranked = sorted(queue, key=lambda j: (*(field[f](j) for f in order), j.id))
        if group is not None:
            heads: dict[Any, scheduling.QueuedJob] = {}
            for job in ranked:
                heads.setdefault(field[group](job), job)
            ranked = [heads[value] for value in sorted(heads)]
        rows = ranked if depth is None else ranked[:depth]
        reads.append((order, depth, group, len(rows)))
        return rows

    for name, settings in POLICIES:
        policy = scheduling.get(name, **settings)
        for claim in range(25):  # the first job, then the next once it is taken, ...
            reads.clear()
            usage = {f"t{i}": float((i * 37 + claim * 11) % 50) for i in range(7)}
            found = scheduling.frontier(policy, read, 2000.0, usage)
            first = policy.order(queue, 2000.0, usage)[0]
            assert policy.order(found, 2000.0, usage)[0] == first, (name, claim)
            assert sum(rows for *_, rows in reads) <= 32, (name, claim, reads)
            queue.remove(first)


# --- the same arrivals through the live store and the simulator's core --------------------------------------


def _scenario(seed: int, policy: str, settings: dict[str, Any], tmp: Path) -> tuple[sim.Scenario, Fleet]:
    """One site of one GPU, 3 tenants, 6 classes with whole-second durations, ~30 jobs at distinct whole seconds:
    whole seconds keep the store's microsecond clock and the simulator's float clock exactly equal. Tenants are
    named per seed, so one store serves several seeds without one's usage reaching the next."""
    rng = random.Random(seed)
    n_jobs = rng.randint(20, 35)
    times = sorted(rng.sample(range(0, 900), n_jobs))
    tenants = [{"name": f"s{seed}t{i}", "regions": ["r"], "share": rng.choice([1.0, 2.0]),
                "priority": rng.randint(0, 1)} for i in range(3)]
    classes = [{"name": f"c{i}", "model": "flux.1-dev", "priority": rng.randint(0, 2)} for i in range(6)]
    rows = [(t, rng.choice(tenants)["name"], rng.choice(classes)["name"]) for t in times]
    path = tmp / f"trace-{seed}.csv"
    path.write_text("time_s,tenant,class\n" + "".join(f"{t},{te},{c}\n" for t, te, c in rows))
    scenario = sim.parse({
        "seed": 1, "horizon_h": 1.0, "sample_s": 3600.0,
        "regions": {"r": {"timezone": "UTC", "diurnal": "flat"}},
        "sites": [{"name": "s", "region": "r", "chip": CHIP, "gpus": 1, "gpus_per_node": 1}],
        "classes": classes, "tenants": tenants, "trace": {"path": str(path)},
        "scheduling": {"policy": policy, **settings},
    })
    fleet = resolve(scenario)
    for c in fleet.classes:  # whole seconds, and different sizes (the perf model prices all six alike)
        c.latency_s[CHIP] = float(rng.randint(1, 60))
    return scenario, fleet


def _live_starts(store: Store, scenario: sim.Scenario, fleet: Fleet) -> list[int]:
    """Drive the store as one worker would, at the simulator's instants: at one instant, a job that ends (and the
    claim after it) comes before a job that arrives, as in the core. Returns job indices in the order claimed."""
    store.scheduler = policy_of(scenario)
    arr = fleet.arrivals
    tenant_prio = [t.priority for t in scenario.tenants]
    index: dict[str, int] = {}
    events: list[tuple[float, int, int]] = [(float(t), 1, j) for j, t in enumerate(arr.t_s.tolist())]  # 1: arrives
    heapq.heapify(events)
    running: str | None = None
    starts: list[int] = []

    def at(t_s: float) -> datetime:
        return EPOCH + timedelta(seconds=t_s)

    def claim(t_s: float) -> None:
        nonlocal running
        got = store.claim("w", 1e6, now=at(t_s))
        if got is not None:
            running = got.id
            starts.append(index[got.id])
            duration_s = fleet.latency_s(int(arr.cls[index[got.id]]), CHIP)
            heapq.heappush(events, (t_s + duration_s, 0, index[got.id]))  # 0: ends (first at one instant)

    while events:
        t_s, kind, j = heapq.heappop(events)
        if kind == 0:
            assert running is not None and store.complete(running, "w", {"video": "v"}, now=at(t_s))
            running = None
            claim(t_s)
        else:
            ti, ci = int(arr.tenant[j]), int(arr.cls[j])
            prio = fleet.classes[ci].priority + tenant_prio[ti]
            (gid,) = _queue(store, [(scenario.tenants[ti].name, fleet.predicted_s(ti, ci), prio, at(t_s))])
            index[gid] = j
            if running is None:
                claim(t_s)
    return starts


@pytest.mark.parametrize(("policy", "settings"), POLICIES, ids=[f"{p}{s.get('aging_per_s', '')}" for p, s in POLICIES])
def test_live_claims_start_jobs_in_the_simulators_order(
    store: Store, tmp_path: Path, policy: str, settings: dict[str, Any]
) -> None:
    for seed in range(3):
        scenario, fleet = _scenario(seed, policy, settings, tmp_path)
        record = simulate(fleet, record_trace=True)
        simulated = [jobs[0] for _, kind, jobs, _, _ in record.trace if kind == "start"]
        assert len(simulated) == len(fleet.arrivals)
        assert _live_starts(store, scenario, fleet) == simulated, (policy, seed)

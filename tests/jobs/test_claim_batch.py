"""A claim takes a batch: the job the policy puts first, then queued jobs of its batch key in policy order
(`noor.scheduling.batch`), each by its own conditional UPDATE; on SQLite and PostgreSQL."""

from __future__ import annotations

import heapq
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from noor import scheduling, sim
from noor.jobs.generation import Generation, now_utc
from noor.jobs.queue import task_batch_key
from noor.jobs.store import EPOCH, Store
from noor.scheduling.batching import batch_key, check_batch
from noor.sim.core import policy_of, simulate
from noor.sim.fleet import Fleet
from tests.scheduling.test_live_matches_sim import CHIP, POLICIES, _scenario


def _task(prompt: str = "p", seed: int = 0, **shape: Any) -> dict[str, Any]:
    return {"prompt": prompt, "width": 64, "height": 64, "num_frames": 16, "fps": 8, "seed": seed, "steps": 2} | shape


def _queue(store: Store, tenant: str = "acme", priority: int = 0, model: str = "tiny", **shape: Any) -> str:
    task = _task(**shape)
    return store.create(tenant=tenant, model=model, request={}, task=task, priority=priority).id


def _ids(jobs: list[Generation]) -> list[str]:
    return [job.id for job in jobs]


def test_a_batch_is_the_heads_key_in_policy_order_each_leased(store: Store) -> None:
    a1 = _queue(store)
    b1 = _queue(store, width=128)  # another size
    a2, a3 = _queue(store, prompt="q", seed=7), _queue(store, tenant="globex", seed=9)  # prompts, seeds, tenants differ
    c1 = _queue(store, steps=4)  # other steps
    a4 = _queue(store)

    got = store.claim_batch("w1", 30, max_batch=3)
    assert _ids(got) == [a1, a2, a3]
    for job in got:
        assert job.state == "dreaming" and job.lease_owner == "w1" and job.attempts == 1
    assert {store.get(j.tenant, j.id).state for j in got} == {"dreaming"}
    # the next head is the oldest left (another key), and it batches with nothing
    assert _ids(store.claim_batch("w2", 30, max_batch=3)) == [b1]
    assert _ids(store.claim_batch("w3", 30, max_batch=3)) == [c1]
    assert _ids(store.claim_batch("w4", 30, max_batch=3)) == [a4]
    assert store.claim_batch("w5", 30, max_batch=3) == []


def test_max_batch_1_is_the_single_claim_and_bad_values_are_refused(store: Store) -> None:
    first, second = _queue(store), _queue(store)
    assert _ids(store.claim_batch("w1", 30)) == [first]
    claimed = store.claim("w1", 30)
    assert claimed is not None and claimed.id == second
    assert store.claim("w1", 30) is None
    with pytest.raises(scheduling.SchedulingError, match="max_batch: must be >= 1, got 0"):
        store.claim_batch("w1", 30, max_batch=0)


def test_the_batch_follows_the_policy_not_the_age(store: Store) -> None:
    old_low = _queue(store, priority=5)
    head = _queue(store, priority=0)
    urgent = _queue(store, priority=1)
    newest = _queue(store, priority=0)
    assert _ids(store.claim_batch("w1", 30, max_batch=3)) == [head, newest, urgent]  # priority tiers, then age
    assert _ids(store.claim_batch("w1", 30, max_batch=3)) == [old_low]


def test_fair_share_batches_the_heads_tenant_as_the_simulator_does(store: Store) -> None:
    store.scheduler = scheduling.get("fair-share")
    a1, _b1, a2 = _queue(store, tenant="a"), _queue(store, tenant="b"), _queue(store, tenant="a")
    assert _ids(store.claim_batch("w1", 30, max_batch=4)) == [a1, a2]


def test_jobs_without_a_key_run_alone_and_the_worker_view_holds(store: Store) -> None:
    plain = [store.create(tenant="acme", model="tiny", request={}, task={}).id for _ in range(2)]
    assert _ids(store.claim_batch("w1", 30, max_batch=4)) == plain[:1]
    wan = _queue(store, model="wan2.1-t2v-1.3b")
    mine = [_queue(store, tenant="sovereign") for _ in range(2)]
    assert _ids(store.claim_batch("w1", 30, models=["tiny"], max_batch=4)) == plain[1:]
    assert _ids(store.claim_batch("w1", 30, models=["tiny"], max_batch=4)) == mine
    assert _ids(store.claim_batch("w1", 30, max_batch=4)) == [wan]


def test_a_job_another_worker_took_meanwhile_is_skipped(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    head, raced, third, fourth = (_queue(store, seed=i) for i in range(4))
    take = store._take

    def racing_take(generation_id: str, *args: Any) -> Generation | None:
        if generation_id == raced:  # another worker wins this one between the read and the UPDATE
            assert take(raced, "w2", 30, now_utc()) is not None
        return take(generation_id, *args)

    monkeypatch.setattr(store, "_take", racing_take)
    got = store.claim_batch("w1", 30, max_batch=3)
    assert _ids(got) == [head, third, fourth]  # the batch is still filled, in order, from what is left
    assert store.get("acme", raced).lease_owner == "w2"


def test_concurrent_batch_claims_hand_each_job_to_one_worker(store: Store) -> None:
    ids = {_queue(store, seed=i) for i in range(24)}
    won: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while got := store.claim_batch(name, 30, max_batch=4):
            assert 1 <= len(got) <= 4
            with lock:
                won.extend(_ids(got))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == sorted(ids)


def test_the_key_is_the_request_shape() -> None:
    key = task_batch_key("tiny", _task())
    assert key == batch_key("tiny", 64, 64, 16, 2, None, "text") == "tiny 64x64x16 steps=2 guidance=default text"
    assert task_batch_key("tiny", _task(prompt="other", seed=5, negative_prompt="blur", fps=24)) == key
    for other in (_task(width=128), _task(num_frames=1), _task(steps=None), _task(guidance=3.0),
                  _task(start={"asset": "k.png"}), _task(loop=True),
                  _task(keyframes=[{"index": 8, "asset": "k.png"}])):  # fmt: skip
        assert task_batch_key("tiny", other) != key
    assert task_batch_key("wan2.1-t2v-1.3b", _task()) != key
    pinned = _task(keyframes=[{"index": 8, "asset": "k.png"}])
    assert task_batch_key("tiny", pinned) == task_batch_key("tiny", _task(keyframes=[{"index": 3, "asset": "j.png"}]))
    assert task_batch_key("tiny", pinned) == "tiny 64x64x16 steps=2 guidance=default keyframes"
    assert task_batch_key("resample", {"kind": "upscale", "source": "a/b/video.mp4", "width": 8, "height": 8}) is None
    assert task_batch_key("tiny", _task(concepts=["c1"])) is None
    assert task_batch_key("tiny", {"prompt": "no shape"}) is None


def test_a_batch_of_mixed_shapes_is_refused_in_one_line() -> None:
    a = scheduling.QueuedJob("a", "t", "tiny", 0.0, 1.0, batch_key="tiny 64x64x16 steps=2 guidance=default text")
    b = scheduling.QueuedJob("b", "t", "tiny", 0.0, 1.0, batch_key="tiny 128x64x16 steps=2 guidance=default text")
    alone = scheduling.QueuedJob("c", "t", "tiny", 0.0, 1.0)
    check_batch([a])
    check_batch([alone])
    check_batch([a, a])
    with pytest.raises(scheduling.SchedulingError) as err:
        check_batch([a, b])
    assert str(err.value) == (
        "batch: mixed shapes, job b is 'tiny 128x64x16 steps=2 guidance=default text' and job a is "
        "'tiny 64x64x16 steps=2 guidance=default text'"
    )
    with pytest.raises(scheduling.SchedulingError, match="job c is None"):
        check_batch([a, alone])
    with pytest.raises(scheduling.SchedulingError, match="width must be >= 1, got 0"):
        batch_key("tiny", 0, 64, 16)


# --- the same arrivals through the live store and the simulator's core, batched -----------------------------


def _live_batches(
    store: Store, scenario: sim.Scenario, fleet: Fleet, max_batch: int, worker: str
) -> list[tuple[int, ...]]:
    """Drive the store as one worker with `max_batch` would, at the simulator's instants (a batch that ends, and
    the claim after it, before a job that arrives). Each job's batch key is its class. Returns the batches."""
    store.scheduler = policy_of(scenario)
    arr = fleet.arrivals
    tenant_prio = [t.priority for t in scenario.tenants]
    index: dict[str, int] = {}
    events: list[tuple[float, int, int]] = [(float(t), 1, j) for j, t in enumerate(arr.t_s.tolist())]  # 1: arrives
    heapq.heapify(events)
    running: list[str] = []
    batches: list[tuple[int, ...]] = []

    def at(t_s: float) -> datetime:
        return EPOCH + timedelta(seconds=t_s)

    def claim(t_s: float) -> None:
        got = store.claim_batch(worker, 1e6, now=at(t_s), max_batch=max_batch)
        if got:
            running.extend(_ids(got))
            batches.append(tuple(index[g.id] for g in got))
            duration_s = fleet.latency_s(int(arr.cls[index[got[0].id]]), CHIP, len(got))
            heapq.heappush(events, (t_s + duration_s, 0, -1))  # 0: ends (first at one instant)

    while events:
        t_s, kind, j = heapq.heappop(events)
        if kind == 0:
            assert running and all(store.complete(gid, worker, {"video": "v"}, now=at(t_s)) for gid in running)
            running.clear()
            claim(t_s)
        else:
            ti, ci = int(arr.tenant[j]), int(arr.cls[j])
            now = at(t_s)
            prio = fleet.classes[ci].priority + tenant_prio[ti]
            row = {"id": str(uuid.uuid4()), "tenant": scenario.tenants[ti].name, "model": "tiny", "request": {},
                   "task": {}, "eta_s": fleet.predicted_s(ti, ci), "priority": prio,
                   "batch_key": fleet.classes[ci].name, "created_at": now, "updated_at": now}  # fmt: skip
            with store.session.begin() as s:
                s.execute(insert(Generation), [row])
            index[row["id"]] = j
            if not running:
                claim(t_s)
    return batches


@pytest.mark.parametrize(("policy", "settings"), POLICIES, ids=[f"{p}{s.get('aging_per_s', '')}" for p, s in POLICIES])
def test_live_batches_are_the_simulators(store: Store, tmp_path: Path, policy: str, settings: dict[str, Any]) -> None:
    """One worker, batches of up to 3: the live claim starts the same jobs together, in the same order, as the
    simulator's core (its per-class queues: same key; fair share's per-tenant ones: the head's tenant)."""
    batched = 0
    for seed in (3, 9):  # fair share, 9: a batch counted as its jobs' summed seconds ranks its tenant wrongly
        scenario, fleet = _scenario(seed, policy, settings | {"max_batch": 3, "batch_max_predicted_s": 1e9}, tmp_path)
        for ci, c in enumerate(fleet.classes):  # a batch's seconds, whole as the store's clock needs them
            for size in (2, 3):
                fleet._batch_latency[(ci, CHIP, size)] = c.latency_s[CHIP] + size - 1
        record = simulate(fleet, record_trace=True)
        simulated = [jobs for _, kind, jobs, _, _ in record.trace if kind == "start"]
        assert _live_batches(store, scenario, fleet, 3, f"w{seed}") == simulated, (policy, seed)
        batched += sum(len(b) > 1 for b in simulated)
    assert batched >= 3  # the traces do batch

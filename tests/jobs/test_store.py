from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from noor import scheduling
from noor.jobs.generation import InvalidTransition, State, check_transition, now_utc
from noor.jobs.store import NotFound, Store


def _create(store: Store, tenant: str = "acme", **kw: object) -> str:
    return store.create(tenant=tenant, model="tiny", request={"prompt": "p"}, task={"prompt": "p"}, **kw).id  # type: ignore[arg-type]


def test_state_machine_allows_only_its_moves() -> None:
    check_transition(State.QUEUED, State.DREAMING)
    check_transition(State.DREAMING, State.QUEUED)  # an expired lease
    for old, new in [(State.COMPLETED, State.DREAMING), (State.FAILED, State.QUEUED), (State.QUEUED, State.COMPLETED)]:
        with pytest.raises(InvalidTransition):
            check_transition(old, new)


def test_create_get_list_delete_per_tenant(store: Store) -> None:
    ids = [_create(store) for _ in range(5)]
    other = _create(store, tenant="globex")
    g = store.get("acme", ids[0])
    assert g.state == "queued" and g.created_at.tzinfo is not None and g.request == {"prompt": "p"}
    with pytest.raises(NotFound):
        store.get("acme", other)  # another tenant's generation does not exist for you
    page, total = store.list("acme", limit=2, offset=1)
    assert total == 5 and [x.id for x in page] == list(reversed(ids))[1:3]  # newest first
    store.delete("acme", ids[0])
    with pytest.raises(NotFound):
        store.get("acme", ids[0])
    with pytest.raises(NotFound):
        store.delete("globex", ids[1])
    assert store.list("acme")[1] == 4


def test_usage_counts_active_and_recent_jobs_up_to_the_limits(store: Store) -> None:
    before = now_utc() - timedelta(seconds=1)
    first = store.create(tenant="acme", model="tiny", request={}, task={})
    ids = [first.id] + [_create(store) for _ in range(3)]
    _create(store, tenant="globex")
    store.delete("acme", ids[0])  # deleted: no longer active, still counts towards the rate
    running, recent, oldest = store.usage("acme", before)
    assert (running, recent) == (3, 4) and oldest == first.created_at
    assert store.usage("acme", before, max_active=2, max_recent=3)[:2] == (2, 3)  # counting stops at the limit
    assert store.usage("acme", now_utc() + timedelta(seconds=1)) == (3, 0, None)
    assert store.usage("initech", before) == (0, 0, None)


def test_claim_orders_by_priority_then_age_and_filters_models(store: Store) -> None:
    low = _create(store, priority=5)
    first = _create(store)
    second = _create(store)
    assert store.claim("w1", 30, models=["wan"]) is None
    got = [store.claim("w1", 30), store.claim("w1", 30), store.claim("w1", 30), store.claim("w1", 30)]
    assert [g.id if g else None for g in got] == [first, second, low, None]
    assert got[0] is not None and got[0].state == "dreaming" and got[0].attempts == 1


def test_claim_follows_the_stores_scheduling_policy(store: Store) -> None:
    # shortest predicted job first: the short job, though newer, is claimed before the long one
    store.scheduler = scheduling.get("sjf")
    long = _create(store, eta_s=60.0)
    short = _create(store, eta_s=2.0)
    assert [store.claim("w1", 30).id, store.claim("w1", 30).id] == [short, long]  # type: ignore[union-attr]


def test_fair_share_claims_for_the_tenant_given_the_least_work(store: Store) -> None:
    store.scheduler = scheduling.get("fair-share")
    now = now_utc()
    busy = _create(store, tenant="busy")
    assert store.claim("w1", 300, now=now - timedelta(seconds=120)) is not None
    assert store.complete(busy, "w1", {"video": "v.mp4"})  # busy was given ~120 s of work in the last hour
    older = _create(store, tenant="busy")
    newer = _create(store, tenant="quiet")
    got = store.claim("w1", 30, now=now)
    assert got is not None and got.id == newer != older
    # with plain priority tiers the older job would have gone first
    store.scheduler = scheduling.get("priority")
    assert store.claim("w1", 30, now=now).id == older  # type: ignore[union-attr]


def test_only_the_lease_holder_finishes_and_only_once(store: Store) -> None:
    gid = _create(store)
    assert store.claim("w1", 30) is not None
    assert not store.complete(gid, "w2", {"video": "x"})
    assert store.heartbeat(gid, "w1", 30, progress=0.5)
    assert store.get("acme", gid).progress == 0.5
    assert store.complete(gid, "w1", {"video": "v.mp4"})
    assert not store.complete(gid, "w1", {"video": "again"})
    assert not store.fail(gid, "w1", "late")
    done = store.get("acme", gid)
    assert done.state == "completed" and done.assets == {"video": "v.mp4"} and done.finished_at is not None


def test_expired_lease_goes_back_then_fails_after_max_attempts(store: Store) -> None:
    gid = _create(store, max_attempts=2)
    t0 = now_utc()
    assert store.claim("w1", 10, now=t0) is not None
    again = store.claim("w2", 10, now=t0 + timedelta(seconds=11))  # w1's lease ran out: back in the queue
    assert again is not None and again.id == gid and again.attempts == 2
    assert not store.heartbeat(gid, "w1", 10, now=t0 + timedelta(seconds=12))  # w1 may not go on
    assert not store.complete(gid, "w1", {"video": "stale"})
    assert store.claim("w3", 10, now=t0 + timedelta(seconds=30)) is None
    failed = store.get("acme", gid)
    assert failed.state == "failed" and "lost" in (failed.failure_reason or "")


def test_deleting_stops_a_running_job_and_fails_a_queued_one(store: Store) -> None:
    running, waiting = _create(store), _create(store)
    assert store.claim("w1", 30) is not None
    store.delete("acme", running)
    store.delete("acme", waiting)
    assert not store.heartbeat(running, "w1", 30)
    assert store.fail(running, "w1", "Deleted")
    assert store.claim("w1", 30) is None


def test_concurrent_claims_hand_each_job_to_one_worker(store: Store) -> None:
    ids = {_create(store) for _ in range(20)}
    won: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (g := store.claim(name, 30)) is not None:
            with lock:
                won.append(g.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == sorted(ids)


def test_data_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'noor.db'}"
    first = Store(url)
    gid = _create(first)
    first.close()
    second = Store(url)  # migrations are idempotent
    assert second.get("acme", gid).state == "queued"
    second.close()


def test_tally_groups_a_tenants_generations_by_request_values(store: Store) -> None:
    from noor.jobs import tenants

    tenants.create_tenant(store, "t", metered=False, max_concurrent=100)

    def make(user: str, kind: str, price: int) -> str:
        request = {"api": "agents", "user_id": user, "type": kind}
        return store.create(tenant="t", model="tiny", request=request, task={}, price_microcents=price).id

    make("alice", "image", 10)
    make("alice", "video", 30)
    failed = make("alice", "video", 50)
    make("bob", "image", 10)
    store.create(tenant="t", model="tiny", request={"user_id": "alice", "type": "image"}, task={})  # another API
    assert store.claim_job(failed, "w", 30) is not None  # the 50-microcent job fails; the others stay queued
    assert store.fail(failed, "w", "boom")
    rows = sorted(store.tally("t", api="agents", user_id="alice"))
    assert rows == [("failed", "video", 1, 0), ("queued", "image", 1, 10), ("queued", "video", 1, 30)]
    assert store.tally("t", api="agents", user_id="carol") == []
    assert store.tally("other", api="agents", user_id="alice") == []

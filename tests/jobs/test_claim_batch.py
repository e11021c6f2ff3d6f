"""A claim takes a batch: the job the policy puts first, then queued jobs of its batch key in policy order
(`noor.scheduling.batch`), each by its own conditional UPDATE; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from noor import scheduling
from noor.jobs.generation import Generation, now_utc
from noor.jobs.store import Store, task_batch_key
from noor.scheduling.batching import batch_key, check_batch


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
                  _task(start={"asset": "k.png"}), _task(loop=True)):  # fmt: skip
        assert task_batch_key("tiny", other) != key
    assert task_batch_key("wan2.1-t2v-1.3b", _task()) != key
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

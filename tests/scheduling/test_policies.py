from __future__ import annotations

import random

import pytest

from noor import scheduling
from noor.scheduling import QueuedJob, SchedulingError, WorkerView


def job(id: str, t: float, predicted_s: float = 10.0, **kw: object) -> QueuedJob:
    return QueuedJob(id=id, tenant=str(kw.pop("tenant", "a")), model=str(kw.pop("model", "m")), submitted_at_s=t,
                     predicted_s=predicted_s, **kw)  # type: ignore[arg-type]


def ids(jobs: list[QueuedJob]) -> list[str]:
    return [j.id for j in jobs]


def first(worker: WorkerView, queue: list[QueuedJob], **kw: object) -> list[QueuedJob]:
    """What one free worker starts: its assignment when it is the only worker."""
    plan = scheduling.assign(queue, [worker], **kw)  # type: ignore[arg-type]
    return list(plan[0].jobs) if plan else []


QUEUE = [
    job("a", 0.0, 100.0, priority=1),
    job("b", 1.0, 5.0, priority=0),
    job("c", 2.0, 50.0, priority=1),
    job("d", 3.0, 1.0, priority=2),
]


def test_registry_names_and_unknown_policy() -> None:
    assert scheduling.names() == ["fair-share", "fifo", "priority", "sjf"]
    with pytest.raises(SchedulingError, match="unknown policy 'lifo'"):
        scheduling.get("lifo")
    with pytest.raises(SchedulingError, match="aging_per_s"):
        scheduling.get("sjf", aging_per_s=-1)


def test_fifo_priority_and_sjf_orders() -> None:
    assert ids(scheduling.get("fifo").order(QUEUE)) == ["a", "b", "c", "d"]
    assert ids(scheduling.get("priority").order(QUEUE)) == ["b", "a", "c", "d"]
    assert ids(scheduling.get("sjf", aging_per_s=0.0).order(QUEUE)) == ["d", "b", "c", "a"]


def test_sjf_aging_lets_an_old_long_job_overtake() -> None:
    queue = [job("long", 0.0, 100.0), job("short", 1000.0, 10.0)]
    assert ids(scheduling.get("sjf", aging_per_s=0.0).order(queue, now_s=1000.0)) == ["short", "long"]
    # 1000 s of waiting at 0.1 s/s is worth 100 s: long's rank 100 vs short's 10 + 100
    assert ids(scheduling.get("sjf", aging_per_s=0.1).order(queue, now_s=1000.0)) == ["long", "short"]


def test_sjf_counts_gpu_seconds() -> None:
    queue = [job("wide", 0.0, 10.0, gpus=8), job("narrow", 1.0, 40.0, gpus=1)]
    assert ids(scheduling.get("sjf", aging_per_s=0.0).order(queue)) == ["narrow", "wide"]


def test_fair_share_interleaves_tenants_by_gpu_seconds_and_weight() -> None:
    queue = [job(f"a{i}", float(i), 10.0, tenant="a") for i in range(4)] + [job("b0", 10.0, 10.0, tenant="b")]
    fair = scheduling.get("fair-share")
    assert ids(fair.order(queue)) == ["a0", "b0", "a1", "a2", "a3"]
    # a has had 25 GPU-seconds already: b goes first, then a0 (25) and the rest
    assert ids(fair.order(queue, usage={"a": 25.0})) == ["b0", "a0", "a1", "a2", "a3"]
    # weight 2 for a: a's virtual starts are 0, 5, 10, 15; b's is 0 (ties by submission time)
    weighted = scheduling.get("fair-share", weights={"a": 2.0})
    assert ids(weighted.order(queue)) == ["a0", "b0", "a1", "a2", "a3"]
    assert ids(weighted.order(queue, usage={"b": 10.0})) == ["a0", "a1", "a2", "b0", "a3"]


def test_memory_fit_and_models() -> None:
    big = job("big", 0.0, memory_gb=100.0)
    small = job("small", 1.0, memory_gb=40.0)
    h100 = WorkerView("w", "us", "h100-sxm", free_gpus=1, memory_gb=80.0)
    assert first(h100, [big, small]) == [small]
    assert not scheduling.fits(big, h100)
    assert scheduling.fits(big, WorkerView("w", "us", "mi300x", free_gpus=1, memory_gb=192.0))
    only_flux = WorkerView("w", "us", "h100-sxm", 1, 80.0, models=("flux",))
    assert first(only_flux, [small]) == []


def test_multi_gpu_jobs_need_k_gpus_on_one_node_best_fit() -> None:
    wide = job("wide", 0.0, gpus=4)
    nodes = [WorkerView("n1", None, "h100-sxm", 3, 80.0), WorkerView("n2", None, "h100-sxm", 8, 80.0),
             WorkerView("n3", None, "h100-sxm", 5, 80.0)]
    assert scheduling.place(wide, nodes) == nodes[2]  # fewest free GPUs that still fit
    assert scheduling.place(wide, nodes[:1]) is None  # 3 + 5 free on two nodes is not 4 on one
    plan = scheduling.assign([wide, job("one", 1.0)], nodes)
    # n3 has 1 GPU left after the wide job: still the best fit for the 1-GPU job
    assert [(a.worker_id, ids(list(a.jobs))) for a in plan] == [("n3", ["wide"]), ("n3", ["one"])]


def test_place_is_best_fit_the_rule_the_simulators_sites_apply() -> None:
    """One placement rule: `place` and the simulator's sites are both `Nodes.take` (fewest free GPUs that fit,
    then the first listed); checked against the rule written out, on random pools."""
    from noor.sim.core import _Site

    assert issubclass(_Site, scheduling.Nodes)
    rng = random.Random(2)
    for _ in range(300):
        workers = [WorkerView(f"n{i}", None, "c", rng.randint(0, 8), 0.0) for i in range(rng.randint(1, 8))]
        wide = job("j", 0.0, gpus=rng.choice([1, 2, 4, 8]))
        fitting = [w for w in workers if w.free_gpus >= wide.gpus]
        expected = min(fitting, key=lambda w: (w.free_gpus, workers.index(w))) if fitting else None
        assert scheduling.place(wide, workers) == expected


def test_assign_strict_order_without_backfill() -> None:
    nodes = [WorkerView("n1", None, "c", 2, 0.0)]
    queue = [job("wide", 0.0, gpus=4), job("one", 1.0)]
    assert [a.jobs[0].id for a in scheduling.assign(queue, nodes)] == ["one"]
    assert scheduling.assign(queue, nodes, backfill=False) == []


def test_assign_batches_compatible_small_jobs_in_policy_order() -> None:
    queue = [
        job("x1", 0.0, 2.0, batch_key="flux 1024"),
        job("y1", 1.0, 2.0, batch_key="sdxl 1024"),
        job("x2", 2.0, 2.0, batch_key="flux 1024"),
        job("x3", 3.0, 2.0, batch_key="flux 1024"),
        job("x4", 4.0, 90.0, batch_key="flux 1024"),  # not small
        job("x5", 5.0, 2.0, batch_key="flux 1024"),
    ]
    worker = WorkerView("w", None, "h100-sxm", 1, 80.0)
    assert ids(first(worker, queue, max_batch=3)) == ["x1", "x2", "x3"]
    assert ids(first(worker, queue, max_batch=8, batch_max_predicted_s=10.0)) == ["x1", "x2", "x3", "x5"]
    assert ids(first(worker, queue)) == ["x1"]
    assert ids(first(worker, [job("solo", 0.0), job("solo2", 1.0)], max_batch=4)) == ["solo"]
    with pytest.raises(SchedulingError, match="max_batch"):
        first(worker, queue, max_batch=0)


def test_residency_is_never_violated_on_random_queues() -> None:
    rng = random.Random(0)
    regions = ["us-west", "eu-london", "me-riyadh"]
    for trial in range(300):
        queue = [
            job(f"j{i}", rng.uniform(0, 100), rng.uniform(1, 100), tenant=rng.choice("abc"),
                gpus=rng.choice([1, 1, 2, 8]), priority=rng.randint(0, 2), batch_key=rng.choice([None, "k1", "k2"]),
                regions=rng.choice([None, ("us-west",), ("me-riyadh",), ("eu-london", "us-west")]))
            for i in range(rng.randint(0, 20))
        ]
        workers = [WorkerView(f"w{i}", rng.choice([*regions, None]), "h100-sxm", rng.randint(0, 8), 80.0)
                   for i in range(rng.randint(1, 6))]
        policy = rng.choice(scheduling.names())
        by_id = {w.id: w for w in workers}
        for a in scheduling.assign(queue, workers, 50.0, policy, max_batch=rng.randint(1, 4)):
            for j in a.jobs:
                assert j.regions is None or by_id[a.worker_id].region in j.regions, (trial, j, a)
        used: dict[str, int] = {}
        for a in scheduling.assign(queue, workers, 50.0, policy):
            used[a.worker_id] = used.get(a.worker_id, 0) + a.gpus
        assert all(used[w] <= by_id[w].free_gpus for w in used)
        for w in workers:
            for j in first(w, queue, now_s=50.0, policy=policy, max_batch=3):
                assert j.regions is None or w.region in j.regions
                assert j.gpus <= w.free_gpus


def test_key_columns_give_the_same_order_as_key() -> None:
    """The simulator ranks jobs with `key_columns` (vectorised); it must agree with `key`/`order`."""
    import numpy as np

    rng = random.Random(1)
    cases: list[tuple[str, dict[str, float]]] = [
        ("fifo", {}), ("priority", {}), ("sjf", {"aging_per_s": 0.0}), ("sjf", {"aging_per_s": 0.3})]
    for name, settings in cases:
        policy = scheduling.get(name, **settings)
        for _ in range(50):
            queue = [job(f"{i:04d}", rng.choice([0.0, 1.0, rng.uniform(0, 100)]), rng.choice([1.0, 5.0, 50.0]),
                         priority=rng.randint(-1, 2), gpus=rng.choice([1, 2, 8])) for i in range(rng.randint(1, 30))]
            columns = policy.key_columns(np.array([j.submitted_at_s for j in queue]),
                                         np.array([j.priority for j in queue]),
                                         np.array([j.predicted_s * j.gpus for j in queue]))
            by_columns = sorted(range(len(queue)), key=lambda i: (*(float(c[i]) for c in columns), queue[i].id))
            assert [queue[i] for i in by_columns] == policy.order(queue), name
    fair = scheduling.get("fair-share")
    queue = [job(f"{i}", float(i), tenant="a") for i in range(5)]
    (column,) = fair.key_columns(np.array([j.submitted_at_s for j in queue]), None, None)
    assert list(np.argsort(column)) == [0, 1, 2, 3, 4]  # within one tenant: FIFO, as fair share orders it

"""A worker keeps its claimed jobs while the model loads (`noor.runtime.leases`): a load that outlasts the lease
many times over loses nothing to another worker or to the requeue of expired leases, and the job completes once;
a job deleted meanwhile ends failed "Deleted" with nothing run; the keeping thread stops however the load ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest

from noor.engine.backend import Backend, Preview, Progress
from noor.engine.task import Media, Task
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.generation import Generation
from noor.jobs.store import Store
from noor.perf.parallelism import ParallelPlan
from noor.runtime.worker import Worker, WorkerConfig

LEASE_S = 1.0
HOLD_S = 4 * LEASE_S  # the load lasts four leases
PRICE = 1_000_000  # micro-cents a job
START = 100 * 1_000_000  # the tenant's credits
TASK = {"prompt": "a red ball", "negative_prompt": "", "width": 64, "height": 64, "num_frames": 1, "fps": 8,
        "seed": 1, "steps": 2}  # fmt: skip


class Grey:
    """A tiny deterministic engine: one grey clip a task, after two reported steps. `start`, if given, is waited
    for before the first step (as k rank processes are started and loaded on a split's first call)."""

    def __init__(self, start: threading.Event | None = None):
        self.start = start
        self.calls: list[list[str]] = []  # each call's prompts
        self.steps = 0

    def generate(self, tasks: Sequence[Task], progress: Progress | None = None, preview: Preview | None = None
                 ) -> list[Media]:  # fmt: skip
        self.calls.append([t.prompt for t in tasks])
        if self.start is not None:
            assert self.start.wait(30)
        for done in (1, 2):
            if progress is not None:
                progress(done, 2)
            self.steps += 1
        return [Media(np.full((t.num_frames, t.height, t.width, 3), 128, np.uint8), fps=t.fps) for t in tasks]


class SlowLoad:
    """A `load_backend` that holds until `release` is set (a real model's minutes), then returns the engine or
    raises `error`."""

    def __init__(self, backend: Grey, error: Exception | None = None):
        self.backend, self.error = backend, error
        self.loading, self.release = threading.Event(), threading.Event()
        self.loads = 0

    def __call__(self, model: str, parallel: ParallelPlan | None = None) -> Backend:
        self.loads += 1
        self.loading.set()
        assert self.release.wait(30)
        if self.error is not None:
            raise self.error
        return self.backend


def _queue(store: Store, prompt: str = "a red ball") -> str:
    task = TASK | {"prompt": prompt}
    return store.create(tenant="acme", model="tiny", request={}, task=task, generation_type="image",
                        price_microcents=PRICE).id  # fmt: skip


def _worker(store: Store, assets: AssetStore, load: SlowLoad | Callable[..., Backend], name: str = "w1") -> Worker:
    config = WorkerConfig(name=name, lease_s=LEASE_S, heartbeat_s=0.1, preview_s=None)
    return Worker(store, assets, config, load)


def _row(store: Store, gid: str) -> Generation:
    with store.session() as s:  # a deleted job too
        row = s.get(Generation, gid)
    assert row is not None
    return row


def _keepers(name: str = "w1") -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"{name}-leases"]


def _credits(store: Store) -> int:
    return tenants.get_tenant(store, "acme").credits_microcents


@contextmanager
def _running(worker: Worker, *holds: threading.Event) -> Iterator[Future[bool]]:
    """`worker.run_once` on a thread; the load (and whatever else `holds` it) let go at the end, whatever happens."""
    with ThreadPoolExecutor(1) as pool:
        try:
            yield pool.submit(worker.run_once)
        finally:
            for hold in holds:
                hold.set()


def _until(predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_load_four_leases_long_keeps_the_job_and_it_completes_once(parts: tuple[Store, AssetStore]) -> None:
    store, assets = parts
    gid = _queue(store)
    engine = Grey()
    load = SlowLoad(engine)
    with _running(_worker(store, assets, load), load.release) as running:
        assert load.loading.wait(10)
        # 1. while it loads, for four leases: the expired-lease requeue finds nothing, another worker gets nothing
        other = _worker(store, assets, lambda model, parallel=None: Grey(), name="w2")  # it would run it at once
        held_until = time.monotonic() + HOLD_S
        while time.monotonic() < held_until:
            assert store.requeue_expired() == 0
            assert not other.run_once()
            row = _row(store, gid)
            assert (row.state, row.lease_owner, row.attempts) == ("dreaming", "w1", 1)
            time.sleep(0.05)
        load.release.set()
        assert running.result(timeout=30) is True
    # 2. run once, completed once, by w1, paid once; the keeper stopped
    row = _row(store, gid)
    assert (row.state, row.worker, row.attempts) == ("completed", "w1", 1), row.failure_reason
    assert engine.calls == [["a red ball"]] and load.loads == 1
    assert assets.keys(f"acme/{gid}") == [f"acme/{gid}/image.png", f"acme/{gid}/thumbnail.jpg"]
    assert _credits(store) == START - PRICE
    assert _keepers() == []


@pytest.mark.parametrize("where", ["load", "first call"])
def test_a_job_deleted_while_the_model_loads_ends_deleted_and_nothing_runs(
    parts: tuple[Store, AssetStore], where: str
) -> None:
    """`load`: in `load_backend`; `first call`: in the engine's first call before its first step (a split's ranks
    start there). Either way the load finishes, the job ends failed "Deleted", refunded, with no files."""
    store, assets = parts
    gid = _queue(store)
    start = threading.Event()
    engine = Grey(start if where == "first call" else None)
    load = SlowLoad(engine)
    if where == "first call":
        load.release.set()
    worker = _worker(store, assets, load)
    with _running(worker, load.release, start) as running:
        _until(lambda: load.loading.is_set() and (where == "load" or engine.calls))
        store.delete("acme", gid)
        _until(lambda: _row(store, gid).state == "failed")  # seen by the keeper's next beat, while still loading
        assert not running.done()
        load.release.set()
        start.set()
        assert running.result(timeout=30) is True  # no crash: Cancelled stays inside the worker
    row = _row(store, gid)
    assert (row.state, row.failure_reason) == ("failed", "Deleted")
    assert engine.steps == 0 and engine.calls == ([] if where == "load" else [["a red ball"]])
    assert assets.keys(f"acme/{gid}") == []
    assert _credits(store) == START  # refunded
    assert _keepers() == []
    # the loaded model was kept: the next job runs on it without a second load
    following = _queue(store, "a blue square")
    assert worker.run_once()
    assert _row(store, following).state == "completed" and load.loads == 1
    assert _keepers() == []


def test_a_load_that_fails_fails_the_job_with_the_reason_and_stops_the_keeper(
    parts: tuple[Store, AssetStore],
) -> None:
    store, assets = parts
    gid = _queue(store)
    load = SlowLoad(Grey(), error=RuntimeError("out of memory"))
    with _running(_worker(store, assets, load), load.release) as running:
        assert load.loading.wait(10)
        _until(lambda: bool(_keepers()))
        time.sleep(1.5 * LEASE_S)  # past the claim's lease: still held
        assert store.requeue_expired() == 0
        load.release.set()
        assert running.result(timeout=30) is True
    row = _row(store, gid)
    assert (row.state, row.failure_reason) == ("failed", "Job failed: RuntimeError: out of memory")
    assert _credits(store) == START
    assert _keepers() == []

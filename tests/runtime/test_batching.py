"""Batching in live workers: a claim of up to `max_batch` jobs of one batch key runs as one noor-tiny call with
each job's own prompt and seed, and each job ends on its own (files, completion, webhook, credits)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from noor import scheduling
from noor.api.app import ApiConfig, create_app
from noor.config import Settings
from noor.engine import media
from noor.engine.backend import Preview, Progress
from noor.engine.task import Media, Task
from noor.engine.tiny.backend import TinyBackend
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.generation import Generation
from noor.jobs.outbox import WebhookDelivery
from noor.jobs.store import Store
from noor.runtime.ranks import RankFailed
from noor.runtime.ray_cluster import ClusterConfig, ClusterError, Node, RayCluster, Slot
from noor.runtime.remote import Server
from noor.runtime.worker import Worker, WorkerConfig, task_from_json
from tests.conftest import start_serve

PRICE = 1_000_000  # micro-cents a job (1 cent)
START = 100 * 1_000_000  # the tenant's credits: 100 cents
HOOK = "https://example.com/hook"
PROMPTS = ["a red ball bouncing", "a blue square sliding left", "a green circle", "a yellow star spinning"]


class Counted:
    """The real backend, with the size of each call it was given written down (and, if told, a failure)."""

    def __init__(self, backend: TinyBackend, error: Exception | None = None):
        self.backend, self.error = backend, error
        self.calls: list[int] = []

    def generate(self, tasks: Sequence[Task], progress: Progress | None = None, preview: Preview | None = None
                 ) -> list[Media]:  # fmt: skip
        self.calls.append(len(tasks))
        if self.error is not None:
            raise self.error
        return self.backend.generate(tasks, progress, preview)


@pytest.fixture(scope="module")
def backend(toy_weights: Path) -> TinyBackend:
    return TinyBackend(toy_weights, threads=1)


def _task_json(i: int, num_frames: int = 1) -> dict[str, Any]:
    """The i-th request: its own prompt and seed, 64x64, 2 steps."""
    return {"prompt": PROMPTS[i % 4], "negative_prompt": "", "width": 64, "height": 64, "num_frames": num_frames,
            "fps": 8, "seed": 100 + i, "steps": 2}  # fmt: skip


def _queue(store: Store, n: int, num_frames: int = 1, **shape: Any) -> list[str]:
    """n jobs of one shape with their own prompts and seeds, each paying PRICE, each with a webhook."""
    ids = []
    for i in range(n):
        task = _task_json(i, num_frames) | shape
        kind = "image" if num_frames == 1 else "video"
        g = store.create(tenant="acme", model="tiny", request={"prompt": task["prompt"]}, task=task,
                         generation_type=kind, price_microcents=PRICE, callback_url=HOOK)  # fmt: skip
        ids.append(g.id)
    return ids


def _worker(store: Any, assets: Any, backend: Any, max_batch: int, name: str = "w1") -> Worker:
    config = WorkerConfig(name=name, heartbeat_s=0.0, preview_s=None, max_batch=max_batch)
    return Worker(store, assets, config, lambda m: backend)


def _credits(store: Store) -> int:
    return tenants.get_tenant(store, "acme").credits_microcents


def _hooks(store: Store, gid: str) -> list[str]:
    with store.session() as s:
        rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.generation_id == gid)).all()
        return [row.payload["state"] for row in rows]


def _png(assets: AssetStore, key: str) -> np.ndarray:
    with Image.open(io.BytesIO(assets.get(key))) as image:
        return np.asarray(image.convert("RGB"))


def test_a_batch_of_4_runs_as_one_call_and_each_job_ends_on_its_own(
    parts: tuple[Store, AssetStore], backend: TinyBackend
) -> None:
    store, assets = parts
    ids = _queue(store, 4)
    counted = Counted(backend)
    assert _worker(store, assets, counted, max_batch=4).run_once()
    assert counted.calls == [4]  # one pipeline call
    alone = Counted(backend)
    frames = []
    for gid in ids:
        job = store.get("acme", gid)
        assert job.state == "completed" and job.progress == 1.0, job.failure_reason
        assert assets.keys(f"acme/{gid}") == [f"acme/{gid}/image.png", f"acme/{gid}/thumbnail.jpg"]
        assert _hooks(store, gid) == ["dreaming", "completed"]  # its own webhook
        # against the same job run alone: its own prompt and seed reached the batched call
        got = _png(assets, job.assets["image"])  # type: ignore[index]
        want = alone.generate([task_from_json(job.task, assets)])[0].frames[0]
        assert np.array_equal(got, want)  # byte for byte: the backend is batch-invariant
        frames.append(got)
    assert alone.calls == [1, 1, 1, 1]
    assert all(np.abs(frames[0].astype(int) - f).mean() > 1 for f in frames[1:])  # four different pictures
    assert _credits(store) == START - 4 * PRICE  # each paid, none refunded


def test_a_request_draws_the_same_bytes_alone_and_in_a_batch_of_4(backend: TinyBackend) -> None:
    """Batch invariance: each clip of a batch of 4 (prompts in English and Arabic, their own seeds) against the same
    request run alone, byte for byte, videos and images. Without `enable_batch_invariance` a few values move by a
    level (the few-row GEMMs and the prompt padding of a batch); with it, none may."""
    prompts = ["a red circle moves to the left", "مربع أزرق يسقط", "a green triangle grows", "دائرة صفراء تكبر"]
    for num_frames in (16, 1):
        tasks = [Task(prompt, seed=7 + i, steps=2, num_frames=num_frames) for i, prompt in enumerate(prompts)]
        together = backend.generate(tasks)
        for task, clip in zip(tasks, together, strict=True):
            alone = backend.generate([task])[0]
            assert alone.frames.shape == clip.frames.shape == (num_frames, 64, 64, 3)
            assert np.array_equal(clip.frames, alone.frames), (task.prompt, num_frames)
        assert not np.array_equal(together[0].frames, together[1].frames)


def test_videos_batch_and_max_batch_caps_the_claim(parts: tuple[Store, AssetStore], backend: TinyBackend) -> None:
    store, assets = parts
    ids = _queue(store, 3, num_frames=16)
    counted = Counted(backend)
    worker = _worker(store, assets, counted, max_batch=2)
    assert worker.run_once() and worker.run_once() and not worker.run_once()
    assert counted.calls == [2, 1]
    for gid in ids:
        job = store.get("acme", gid)
        assert job.state == "completed", job.failure_reason
        video = assets.get(job.assets["video"])  # type: ignore[index]
        path = Path(str(store.db.url.database)).parent / f"{gid}.mp4"
        path.write_bytes(video)
        assert media.video_info(path)[:3] == (16, 64, 64)


def test_a_job_deleted_mid_batch_fails_deleted_and_the_others_complete(
    parts: tuple[Store, AssetStore], backend: TinyBackend
) -> None:
    store, assets = parts
    ids = _queue(store, 3)
    heartbeat = store.heartbeat
    beats: list[str] = []

    def deleting(generation_id: str, *args: Any, **kwargs: Any) -> bool:
        if "progress" not in kwargs:  # the lease keeper's beats (a slow host's load or upload): not a step's
            return heartbeat(generation_id, *args, **kwargs)
        beats.append(generation_id)
        if len(beats) == 1:  # its tenant deletes the second job while the batch runs
            store.delete("acme", ids[1])
        return heartbeat(generation_id, *args, **kwargs)

    store.heartbeat = deleting  # type: ignore[method-assign]
    counted = Counted(backend)
    assert _worker(store, assets, counted, max_batch=4).run_once()
    assert counted.calls == [3]
    store.heartbeat = heartbeat  # type: ignore[method-assign]
    assert beats.count(ids[1]) == 1 and beats.count(ids[0]) == beats.count(ids[2]) == 2  # a beat a step, then no more
    for gid in (ids[0], ids[2]):
        assert store.get("acme", gid).state == "completed"
    with store.session() as s:  # hidden from its tenant; failed, refunded, no files
        deleted = s.get(Generation, ids[1])
        assert deleted is not None and deleted.state == "failed" and deleted.failure_reason == "Deleted"
    assert assets.keys(f"acme/{ids[1]}") == []
    assert _credits(store) == START - 2 * PRICE


def test_a_failed_call_fails_each_job_with_the_reason(parts: tuple[Store, AssetStore], backend: TinyBackend) -> None:
    store, assets = parts
    ids = _queue(store, 3)
    broken = Counted(backend, RuntimeError("out of memory"))
    assert _worker(store, assets, broken, max_batch=4).run_once()
    assert broken.calls == [3]
    for gid in ids:
        job = store.get("acme", gid)
        assert (job.state, job.failure_reason) == ("failed", "Job failed: RuntimeError: out of memory")
        assert _hooks(store, gid) == ["dreaming", "failed"]
    assert _credits(store) == START  # every job refunded, once


def test_an_attempt_that_failed_outside_the_requests_puts_each_job_back(
    parts: tuple[Store, AssetStore], backend: TinyBackend
) -> None:
    store, assets = parts
    ids = _queue(store, 2)
    assert _worker(store, assets, Counted(backend, RankFailed("rank 1 died")), max_batch=4).run_once()
    assert [(store.get("acme", g).state, store.get("acme", g).attempts) for g in ids] == [("queued", 1)] * 2
    assert _credits(store) == START - 2 * PRICE  # charged once, kept: the jobs are not over
    assert _worker(store, assets, Counted(backend), max_batch=4).run_once()
    assert [(store.get("acme", g).state, store.get("acme", g).attempts) for g in ids] == [("completed", 2)] * 2
    assert _hooks(store, ids[0]) == ["dreaming", "dreaming", "completed"]


def test_mixed_shapes_never_batch_and_a_mixed_batch_is_refused(
    parts: tuple[Store, AssetStore], backend: TinyBackend
) -> None:
    store, assets = parts
    small = _queue(store, 1)
    large = _queue(store, 1, width=128)
    more = _queue(store, 1, steps=3)
    counted = Counted(backend)
    worker = _worker(store, assets, counted, max_batch=4)
    assert worker.run_once() and worker.run_once() and worker.run_once() and not worker.run_once()
    assert counted.calls == [1, 1, 1]

    a, b = _queue(store, 1), _queue(store, 1, width=128)
    jobs = [store.claim_job(a[0], "w1", 30), store.claim_job(b[0], "w1", 30)]
    with pytest.raises(scheduling.SchedulingError, match=r"^batch: mixed shapes, job .* is 'tiny 128x64x1 steps=2"):
        worker.run_batch(jobs)  # type: ignore[arg-type]
    assert counted.calls == [1, 1, 1] and {store.get("acme", g).state for g in a + b} == {"dreaming"}
    assert {store.get("acme", g).state for g in small + large + more} == {"completed"}


def test_the_worker_api_hands_out_batches(tmp_path: Path, backend: TinyBackend) -> None:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    assets = AssetStore(str(tmp_path / "assets"))
    tenants.create_tenant(store, "acme", credits_cents=100)
    client = TestClient(create_app(store, assets, ApiConfig(secret=b"s")))
    key = tenants.create_worker_key(store)
    ids = _queue(store, 3)
    # a worker from before batching sends no max_batch and reads one job
    legacy = client.post("/v1/worker/claim", json={"worker": "old", "models": ["tiny"]},
                         headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert legacy.status_code == 200 and legacy.json()["id"] == ids[0] and "batch_key" not in legacy.json()
    bad = client.post("/v1/worker/claim", json={"worker": "w", "models": ["tiny"], "max_batch": 0},
                      headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert bad.status_code == 422 and "max_batch" in bad.text

    remote = Server("http://testserver", key, "far-1", client=client)
    counted = Counted(backend)
    assert _worker(remote, remote, counted, max_batch=4, name="far-1").run_once()
    assert counted.calls == [2]
    assert [store.get("acme", g).state for g in ids] == ["dreaming", "completed", "completed"]
    again = _queue(store, 1)
    assert _worker(remote, remote, Counted(backend, RankFailed("rank 1 hung")), 4, "far-1").run_once()
    assert store.get("acme", again[0]).state == "queued"  # given back through the API
    store.close()


def test_max_batch_must_be_at_least_1() -> None:
    with pytest.raises(ValueError, match="max_batch: must be >= 1, got 0"):
        WorkerConfig(name="w", max_batch=0)
    assert WorkerConfig(name="w").max_batch == 1


class _Method:
    """An actor method as the dispatcher calls it: `.remote(*args)`, written down."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def remote(self, *args: Any) -> object:
        self.calls.append(args)
        return object()


class _Actor:
    def __init__(self) -> None:
        self.run = _Method()


class _NoCluster:
    """What RayCluster asks of `ray` when no actor is started and none is waited for (the dispatch step alone)."""

    def remote(self, cls: type) -> type:
        return cls

    def kill(self, actor: Any, no_restart: bool = True) -> None:
        pass


def test_the_ray_dispatcher_hands_a_worker_a_batch_and_releases_it_whole(parts: tuple[Store, AssetStore]) -> None:
    store, _ = parts
    ids = _queue(store, 5)
    config = ClusterConfig(models=["tiny"], max_batch=3)
    cluster = RayCluster(store, config, Settings(), None, _NoCluster())
    node = Node("n1", "10.0.0.1", None, True, 2.0, 0.0)
    actor = _Actor()
    slot = cluster.slots[("n1", 0)] = Slot(node, 0, "noor.-.n1.0.x-1", actor, ready_ref=None)
    cluster.dispatch()
    assert slot.jobs == ids[:3] and actor.run.calls == [(ids[:3],)] and cluster.dispatched == 3
    assert [store.get("acme", g).worker_node for g in ids[:3]] == ["n1"] * 3
    assert cluster.status()[0]["jobs"] == ids[:3]
    cluster._drop(slot, "its node is gone")  # a lost worker: its whole batch goes back to the queue at once
    assert [store.get("acme", g).state for g in ids] == ["queued"] * 5
    with pytest.raises(ClusterError, match="max_batch: must be >= 1, got 0"):
        ClusterConfig(models=["tiny"], max_batch=0)


def test_max_batch_bad_values_are_one_line(noor: Callable[..., tuple[int, str, str]]) -> None:
    for args in (
        ("serve", "--max-batch", "0"),
        ("worker", "--server", "http://x:1", "--key", "k", "--max-batch", "65"),
    ):
        code, out, err = noor(*args)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "--max-batch" in err, err


@pytest.mark.slow
def test_noor_serve_max_batch_runs_the_queue_in_batches(tmp_path: Path, toy_weights: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = Store(f"sqlite:///{data / 'noor.db'}")
    ids = [store.create(tenant="acme", model="tiny", request={}, task=_task_json(i)).id for i in range(3)]
    server = start_serve(data, toy_weights, "--workers", "1", "--max-batch", "3")
    try:
        deadline = time.monotonic() + 120
        while not all(store.get("acme", g).is_done for g in ids):
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.2)
    finally:
        server.stop()
    done = [store.get("acme", g) for g in ids]
    assert {g.state for g in done} == {"completed"} and len({g.started_at for g in done}) == 1  # one claim
    store.close()

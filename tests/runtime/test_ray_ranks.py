"""A k-rank worker on Ray (the package's local cluster: its head counts two pretend GPUs, and the ranks meet over
gloo): two rank actors in one STRICT_PACK placement group make the same clip as one rank; a killed actor fails
the attempt; a group no node can hold fails after its wait; and under the dispatcher, a job split over two ranks
runs on its worker's two-GPU group, a rank killed mid-job sends it back to the queue once, charged once."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from noor.engine import media
from noor.engine.backend import Cancelled
from noor.engine.diffusers import parallel
from noor.engine.diffusers.backend import DiffusersBackend
from noor.engine.diffusers.spec import spec_of
from noor.engine.task import Task
from noor.runtime.ranks import NoPlacement, RankFailed, RayRanks
from tests.engine.diffusers.toys import toy_dir
from tests.runtime.conftest import LocalRay
from tests.runtime.test_ranks import entry, task

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    return lambda family: toy_dir(tmp_path_factory, family)


def test_two_rank_actors_in_a_placement_group_equal_one_rank(local_ray: LocalRay, toy: Callable[[str], Path]) -> None:
    import ray

    model = entry(toy, "ltx-video")
    alone = DiffusersBackend(model, threads=1).generate([task(model, seed=4, steps=3)])[0].frames
    node = local_ray.nodes["me-riyadh"]  # the head: it counts the GPUs
    ranks = RayRanks(spec_of(model), parallel.parse("ulysses=2"), threads=1, gpus=True, node=node, step_timeout_s=120)
    try:
        # 1. the same clip, each step reported, both actors on one node in one STRICT_PACK group of GPU bundles
        steps: list[tuple[int, int]] = []
        media = ranks.generate([task(model, seed=4, steps=3)], lambda d, t: steps.append((d, t)))
        assert np.array_equal(media[0].frames, alone)
        assert steps[-1] == (3, 3) and steps == sorted(set(steps))
        group = ranks.group
        table = ray.util.placement_group_table(group)
        assert table["strategy"] == "STRICT_PACK" and list(table["bundles"].values()) == [{"GPU": 1.0}] * 2
        assert set(table["bundles_to_node_id"].values()) == {node}
        # 2. cancelled after a step: both stop; the next call runs
        with pytest.raises(Cancelled):
            ranks.generate([task(model, seed=4, steps=3)], lambda d, t: (_ for _ in ()).throw(Cancelled()))
        # 3. an actor killed: the attempt fails naming it; the next call starts fresh actors in the same group
        first = ranks.pids
        os.kill(first[1], signal.SIGKILL)
        with pytest.raises(RankFailed, match="rank 1 of 2 died"):
            ranks.generate([task(model, seed=4, steps=3)])
        assert ranks.actors == [] and ranks.group is group
        assert np.array_equal(ranks.generate([task(model, seed=4, steps=3)])[0].frames, alone)
        assert set(ranks.pids).isdisjoint(first)
    finally:
        ranks.close()
    assert ranks.group is None  # made here: removed here


def test_a_group_no_node_can_hold_fails_the_attempt_after_its_wait(
    local_ray: LocalRay, toy: Callable[[str], Path]
) -> None:
    model = entry(toy, "ltx-video")  # 3 ranks: the head has 2 GPUs, the other node none
    ranks = RayRanks(spec_of(model), parallel.parse("ring=3"), threads=1, gpus=True, start_timeout_s=3)
    with pytest.raises(NoPlacement, match="no node had 3 free GPUs for ring=3 within 3 s"):
        ranks.generate([task(model)])
    assert ranks.actors == [] and ranks.group is None


def _stored(t: Task, split: str | None) -> dict[str, Any]:
    """A job's task as the API stores it, with the split it was priced with."""
    fields = ("prompt", "negative_prompt", "width", "height", "num_frames", "fps", "steps", "guidance", "seed")
    return {f: getattr(t, f) for f in fields} | ({"parallel": split} if split else {})


def _frames(video: bytes) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(video)
        f.flush()
        return media.read_video(f.name)


def test_a_split_job_runs_on_rank_actors_in_its_workers_gpu_group_and_a_killed_rank_retries_it_once(
    local_ray: LocalRay, toy: Callable[[str], Path], toy_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    from ray.util import placement_group_table

    from noor.config import settings
    from noor.engine.diffusers import installed
    from noor.jobs import tenants
    from noor.jobs.assets import AssetStore, RegionalAssets
    from noor.runtime.ray_cluster import NAMESPACE, ClusterConfig, RayCluster
    from noor.runtime.worker import encode
    from tests.runtime.test_ray_cluster import _deploy

    d = _deploy(tmp_path, toy_weights)
    d.settings = d.settings.model_copy(update={"watermark": False})  # outputs compared pixel for pixel
    monkeypatch.setenv("NOOR_DATA_DIR", str(d.settings.data_dir))  # the workers' models.toml (their NOOR_*)
    settings.cache_clear()
    model = entry(toy, "wan2.1-t2v")
    installed.add(replace(model, id="wan", parallel="ulysses=2"))
    tenants.create_tenant(d.store, "acme", credits_cents=10)
    one = task(model, seed=3, steps=3)
    alone = _frames(encode(DiffusersBackend(model, threads=1).generate([one])[0])["video.mp4"])
    # the default lease (30 s), shorter than the ranks' start on a busy machine: the worker keeps it while they load
    config = ClusterConfig(models=["tiny", "wan"], gpus_per_worker=2)
    d.cluster = RayCluster(d.store, config, d.settings, RegionalAssets(d.settings.resolved_assets_url), ray=ray)
    d.cluster.start()
    try:
        # 1. a two-GPU worker: its GPUs are a STRICT_PACK group of two one-GPU bundles on the head; it holds none
        d.cluster.wait_ready(count=1, timeout_s=300)  # a busy machine: the worker imports torch and loads tiny
        (worker,) = d.cluster.status()  # only the head has two GPUs
        assert worker["node"] == local_ray.nodes["me-riyadh"] and worker["gpus"] == []
        slot = next(iter(d.cluster.slots.values()))
        table = placement_group_table(slot.placement_group)
        assert table["strategy"] == "STRICT_PACK" and table["bundles"] == {0: {"GPU": 1.0}, 1: {"GPU": 1.0}}
        assert set(table["bundles_to_node_id"].values()) == {local_ray.nodes["me-riyadh"]}

        def job(split: str | None, t: Task = one) -> str:
            return d.store.create(
                tenant="acme", model="wan", request={}, task=_stored(t, split), price_microcents=2_000_000
            ).id

        def video(gid: str) -> np.ndarray:
            return _frames(AssetStore(str(d.stores["me-riyadh"])).get(f"acme/{gid}/video.mp4"))

        # 2. a job priced with ulysses=2 runs on the worker's two rank actors: the clip of one rank
        split = job("ulysses=2")
        d.wait(lambda: d.row(split).is_done, timeout_s=180)
        row = d.row(split)
        assert (row.state, row.attempts, row.worker) == ("completed", 1, worker["worker"]), row.failure_reason
        assert np.abs(video(split).astype(np.float32) - alone.astype(np.float32)).max() / 255 <= 1e-4
        ranks = [ray.get_actor(f"{worker['worker']}.rank{i}-1", namespace=NAMESPACE) for i in range(2)]
        # 3. a rank actor killed mid-job: the attempt fails, the job goes back to the queue once and completes
        # on fresh ranks in the same group, charged once (2 cents of 10 per job)
        assert tenants.balance(d.store, "acme") == pytest.approx(8.0)
        killed = job("ulysses=2", replace(one, steps=400))
        d.wait(lambda: d.row(killed).progress > 0, timeout_s=60)
        ray.kill(ranks[1], no_restart=True)
        d.wait(lambda: d.row(killed).is_done, timeout_s=180)
        row = d.row(killed)
        assert (row.state, row.attempts, row.paid_microcents) == ("completed", 2, 2_000_000), row.failure_reason
        ray.get_actor(f"{worker['worker']}.rank1-2", namespace=NAMESPACE)  # the fresh ranks
        assert tenants.balance(d.store, "acme") == pytest.approx(6.0)
        # 4. a split larger than the worker's group fails at once, saying why, and is refunded
        big = job("ring=4")
        d.wait(lambda: d.row(big).is_done, timeout_s=60)
        row = d.row(big)
        assert row.state == "failed" and row.attempts == 1
        assert row.failure_reason == (
            "Job failed: NoPlacement: ring=4 needs 4 ranks; this worker holds 2 GPUs (--gpus-per-worker 2)"
        )
        assert tenants.balance(d.store, "acme") == pytest.approx(6.0)
        # 5. a model that runs on one rank runs in the worker itself
        tiny = d.create("sovereign")
        d.wait(lambda: d.row(tiny).is_done)
        assert d.row(tiny).state == "completed"
    finally:
        d.cluster.close()
        d.store.close()
        settings.cache_clear()
    assert placement_group_table(slot.placement_group)["state"] == "REMOVED"  # the worker's GPUs freed with it

"""The Ray runtime's parts that need no cluster: the store calls the dispatcher makes (on SQLite and PostgreSQL),
the queue it reads, how nodes become regions and workers, and the settings workers get."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from noor import scheduling
from noor.config import Settings
from noor.jobs import tenants
from noor.jobs.assets import AssetNotFound, RegionalAssets
from noor.jobs.store import Store
from noor.runtime.ray_cluster import (
    ClusterConfig,
    ClusterError,
    Node,
    node_region,
    settings_env,
    unreachable,
)

# `store` (on SQLite and on the real PostgreSQL) comes from tests/runtime/conftest.py


def _job(store: Store, tenant: str = "acme", **kw: object) -> str:
    return store.create(tenant=tenant, model="tiny", request={}, task={"prompt": "x"}, **kw).id  # type: ignore[arg-type]


def test_claim_job_records_where_it_runs_and_only_one_worker_wins(store: Store) -> None:
    gid = _job(store)
    claimed = store.claim_job(gid, "noor.me-riyadh.abcd.0.1", 30, node="abcd", region="me-riyadh")
    assert claimed is not None and claimed.state == "dreaming" and claimed.attempts == 1
    assert (claimed.worker, claimed.worker_node, claimed.worker_region) == ("noor.me-riyadh.abcd.0.1", "abcd",
                                                                            "me-riyadh")  # fmt: skip
    assert store.claim_job(gid, "other", 30) is None  # taken
    assert store.complete(gid, "noor.me-riyadh.abcd.0.1", {"video": None, "image": None})
    done = store.get("acme", gid)
    assert done.lease_owner is None and done.worker_region == "me-riyadh"  # kept after it ends


def test_release_puts_a_dead_workers_job_back_at_once_and_fails_it_out_of_attempts(store: Store) -> None:
    gid = _job(store, max_attempts=2)
    assert store.claim_job(gid, "w1", 300) is not None
    assert not store.release(gid, "someone-else")  # only the holder's death counts
    assert store.release(gid, "w1")
    row = store.get("acme", gid)
    assert row.state == "queued" and row.lease_owner is None and row.attempts == 1
    assert not store.complete(gid, "w1", {"video": None, "image": None})  # the dead worker cannot finish it
    assert store.claim_job(gid, "w2", 300) is not None
    assert store.release(gid, "w2")
    row = store.get("acme", gid)
    assert row.state == "failed" and row.failure_reason == "Job failed: its worker was lost on every attempt"


def test_the_queue_carries_each_jobs_allowed_regions(store: Store) -> None:
    tenants.create_tenant(store, "sovereign", regions=["me-riyadh"])
    tenants.create_tenant(store, "anywhere")
    a = _job(store, "sovereign")
    b = _job(store, "anywhere")
    c = _job(store, "anywhere", region="eu-london")
    d = _job(store, "sovereign", region="eu-london")  # bound outside its tenant's regions: runs nowhere
    e = _job(store, "unknown-tenant")
    claimed = _job(store, "anywhere")
    store.claim_job(claimed, "w", 30)
    regions = {j.id: j.regions for j in store.queued()}
    assert regions == {a: ("me-riyadh",), b: None, c: ("eu-london",), d: (), e: None}
    # the policy places them: the sovereign job only on the Riyadh worker, the eu-london one only in London
    views = [scheduling.WorkerView(id=r, region=r, chip="cpu-local", free_gpus=1, memory_gb=0.0)
             for r in ("eu-london", "me-riyadh")]  # fmt: skip
    placed = {x.jobs[0].id: x.worker_id for x in scheduling.assign(store.queued(), views, 0.0, "fifo")}
    assert placed == {a: "me-riyadh", b: "eu-london"}
    # with only a London worker free, the oldest job it may run goes there; the sovereign one waits for Riyadh
    placed = {x.jobs[0].id: x.worker_id for x in scheduling.assign(store.queued(), views[:1], 0.0, "fifo")}
    assert placed == {b: "eu-london"}
    store.claim_job(b, "w", 30)
    placed = {x.jobs[0].id: x.worker_id for x in scheduling.assign(store.queued(), views[:1], 0.0, "fifo")}
    assert placed == {c: "eu-london"}


def test_node_regions_from_labels_or_resources() -> None:
    assert node_region({"region": "me-riyadh"}, {"CPU": 4}) == "me-riyadh"
    assert node_region({}, {"CPU": 4, "region:eu-london": 1}) == "eu-london"
    assert node_region({}, {"CPU": 4}) is None
    with pytest.raises(ValueError, match="one region resource, got eu-london, me-riyadh"):
        node_region({}, {"region:me-riyadh": 1, "region:eu-london": 1})


def test_workers_per_node_and_their_resources() -> None:
    cpu = Node("n" * 56, "10.0.0.1", "me-riyadh", True, cpus=8, gpus=0)
    gpu = Node("g" * 56, "10.0.0.2", "me-riyadh", True, cpus=32, gpus=8)
    assert ClusterConfig(models=["tiny"], threads=2).slots(cpu) == 4
    assert ClusterConfig(models=["tiny"], threads=2, workers_per_node=1).slots(cpu) == 1
    assert ClusterConfig(models=["tiny"], gpus_per_worker=1).slots(gpu) == 8
    assert ClusterConfig(models=["tiny"], gpus_per_worker=0.5).slots(gpu) == 16  # fractional: two per GPU
    assert ClusterConfig(models=["tiny"], gpus_per_worker=4).slots(gpu) == 2  # 4 GPUs each, one node
    assert ClusterConfig(models=["tiny"], gpus_per_worker=1).slots(cpu) == 0
    options = ClusterConfig(models=["tiny"], gpus_per_worker=0.5).actor_options(gpu)
    assert options == {"label_selector": {"ray.io/node-id": gpu.id}, "num_cpus": 0, "num_gpus": 0.5}
    with pytest.raises(ClusterError, match="gpus_per_worker: must be 0, a fraction of one GPU, or a whole number"):
        ClusterConfig(models=["tiny"], gpus_per_worker=1.5)


def test_workers_get_the_servers_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(data_dir=tmp_path, regions={"me-riyadh": {"assets_url": "s3://riyadh/assets"}}, threads=2,
                 aliases={"ray-2": "tiny"})  # type: ignore[call-arg]  # fmt: skip
    env = settings_env(s)
    assert env["NOOR_DATA_DIR"] == str(tmp_path) and env["NOOR_THREADS"] == "2"
    for name, value in env.items():  # what a worker actor does with them
        monkeypatch.setenv(name, value)
    assert Settings() == s
    assert s.region_assets_url("me-riyadh") == "s3://riyadh/assets"
    assert s.region_assets_url("eu-london") == str(tmp_path / "regions" / "eu-london" / "assets")
    assert s.region_assets_url(None) == str(tmp_path / "assets")
    with pytest.raises(ValueError, match="region must be lowercase"):
        s.region_assets_url("../escape")


def test_regional_assets_write_home_and_read_everywhere(tmp_path: Path) -> None:
    riyadh = RegionalAssets(str(tmp_path / "riyadh"), "me-riyadh", {None: str(tmp_path / "default")})
    server = RegionalAssets(str(tmp_path / "default"))
    server.put("acme/uploads/a.png", b"upload")
    riyadh.put("acme/g1/video.mp4", b"video")
    assert riyadh.get("acme/uploads/a.png") == b"upload"  # a keyframe the server took in
    with pytest.raises(AssetNotFound):
        server.get("acme/g1/video.mp4")  # the server has not met Riyadh yet
    server.add("me-riyadh", str(tmp_path / "riyadh"))
    assert server.get("acme/g1/video.mp4") == b"video" and server.exists("acme/g1/video.mp4")
    assert not (tmp_path / "default" / "acme" / "g1").exists()  # written only in its region


@pytest.mark.ray
def test_an_address_where_no_head_answers_is_refused_at_once(tmp_path: Path) -> None:
    """ray.init would wait for it for as long as it takes; Noor asks first and says what is wrong."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert unreachable(f"127.0.0.1:{port}") == f"nothing answers at 127.0.0.1:{port} (Connection refused)"
    assert unreachable("nonsense") == "an address is HOST:PORT or auto, got 'nonsense'"
    env = os.environ | {"NOOR_DATA_DIR": str(tmp_path), "RAY_AUTH_MODE": "disabled"}
    run = subprocess.run([sys.executable, "-m", "noor.cli", "serve", "--ray", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)  # fmt: skip
    assert run.returncode == 2 and run.stderr.endswith(
        f"noor: error: --ray: no Ray cluster at '127.0.0.1:{port}': nothing answers at 127.0.0.1:{port} "
        "(Connection refused)\n"
    )


def test_a_regional_workers_claim_honours_its_tenants_regions(store: Store) -> None:
    """Local and remote workers (`noor worker --region`) claim through the same queue read as Ray:
    a region-bound tenant's jobs go only to workers in its regions, and unbound jobs anywhere."""
    tenants.create_tenant(store, "sovereign", regions=["me-riyadh"])
    bound = _job(store, "sovereign")
    free = _job(store, "anywhere")
    first = store.claim("w-london", 30, regions=["eu-london"])
    assert first is not None and first.id == free
    assert store.claim("w-london", 30, regions=["eu-london"]) is None  # the sovereign job stays queued
    got = store.claim("w-riyadh", 30, regions=["me-riyadh"])
    assert got is not None and got.id == bound and got.worker_region == "me-riyadh"
    assert [j.id for j in store.queued()] == []

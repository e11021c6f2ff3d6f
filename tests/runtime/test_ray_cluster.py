"""Noor on a real Ray cluster: node processes on this machine, each labelled with a region, `noor serve --ray`,
the built-in model (toy weights). Residency from job records, storage and the API, a killed actor, a node that
joins, `noor cluster status`, a k-GPU worker in a placement group, and `noor simulate sweep --ray`.

The cluster is started here (not in CI's script) with its own temp dir and free ports, and stopped by killing
exactly the processes it started (`ray stop` would stop every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import ray
from sqlalchemy import select
from typer.testing import CliRunner

from noor.cli import app
from noor.config import Settings, settings
from noor.engine import registry
from noor.jobs import tenants
from noor.jobs.assets import AssetStore, RegionalAssets
from noor.jobs.generation import Generation
from noor.jobs.outbox import WebhookDelivery
from noor.jobs.store import Store
from noor.runtime.ray_cluster import NAMESPACE, ClusterConfig, RayCluster, cluster_status, connect
from tests.conftest import Served, start_serve

RAY = str(Path(sys.executable).parent / "ray")
TASK = {"prompt": "a red circle moves left", "width": 64, "height": 64, "num_frames": 16, "fps": 8, "seed": 1}
CPUS_PER_NODE = 2  # logical: one for a Noor worker, one for sweep tasks

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_start(args: list[str], env: dict[str, str], timeout: float) -> None:
    run = subprocess.run([RAY, "start", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert run.returncode == 0, f"ray start {' '.join(args)}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"


@dataclass
class LocalRay:
    address: str
    temp_dir: Path
    env: dict[str, str]
    nodes: dict[str, str]  # region -> node id

    def add_node(self, region: str, *extra: str) -> str:
        """Start one more node process with this region's label; its node id."""
        before = {n["NodeID"] for n in ray.nodes()}
        _ray_start(
            [f"--address={self.address}", "--node-ip-address=127.0.0.1", f"--num-cpus={CPUS_PER_NODE}",
             f"--labels=region={region}",
             "--object-store-memory=78643200", f"--temp-dir={self.temp_dir}", "--disable-usage-stats", *extra],
            env=self.env, timeout=120,
        )  # fmt: skip
        for _ in range(100):
            new = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] not in before]
            if new:
                self.nodes[region] = new[0]
                return new[0]
            time.sleep(0.1)
        raise AssertionError(f"node of {region} did not join")


def _stop_processes(marker: str) -> None:
    """SIGTERM, then SIGKILL, the processes whose command line names `marker` (this cluster's temp dir), with
    their children (Ray's workers)."""
    ours: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in proc.info["cmdline"] or []):
            ours.append(proc)
            ours.extend(proc.children(recursive=True))
    for proc in ours:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(ours, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[LocalRay]:
    """A head node in me-riyadh (with two pretend GPUs: Ray counts them, nothing uses CUDA) and a node in
    eu-london, both on this machine; this process joins as a driver."""
    temp_dir = Path(tempfile.mkdtemp(prefix="noor-ray-", dir="/tmp"))  # short: Ray's socket paths must fit
    port = _free_port()
    # auth said explicitly: a token a local Ray left in ~/.ray would otherwise switch token auth on for the nodes
    # and not for this driver (the cluster listens on loopback, for the length of this module)
    auth = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env = os.environ | auth
    cluster = LocalRay(f"127.0.0.1:{port}", temp_dir, env, {})
    patch = pytest.MonkeyPatch()
    for name, value in auth.items():  # this process joins as a driver
        patch.setenv(name, value)
    try:
        _ray_start(
            ["--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={CPUS_PER_NODE}",
             "--num-gpus=2", "--labels=region=me-riyadh", "--object-store-memory=78643200",
             "--include-dashboard=false", f"--dashboard-port={_free_port()}", f"--temp-dir={temp_dir}",
             "--disable-usage-stats"],
            env=env, timeout=120,
        )  # fmt: skip
        connect(cluster.address, log_to_driver=False)
        cluster.nodes["me-riyadh"] = ray.get_runtime_context().get_node_id()
        cluster.add_node("eu-london")
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _stop_processes(str(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
        patch.undo()


@dataclass
class Deployment:
    store: Store  # the server's database, read and written here directly
    settings: Settings
    stores: dict[str, Path]  # region -> its asset folder
    cluster: RayCluster | None = None  # a dispatcher in this process, or
    served: Served | None = None  # `noor serve --ray` in its own

    def create(self, tenant: str, steps: int = 4, **kw: Any) -> str:
        return self.store.create(tenant=tenant, model="tiny", request={}, task=TASK | {"steps": steps}, **kw).id

    def row(self, generation_id: str) -> Generation:
        with self.store.session() as s:
            row = s.get(Generation, generation_id)
        assert row is not None
        return row

    def wait(self, predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; cluster: {cluster_status(ray, self.store)}")
            time.sleep(0.05)

    def files(self, region: str) -> set[str]:
        return set(AssetStore(str(self.stores[region])).keys())


def _deploy(tmp: Path, toy_weights: Path) -> Deployment:
    """Settings with a store for me-riyadh and one for eu-london (us-west gets the default place), a database
    with three tenants, each bound to one region."""
    stores = {r: tmp / f"store-{r}" for r in ("me-riyadh", "eu-london")}
    settings = Settings(
        data_dir=tmp / "data",
        database_url=f"sqlite:///{tmp / 'noor.db'}",
        assets_url=str(tmp / "store-default"),
        tiny_weights=toy_weights,
        region_stores={r: str(p) for r, p in stores.items()},
    )  # type: ignore[call-arg]
    stores["us-west"] = tmp / "data" / "regions" / "us-west" / "assets"  # not configured: the default place
    stores["default"] = tmp / "store-default"
    store = Store(settings.resolved_database_url, scheduler=settings.scheduling_policy())
    tenants.create_tenant(store, "sovereign", regions=["me-riyadh"])
    tenants.create_tenant(store, "londoner", regions=["eu-london"])
    tenants.create_tenant(store, "westerner", regions=["us-west"])
    return Deployment(store, settings, stores)


@pytest.fixture(scope="module")
def deployment(
    local_ray: LocalRay, toy_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """`noor serve --ray ADDRESS --workers 1`: one CPU worker (one torch thread) per node."""
    d = _deploy(tmp_path_factory.mktemp("ray-deploy"), toy_weights)
    with pytest.MonkeyPatch.context() as patch:  # the server's environment
        patch.setenv("NOOR_DATABASE_URL", d.settings.resolved_database_url)
        patch.setenv("NOOR_ASSETS_URL", d.settings.resolved_assets_url)
        patch.setenv("NOOR_REGION_STORES", json.dumps(d.settings.region_stores))
        d.served = start_serve(d.settings.data_dir, toy_weights, "--ray", local_ray.address, "--workers", "1")
    yield d
    d.served.stop()
    d.store.close()


def test_a_tenant_bound_to_a_region_runs_and_stores_only_there(deployment: Deployment, local_ray: LocalRay) -> None:
    d = deployment
    sovereign = [d.create("sovereign") for _ in range(4)]
    london = [d.create("londoner") for _ in range(3)]
    d.wait(lambda: all(d.row(g).is_done for g in sovereign + london), timeout_s=120)  # the workers start first
    riyadh_node, london_node = local_ray.nodes["me-riyadh"], local_ray.nodes["eu-london"]
    for g in sovereign:
        row = d.row(g)
        assert (row.state, row.worker_region, row.worker_node) == ("completed", "me-riyadh", riyadh_node)
        assert row.worker is not None and row.worker.startswith("noor.me-riyadh.")
    for g in london:
        row = d.row(g)
        assert (row.state, row.worker_region, row.worker_node) == ("completed", "eu-london", london_node)
    # storage: each tenant's files in its region's store and nowhere else
    riyadh, eu = d.files("me-riyadh"), d.files("eu-london")
    for g in sovereign:
        assert {f"sovereign/{g}/video.mp4", f"sovereign/{g}/thumbnail.jpg"} <= riyadh
    assert not any(k.startswith("sovereign/") for k in eu | d.files("default"))
    assert not any(k.startswith("londoner/") for k in riyadh | d.files("default"))
    assert {f"londoner/{g}/video.mp4" for g in london} <= eu
    # the server serves a finished video from whichever region wrote it
    assert d.served is not None
    key = tenants.create_key(d.store, "sovereign")
    got = httpx.get(f"{d.served.base}/dream-machine/v1/generations/{sovereign[0]}",
                    headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert got.status_code == 200 and got.json()["state"] == "completed"
    video = httpx.get(got.json()["assets"]["video"])
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"


def test_a_worker_actor_killed_mid_job_completes_it_exactly_once(deployment: Deployment) -> None:
    d = deployment
    gid = d.create("sovereign", steps=100, callback_url="https://hooks.example.com/noor")
    d.wait(lambda: d.row(gid).state == "dreaming" and d.row(gid).progress > 0)
    victim = d.row(gid).lease_owner
    assert victim is not None
    ray.kill(ray.get_actor(victim, namespace=NAMESPACE), no_restart=True)  # mid-denoising
    d.wait(lambda: d.row(gid).is_done)
    row = d.row(gid)
    assert row.state == "completed" and row.attempts == 2
    assert row.worker != victim and row.worker_region == "me-riyadh"
    with d.store.session() as s:
        states = [p["state"] for p in s.scalars(
            select(WebhookDelivery.payload).where(WebhookDelivery.generation_id == gid).order_by(WebhookDelivery.id)
        )]  # fmt: skip
    assert states == ["dreaming", "dreaming", "completed"]  # two attempts, one completion
    assert {f"sovereign/{gid}/video.mp4"} <= d.files("me-riyadh")


def test_a_node_that_joins_is_used_without_a_restart_and_status_shows_it(
    deployment: Deployment, local_ray: LocalRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = deployment
    gid = d.create("westerner")
    time.sleep(1.5)
    assert d.row(gid).state == "queued"  # no us-west node yet: it waits rather than run elsewhere
    west = local_ray.add_node("us-west")
    d.wait(lambda: d.row(gid).is_done, timeout_s=90)
    row = d.row(gid)
    assert (row.state, row.worker_region, row.worker_node) == ("completed", "us-west", west)
    assert f"westerner/{gid}/video.mp4" in d.files("us-west")
    # what runs where, while a job runs
    long = d.create("sovereign", steps=100)
    d.wait(lambda: d.row(long).state == "dreaming")
    status = cluster_status(ray, d.store)
    regions = {n["node"]: n["region"] for n in status["nodes"]}
    assert regions == {local_ray.nodes[r]: r for r in ("me-riyadh", "eu-london", "us-west")}
    assert sorted(w["region"] for w in status["workers"]) == ["eu-london", "me-riyadh", "us-west"]
    running = [j for j in status["running"] if j["id"] == long]
    assert running and running[0]["region"] == "me-riyadh" and running[0]["node"] == local_ray.nodes["me-riyadh"]
    assert any(w["job"] == long for w in status["workers"])
    d.wait(lambda: d.row(long).is_done)
    # the command line's view of the same (in this process: it joins the cluster as this driver already has)
    monkeypatch.setenv("NOOR_DATABASE_URL", d.settings.resolved_database_url)
    settings.cache_clear()
    try:
        run = CliRunner().invoke(app, ["cluster", "status", "--address", local_ray.address])
    finally:
        settings.cache_clear()
    assert run.exit_code == 0, run.output
    assert "3 nodes (3 alive) in 3 regions (eu-london, me-riyadh, us-west), 3 workers, 0 jobs running" in run.output
    assert ray.is_initialized()  # the command left this process's connection open


def test_a_multi_gpu_worker_holds_its_gpus_on_one_node_in_a_placement_group(
    local_ray: LocalRay, toy_weights: Path, tmp_path: Path
) -> None:
    from ray.util import placement_group_table

    models = [spec.id for spec in registry.available()] + ["resample"]
    d = _deploy(tmp_path, toy_weights)
    assets = RegionalAssets(d.settings.resolved_assets_url)
    d.cluster = RayCluster(d.store, ClusterConfig(models=models, gpus_per_worker=2), d.settings, assets, ray=ray)
    d.cluster.start()
    try:
        d.cluster.wait_ready(count=1)
        gid = d.create("sovereign")
        d.wait(lambda: d.row(gid).is_done)
        workers = d.cluster.status()
        assert len(workers) == 1  # only the me-riyadh node has two GPUs
        assert len(workers[0]["gpus"]) == 2 and workers[0]["node"] == local_ray.nodes["me-riyadh"]
        slot = next(iter(d.cluster.slots.values()))
        table = placement_group_table(slot.placement_group)
        assert table["strategy"] == "STRICT_PACK" and table["bundles"] == {0: {"GPU": 2.0}}
        assert set(table["bundles_to_node_id"].values()) == {local_ray.nodes["me-riyadh"]}
        row = d.row(gid)
        assert (row.state, row.worker_region) == ("completed", "me-riyadh")
    finally:
        d.cluster.close()
        d.store.close()


def test_sweep_on_ray_gives_the_same_table_as_local_processes(local_ray: LocalRay, tmp_path: Path) -> None:
    scenario = Path(__file__).resolve().parents[2] / "examples" / "sim" / "three-regions.toml"
    cmd = [sys.executable, "-m", "noor.cli", "simulate", "sweep", str(scenario), "--analytic",
           "--set", "scheduling.policy=fifo,fair-share", "--set", "horizon_h=1"]  # fmt: skip
    local = subprocess.run([*cmd, "--json", str(tmp_path / "local.json")], capture_output=True, text=True,
                           env=local_ray.env, timeout=300, check=False)  # fmt: skip
    env = local_ray.env | {"RAY_ADDRESS": local_ray.address}
    on_ray = subprocess.run([*cmd, "--ray", "--json", str(tmp_path / "ray.json")], capture_output=True, text=True,
                            env=env, timeout=300, check=False)  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert on_ray.returncode == 0, on_ray.stderr
    assert "ray" in on_ray.stderr  # the progress line says where it ran
    assert on_ray.stdout == local.stdout and "fair-share" in local.stdout
    rows = json.loads((tmp_path / "ray.json").read_text())["rows"]
    assert rows == json.loads((tmp_path / "local.json").read_text())["rows"]

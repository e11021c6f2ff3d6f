"""Noor on a real Ray cluster (the package's `local_ray`: node processes on this machine, each labelled with a
region), `noor serve --ray`, the built-in model (toy weights). Residency from job records, storage and the API,
a killed actor, a node that joins, `noor cluster status`, and `noor simulate sweep --ray`. A k-GPU worker and
its ranks: test_ray_ranks.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from sqlalchemy import func, select
from typer.testing import CliRunner

from noor.cli import app
from noor.config import Settings, settings
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.generation import Generation
from noor.jobs.outbox import WebhookDelivery
from noor.jobs.store import Store
from noor.runtime.ray_cluster import NAMESPACE, RayCluster, cluster_status
from tests.conftest import Served, start_serve
from tests.runtime.conftest import LocalRay

TASK = {"prompt": "a red circle moves left", "width": 64, "height": 64, "num_frames": 16, "fps": 8, "seed": 1}

pytestmark = pytest.mark.ray


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
        with self.holder(generation_id).session() as s:
            row = s.get(Generation, generation_id)
        assert row is not None
        return row

    def holder(self, generation_id: str) -> Store:
        """The store a job lives in: me-riyadh's data plane for its bound tenant, else the central one."""
        for store in self.store.stores():
            with store.session() as s:
                if s.get(Generation, generation_id) is not None:
                    return store
        raise AssertionError(f"no store holds {generation_id}")

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
        regions={r: {"assets_url": str(p)} for r, p in stores.items()}
        | {"me-riyadh": {"assets_url": str(stores["me-riyadh"]), "database_url": f"sqlite:///{tmp / 'riyadh.db'}"}},
    )  # type: ignore[call-arg]
    stores["us-west"] = tmp / "data" / "regions" / "us-west" / "assets"  # not configured: the default place
    stores["default"] = tmp / "store-default"
    store = Store.configured(settings, scheduler=settings.scheduling_policy())  # with me-riyadh's data plane
    tenants.create_tenant(store, "sovereign", regions=["me-riyadh"], max_concurrent=100, max_per_minute=600)
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
        patch.setenv("NOOR_REGIONS", json.dumps(d.settings.model_dump(mode="json")["regions"]))
        d.served = start_serve(d.settings.data_dir, toy_weights, "--ray", local_ray.address, "--workers", "1")
    yield d
    d.served.stop()
    d.store.close()


def test_a_tenant_bound_to_a_region_runs_and_stores_only_there(deployment: Deployment, local_ray: LocalRay) -> None:
    d = deployment
    sovereign = [d.create("sovereign", steps=2) for _ in range(50)]
    london = [d.create("londoner") for _ in range(3)]
    d.wait(lambda: all(d.row(g).is_done for g in sovereign + london), timeout_s=240)  # the workers start first
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
    # rows: the bound tenant's 50 jobs (prompts, outbox) in me-riyadh's database only; the central one keeps its
    # tenant row and credits (NOOR_REGIONS' data plane, docs/trust.md)
    plane = d.store.planes["me-riyadh"]
    assert {d.holder(g) for g in sovereign} == {plane} and {d.holder(g) for g in london} == {d.store}
    with d.store.session() as s:
        assert s.scalar(select(func.count()).where(Generation.tenant == "sovereign")) == 0
    with plane.session() as s:
        assert s.scalar(select(func.count()).where(Generation.tenant != "sovereign")) == 0
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
    with d.holder(gid).session() as s:  # the outbox of its tenant's region
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
    try:
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
    finally:
        local_ray.remove_node("us-west")  # the cluster is the package's: later modules expect two nodes


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

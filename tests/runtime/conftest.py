"""Fixtures of the runtime's tests: the job store on SQLite and on the real PostgreSQL, as the store's own tests
have it (the Ray dispatcher's store calls are tested on both), and one local Ray cluster for every Ray test of
this package (starting one costs tens of seconds on this machine).

The cluster is started here (not in CI's script) with its own temp dir and free ports, and stopped by killing
exactly the processes it started (`ray stop` would stop every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.ray_cluster import connect
from tests.jobs.conftest import store  # noqa: F401

RAY = str(Path(sys.executable).parent / "ray")
CPUS_PER_NODE = 2  # logical: one for a Noor worker, one for sweep tasks


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Store, AssetStore]]:
    """A worker's two ends: a SQLite job store with tenant "acme" (100 cents of credit) and a file store."""
    jobs = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(jobs, "acme", credits_cents=100)
    yield jobs, AssetStore(str(tmp_path / "assets"))
    jobs.close()


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
    added: dict[str, list[psutil.Process]] = field(default_factory=dict)  # region -> the processes of its node

    def add_node(self, region: str, *extra: str) -> str:
        """Start one more node process with this region's label; its node id. A test that adds one removes it
        (`remove_node`): the cluster is the package's."""
        import ray

        before = {n["NodeID"] for n in ray.nodes()}
        running = {p.pid for p in _processes(str(self.temp_dir))}
        _ray_start(
            [f"--address={self.address}", "--node-ip-address=127.0.0.1", f"--num-cpus={CPUS_PER_NODE}",
             f"--labels=region={region}",
             "--object-store-memory=78643200", f"--temp-dir={self.temp_dir}", "--disable-usage-stats", *extra],
            env=self.env, timeout=300,
        )  # fmt: skip
        for _ in range(100):
            new = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] not in before]
            if new:
                self.nodes[region] = new[0]
                # its own processes: new ones, and not workers the other nodes started meanwhile
                self.added[region] = [
                    p for p in _processes(str(self.temp_dir)) if p.pid not in running and p.ppid() not in running
                ]
                return new[0]
            time.sleep(0.1)
        raise AssertionError(f"node of {region} did not join")

    def remove_node(self, region: str) -> None:
        """Stop a node `add_node` started (its processes and their children) and wait until Ray counts it dead."""
        import ray

        node = self.nodes.pop(region)
        _stop(self.added.pop(region))
        for _ in range(300):
            if not any(n["Alive"] for n in ray.nodes() if n["NodeID"] == node):
                return
            time.sleep(0.1)
        raise AssertionError(f"node of {region} still alive")


def _processes(marker: str) -> list[psutil.Process]:
    """The processes whose command line names `marker` (this cluster's temp dir)."""
    return [p for p in psutil.process_iter(["cmdline"]) if any(marker in part for part in p.info["cmdline"] or [])]


def _stop(processes: list[psutil.Process]) -> None:
    """SIGTERM, then SIGKILL, these processes with their children (Ray's workers)."""
    ours: list[psutil.Process] = []
    for proc in processes:
        ours.append(proc)
        with contextlib.suppress(psutil.Error):
            ours.extend(proc.children(recursive=True))
    for proc in ours:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(ours, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


@pytest.fixture(scope="package")
def ray_nodes() -> Iterator[LocalRay]:
    """A head node in me-riyadh (with two pretend GPUs: Ray counts them, nothing uses CUDA) and a node in
    eu-london, both on this machine: one cluster for the package's Ray tests (test_ray_cluster, test_ray_ranks,
    test_ray_worlds), stopped after the package's last test. Tests join it through `local_ray`."""
    import ray

    temp_dir = Path(tempfile.mkdtemp(prefix="noor-ray-", dir="/tmp"))  # short: Ray's socket paths must fit
    # auth said explicitly: a token a local Ray left in ~/.ray would otherwise switch token auth on for the nodes
    # and not for this driver (the cluster listens on loopback, for the length of the package's tests)
    auth = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    # a busy machine (CI's two cores, or under `nice`) can take over Ray's default minute to start a raylet
    env = os.environ | auth | {"RAY_raylet_start_wait_time_s": "300"}
    patch = pytest.MonkeyPatch()
    for name, value in auth.items():  # this process joins as a driver
        patch.setenv(name, value)
    try:
        for tries_left in (2, 1, 0):  # a free port can be taken by another process before the head binds it
            port = _free_port()
            try:
                _ray_start(
                    ["--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={CPUS_PER_NODE}",
                     "--num-gpus=2", "--labels=region=me-riyadh", "--object-store-memory=78643200",
                     "--include-dashboard=false", f"--dashboard-port={_free_port()}", f"--temp-dir={temp_dir}",
                     "--disable-usage-stats"],
                    env=env, timeout=300,
                )  # fmt: skip
                break
            except AssertionError as err:
                if tries_left == 0 or "already in use" not in str(err):  # Ray says so of a port it lost
                    raise
                _stop(_processes(str(temp_dir)))
        cluster = LocalRay(f"127.0.0.1:{port}", temp_dir, env, {})
        connect(cluster.address, log_to_driver=False)
        try:
            cluster.nodes["me-riyadh"] = ray.get_runtime_context().get_node_id()
            cluster.add_node("eu-london")
        finally:
            ray.shutdown()
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _stop(_processes(str(temp_dir)))
        shutil.rmtree(temp_dir, ignore_errors=True)
        patch.undo()


@pytest.fixture(scope="module")
def local_ray(ray_nodes: LocalRay) -> Iterator[LocalRay]:
    """The package's cluster with this process joined as its driver, for one module: between the Ray modules it
    is not, so the unmarked tests of the modules between run as tests/conftest.py's guard expects."""
    import ray

    connect(ray_nodes.address, log_to_driver=False)
    try:
        yield ray_nodes
    finally:
        ray.shutdown()

"""`noor cluster status`: the Ray cluster's nodes and regions, Noor's workers on them, and what they run."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from noor.cli.base import BadInput, app

cluster_app = typer.Typer(help="The Ray cluster `noor serve --ray` runs its workers on.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("status")
def cluster_status(
    address: Annotated[str, typer.Option(help="the Ray cluster: auto (the one on this machine) or HOST:PORT")] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="print the status as JSON")] = False,
) -> None:
    """Nodes with their regions, Noor's worker actors, and the jobs running on them."""
    from noor.config import settings
    from noor.jobs.planes import RegionUnavailable
    from noor.jobs.store import Store
    from noor.runtime import ray_cluster

    try:
        joined = not ray_cluster.require_ray().is_initialized()
        ray = ray_cluster.connect(address, log_to_driver=False)
    except ray_cluster.ClusterError as err:
        raise BadInput(f"--address: {err}") from err
    try:  # the central store and each region's data plane: their running and queued jobs
        store = Store.configured(settings(), run_migrations=False)
    except RegionUnavailable as err:
        raise BadInput(f"NOOR_REGIONS: {err}") from err
    try:
        status = ray_cluster.cluster_status(ray, store)
    finally:
        store.close()
        if joined:  # leave a connection this process had before as it was
            ray.shutdown()
    if json_out:
        print(json.dumps(status, indent=2))
        return
    _print(status)


def _short(node_id: str | None) -> str:
    return (node_id or "-")[:12]


def _print(status: dict[str, Any]) -> None:
    out = Console(width=None if sys.stdout.isatty() else 160)
    nodes = Table(title="Ray nodes")
    for col in ("node", "address", "region", "state", "CPUs", "GPUs", "Noor workers"):
        nodes.add_column(col, justify="right" if col in ("CPUs", "GPUs", "Noor workers") else "left")
    for n in status["nodes"]:
        region = n["region"] or (f"not used: {n['problem']}" if n["problem"] else "(none)")
        state = "alive" if n["alive"] else "dead"
        nodes.add_row(_short(n["node"]), n["address"], region, state, f"{n['cpus']:g}", f"{n['gpus']:g}",
                      str(n["workers"]))  # fmt: skip
    out.print(nodes)
    jobs = {j["id"]: j for j in status["running"]}
    workers = Table(title="Noor workers")
    for col in ("worker", "region", "node", "running", "tenant", "progress"):
        workers.add_column(col)
    for w in sorted(status["workers"], key=lambda w: w["worker"]):
        job = jobs.get(w["job"] or "")
        workers.add_row(w["worker"], w["region"] or "(none)", _short(w["node"]), w["job"] or "idle",
                        job["tenant"] if job else "", f"{job['progress']:.0%}" if job else "")  # fmt: skip
    out.print(workers)
    alive = [n for n in status["nodes"] if n["alive"]]
    regions = sorted({n["region"] for n in alive if n["region"]})
    out.print(
        f"{len(status['nodes'])} nodes ({len(alive)} alive) in {len(regions)} regions ({', '.join(regions) or '-'}), "
        f"{len(status['workers'])} workers, {len(status['running'])} jobs running, {status['queued']} queued"
    )

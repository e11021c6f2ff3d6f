"""`noor serve` and `noor worker`: running the service (keys and tenants: `noor keys`, `noor tenants`)."""

from __future__ import annotations

import sys
import threading
from functools import partial
from typing import TYPE_CHECKING, Annotated

import typer

from noor.cli.base import BadInput, app, fail
from noor.cli.keys import audited

if TYPE_CHECKING:
    from fastapi import FastAPI

    from noor.jobs.assets import RegionalAssets
    from noor.jobs.store import Store
    from noor.runtime.local import LocalWorkers
    from noor.runtime.ray_cluster import RayCluster


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port (default 8000)")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=0, max=64, help="local worker processes (default 1); with --ray, at most this many per node"),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="auto|ADDRESS",
            help="run the workers as Ray actors on this cluster instead of local processes (auto: the one started "
            "on this machine); each node's `region` label or `region:NAME` resource is its region",
        ),
    ] = None,
    gpus_per_worker: Annotated[
        float,
        typer.Option(
            "--gpus-per-worker",
            min=0,
            help="with --ray: GPUs each worker holds (0: CPU workers, one per NOOR_THREADS CPUs; 0.5: two per GPU; "
            "k > 1: k GPUs on one node)",
        ),
    ] = 0.0,
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch",
            min=1,
            max=64,
            help="each worker runs up to this many queued jobs of one shape (model, size, frames, steps, guidance) "
            "as one call, each with its own prompt and seed (1: one job at a time)",
        ),
    ] = 1,
) -> None:
    """Serve the Dream Machine-compatible API with local workers (or Ray actors) on the built-in model."""
    import signal

    import uvicorn

    from noor import catalog, logs
    from noor.api.app import ApiConfig, create_app, render_payload
    from noor.api.requests import DEFAULT_ALIASES
    from noor.config import settings
    from noor.engine import registry
    from noor.jobs import tenants
    from noor.jobs.assets import RegionalAssets
    from noor.jobs.planes import RegionUnavailable
    from noor.jobs.store import Store
    from noor.runtime.local import LocalWorkers, Region
    from noor.runtime.reaper import Reaper
    from noor.runtime.ssrf import Guard
    from noor.runtime.webhooks import WebhookConfig, WebhookDeliverer
    from noor.scheduling import SchedulingError
    from noor.trust import moderation

    cfg = settings()
    host, port = host or cfg.host, port or cfg.port
    count = cfg.workers if workers is None else workers
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        policy = cfg.scheduling_policy()
    except SchedulingError as err:
        raise BadInput(f"NOOR_SCHEDULER: {err}") from err
    try:
        moderation.configured()  # the built-in policy and the tenants' files: a bad one stops the start
    except moderation.PolicyError as err:
        raise BadInput(str(err)) from err
    try:  # the central store and each region's data plane: one that cannot be reached stops the start
        store = Store.configured(cfg, scheduler=policy)
    except RegionUnavailable as err:
        raise BadInput(f"NOOR_REGIONS: {err}; the server does not start without it") from err
    if not tenants.list_tenants(store):  # first run: the local user's tenant (unmetered, docs/serve.md) and its key
        tenants.create_tenant(store, "admin", metered=False, max_concurrent=100, max_per_minute=600)
        key = tenants.create_key(store, "admin")
        audited(store, "key.created", tenant="admin", prefix=key[: tenants.PREFIX_CHARS], role="tenant")
        print(f"admin API key (shown once; unmetered: `noor tenants set admin --credits N` meters it): {key}")
    logs.setup(cfg.log_level, cfg.log_format)
    aliases = DEFAULT_ALIASES | cfg.aliases
    for alias, target in aliases.items():
        if target not in {spec.id for spec in registry.available()}:
            raise BadInput(f"NOOR_ALIASES: {alias!r} maps to {target!r}, which is not an installed model")
    guard = Guard.from_strings(cfg.ssrf_allow)
    secret = cfg.secret()
    try:
        catalog.chip(cfg.worker_chip)
    except catalog.UnknownId as err:
        raise BadInput(f"NOOR_WORKER_CHIP: {err}") from err
    config = ApiConfig(
        secret=secret,
        guard=guard,
        aliases=aliases,
        public_url=cfg.public_url,
        chip=cfg.worker_chip,
        markup=cfg.price_markup,
    )
    pool: LocalWorkers | RayCluster
    if ray is None:
        # the server reads every region's files and writes a bound tenant's uploads in its region
        assets = RegionalAssets(cfg.resolved_assets_url, locate=cfg.region_assets_url)
        pool = LocalWorkers(
            count, cfg.resolved_database_url, cfg.resolved_assets_url, cfg.threads, max_batch=max_batch,
            region=Region.of_host(cfg),
        )  # fmt: skip
        where = f"{count} local worker(s)"
    else:
        assets, pool, where = _ray_workers(ray, gpus_per_worker, workers, store, max_batch)
    if max_batch > 1:
        where += f", batches of up to {max_batch}"
    api = create_app(store, assets, config)
    if ray is None:
        region = f" in {cfg.region}" if cfg.region else ""
        where += f"; {cfg.world_slots} world session slot(s) on this host{region}"
    else:  # sessions' worlds in actors on nodes of their tenants' regions (docs/world.md)
        _ray_worlds(api)
        where += f"; {cfg.world_slots} world session slot(s) per node"
    # Ctrl+C reaches every process of the terminal's group: workers started while SIGINT is ignored inherit that
    # from their first instruction (the server alone decides when they stop); uvicorn handles it for the server.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pool.start()
    reaper = Reaper(store).start()  # a dead worker's job goes back to the queue when its lease runs out
    base_url = cfg.public_url or f"http://{host}:{port}"
    hooks = WebhookConfig(secret=secret, guard=guard, render=lambda p: render_payload(base_url, secret, p))
    stop_hooks = threading.Event()
    for each in store.stores():  # each data plane keeps its own outbox: delivered from there
        deliverer = WebhookDeliverer(each, hooks)
        name = f"webhooks-{each.region}" if each.region else "webhooks"
        threading.Thread(target=deliverer.run_forever, args=(stop_hooks,), daemon=True, name=name).start()
    print(f"Noor is serving on http://{host}:{port}  (data in {cfg.data_dir}, {where})", flush=True)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the handler it found: with
    # Python's defaults that is a KeyboardInterrupt inside its event loop (a logged traceback) or, for SIGTERM, an
    # exit that skips the clean-up below (workers and their semaphores leaked). SIGINT is ignored (above) and
    # SIGTERM only noted, so the clean-up runs.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.run(api, host=host, port=port, log_config=logs.config(cfg.log_level, cfg.log_format))
    finally:
        stop_hooks.set()
        reaper.close()
        pool.close()
        store.close()


def _ray_workers(
    address: str, gpus_per_worker: float, per_node: int | None, store: Store, max_batch: int = 1
) -> tuple[RegionalAssets, RayCluster, str]:
    """Workers as Ray actors on the cluster at `address`; the server reads files from every region's store."""
    from noor.config import settings
    from noor.engine import registry
    from noor.jobs.assets import RegionalAssets
    from noor.runtime import ray_cluster

    cfg = settings()
    try:
        models = registry.worker_models(spec.id for spec in registry.available())
        config = ray_cluster.ClusterConfig(
            models=models,
            gpus_per_worker=gpus_per_worker,
            threads=cfg.threads or 1,
            workers_per_node=per_node,
            chip=cfg.worker_chip,
            max_batch=max_batch,
        )
        ray = ray_cluster.connect(address)
    except ray_cluster.ClusterError as err:
        raise BadInput(f"--ray: {err}") from err
    nodes = [n for n in ray_cluster.list_nodes(ray) if n.alive]
    if cfg.resolved_database_url.startswith("sqlite") and len({n.address for n in nodes}) > 1:
        print(
            "noor: warning: SQLite reaches only workers on this machine; give the cluster PostgreSQL "
            "(NOOR_DATABASE_URL) and region stores every node can reach (NOOR_REGIONS)",
            file=sys.stderr,
        )
    assets = RegionalAssets(cfg.resolved_assets_url, locate=cfg.region_assets_url)
    cluster = ray_cluster.RayCluster(store, config, cfg, assets, ray)
    regions = sorted({n.region or "no region" for n in nodes})
    return assets, cluster, f"Ray at {address}: {len(nodes)} node(s), regions {', '.join(regions)}"


def _ray_worlds(api: FastAPI) -> None:
    """World sessions' models as Ray actors (this process is already the cluster's driver: `_ray_workers`)."""
    from noor.api import worlds
    from noor.config import settings
    from noor.runtime import ray_cluster
    from noor.runtime.ray_worlds import RayWorlds, RayWorldsConfig

    cfg = settings()
    config = RayWorldsConfig(slots_per_node=cfg.world_slots, threads=cfg.threads or 1)
    worlds.run_worlds_on(api, RayWorlds(config, ray_cluster.settings_env(cfg), ray_cluster.require_ray()))


@app.command("worker")
def worker_command(
    server: Annotated[str, typer.Option(help="the `noor serve` URL, e.g. http://10.0.0.5:8000")],
    key: Annotated[str, typer.Option(help="a worker key (`noor keys create --worker` on the server)")],
    model: Annotated[list[str], typer.Option(help="models this worker runs (repeatable)")] = ["tiny"],  # noqa: B006
    name: Annotated[str | None, typer.Option(help="worker name (default: host-pid)")] = None,
    region: Annotated[str | None, typer.Option(help="only run jobs that may run in this region")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads")] = None,
    lease_s: Annotated[float, typer.Option("--lease-s", min=5, help="seconds a claim lasts without a heartbeat")] = 30,
    max_batch: Annotated[
        int,
        typer.Option("--max-batch", min=1, max=64, help="run up to this many queued jobs of one shape as one call"),
    ] = 1,
) -> None:
    """Run jobs for a `noor serve` from this process or machine, through its worker API."""
    import os
    import signal
    import socket

    from noor import logs
    from noor.config import settings
    from noor.engine import registry
    from noor.runtime.local import load_backend
    from noor.runtime.remote import Server, ServerError
    from noor.runtime.worker import Worker, WorkerConfig

    for m in model:
        try:
            registry.get(m)
        except registry.UnknownModel as err:
            raise BadInput(f"--model: {err}") from err
    if not server.startswith(("http://", "https://")):
        fail("--server", server, "must be an http:// or https:// URL")
    logs.setup(settings().log_level, settings().log_format)
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    remote = Server(server, key, name)
    try:
        remote.ping()  # checks the URL and the key before loading anything
    except ServerError as err:
        raise BadInput(f"--server: {err}") from err
    config = WorkerConfig(name=name, models=list(model), lease_s=lease_s, region=region, max_batch=max_batch)
    worker = Worker(remote, remote, config, partial(load_backend, threads=threads))
    for m in model:
        worker.backend(m)  # load once, before the first job
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"worker {name} runs {', '.join(model)} for {server}", file=sys.stderr, flush=True)
    try:
        worker.run_forever(stop)
    except KeyboardInterrupt:
        pass
    finally:
        remote.close()


# --- noor simulate ---

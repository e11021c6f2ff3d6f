"""Workers as Ray actors on a cluster that spans regions: `noor serve --ray ADDRESS`.

Ray does placement, health and scaling; Noor keeps the queue. Each node carries its region, as a node label
(`ray start --labels region=me-riyadh`) or a custom resource (`--resources '{"region:me-riyadh": 1}'`). Every
node gets worker actors pinned to it: one per `threads` CPUs for a CPU model (the built-in one), one per GPU,
several per GPU for a fractional share, or one per k GPUs. A k-GPU worker's GPUs are a STRICT_PACK placement
group of k one-GPU bundles on its node, made with the worker and removed with it; the worker itself holds none:
a job split over k ranks (its task's `parallel`) runs on k rank actors in that group, one per GPU
(`noor.runtime.ranks.RayRanks`), kept for the next job of that model and split. A dispatcher thread in the
server repeats:

1. reconcile: actors match the alive nodes (a node that joins gets workers; a dead actor is replaced);
2. collect: finished runs; an actor or node that died puts its job back in the queue at once;
3. dispatch: each free worker claims from the store what the configured `noor.scheduling` policy puts first
   over the whole queue, among the jobs of tenants allowed in its node's region (the local workers' claim), and
   with `max_batch` > 1 the jobs of one batch key that run with it as one call (`Store.claim_batch`).

The store's leases make completion exactly-once whatever dies (a worker that lost its lease cannot complete),
and each worker writes files only to its own region's asset store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from noor.jobs.generation import Generation, State, now_utc
from noor.jobs.store import Store

if TYPE_CHECKING:
    from noor.config import Settings
    from noor.engine.backend import Backend
    from noor.jobs.assets import RegionalAssets
    from noor.perf.parallelism import ParallelPlan

log = logging.getLogger("noor.runtime")

REGION_LABEL = "region"  # a node label: region=me-riyadh
REGION_RESOURCE = "region:"  # or a custom resource: region:me-riyadh
NODE_ID_LABEL = "ray.io/node-id"  # Ray's own label on every node
NAMESPACE = "noor"  # the worker actors' Ray namespace (`noor cluster status` finds them there)
ACTOR_PREFIX = "noor"  # actor names: noor.REGION.NODE8.SLOT.DISPATCHER-INCARNATION


class ClusterError(RuntimeError):
    """Ray is missing or unreachable, or the cluster settings cannot work; says which."""


def require_ray() -> Any:
    """The ray module, or a ClusterError saying how to install it."""
    try:
        import ray  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ClusterError("Ray is not installed (pip install 'noor[ray]')") from None
    return ray


def unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why nothing can be reached at a cluster's address, or None if its head answers (or Ray should say why
    not). ray.init waits for a head that does not answer for as long as it takes: this asks first."""
    target: str | None = address
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto")  # RAY_ADDRESS, else the last `ray start` here
        except Exception:
            return None
    if target is None or target.startswith("ray://"):
        return None
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return f"an address is HOST:PORT or auto, got {address!r}"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as err:
        return f"nothing answers at {target} ({err.strerror or type(err).__name__})"


def connect(address: str, *, log_to_driver: bool = True) -> Any:
    """Join the Ray cluster at `address` ("auto": the one started on this machine, or RAY_ADDRESS) as a driver."""
    ray = require_ray()
    if not ray.is_initialized():
        problem = unreachable(address)
        if problem:
            raise ClusterError(f"no Ray cluster at {address!r}: {problem}")
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=log_to_driver, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise ClusterError(f"no Ray cluster at {address!r} ({err}); start one with `ray start --head`") from err
    return ray


# --- nodes --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A Ray node as Noor sees it: where it is and what it has."""

    id: str
    address: str
    region: str | None
    alive: bool
    cpus: float
    gpus: float
    problem: str | None = None  # why Noor will not use it (a bad region label)


def node_region(labels: dict[str, str], resources: dict[str, float]) -> str | None:
    """A node's region: its `region` label, else its one `region:NAME` resource; None: no region."""
    if REGION_LABEL in labels:
        return labels[REGION_LABEL]
    found = sorted(k[len(REGION_RESOURCE) :] for k in resources if k.startswith(REGION_RESOURCE))
    if len(found) > 1:
        raise ValueError(f"a node must carry one region resource, got {', '.join(found)}")
    return found[0] if found else None


def list_nodes(ray: Any) -> list[Node]:
    from noor.config import REGION

    out = []
    for n in ray.nodes():
        resources = n.get("Resources") or {}
        problem, region = None, None
        try:
            region = node_region(n.get("Labels") or {}, resources)
            if region is not None and not REGION.match(region):
                raise ValueError(f"region must be lowercase letters, digits and -, got {region!r}")
        except ValueError as err:
            problem, region = str(err), None
        out.append(
            Node(
                id=n["NodeID"],
                address=n.get("NodeManagerAddress", ""),
                region=region,
                alive=bool(n.get("Alive")),
                cpus=float(resources.get("CPU", 0.0)),
                gpus=float(resources.get("GPU", 0.0)),
                problem=problem,
            )
        )
    return out


# --- configuration ------------------------------------------------------------------------------------


@dataclass
class ClusterConfig:
    models: list[str]  # what every worker runs (each model is loaded on its first job and kept)
    gpus_per_worker: float = 0.0  # 0: a CPU worker; 0.5: two per GPU; 1; k > 1: k GPUs on one node
    threads: int = 1  # torch threads per worker; a CPU worker reserves this many CPUs
    workers_per_node: int | None = None  # default: node CPUs // threads (CPU), node GPUs // gpus_per_worker (GPU)
    lease_s: float = 30.0
    poll_s: float = 0.05  # how often an idle dispatcher looks at the queue
    reconcile_s: float = 1.0  # how often nodes and actors are checked
    chip: str = "cpu-local"
    preload: str | None = "tiny"  # loaded when a worker starts, before it is given jobs
    max_batch: int = 1  # up to this many queued jobs of one batch key run as one call on a worker
    rank_start_timeout_s: float = 600.0  # how long a split job's rank group may wait for its node's GPUs (or CPUs)

    def __post_init__(self) -> None:
        g = self.gpus_per_worker
        if g < 0 or (g > 1 and g != int(g)):
            raise ClusterError(f"gpus_per_worker: must be 0, a fraction of one GPU, or a whole number, got {g!r}")
        if self.threads < 1:
            raise ClusterError(f"threads: must be >= 1, got {self.threads!r}")
        if self.workers_per_node is not None and self.workers_per_node < 0:
            raise ClusterError(f"workers_per_node: must be >= 0, got {self.workers_per_node!r}")
        if self.max_batch < 1:
            raise ClusterError(f"max_batch: must be >= 1, got {self.max_batch!r}")
        if self.rank_start_timeout_s <= 0:
            raise ClusterError(f"rank_start_timeout_s: must be > 0, got {self.rank_start_timeout_s!r}")

    @property
    def ranks(self) -> int:
        """The one-GPU ranks each worker holds in its placement group; 0: none (the worker holds its share)."""
        g = self.gpus_per_worker
        return int(g) if g > 1 else 0

    def slots(self, node: Node) -> int:
        """How many workers this node gets."""
        g = self.gpus_per_worker
        fit = int(node.cpus // self.threads) if g == 0 else int(node.gpus / g + 1e-9)
        return fit if self.workers_per_node is None else min(fit, self.workers_per_node)

    def actor_options(self, node: Node) -> dict[str, Any]:
        """Ray resources of one worker, pinned to `node` (a k-GPU worker's GPUs are its rank group's, not its own)."""
        g = self.gpus_per_worker
        options: dict[str, Any] = {"label_selector": {NODE_ID_LABEL: node.id}}
        if g == 0:
            return options | {"num_cpus": self.threads, "num_gpus": 0}
        if self.ranks:
            return options | {"num_cpus": 0, "num_gpus": 0}
        # a GPU worker's scarce resource is its GPU: it does not also hold a CPU, so a node's CPUs never cap it
        return options | {"num_cpus": 0, "num_gpus": g}


def settings_env(settings: Settings) -> dict[str, str]:
    """The server's settings as NOOR_* variables, for workers on other processes and nodes."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[f"NOOR_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def _plane_of(settings: Settings, region: str | None) -> dict[str, str]:
    """The data plane a worker of `region` reaches besides the central store: its region's, if it has a database."""
    url = settings.region_database_url(region)
    return {region: url} if region is not None and url is not None else {}


# --- the worker actor ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorConfig:
    """What a worker actor is started with (plain data: it is pickled to the node)."""

    name: str
    region: str | None
    database_url: str
    planes: dict[str, str]  # its region's data plane, if that region has a database: the only one it reaches
    write_url: str  # its region's asset store: the only one it writes to
    read_urls: dict[str | None, str]  # every store it may read keyframes and sources from
    models: list[str]
    threads: int
    lease_s: float
    env: dict[str, str]
    preload: str | None = "tiny"
    gpus: float = 0.0  # the worker's GPUs (`gpus_per_worker`): a split job's ranks take one GPU each, or (0) CPUs
    rank_group: Any = None  # a k-GPU worker's placement group (k one-GPU bundles on its node), for its ranks
    rank_start_timeout_s: float = 600.0


class WorkerActor:
    """A Noor worker inside a Ray actor: one job, or one batch, at a time, each leased to it by the dispatcher."""

    def __init__(self, config: ActorConfig):
        os.environ.update(config.env)
        from noor import config as noor_config
        from noor import logs
        from noor.jobs.assets import RegionalAssets
        from noor.runtime.worker import Worker, WorkerConfig

        noor_config.settings.cache_clear()  # the server's settings, from the environment just set
        logs.setup(noor_config.settings().log_level, noor_config.settings().log_format)
        self.config = config
        self.store = Store(config.database_url, run_migrations=False, planes=config.planes)
        assets = RegionalAssets(config.write_url, config.region, config.read_urls)
        worker_config = WorkerConfig(
            name=config.name, models=config.models, lease_s=config.lease_s, region=config.region
        )
        self.worker = Worker(self.store, assets, worker_config, self.load_backend)

    def load_backend(self, model: str, parallel: ParallelPlan | None = None) -> Backend:
        """A model's backend in this worker: a split of k > 1 ranks (the job's, or models.toml `parallel`) on k rank
        actors on this node, in this worker's group of k GPUs (CPU workers: a group of CPU bundles made for the
        split); one rank: in this actor (`noor.runtime.local.load_backend`)."""
        import ray

        from noor.engine import registry
        from noor.runtime.local import load_backend
        from noor.runtime.ranks import RayRanks, rank_threads

        spec = registry.get(model)
        plan = parallel or spec.parallel
        if plan is None or plan.gpus == 1 or not spec.can_split:  # one rank (or refused there, with the reason)
            return load_backend(model, threads=self.config.threads, parallel=parallel)
        return RayRanks(
            spec,
            plan,
            rank_threads(spec, plan, self.config.threads),
            gpus=self.config.gpus > 0,
            node=ray.get_runtime_context().get_node_id(),
            group=self.config.rank_group,
            name=self.config.name,
            start_timeout_s=self.config.rank_start_timeout_s,
        )

    def ready(self) -> dict[str, Any]:
        """Load the model before the first job (and, on a k-GPU worker, wait for its GPUs); where this actor runs."""
        import ray

        if self.config.rank_group is not None:
            ray.get(self.config.rank_group.ready())
        if self.config.preload:
            self.worker.backend(self.config.preload)
        return {
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "gpus": [str(g) for g in ray.get_gpu_ids()],
        }

    def run(self, generation_ids: list[str]) -> str:
        """Run jobs the dispatcher leased to this worker as one batch (those whose lease is still ours); "lost" if
        none is."""
        jobs = [job for gid in generation_ids if (job := self.store.leased(gid, self.config.name)) is not None]
        if not jobs:
            return "lost"
        self.worker.run_batch(jobs)
        return "ran"


# --- the dispatcher -----------------------------------------------------------------------------------


@dataclass
class Slot:
    """One worker place on one node, and the actor that fills it now."""

    node: Node
    index: int
    name: str
    actor: Any
    ready_ref: Any | None  # until the actor has loaded its model
    placement_group: Any | None = None
    jobs: list[str] = field(default_factory=list)  # the job, or batch, it runs now
    run_ref: Any | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def free(self) -> bool:
        return self.ready_ref is None and not self.jobs


class RayCluster:
    """The dispatcher: Noor's queue onto worker actors across the cluster's nodes and regions."""

    def __init__(
        self,
        store: Store,
        config: ClusterConfig,
        settings: Settings,
        assets: RegionalAssets | None = None,
        ray: Any = None,
    ):
        """`store`: the server's; `settings`: database, region stores, and the NOOR_* environment the workers
        get; `assets`: the server's reader, told of each region's store as it appears; `ray`: a connected ray."""
        self.ray = ray or require_ray()
        self.store, self.config, self.settings, self.assets = store, config, settings, assets
        self.policy = settings.scheduling_policy()
        self.slots: dict[tuple[str, int], Slot] = {}
        self.dispatched = 0  # jobs handed to workers
        self._incarnation: dict[tuple[str, int], int] = {}
        self._tag = uuid.uuid4().hex[:4]  # names stay unique when two servers share a cluster
        self._retry_at: dict[tuple[str, int], tuple[float, int]] = {}  # slot -> (when to try again, failures)
        self._warned: set[str] = set()
        self._reconciled_at = -1e9
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # status() reads slots while the dispatcher changes them
        self._actor_class = self.ray.remote(WorkerActor)
        self._env = settings_env(settings)
        self._regions: set[str | None] = {None, *settings.regions}
        with store.session() as s:  # regions that ran jobs before: their files must stay readable
            self._regions |= {r for r in s.scalars(select(Generation.worker_region).distinct()) if r}
        for region in self._regions:
            self._add_region(region)

    # --- lifecycle ---

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, daemon=True, name="ray-dispatcher")
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop dispatching; kill the workers (their running jobs go back to the queue)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._lock:
            for slot in list(self.slots.values()):
                self._drop(slot, "the server is stopping")

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the store or Ray is briefly unreachable: keep going, slower
                log.exception("ray dispatcher step failed")
                self._stop.wait(1.0)

    def step(self) -> None:
        """1. reconcile (now and then)  2. collect finished runs  3. dispatch  4. wait for a run or the poll."""
        with self._lock:
            if time.monotonic() - self._reconciled_at >= self.config.reconcile_s:
                self.reconcile()
                self.store.requeue_expired()
                self._reconciled_at = time.monotonic()
            self.collect()
            self.dispatch()
            pending = self._pending()
        if pending:
            self.ray.wait(list(pending), num_returns=1, timeout=self.config.poll_s)
        else:
            self._stop.wait(self.config.poll_s)

    # --- 1. reconcile ---

    def reconcile(self) -> None:
        alive = {n.id: n for n in list_nodes(self.ray) if n.alive}
        for slot in list(self.slots.values()):
            if slot.node.id not in alive:
                self._drop(slot, "its node is gone")
        for node in alive.values():
            if node.problem:
                if node.id not in self._warned:
                    log.error("ray node %s is not used: %s", node.id, node.problem)
                    self._warned.add(node.id)
                continue
            self._add_region(node.region)
            for index in range(self.config.slots(node)):
                key = (node.id, index)
                retry_at, _ = self._retry_at.get(key, (0.0, 0))
                if key not in self.slots and time.monotonic() >= retry_at:
                    self._start(node, index)

    def _add_region(self, region: str | None) -> None:
        self._regions.add(region)
        if self.assets is not None:
            self.assets.add(region, self.settings.region_assets_url(region))

    def _start(self, node: Node, index: int) -> None:
        key = (node.id, index)
        self._incarnation[key] = self._incarnation.get(key, 0) + 1
        name = f"{ACTOR_PREFIX}.{node.region or '-'}.{node.id[:8]}.{index}.{self._tag}-{self._incarnation[key]}"
        config = ActorConfig(
            name=name,
            region=node.region,
            database_url=self.settings.resolved_database_url,
            planes=_plane_of(self.settings, node.region),
            write_url=self.settings.region_assets_url(node.region),
            read_urls={r: self.settings.region_assets_url(r) for r in self._regions},
            models=self.config.models,
            threads=self.config.threads,
            lease_s=self.config.lease_s,
            env=self._env,
            preload=self.config.preload,
            gpus=self.config.gpus_per_worker,
            rank_group=self._rank_group(node, name),
            rank_start_timeout_s=self.config.rank_start_timeout_s,
        )
        options = self.config.actor_options(node) | {"name": name, "namespace": NAMESPACE, "max_restarts": 0}
        actor = self._actor_class.options(**options).remote(config)
        self.slots[key] = Slot(node, index, name, actor, actor.ready.remote(), config.rank_group)
        log.info("starting worker %s on node %s (region %s)", name, node.id, node.region)

    def _rank_group(self, node: Node, name: str) -> Any:
        """A k-GPU worker's GPUs: k one-GPU bundles on its node (STRICT_PACK: its ranks' collectives stay on the
        node), made here so that they are freed with the worker whatever ends it; None for other workers."""
        k = self.config.ranks
        if not k:
            return None
        from ray.util.placement_group import placement_group

        pin = [{NODE_ID_LABEL: node.id}] * k
        return placement_group([{"GPU": 1.0}] * k, strategy="STRICT_PACK", name=name, bundle_label_selector=pin)

    # --- 2. collect ---

    def _pending(self) -> dict[Any, Slot]:
        refs = {}
        for slot in self.slots.values():
            if slot.ready_ref is not None:
                refs[slot.ready_ref] = slot
            if slot.run_ref is not None:
                refs[slot.run_ref] = slot
        return refs

    def collect(self) -> None:
        pending = self._pending()
        if not pending:
            return
        done, _ = self.ray.wait(list(pending), num_returns=len(pending), timeout=0, fetch_local=False)
        for ref in done:
            slot = pending[ref]
            key = (slot.node.id, slot.index)
            try:
                result = self.ray.get(ref)
            except Exception as err:  # the actor died (killed, its node lost) or could not start
                _, failures = self._retry_at.get(key, (0.0, 0))
                self._retry_at[key] = (time.monotonic() + min(60.0, 2.0**failures), failures + 1)
                self._drop(slot, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                continue
            if ref is slot.ready_ref:
                slot.ready_ref, slot.info = None, result
                self._retry_at.pop(key, None)
            else:
                slot.run_ref, slot.jobs = None, []

    def _drop(self, slot: Slot, why: str) -> None:
        """Forget a worker: its jobs (if any) go back to the queue now; the actor and its GPUs are freed."""
        released = [gid for gid in slot.jobs if self.store.release(gid, slot.name)]
        if released:
            log.warning(
                "generation(s) %s put back in the queue: worker %s lost (%s)", ", ".join(released), slot.name, why
            )
        elif not self._stop.is_set():
            log.warning("worker %s lost: %s", slot.name, why)
        with contextlib.suppress(Exception):  # already dead
            self.ray.kill(slot.actor, no_restart=True)  # its rank actors, its children, die with it
        import ray as connected
        from ray.util.placement_group import get_placement_group, remove_placement_group

        groups = [slot.placement_group]  # a k-GPU worker's; a CPU worker's split may have made one of its own:
        if connected.is_initialized():  # (looking one up unconnected would start a local Ray of its own)
            with contextlib.suppress(Exception):  # it outlives its maker (Ray ties it to this driver)
                groups.append(get_placement_group(f"{slot.name}.ranks"))
        for group in groups:
            if group is not None:
                with contextlib.suppress(Exception):  # its node is gone
                    remove_placement_group(group)
        self.slots.pop((slot.node.id, slot.index), None)

    # --- 3. dispatch ---

    def dispatch(self) -> None:
        """Each free worker claims the job the store's policy puts first over the whole queue, of those it may
        run (its models; its node's region), and up to `max_batch - 1` of its batch key: the claim every local
        worker makes, so Ray workers, local workers and the simulator start jobs in one order (`Store.claim_batch`,
        `scheduling.frontier`, `scheduling.batch`)."""
        now = now_utc()
        for slot in [s for s in self.slots.values() if s.free]:
            region = [slot.node.region] if slot.node.region else []  # a node of no region: unbound jobs only
            claimed = self.store.claim_batch(
                slot.name, self.config.lease_s, self.config.models, region, now, slot.node.id, self.config.max_batch
            )
            if not claimed:  # nothing it may run; a free worker of another region may still find work
                continue
            slot.jobs = [job.id for job in claimed]
            slot.run_ref = slot.actor.run.remote(slot.jobs)
            self.dispatched += len(claimed)

    # --- what runs where ---

    def status(self) -> list[dict[str, Any]]:
        """Each worker: its name, node, region, whether it is ready, and the job it runs."""
        with self._lock:
            return [
                {
                    "worker": s.name,
                    "node": s.node.id,
                    "region": s.node.region,
                    "ready": s.ready_ref is None,
                    "job": s.jobs[0] if s.jobs else None,
                    "jobs": list(s.jobs),
                    "gpus": s.info.get("gpus", []),
                    "pid": s.info.get("pid"),
                }
                for s in self.slots.values()
            ]

    def wait_ready(self, timeout_s: float = 120.0, count: int = 1) -> None:
        """Block until at least `count` workers have loaded their model (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while sum(s["ready"] for s in self.status()) < count:
            if time.monotonic() > deadline:
                raise ClusterError(f"fewer than {count} Ray workers ready after {timeout_s:.0f} s: {self.status()}")
            time.sleep(0.1)


# --- `noor cluster status` ----------------------------------------------------------------------------


def _running_and_queued(store: Store) -> tuple[list[Any], int]:
    """One store's running jobs (where each runs) and how many are queued."""
    with store.session() as s:
        rows = s.execute(
            select(
                Generation.id,
                Generation.tenant,
                Generation.model,
                Generation.lease_owner,
                Generation.worker_node,
                Generation.worker_region,
                Generation.progress,
                Generation.attempts,
                Generation.started_at,
            ).where(Generation.state == State.DREAMING.value)
        ).all()
        queued = s.scalar(select(func.count()).where(Generation.state == State.QUEUED.value)) or 0
    return list(rows), int(queued)


def cluster_status(ray: Any, store: Store) -> dict[str, Any]:
    """Nodes (with regions), Noor's worker actors, and the jobs running and queued, as plain data."""
    nodes = list_nodes(ray)
    workers = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"] if isinstance(entry, dict) else str(entry)
        if isinstance(entry, dict) and entry.get("namespace") != NAMESPACE:
            continue
        parts = name.split(".")
        if len(parts) != 5 or parts[0] != ACTOR_PREFIX:
            continue
        node = next((n.id for n in nodes if n.id.startswith(parts[2])), parts[2])
        workers.append({"worker": name, "region": None if parts[1] == "-" else parts[1], "node": node, "job": None})
    by_worker = {w["worker"]: w for w in workers}
    running = []
    rows, queued = [], 0
    for each in store.stores():  # the central store and each region's data plane
        found, waiting = _running_and_queued(each)
        rows += found
        queued += waiting
    rows.sort(key=lambda row: row.started_at)
    for row in rows:
        job = {
            "id": row.id,
            "tenant": row.tenant,
            "model": row.model,
            "worker": row.lease_owner,
            "node": row.worker_node,
            "region": row.worker_region,
            "progress": row.progress,
            "attempt": row.attempts,
        }
        running.append(job)
        if row.lease_owner in by_worker:
            by_worker[row.lease_owner]["job"] = row.id
    node_rows = [
        {
            "node": n.id,
            "address": n.address,
            "alive": n.alive,
            "region": n.region,
            "cpus": n.cpus,
            "gpus": n.gpus,
            "workers": sum(w["node"] == n.id for w in workers),
            "problem": n.problem,
        }
        for n in nodes
    ]
    return {"nodes": node_rows, "workers": workers, "running": running, "queued": int(queued)}

"""Local worker processes for `noor serve`: each loads its model once and keeps it; a supervisor thread
restarts a worker that dies (with backoff, logged, and it gives up on a worker that keeps dying at once)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
import time
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import TYPE_CHECKING

from noor.engine.backend import Backend

if TYPE_CHECKING:
    from noor.config import Settings
    from noor.perf.parallelism import ParallelPlan

log = logging.getLogger("noor.runtime")


@dataclass(frozen=True)
class Region:
    """Where a host's local workers run (NOOR_REGION): its name, the data planes they reach (that region's own, if it
    has a database), the asset store they write to and every store they read inputs from."""

    name: str
    assets_url: str
    reads: dict[str | None, str]
    planes: dict[str, str]

    @classmethod
    def of_host(cls, settings: Settings) -> Region | None:
        if settings.region is None:
            return None
        name = settings.region
        database = settings.region_database_url(name)
        reads: dict[str | None, str] = {None: settings.resolved_assets_url}
        reads |= {r: settings.region_assets_url(r) for r in settings.regions}
        return cls(name, settings.region_assets_url(name), reads, {name: database} if database else {})


def load_backend(
    model: str, threads: int | None = None, weights: Path | None = None, parallel: ParallelPlan | None = None
) -> Backend:
    """A model's backend with this deployment's settings (all: NOOR_THREADS; the spec's loader reads its own,
    e.g. NOOR_TINY_WEIGHTS). `weights`: another weights dir, for a model whose loader takes one. `parallel`: the
    ranks it runs on (default: the model's own, models.toml `parallel`); k > 1 ranks are local processes."""
    from noor.config import settings
    from noor.engine import registry
    from noor.engine.task import TaskError

    spec = registry.get(model)
    threads = threads or settings().threads
    plan = parallel or spec.parallel
    if plan is not None and plan.gpus > 1:
        if not spec.can_split:
            raise TaskError("parallel", plan.text(), f"model {spec.id!r} runs on one rank only")
        from noor.runtime.ranks import LocalRanks, rank_threads

        return LocalRanks(spec, plan, rank_threads(spec, plan, threads))
    if weights is None:
        return spec.load(threads=threads)
    if not spec.weights_option:
        raise TaskError("weights", str(weights), f"model {spec.id!r} takes no weights dir (its weights: {spec.source})")
    return spec.load(threads=threads, weights=weights)


def _work(
    name: str,
    database_url: str,
    assets_url: str,
    threads: int | None,
    lease_s: float,
    max_batch: int,
    stop: MpEvent,
    region: Region | None = None,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop (Ctrl+C hits the group)
    from noor import logs
    from noor.config import settings
    from noor.jobs.assets import AssetStore, RegionalAssets
    from noor.jobs.store import Store
    from noor.runtime.worker import Worker, WorkerConfig

    logs.setup(settings().log_level, settings().log_format)
    planes = region.planes if region is not None else {}
    store = Store(database_url, run_migrations=False, scheduler=settings().scheduling_policy(), planes=planes)
    from noor.engine import registry

    # every model installed when the server starts (each is loaded on its first job and kept); the Worker adds
    # the ones the registry puts on every worker
    models = [spec.id for spec in registry.available()]
    config = WorkerConfig(
        name=name, lease_s=lease_s, models=models, max_batch=max_batch, region=region.name if region else None
    )
    assets = AssetStore(assets_url) if region is None else RegionalAssets(region.assets_url, region.name, region.reads)
    worker = Worker(store, assets, config, partial(load_backend, threads=threads))
    worker.backend("tiny")  # load once, before the first job
    worker.run_forever(_UntilOrphaned(stop))
    store.close()


class _UntilOrphaned:
    """`stop`, or the server (our parent) gone, even by SIGKILL: then the worker stops after its current job
    instead of living on as an orphan (a restarted server starts workers of its own)."""

    def __init__(self, stop: MpEvent):
        self.stop, self.parent = stop, mp.parent_process()  # watches the parent's sentinel, not its pid

    def is_set(self) -> bool:
        if self.parent is not None and not self.parent.is_alive():
            log.warning("worker's server (pid %s) is gone; stopping", self.parent.pid)
            return True
        return self.stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while not self.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.stop.wait(min(0.5, remaining))
        return True


@dataclass(frozen=True)
class Restarts:
    """When the supervisor restarts a dead worker: after `backoff_s`, doubled for each death in a row that came
    within `healthy_s` of the worker's start (up to `max_backoff_s`); at the `max_quick_deaths`-th of those it
    gives up on that worker and says so. A worker that lived `healthy_s` starts a fresh count."""

    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    healthy_s: float = 60.0
    max_quick_deaths: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.backoff_s <= self.max_backoff_s:
            raise ValueError(f"backoff_s must be in (0, max_backoff_s], got {self.backoff_s}")
        if self.max_quick_deaths < 1:
            raise ValueError(f"max_quick_deaths must be at least 1, got {self.max_quick_deaths}")


@dataclass
class _Slot:
    name: str
    process: BaseProcess
    started_at: float = 0.0  # time.monotonic()
    quick_deaths: int = 0  # deaths in a row, each within healthy_s of its start
    restarts: int = 0
    restart_at: float | None = None  # when a dead worker is started again
    given_up: bool = False


class LocalWorkers:
    """`count` worker processes named local-0.., supervised: one that dies (a crash, the OOM killer, a SIGKILL)
    is started again; its job goes back to the queue when its lease runs out (the server's reaper)."""

    def __init__(
        self,
        count: int,
        database_url: str,
        assets_url: str,
        threads: int | None = None,
        lease_s: float = 30.0,
        restarts: Restarts | None = None,
        max_batch: int = 1,
        region: Region | None = None,
    ):
        """`max_batch`: up to this many queued jobs of one batch key run as one call (`WorkerConfig.max_batch`).
        `region`: the host's region, where the workers run (its data plane's jobs first) and write their files;
        None: they write to `assets_url` and run the central store's jobs only."""
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch!r}")
        self._ctx = mp.get_context("spawn")
        self.stop = self._ctx.Event()
        self._args = (database_url, assets_url, threads, lease_s, max_batch, self.stop, region)
        self.restarts = restarts or Restarts()
        self.slots = [_Slot(name, self._process(name)) for name in (f"local-{i}" for i in range(count))]
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    @property
    def processes(self) -> list[BaseProcess]:
        """The current process of each worker (a restarted worker has a new one)."""
        return [slot.process for slot in self.slots]

    def _process(self, name: str) -> BaseProcess:
        return self._ctx.Process(target=_work, args=(name, *self._args), daemon=True, name=name)

    def start(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            slot.process.start()
            slot.started_at = now
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="local-workers")
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self.stop.is_set():
            # 1. sleep until a worker exits, a restart is due, or a short poll (stop is checked after it)
            with self._lock:
                running = [s.process.sentinel for s in self.slots if s.restart_at is None and not s.given_up]
                due = [s.restart_at for s in self.slots if s.restart_at is not None]
            timeout_s = max(0.0, min([0.5, *(t - time.monotonic() for t in due)]))
            if running:
                wait(running, timeout_s)
            else:
                self.stop.wait(timeout_s)
            # 2. note the dead, 3. start the ones whose wait is over
            with self._lock:
                if self.stop.is_set():
                    return
                for slot in self.slots:
                    if slot.restart_at is None and not slot.given_up and not slot.process.is_alive():
                        self._died(slot)
                    elif slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                        self._restart(slot)

    def _died(self, slot: _Slot) -> None:
        cfg, process = self.restarts, slot.process
        lived_s = time.monotonic() - slot.started_at
        slot.quick_deaths = slot.quick_deaths + 1 if lived_s < cfg.healthy_s else 1
        code = process.exitcode or 0
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if slot.quick_deaths >= cfg.max_quick_deaths:
            slot.given_up = True
            log.error(
                "local worker %s (pid %s) died (%s) after %.1f s: %d deaths in a row, each within %.0f s of starting; "
                "not restarting it again (fix the cause, then restart the server)",
                slot.name, process.pid, how, lived_s, slot.quick_deaths, cfg.healthy_s,
            )  # fmt: skip
            if all(s.given_up for s in self.slots):
                log.error("no local workers are left: jobs wait for a remote worker (`noor worker`)")
            return
        wait_s = min(cfg.max_backoff_s, cfg.backoff_s * 2 ** (slot.quick_deaths - 1))
        slot.restart_at = time.monotonic() + wait_s
        log.error(
            "local worker %s (pid %s) died (%s) after %.1f s; restarting it in %.1f s; its job, if it had one, goes "
            "back to the queue when its lease runs out",
            slot.name, process.pid, how, lived_s, wait_s,
        )  # fmt: skip

    def _restart(self, slot: _Slot) -> None:
        old = slot.process.pid
        slot.process.close()  # frees the dead process's resources; it was joined by is_alive()
        slot.process = self._process(slot.name)
        slot.process.start()
        slot.started_at, slot.restart_at = time.monotonic(), None
        slot.restarts += 1
        log.warning(
            "local worker %s restarted: pid %s (was %s), restart %d", slot.name, slot.process.pid, old, slot.restarts
        )

    def close(self, timeout_s: float = 10.0) -> None:
        with self._lock:  # no restart after this
            self.stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout_s)
        for slot in self.slots:
            process = slot.process
            if process.pid is None or slot.restart_at is not None or slot.given_up:
                continue  # never started, or dead already
            process.join(timeout_s)
            if process.is_alive():
                process.terminate()

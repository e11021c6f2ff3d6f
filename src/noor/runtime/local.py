"""Local worker processes for `noor serve`: each loads its model once and keeps it."""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import time
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

from noor.engine.backend import Backend

log = logging.getLogger("noor.runtime")


def load_backend(model: str, threads: int | None = None, weights: Path | None = None) -> Backend:
    """A model's backend with this deployment's settings (noor-tiny: NOOR_TINY_WEIGHTS; all: NOOR_THREADS)."""
    from noor.config import settings
    from noor.engine import registry
    from noor.engine.tiny.backend import TinyBackend

    spec = registry.get(model)
    if spec.id == "tiny":
        return TinyBackend(weights or settings().tiny_weights, threads=threads or settings().threads)
    entry = getattr(spec, "entry", None)  # an installed diffusers model (models.toml)
    if entry is not None:
        from noor.engine.diffusers.backend import DiffusersBackend

        return DiffusersBackend(entry, threads=threads or settings().threads)
    return spec.load()


def _work(name: str, database_url: str, assets_url: str, threads: int | None, lease_s: float, stop: MpEvent) -> None:
    from noor import logs
    from noor.config import settings
    from noor.jobs.assets import AssetStore
    from noor.jobs.store import Store
    from noor.runtime.worker import Worker, WorkerConfig

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    logs.setup(settings().log_level, settings().log_format)
    store = Store(database_url, run_migrations=False, scheduler=settings().scheduling_policy())
    from noor.engine import registry

    # every model installed when the server starts (each is loaded on its first job and kept)
    models = [spec.id for spec in registry.available()] + ["resample"]
    config = WorkerConfig(name=name, lease_s=lease_s, models=models)
    worker = Worker(store, AssetStore(assets_url), config, lambda m: load_backend(m, threads))
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


class LocalWorkers:
    def __init__(
        self, count: int, database_url: str, assets_url: str, threads: int | None = None, lease_s: float = 30.0
    ):
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.processes = [
            ctx.Process(
                target=_work,
                args=(f"local-{i}", database_url, assets_url, threads, lease_s, self.stop),
                daemon=True,
            )
            for i in range(count)
        ]

    def start(self) -> None:
        for p in self.processes:
            p.start()

    def close(self, timeout_s: float = 10.0) -> None:
        self.stop.set()
        for p in self.processes:
            p.join(timeout_s)
            if p.is_alive():
                p.terminate()

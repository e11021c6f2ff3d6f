"""Keeping a worker's claimed jobs while the engine reports no steps.

A denoising step beats its jobs' leases (`Worker.run_batch`'s `on_progress`), but before the first step a
worker may spend minutes with nothing to report: reading a long source clip, loading a model, starting the k
rank processes of a split (`noor.runtime.ranks`, which load their weights on the first call) — and after the last
one, decoding, encoding and storing the files. A `LeaseKeeper` beats the jobs from a small thread through those
phases, so no lease runs out while the job is in hand (another worker would take it, and it would run twice).

A beat the store refuses (the job was deleted, or its lease lost) fails that job "Deleted" at once, as a step's
would, and the keeper stops beating it; the worker reads `lost()` and drops it. The keeper never raises into the
worker: when every job is lost the phase runs to its end (a model being loaded is loaded, and kept for the next
job) and the worker then returns without running anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from noor.runtime.worker import Jobs

log = logging.getLogger("noor.worker")


def beat_every_s(heartbeat_s: float, lease_s: float) -> float:
    """How often the keeper beats: as often as steps may (`heartbeat_s`, which also bounds how late a delete is
    seen), and three times a lease at least, so one slow or failed beat does not lose it. `heartbeat_s` 0 asks
    every step to write; with no steps to pace it, a third of the lease."""
    return min(heartbeat_s, lease_s / 3) if heartbeat_s > 0 else lease_s / 3


class LeaseKeeper:
    """Beats the leases of the jobs it `keep`s, every `every_s`, from a daemon thread, until `stop`."""

    def __init__(self, store: Jobs, worker: str, lease_s: float, every_s: float):
        if every_s <= 0:
            raise ValueError(f"every_s: must be > 0, got {every_s!r}")
        self.store, self.worker, self.lease_s, self.every_s = store, worker, lease_s, every_s
        self._held: set[str] = set()  # beaten while the thread runs
        self._lost: set[str] = set()  # refused: failed "Deleted" here
        self._lock = threading.Lock()  # a beat under way finishes before `drop` or `stop` returns
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def keep(self, ids: Iterable[str]) -> None:
        """Beat these jobs (and only these) from now on, the first beat `every_s` from now."""
        self.stop()
        with self._lock:
            self._held = set(ids) - self._lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name=f"{self.worker}-leases", daemon=True)
        self._thread.start()

    def drop(self, job_id: str) -> None:
        """Beat it no more: the worker ends it (completes or fails it) now."""
        with self._lock:
            self._held.discard(job_id)

    def lost(self) -> set[str]:
        """The jobs whose beat was refused, each failed "Deleted" already."""
        with self._lock:
            return set(self._lost)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        """Stop beating; returns once a beat under way has finished (nothing beats after this)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None

    def __enter__(self) -> LeaseKeeper:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every_s):
            with self._lock:
                for job_id in sorted(self._held):
                    if stop.is_set():
                        return
                    self._beat(job_id)

    def _beat(self, job_id: str) -> None:
        """One beat (under the lock). A store that cannot be reached is tried again at the next beat: the lease
        has two more before it runs out."""
        try:
            if self.store.heartbeat(job_id, self.worker, self.lease_s, preview=None):
                return
        except Exception as err:
            log.warning("worker %s could not extend the lease of %s: %s", self.worker, job_id, err)
            return
        self._held.discard(job_id)
        self._lost.add(job_id)
        try:  # as a step's refused beat does: it ends now (a job this worker no longer holds: a no-op)
            self.store.fail(job_id, self.worker, "Deleted")
        except Exception as err:
            log.warning("worker %s could not fail %s (deleted): %s", self.worker, job_id, err)

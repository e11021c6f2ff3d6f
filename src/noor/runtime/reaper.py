"""The reaper: a server thread that puts jobs whose lease ran out back in the queue (or fails them, out of
attempts, with their webhook written), so a dead worker's job does not wait for the next worker's claim."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

log = logging.getLogger("noor.runtime")


class Leases(Protocol):
    """What the reaper needs of the job store (`Store`)."""

    def requeue_expired(self) -> int: ...


class Reaper:
    def __init__(self, store: Leases, every_s: float = 1.0):
        if every_s <= 0:
            raise ValueError(f"every_s must be positive, got {every_s}")
        self.store, self.every_s = store, every_s
        self.reaped = 0  # jobs requeued or failed so far
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Reaper:
        self._thread = threading.Thread(target=self.run_forever, daemon=True, name="reaper")
        self._thread.start()
        return self

    def run_forever(self) -> None:
        while not self._stop.wait(self.every_s):
            self.reap()

    def reap(self) -> int:
        """One pass; a store that cannot be reached is logged and tried again on the next pass."""
        try:
            count = self.store.requeue_expired()
        except Exception:  # the database is briefly unreachable: the next pass tries again
            log.exception("reaper: cannot requeue expired leases")
            return 0
        if count:
            self.reaped += count
            log.warning(
                "reaper: %d job(s) whose lease ran out went back to the queue (or failed, out of attempts)", count
            )
        return count

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

"""A session host's heartbeat: several `noor serve` processes may share one database, each with its own session
host (HostConfig.name). Each beats every second into `world_hosts`; a host silent for `sessions.DEAD_AFTER` is
dead, and the live sessions it held are ended ("server_restart") by whichever host beats next, so they stop
holding their tenants' places of max_concurrent. A host's own sessions are ended only by itself (at its next
start: `sessions.recover`). Heartbeats stay in the central store (a host's name and times: no tenant data); the
sessions are ended wherever they live, the central store and every data plane the host's store reaches."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from noor.jobs import sessions
from noor.jobs.store import Store

log = logging.getLogger("noor.runtime")


class Heartbeat:
    def __init__(
        self,
        store: Store,
        host: str,
        every_s: float = sessions.HEARTBEAT_S,
        dead_after: timedelta = sessions.DEAD_AFTER,
    ):
        self.store, self.host, self.every_s, self.dead_after = store, host, every_s, dead_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        """The first beat now (the host is alive before it recovers anything), then one every `every_s`."""
        sessions.beat(self.store, self.host)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="world-heartbeat")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and remove the host's row (a clean stop: its sessions have ended)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            sessions.forget(self.store, self.host)
        except Exception:  # the database went first: the row ages out as a dead host's
            log.exception("world host %s: could not remove its heartbeat", self.host)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                sessions.beat(self.store, self.host)
                ended = sessions.reap(self.store, self.host, dead_after=self.dead_after)
            except Exception:  # a database hiccup: the next beat tries again (15 may fail before others reap us)
                log.exception("world host %s: heartbeat failed", self.host)
                continue
            if ended:
                log.warning("ended %d world session(s) of dead host(s) (server_restart)", len(ended))

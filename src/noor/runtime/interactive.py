"""The session host: runs world sessions (an interactive world model, one frame per tick) in `noor serve`.

A host has N slots (NOOR_WORLD_SLOTS); each active session holds one and runs its `World` on its own thread:
it opens the world, then ticks at the session's fps, drawing one frame with the latest action the client sent
(a held key: an action stays in force until another arrives; "none" stops). Sessions beyond the slots wait in
a FIFO queue of NOOR_WORLD_QUEUE places; beyond that `admit` raises `QueueFull` (the API answers 429).

Each session is billed per active second at the price of a second of the slot's chip (what a second of a
worker costs for jobs: the chip's $/hour x the markup), recorded and debited every second, so a crash loses
at most a second of billing; a tenant that runs out of credits has its session ended ("credits"). A session
ends by the client (DELETE), idle (no socket and no message for NOOR_WORLD_IDLE_S), max_seconds, credits, an
error of the model ("failed"), or the server stopping (and on the next start, `recover` ends what a dead server
left live). Frames go to at most one socket (`Sink`) at a time, JPEG or PNG, each followed by a status message.

Where a session's `World` runs is a `WorldRunner`'s choice, so the host is one code path: `LocalWorlds` (this
process, NOOR_WORLD_SLOTS slots, the server's region) or, under `noor serve --ray`, `RayWorlds`
(runtime/ray_worlds.py: each world in a Ray actor on a node of a region the tenant may use). The host keeps the
socket, the tick loop and the billing either way; only `start` and `step` move.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from PIL import Image

from noor import catalog, scheduling
from noor.engine.interactive import Interactive, World, WorldSpec
from noor.jobs import money, sessions
from noor.jobs.planes import RegionUnavailable
from noor.jobs.sessions import EndReason, WorldSession
from noor.jobs.store import Store
from noor.runtime.heartbeat import Heartbeat

log = logging.getLogger("noor.runtime")

JPEG_QUALITY = 85
SINK_FRAMES = 4  # frames a slow socket may fall behind before older ones are dropped (the latest is what counts)


@dataclass
class HostConfig:
    slots: int = 1  # NOOR_WORLD_SLOTS
    queue: int = 4  # NOOR_WORLD_QUEUE
    idle_s: float = 60.0  # NOOR_WORLD_IDLE_S
    region: str | None = None  # NOOR_REGION: where this host is
    chip: str = "cpu-local"  # NOOR_WORKER_CHIP: a slot's second costs a second of this chip
    markup: float = 1.0  # NOOR_PRICE_MARKUP
    threads: int | None = None  # torch threads a loaded model uses
    bill_every_s: float = 1.0  # record and charge this often
    name: str = field(default_factory=lambda: socket.gethostname()[:64])  # NOOR_WORLD_HOST: stable across restarts


class QueueFull(Exception):
    def __init__(self, slots: int, queue: int, retry_after_s: int, why: str | None = None):
        self.retry_after_s = retry_after_s
        why = why or f"all {slots} world session slot(s) are busy and the queue of {queue} is full"
        super().__init__(f"{why}; retry in {retry_after_s} s")


@dataclass(frozen=True)
class Placement:
    """A slot a runner reserved for one session: where its world will run."""

    region: str | None  # what the session's record says it ran in
    node: str | None = None  # a Ray node's id; None: this process


class WorldRunner(Protocol):
    """Where worlds run: the slots (per region), and opening a world in a reserved one."""

    region: str | None  # the one region all its worlds run in; None: it depends on the slot (Ray)

    def refuse(self, regions: list[str] | None) -> str | None:
        """Why a tenant bound to `regions` (None: unbound) can never run a world here, or None."""
        ...

    def free(self, regions: list[str] | None) -> int:
        """Free slots a tenant bound to `regions` may use now."""
        ...

    def reserve(self, regions: list[str] | None) -> Placement | None:
        """Take one of those slots, or None if there is none."""
        ...

    def open(
        self, placement: Placement, spec: WorldSpec, prompt: str, seed: int, start_image: np.ndarray | None
    ) -> World:
        """Open a world in the reserved slot (loading the model there if it is not loaded yet)."""
        ...

    def release(self, placement: Placement) -> None:
        """The slot is free again (its world, if one opened, is closed)."""
        ...

    def close(self) -> None:
        """Free what the runner holds (loaded models, actors)."""
        ...


class LocalWorlds:
    """Worlds on threads of this process: `slots` of them, in the server's region; the model loaded once and shared
    by its worlds."""

    def __init__(self, config: HostConfig):
        self.config, self.region = config, config.region
        self._busy = 0
        self._lock = threading.Lock()
        self._models: dict[str, Interactive] = {}

    def refuse(self, regions: list[str] | None) -> str | None:
        if regions is None or self.region in regions:
            return None
        where = f"region {self.region}" if self.region else "no region"
        return f"this server's world sessions run in {where} (NOOR_REGION)"

    def free(self, regions: list[str] | None) -> int:
        return 0 if self.refuse(regions) else max(0, self.config.slots - self._busy)

    def reserve(self, regions: list[str] | None) -> Placement | None:
        with self._lock:
            if self.free(regions) == 0:
                return None
            self._busy += 1
        return Placement(self.region)

    def open(
        self, placement: Placement, spec: WorldSpec, prompt: str, seed: int, start_image: np.ndarray | None
    ) -> World:
        with self._lock:  # loaded once per host (its worlds share it)
            if spec.id not in self._models:
                self._models[spec.id] = spec.load(threads=self.config.threads)
            model = self._models[spec.id]
        return model.start(prompt, seed, start_image)

    def release(self, placement: Placement) -> None:
        with self._lock:
            self._busy -= 1

    def close(self) -> None:
        self._models.clear()


def second_price_microcents(chip: str, markup: float) -> int:
    """What one second of a session costs: a second of one worker slot on `chip` (its $/hour from the catalog x
    the markup), as jobs are priced (api/pricing.py) -- a session holds its slot whether it draws or not."""
    try:
        usd_per_hour = catalog.chip(chip).usd_per_hour
    except catalog.UnknownId:
        log.warning("cannot price world sessions on %s: unknown chip; they are not billed", chip)
        return 0
    return money.microcents(round(usd_per_hour / 3600 * 100 * markup, 6), "price")


def encode(frame: np.ndarray, fmt: str) -> bytes:
    """One frame ((H, W, 3) uint8) as a JPEG (quality 85) or PNG file."""
    buffer = io.BytesIO()
    if fmt == "png":
        Image.fromarray(frame).save(buffer, format="PNG")
    else:
        Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


class Sink:
    """One socket's outgoing messages, fed from a session thread onto the socket's event loop: ("bytes", data),
    ("json", dict) or ("close", code, reason). A socket that falls behind loses its oldest frames, never control
    messages."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fmt: str = "jpeg"):
        self.loop, self.format = loop, fmt
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._frames = 0  # frames queued and not yet sent
        self._dropping = False  # the last frame was dropped: drop its status too

    def put(self, *item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the socket's loop has closed
            self.loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: tuple[Any, ...]) -> None:
        if item[0] == "bytes":
            self._dropping = self._frames >= SINK_FRAMES
            if self._dropping:
                return  # the socket is behind: the next frame supersedes this one (and its status goes with it)
            self._frames += 1
        elif item[0] == "json" and item[1].get("type") == "status" and self._dropping:
            self._dropping = False
            return
        self.queue.put_nowait(item)

    def taken(self, item: tuple[Any, ...]) -> None:
        """The socket has sent `item` (frees a frame's place)."""
        if item[0] == "bytes":
            self._frames -= 1


class LiveSession:
    """A session this host holds (queued or active): the latest action, the socket, the counters."""

    def __init__(
        self,
        record: WorldSession,
        spec: WorldSpec,
        start_image: np.ndarray | None,
        regions: list[str] | None = None,
    ):
        self.id, self.tenant, self.spec = record.id, record.tenant, spec
        self.regions = regions  # the tenant's: where its world may run (None: anywhere)
        self.placement: Placement | None = None  # its slot, once it has one
        self.world: World | None = None  # once open
        self.prompt, self.seed, self.fps, self.max_seconds = record.prompt, record.seed, record.fps, record.max_seconds
        self.start_image = start_image
        self.state = "queued"
        self.action = "none"
        self._pending_since: float | None = None  # arrival of the action that changed `action`, not yet drawn
        self.last_contact = time.monotonic()
        self.sink: Sink | None = None
        self.frame: np.ndarray | None = None  # the latest frame
        self.frames = 0
        self.seconds = 0.0
        self.cost_microcents = 0
        self.stop = threading.Event()  # set: end now (with `end_reason`)
        self.end_reason: EndReason | None = None
        self.done = threading.Event()  # set once the record says ended
        self.lock = threading.Lock()

    def set_action(self, action: str, arrived: float) -> None:
        with self.lock:
            self.last_contact = arrived
            if action != self.action:
                self.action, self._pending_since = action, arrived

    def touch(self) -> None:
        self.last_contact = time.monotonic()

    def take_action(self) -> tuple[str, float | None]:
        """The action to draw with, and the arrival time of the change it makes (None if unchanged)."""
        with self.lock:
            action, since = self.action, self._pending_since
            self._pending_since = None
        return action, since

    def attach(self, sink: Sink) -> Sink | None:
        """`sink` becomes the session's socket; returns the one it replaces (closed 4409 by the caller's host)."""
        with self.lock:
            old, self.sink = self.sink, sink
            self.last_contact = time.monotonic()
        return old

    def detach(self, sink: Sink) -> None:
        with self.lock:
            if self.sink is sink:
                self.sink = None
            self.last_contact = time.monotonic()

    def idle(self, idle_s: float, now: float) -> bool:
        return self.sink is None and now - self.last_contact >= idle_s

    def send(self, *item: Any) -> None:
        sink = self.sink
        if sink is not None:
            sink.put(*item)

    def end(self, reason: EndReason) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self.stop.set()


class SessionHost:
    def __init__(self, store: Store, config: HostConfig | None = None, runner: WorldRunner | None = None):
        """`runner`: where worlds run (default: `LocalWorlds`, on this host's `config.slots` threads)."""
        self.store, self.config = store, config or HostConfig()
        self.runner: WorldRunner = runner or LocalWorlds(self.config)
        self.price_per_s_microcents = second_price_microcents(self.config.chip, self.config.markup)
        self._lock = threading.Lock()
        self._active: dict[str, LiveSession] = {}
        self._queue: deque[LiveSession] = deque()
        self._threads: dict[str, threading.Thread] = {}
        self._closed = threading.Event()
        self._watch: threading.Thread | None = None
        self._heartbeat: Heartbeat | None = None
        # ends this host could not write (the session's data plane was down): session id -> (reason, failure, when),
        # written again every queue watch until they land, so a record never stays live for a session that is over
        self._unrecorded: dict[str, tuple[EndReason, str | None, datetime]] = {}

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> SessionHost:
        """Beat (other hosts on the database see this one alive), end what this host's last run and dead hosts
        left live (billed only for the seconds they recorded), then watch the queue."""
        self._closed.clear()
        self._heartbeat = Heartbeat(self.store, self.config.name).start()
        ended = sessions.recover(self.store, self.config.name)
        if ended:
            log.warning("ended %d world session(s) a stopped server left live (server_restart)", len(ended))
        self._watch = threading.Thread(target=self._watch_queue, daemon=True, name="world-queue")
        self._watch.start()
        return self

    def close(self) -> None:
        """End every session (server_restart: each billed for the seconds it was served) and wait for them."""
        self._closed.set()
        with self._lock:
            queued, self._queue = list(self._queue), deque()
            active = list(self._active.values())
        for live in queued:
            self._end_queued(live, EndReason.SERVER_RESTART)
        for live in active:
            live.end(EndReason.SERVER_RESTART)
        for thread in list(self._threads.values()):
            thread.join(10)
        if self._watch is not None:
            self._watch.join(5)
        self._record_unrecorded()  # the last try; what is still unwritten the next start recovers (server_restart)
        if self._heartbeat is not None:
            self._heartbeat.stop()
        self.runner.close()

    # --- admission -----------------------------------------------------------------------------

    def admit(
        self,
        create: Callable[[], WorldSession],
        spec: WorldSpec,
        start_image: np.ndarray | None,
        regions: list[str] | None = None,
    ) -> LiveSession:
        """Create the record (`create`) and start it in a free slot of `regions` (the tenant's; None: any), or
        queue it; QueueFull when both are full (nothing is created then)."""
        with self._lock:
            if self._closed.is_set():
                raise QueueFull(self.config.slots, self.config.queue, 5, "the session host has stopped")
            # the simulator's interactive class admits by the same rule (scheduling.admission); those queued that
            # could take a free slot now wait ahead (with one region, all of the queue when a slot is free)
            free = self.runner.free(regions)
            ahead = sum(1 for waiting in self._queue if self.runner.free(waiting.regions) > 0)
            room = self.config.queue - (len(self._queue) - ahead)
            decision = scheduling.admit(free, ahead, room).decision
            if decision == "refuse":
                raise QueueFull(self.config.slots, self.config.queue, self._retry_after_s())
            placement = self.runner.reserve(regions) if decision == "start" else None
            try:
                record = create()
            except BaseException:  # refused (max_concurrent) or its region's database down: the slot stays free
                if placement is not None:
                    self.runner.release(placement)
                raise
            live = LiveSession(record, spec, start_image, regions)
            if placement is not None:
                self._run(live, placement)
            else:
                self._queue.append(live)
        return live

    def _retry_after_s(self) -> int:
        """Seconds until the first active session must end (its max_seconds), at least 1, at most 60."""
        left = [max(0.0, s.max_seconds - s.seconds) for s in self._active.values()]
        return int(min(60, max(1, math.ceil(min(left, default=5.0)))))

    def _run(self, live: LiveSession, placement: Placement) -> None:
        """Start `live` in the slot reserved for it (caller holds the lock)."""
        if not sessions.activate(self.store, live.id, self.config.name, region=placement.region):
            self.runner.release(placement)
            live.done.set()  # ended while it waited
            return
        live.state, live.placement = "active", placement
        self._active[live.id] = live
        thread = threading.Thread(target=self._serve, args=(live,), daemon=True, name=f"world-{live.id[:8]}")
        self._threads[live.id] = thread
        thread.start()

    def _next(self) -> None:
        """Fill free slots from the queue, first come first served among those a slot's region allows; tell the
        queued their new places."""
        with self._lock:
            for waiting in list(self._queue):
                if self._closed.is_set():
                    break
                placement = self.runner.reserve(waiting.regions)
                if placement is not None:
                    self._queue.remove(waiting)
                    self._run(waiting, placement)
            for position, waiting in enumerate(self._queue, start=1):
                waiting.send("json", {"type": "queued", "position": position})

    def position(self, session_id: str) -> int | None:
        """1-based place in the queue, None if not queued here."""
        with self._lock:
            for position, waiting in enumerate(self._queue, start=1):
                if waiting.id == session_id:
                    return position
        return None

    def live(self, session_id: str) -> LiveSession | None:
        with self._lock:
            found = self._active.get(session_id)
            if found is None:
                found = next((s for s in self._queue if s.id == session_id), None)
        return found

    # --- ending --------------------------------------------------------------------------------

    def end(self, session_id: str, reason: EndReason = EndReason.CLIENT, wait_s: float = 10.0) -> bool:
        """End a session this host holds (waiting until its record says so), else end its record if live."""
        with self._lock:
            queued = next((s for s in self._queue if s.id == session_id), None)
            if queued is not None:
                self._queue.remove(queued)
            active = self._active.get(session_id)
        if queued is not None:
            self._end_queued(queued, reason)
            self._next()
            return True
        if active is not None:
            active.end(reason)
            active.done.wait(wait_s)
            return True
        return sessions.end(self.store, session_id, reason)

    def _record_end(self, session_id: str, reason: EndReason, failure: str | None = None) -> None:
        """End the session's record; when its database cannot be reached, keep the end to write it later
        (`_record_unrecorded`), at the time it happened."""
        when = sessions.now_utc()
        try:
            sessions.end(self.store, session_id, reason, failure, now=when)
        except Exception:
            log.exception("world session %s: could not record its end (%s); trying again", session_id, reason.value)
            with self._lock:
                self._unrecorded[session_id] = (reason, failure, when)

    def _record_unrecorded(self) -> None:
        """Write the ends that could not be written when they happened (their plane is back, or try next time)."""
        with self._lock:
            pending = dict(self._unrecorded)
        for session_id, (reason, failure, when) in pending.items():
            try:
                sessions.end(self.store, session_id, reason, failure, now=when)
            except Exception as err:
                log.debug("world session %s: its end is still not recorded: %s", session_id, err)
                continue
            with self._lock:
                self._unrecorded.pop(session_id, None)
            log.warning("world session %s: its end (%s) is recorded now", session_id, reason.value)

    def _end_queued(self, live: LiveSession, reason: EndReason) -> None:
        self._record_end(live.id, reason)
        live.end_reason = reason
        live.state = "ended"
        live.send("json", {"type": "ended", "reason": reason.value})
        live.send("close", 1000, f"session ended: {reason.value}")
        live.done.set()

    def _watch_queue(self) -> None:
        """Queued sessions nobody is connected to end idle too (active ones check in their own loop)."""
        every_s = min(1.0, self.config.idle_s / 4)
        while not self._closed.wait(every_s):
            if self._unrecorded:
                self._record_unrecorded()
            now = time.monotonic()
            with self._lock:
                idle = [s for s in self._queue if s.idle(self.config.idle_s, now)]
                for live in idle:
                    self._queue.remove(live)
            for live in idle:
                self._end_queued(live, EndReason.IDLE)
            if idle:
                self._next()

    # --- one session ---------------------------------------------------------------------------

    def _serve(self, live: LiveSession) -> None:
        world: World | None = None
        reason, failure = EndReason.SERVER_RESTART, None
        try:
            # 1. open the world where its slot is (loading the model is not billed); send its opening frame at once
            assert live.placement is not None  # _run gave it one
            world = live.world = self.runner.open(live.placement, live.spec, live.prompt, live.seed, live.start_image)
            opened = time.monotonic()
            live.frame = world.frame
            self._emit(live, world.frame, "none", None, 0, opened, opened)
            # 2. tick at the session's fps until something ends it
            reason = self._tick(live, world, opened)
        except RegionUnavailable as err:  # its seconds cannot be recorded or billed: it ends rather than run free
            log.error("world session %s: ended, its data plane is down: %s", live.id, err)
            reason, failure = EndReason.ERROR, f"the session's records cannot be written: {err}"[:500]
        except Exception as err:  # the model failed: the session ends failed, with the reason, and the host goes on
            log.exception("world session %s failed", live.id)
            reason, failure = EndReason.ERROR, f"{type(err).__name__}: {err}"[:500]
        finally:
            self._finish(live, world, reason, failure)

    def _tick(self, live: LiveSession, world: World, opened: float) -> EndReason:
        period_s = 1.0 / live.fps
        next_tick = opened + period_s
        billed_at = opened
        drawn_at: deque[float] = deque()  # the last second's frame times (the measured fps)
        while True:
            # 1. wait for the tick (or an end from outside)
            if live.stop.wait(max(0.0, next_tick - time.monotonic())):
                return live.end_reason or EndReason.CLIENT
            now = time.monotonic()
            live.seconds = min(now - opened, float(live.max_seconds))
            # 2. the session's limits
            if now - opened >= live.max_seconds:
                return EndReason.MAX_SECONDS
            if live.idle(self.config.idle_s, now):
                return EndReason.IDLE
            # 3. draw with the latest action; while no socket watches, nothing is drawn (the slot is still held
            # and billed: the world waits as it was for a reconnect, and the CPU is spared)
            if live.sink is not None:
                self._draw(live, world, drawn_at, opened)
            # 4. record and bill the seconds served, every second
            now = time.monotonic()
            if now - billed_at >= self.config.bill_every_s:
                billed_at = now
                if self._bill(live, min(now - opened, float(live.max_seconds))):
                    return EndReason.CREDITS
            next_tick = max(next_tick + period_s, time.monotonic())  # behind: the next tick now, no burst

    def _draw(self, live: LiveSession, world: World, drawn_at: deque[float], opened: float) -> None:
        """One frame with the latest action, sent with its status (the latency of an action that changed)."""
        action, changed_at = live.take_action()
        frame = world.step(action)
        drawn = time.monotonic()
        live.frame, live.frames = frame, live.frames + 1
        latency_ms = None if changed_at is None else round((drawn - changed_at) * 1000, 1)
        drawn_at.append(drawn)
        while drawn_at and drawn - drawn_at[0] > 1.0:
            drawn_at.popleft()
        self._emit(live, frame, action, latency_ms, len(drawn_at), opened, drawn)

    def _bill(self, live: LiveSession, seconds: float) -> bool:
        """Record frames and seconds and charge them; True when the tenant's credits have run out."""
        live.seconds = seconds
        billed = sessions.record(
            self.store,
            live.id,
            frames=live.frames,
            seconds=round(seconds, 3),
            price_per_s_microcents=self.price_per_s_microcents,
        )
        if billed.recorded:
            live.cost_microcents = billed.cost_microcents
        return billed.out_of_credits

    def _emit(
        self,
        live: LiveSession,
        frame: np.ndarray,
        action: str,
        latency_ms: float | None,
        fps: int,
        opened: float,
        now: float,
    ) -> None:
        sink = live.sink
        if sink is None:
            return
        sink.put("bytes", encode(frame, sink.format))
        sink.put("json", self.status(live, action, latency_ms, fps, now - opened))

    def status(
        self, live: LiveSession, action: str, latency_ms: float | None, fps: int, seconds: float
    ) -> dict[str, Any]:
        return {
            "type": "status",
            "state": live.state,
            "frame": live.frames,
            "action": action,
            "latency_ms": latency_ms,
            "fps": fps,
            "seconds": round(min(seconds, float(live.max_seconds)), 3),
            "cost": money.cents(live.cost_microcents),
        }

    def _finish(self, live: LiveSession, world: World | None, reason: EndReason, failure: str | None) -> None:
        """Bill the last part-second, end the record once, tell the socket, free the slot."""
        if world is not None:
            try:
                self._bill(live, live.seconds)  # while still active: the seconds up to the end
            except Exception:  # its plane is down: those seconds are not billed (never billed twice)
                log.exception("world session %s: could not bill its last seconds", live.id)
            try:
                world.close()
            except Exception:
                log.exception("world session %s: its world did not close cleanly", live.id)
        self._record_end(live.id, reason, failure)
        if live.placement is not None:
            self.runner.release(live.placement)
        live.end_reason, live.state = reason, "failed" if reason is EndReason.ERROR else "ended"
        live.send("json", {"type": "ended", "reason": reason.value} | ({"failure_reason": failure} if failure else {}))
        live.send("close", 1000, f"session ended: {reason.value}")
        live.done.set()
        with self._lock:
            self._active.pop(live.id, None)
            self._threads.pop(live.id, None)
        self._next()

    def attach(self, live: LiveSession, sink: Sink) -> None:
        """`sink` becomes the session's socket: the one it replaces is closed with 4409; it gets the current frame
        (or its place in the queue) at once."""
        old = live.attach(sink)
        if old is not None:
            old.put("close", 4409, "another socket opened for this session")
        if live.state == "queued":
            position = self.position(live.id)
            if position is not None:
                sink.put("json", {"type": "queued", "position": position})
        elif live.frame is not None:
            sink.put("bytes", encode(live.frame, sink.format))
            sink.put("json", self.status(live, live.action, None, 0, live.seconds))

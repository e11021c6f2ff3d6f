"""World sessions: the record of one player's session with an interactive world model, and its state machine.

queued -> active -> ended | failed, or queued -> ended (deleted, idle or the server went before a slot came).
A session is a job of a new kind: it holds a worker slot for its length instead of making a file, and it is
billed per second served, debited as the seconds pass. Every state change and every charge is one conditional
UPDATE, so it happens once however many threads race it (the tick loop, a DELETE, the idle check, recovery).

Money is integer micro-cents (noor.jobs.money). The socket's token is random, shown once by the POST and
stored as its SHA-256 (as API keys are: a 256-bit token needs no slow hash).

Where a session's row lives (docs/trust.md, "Data residency"): in its tenant's data plane if the tenant is bound to
a region with a database, else in the central store, as its jobs do. Every function here takes the central store
and routes: by tenant (`Store.home`) or by session id (`Store.keeping`: remembered when created or found). The
tenant's row, credits and limits stay central; hosts' heartbeats (`world_hosts`: no tenant data) too.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Float, Index, Integer, String, Text, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from noor.jobs import money
from noor.jobs.generation import Base, UTCDateTime, now_utc
from noor.jobs.limits import LIVE_SESSION_STATES, TENANTS, check_concurrency, hold_limits, hold_tenant
from noor.jobs.planes import RegionUnavailable, by_session, by_tenant, reach
from noor.jobs.store import Store

log = logging.getLogger(__name__)
TOKEN_TTL = timedelta(minutes=10)  # a token opens the socket for this long after the POST (or a new token's mint)
# A session host beats every second (HEARTBEAT_S); one silent for DEAD_AFTER is dead, and the sessions it held are
# ended by the next host that starts or beats. 15 missed beats: a loaded 2-core machine stalls a thread for
# seconds, and a host taken for dead while it runs would see its sessions ended under it.
HEARTBEAT_S = 1.0
DEAD_AFTER = timedelta(seconds=15)


class SessionState(enum.StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"
    ENDED = "ended"
    FAILED = "failed"


LIVE = (SessionState.QUEUED.value, SessionState.ACTIVE.value)
assert LIVE == LIVE_SESSION_STATES  # what a tenant's max_concurrent counts (jobs.store)


class EndReason(enum.StrEnum):
    CLIENT = "client"  # DELETE, or the client said so
    IDLE = "idle"  # no socket and no message for NOOR_WORLD_IDLE_S
    MAX_SECONDS = "max_seconds"
    CREDITS = "credits"  # the tenant ran out of credits
    SERVER_RESTART = "server_restart"  # the server stopped (or died) while it was live
    ERROR = "error"  # the model failed: the session ends `failed` with a failure_reason


class WorldSession(Base):
    __tablename__ = "world_sessions"
    __table_args__ = (
        Index("ix_world_sessions_tenant", "tenant", "created_at"),
        Index("ix_world_sessions_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    tenant: Mapped[str] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(32), default=None)  # the region of the host it runs on
    model: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)
    fps: Mapped[int] = mapped_column(Integer)
    max_seconds: Mapped[int] = mapped_column(Integer)
    start_image_key: Mapped[str | None] = mapped_column(Text, default=None)  # an asset key
    state: Mapped[str] = mapped_column(String(16), default=SessionState.QUEUED.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    frames: Mapped[int] = mapped_column(Integer, default=0)  # frames drawn after the opening one
    seconds: Mapped[float] = mapped_column(Float, default=0.0)  # active seconds served and billed
    cost_microcents: Mapped[int] = mapped_column(BigInteger, default=0)  # what those seconds cost
    paid_microcents: Mapped[int] = mapped_column(BigInteger, default=0)  # what was taken (0: unmetered)
    end_reason: Mapped[str | None] = mapped_column(String(16), default=None)
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    worker: Mapped[str | None] = mapped_column(String(64), default=None)  # the host that holds (held) it
    token_hash: Mapped[str] = mapped_column(String(64))
    token_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def cost_cents(self) -> float:
        return money.cents(self.cost_microcents or 0)

    @property
    def is_live(self) -> bool:
        return self.state in LIVE


class WorldHost(Base):
    """A session host's heartbeat (HostConfig.name): hosts sharing one database end only their own sessions and
    those of dead hosts."""

    __tablename__ = "world_hosts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SessionNotFound(LookupError):
    """No such session for this tenant (another tenant's is not found either)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(
    store: Store,
    *,
    tenant: str,
    model: str,
    prompt: str,
    seed: int,
    fps: int,
    max_seconds: int,
    region: str | None = None,
    start_image_key: str | None = None,
    worker: str | None = None,
    now: datetime | None = None,
) -> tuple[WorldSession, str]:
    """A new queued session held by host `worker`, and its socket token (returned once, stored hashed).

    It takes a place of its tenant's max_concurrent, as a job does: counted under the tenant's row lock, with
    the tenant's queued and running jobs and live sessions, so LimitExceeded (nothing stored) when they fill it.
    A tenant without a row (internal callers) has no limit. It is stored where the tenant's data lives: its
    plane's transaction commits inside the central one that holds the lock, as a job create's does."""
    home = store.home(tenant)
    token = secrets.token_urlsafe(32)
    row = WorldSession(
        id=str(uuid.uuid4()),
        tenant=tenant,
        model=model,
        prompt=prompt,
        seed=seed,
        fps=fps,
        max_seconds=max_seconds,
        region=region,
        start_image_key=start_image_key,
        state=SessionState.QUEUED.value,
        frames=0,
        seconds=0.0,
        cost_microcents=0,
        paid_microcents=0,
        worker=worker,
        token_hash=hash_token(token),
    )
    # 1. the tenant's row lock, in the central store (which keeps its limits); 2. its jobs and live sessions counted
    # where they live, under that lock, and the session stored there
    with store.session.begin() as s, home.inside(store, s) as here:
        limits = hold_limits(s, tenant)
        if limits is not None:
            check_concurrency(here, tenant, limits[0])
        row.created_at = now or now_utc()  # read under the lock, as a job's is
        row.token_expires_at = row.created_at + TOKEN_TTL
        here.add(row)
    store.held_by(row.id, home)
    return row, token


@by_tenant
def new_token(store: Store, tenant: str, session_id: str, now: datetime | None = None) -> tuple[WorldSession, str]:
    """A fresh socket token for the tenant's own live session (a page reloaded past the first token's life): it
    replaces the one before, so only the newest opens a socket. SessionNotFound for another tenant's or an
    ended one (None of it is changed then)."""
    now = now or now_utc()
    token = secrets.token_urlsafe(32)
    with store.session.begin() as s:
        result: Any = s.execute(
            update(WorldSession)
            .where(WorldSession.id == session_id, WorldSession.tenant == tenant, WorldSession.state.in_(LIVE))
            .values(token_hash=hash_token(token), token_expires_at=now + TOKEN_TTL)
        )
    if result.rowcount != 1:
        raise SessionNotFound(session_id)
    return get(store, tenant, session_id), token


@by_tenant
def get(store: Store, tenant: str, session_id: str) -> WorldSession:
    with store.session() as s:
        row = s.scalar(select(WorldSession).where(WorldSession.id == session_id, WorldSession.tenant == tenant))
    if row is None:
        raise SessionNotFound(session_id)
    return row


@by_session
def by_id(store: Store, session_id: str) -> WorldSession | None:
    """Any tenant's session (for the host and the socket, which authenticates by token)."""
    with store.session() as s:
        return s.get(WorldSession, session_id)


@by_tenant
def list_for(store: Store, tenant: str, limit: int = 20) -> list[WorldSession]:
    """The tenant's sessions, newest first."""
    query = (
        select(WorldSession)
        .where(WorldSession.tenant == tenant)
        .order_by(WorldSession.created_at.desc(), WorldSession.id)
        .limit(limit)
    )
    with store.session() as s:
        return list(s.scalars(query).all())


def check_token(store: Store, session_id: str, token: str, now: datetime | None = None) -> WorldSession | None:
    """The session if `token` is its own and has not expired, else None (a wrong session, token or time alike)."""
    row = by_id(store, session_id)
    if row is None or not hmac.compare_digest(row.token_hash, hash_token(token)):
        return None
    return row if (now or now_utc()) < row.token_expires_at else None


@by_session
def activate(
    store: Store, session_id: str, worker: str, now: datetime | None = None, region: str | None = None
) -> bool:
    """queued -> active on `worker` (in `region`, when where it runs is known only now: a Ray node); False if it
    is no longer queued (ended meanwhile)."""
    placed = {"region": region} if region is not None else {}
    with store.session.begin() as s:
        result: Any = s.execute(
            update(WorldSession)
            .where(WorldSession.id == session_id, WorldSession.state == SessionState.QUEUED.value)
            .values(state=SessionState.ACTIVE.value, started_at=now or now_utc(), worker=worker, **placed)
        )
    return bool(result.rowcount == 1)


@dataclass(frozen=True)
class Billed:
    """The outcome of one `record`: whether the session is still active, and whether credits ran out."""

    recorded: bool  # False: the session was no longer active (or another record won the race): nothing changed
    out_of_credits: bool = False
    cost_microcents: int = 0


def record(store: Store, session_id: str, *, frames: int, seconds: float, price_per_s_microcents: int) -> Billed:
    """Write what an active session has served so far (frames, active seconds) and charge the seconds not yet
    charged, at `price_per_s_microcents`: the session's row moves only from the cost it had, so a charge is taken
    once. A metered tenant whose credits cannot cover the new seconds pays what is left and `out_of_credits` is set
    (the host then ends the session, end_reason "credits"); the host bills a session's last part-second before it
    ends it.

    The credits are central; a session in a data plane is moved there. The central transaction locks the tenant's
    row and computes the charge; inside it the plane's conditional UPDATE commits, then the central debit: a crash
    in between loses that charge, never doubles it (as a job's refund). One session, one tenant: one transaction.
    A plane that cannot be reached: RegionUnavailable, nothing moved or charged."""
    try:
        return _record(store, session_id, frames, seconds, price_per_s_microcents)
    except _Lost:  # the transaction rolled back, the tenant's charge with it
        return Billed(False)


class _Lost(Exception):
    pass


def _record(store: Store, session_id: str, frames: int, seconds: float, price_per_s_microcents: int) -> Billed:
    keeper = store.keeping(session_id)
    with store.session.begin() as s:  # the central transaction: the tenant's credits
        with keeper.inside(store, s) as here:  # the session's row: `s` itself, or its plane's transaction
            # 1. what is served and not yet charged
            row = here.get(WorldSession, session_id)
            if row is None or row.state != SessionState.ACTIVE.value or seconds < row.seconds:
                return Billed(False)
            cost = round(seconds * price_per_s_microcents)
            due = max(0, cost - row.cost_microcents)
            # 2. what the tenant pays of it, read under its row's lock (held until the debit commits)
            account = hold_tenant(s, row.tenant, TENANTS.c.metered, TENANTS.c.credits_microcents)
            paid, short = 0, False
            if account is not None and account.metered and due:
                balance = int(account.credits_microcents or 0)
                paid = min(due, max(balance, 0))
                short = paid < due or balance - paid <= 0
                cost = row.cost_microcents + paid  # what was not paid was not served: not billed
            # 3. the session's cost moves, once (committed here in a plane)
            result: Any = here.execute(
                update(WorldSession)
                .where(
                    WorldSession.id == session_id,
                    WorldSession.state == SessionState.ACTIVE.value,
                    WorldSession.cost_microcents == row.cost_microcents,
                )
                .values(
                    frames=max(frames, row.frames),
                    seconds=seconds,
                    cost_microcents=cost,
                    paid_microcents=WorldSession.paid_microcents + paid,
                )
            )
            if result.rowcount != 1:  # another record moved it first: undo this one with the transaction(s)
                raise _Lost
        # 4. the debit, committed with the central transaction
        if paid:
            s.execute(
                update(TENANTS)
                .where(TENANTS.c.name == row.tenant)
                .values(credits_microcents=TENANTS.c.credits_microcents - paid)
            )
    return Billed(True, short, cost)


@by_session
def end(
    store: Store,
    session_id: str,
    reason: EndReason | str,
    failure_reason: str | None = None,
    now: datetime | None = None,
) -> bool:
    """queued/active -> ended (or failed, for reason "error"), once: False if it had already ended."""
    reason = EndReason(reason)
    state = SessionState.FAILED if reason is EndReason.ERROR else SessionState.ENDED
    with store.session.begin() as s:
        result: Any = s.execute(
            update(WorldSession)
            .where(WorldSession.id == session_id, WorldSession.state.in_(LIVE))
            .values(
                state=state.value, end_reason=reason.value, failure_reason=failure_reason, ended_at=now or now_utc()
            )
        )
    return bool(result.rowcount == 1)


def beat(store: Store, host: str, now: datetime | None = None) -> None:
    """Host `host` is alive now (its first beat records when it started)."""
    now = now or now_utc()
    with store.session.begin() as s:
        result: Any = s.execute(update(WorldHost).where(WorldHost.name == host).values(heartbeat_at=now))
    if result.rowcount == 1:
        return
    try:
        with store.session.begin() as s:
            s.add(WorldHost(name=host, started_at=now, heartbeat_at=now))
    except IntegrityError:  # its first beat raced another of the same name: that one's row will do
        beat(store, host, now)


def forget(store: Store, host: str) -> None:
    """Host `host` stopped cleanly (its sessions have ended): its heartbeat goes."""
    with store.session.begin() as s:
        s.execute(delete(WorldHost).where(WorldHost.name == host))


def _alive(store: Store, now: datetime, dead_after: timedelta) -> list[str]:
    """The hosts that beat within `dead_after` (heartbeats are central: a plane's sessions are judged by them)."""
    with store.session() as s:
        return list(s.scalars(select(WorldHost.name).where(WorldHost.heartbeat_at >= now - dead_after)).all())


def _held_by_dead(host: str, alive: list[str]) -> ColumnElement[bool]:
    """Held by a host other than `host` that is not `alive` (silent for DEAD_AFTER, or never beat: an older
    server)."""
    return WorldSession.worker.is_not(None) & (WorldSession.worker != host) & WorldSession.worker.not_in(alive)


def recover(
    store: Store, host: str | None = None, now: datetime | None = None, dead_after: timedelta = DEAD_AFTER
) -> list[str]:
    """At a host's start: the sessions a stopped server left queued or active end with "server_restart": those of
    `host` (its previous run's: it holds none yet), those of hosts dead for `dead_after`, and those no host holds
    (queued by an older server). Without `host`, every live session (one host per database). They were billed as
    their seconds were recorded, at most a second behind, so nothing more is charged. In the central store and
    every data plane it reaches."""
    now = now or now_utc()
    live: ColumnElement[bool] = WorldSession.state.in_(LIVE)
    if host is not None:
        alive = _alive(store, now, dead_after)
        live = live & ((WorldSession.worker == host) | WorldSession.worker.is_(None) | _held_by_dead(host, alive))
    return _end_restarted(store, live, now)


def reap(store: Store, host: str, now: datetime | None = None, dead_after: timedelta = DEAD_AFTER) -> list[str]:
    """While `host` runs: end the live sessions of hosts dead for `dead_after` ("server_restart"), so a host that
    died and never came back does not hold its tenants' places of max_concurrent for ever. In the central store and
    every data plane it reaches."""
    now = now or now_utc()
    dead = _held_by_dead(host, _alive(store, now, dead_after))
    return _end_restarted(store, WorldSession.state.in_(LIVE) & dead, now)


def _end_restarted(store: Store, which: ColumnElement[bool], now: datetime) -> list[str]:
    """End with "server_restart" the sessions `which` picks, here and in each data plane (central first). A plane
    that cannot be reached is skipped (and logged): the others are ended all the same, it on the next call."""
    ended = []
    for each in store.stores():
        try:
            ended += reach(each, _end_where, which, now)
        except RegionUnavailable as err:
            log.warning("world sessions in %s not ended this time: %s", each.region, err)
    return ended


def _end_where(store: Store, which: ColumnElement[bool], now: datetime) -> list[str]:
    with store.session.begin() as s:
        ids = list(s.scalars(select(WorldSession.id).where(which)).all())
        if ids:
            s.execute(
                update(WorldSession)
                .where(WorldSession.id.in_(ids), WorldSession.state.in_(LIVE))
                .values(state=SessionState.ENDED.value, end_reason=EndReason.SERVER_RESTART.value, ended_at=now)
            )
    return ids

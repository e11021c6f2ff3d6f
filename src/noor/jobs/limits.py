"""A tenant's admission limits and credits as the store enforces them: how many jobs and live world sessions
it may hold at once (max_concurrent), how many it may create a minute (max_per_minute), and whether its credits
cover a price. Checked inside the transaction that creates (or opens) the work, under the tenant row's lock, so
two requests cannot both take the last place."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    Integer,
    String,
    and_,
    bindparam,
    column,
    func,
    select,
    table,
    union_all,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from noor.jobs import money
from noor.jobs.generation import Generation, State, now_utc

_generations = Generation.__table__
_tenant_is = _generations.c.tenant == bindparam("tenant")
_since = and_(_tenant_is, _generations.c.created_at >= bindparam("since"))
_active = and_(
    _tenant_is,
    _generations.c.state.in_([State.QUEUED.value, State.DREAMING.value]),
    _generations.c.deleted_at.is_(None),
)
# A tenant's world sessions (noor.jobs.sessions, which imports this module: the table is named, not imported) hold
# a place of max_concurrent while queued or active, as its queued and running jobs do.
_world_sessions = table("world_sessions", column("tenant", String), column("state", String))
LIVE_SESSION_STATES = ("queued", "active")  # = sessions.LIVE
_session_open = and_(_world_sessions.c.tenant == bindparam("tenant"), _world_sessions.c.state.in_(LIVE_SESSION_STATES))
# (places of max_concurrent held, creates since `since`, the oldest of those): the limits, and Store.usage
USAGE = select(
    select(func.count())
    .select_from(select(_generations.c.id).where(_active).limit(bindparam("max_active")).subquery())
    .scalar_subquery()
    + select(func.count())
    .select_from(select(_world_sessions.c.tenant).where(_session_open).limit(bindparam("max_active")).subquery())
    .scalar_subquery(),
    select(func.count())
    .select_from(select(_generations.c.id).where(_since).limit(bindparam("max_recent")).subquery())
    .scalar_subquery(),
    select(_generations.c.created_at).where(_since).order_by(_generations.c.created_at).limit(1).scalar_subquery(),
)

# The tenants table as the store admits, charges and refunds (jobs.tenants maps it; importing that would loop).
TENANTS = table(
    "tenants",
    column("name", String),
    column("credits_microcents", BigInteger),
    column("metered", Boolean),
    column("max_concurrent", Integer),
    column("max_per_minute", Integer),
    column("regions", JSON),
)
RATE_WINDOW = timedelta(seconds=60)  # max_per_minute counts the creates of this rolling window
# The tenants that hold a live world session and whose running jobs and live sessions fill max_concurrent: a claim
# skips their queued jobs (few rows: live sessions are at most a host's slots and queue).
_g = _generations.alias("running")
FULL_TENANTS = select(TENANTS.c.name).where(
    TENANTS.c.name.in_(select(_world_sessions.c.tenant).where(_world_sessions.c.state.in_(LIVE_SESSION_STATES))),
    select(func.count())
    .select_from(_g)
    .where(_g.c.tenant == TENANTS.c.name, _g.c.state == State.DREAMING.value, _g.c.deleted_at.is_(None))
    .scalar_subquery()
    + select(func.count())
    .select_from(_world_sessions)
    .where(_world_sessions.c.tenant == TENANTS.c.name, _world_sessions.c.state.in_(LIVE_SESSION_STATES))
    .scalar_subquery()
    >= TENANTS.c.max_concurrent,
)
# A data plane has no tenant rows (its ledger keeps them): (tenant, running jobs + live sessions) of each tenant that
# holds a live session there, compared with the ledger's max_concurrent (DataPlanes.full_tenants)
_live = _world_sessions.c.state.in_(LIVE_SESSION_STATES)
_places = union_all(
    select(_world_sessions.c.tenant).where(_live),
    select(_g.c.tenant).where(
        _g.c.tenant.in_(select(_world_sessions.c.tenant).where(_live)),
        _g.c.state == State.DREAMING.value,
        _g.c.deleted_at.is_(None),
    ),
).subquery()
PLACES_HELD = select(_places.c.tenant, func.count()).group_by(_places.c.tenant)


class InsufficientCredits(Exception):
    def __init__(self, balance_microcents: int, price_microcents: int):
        self.balance_microcents, self.price_microcents = balance_microcents, price_microcents
        super().__init__(
            f"Insufficient credits: this generation costs {money.usd(price_microcents)}, the balance is "
            f"{money.usd(balance_microcents)}"
        )


class LimitExceeded(Exception):
    """A tenant's concurrency or rate limit refused a create (HTTP 429 with `retry_after_s`)."""

    def __init__(self, limit: str, message: str, retry_after_s: int):
        self.limit, self.retry_after_s = limit, retry_after_s
        super().__init__(message)


def hold_tenant(s: Session, tenant: str, *columns: ColumnElement[Any]) -> Row[Any] | None:
    """Lock `tenant`'s row for the rest of the transaction `s` (one no-op UPDATE: a PostgreSQL row lock, SQLite's
    write lock) and read `columns` of it; None if it has no row (an internal caller: no limits, never charged)."""
    return s.execute(
        update(TENANTS).where(TENANTS.c.name == tenant).values(name=TENANTS.c.name).returning(*columns)
    ).one_or_none()


def hold_limits(s: Session, tenant: str) -> tuple[int, int] | None:
    """`hold_tenant`, reading its (max_concurrent, max_per_minute)."""
    row = hold_tenant(s, tenant, TENANTS.c.max_concurrent, TENANTS.c.max_per_minute)
    return None if row is None else (int(row.max_concurrent), int(row.max_per_minute))


def check_concurrency(s: Session, tenant: str, max_concurrent: int) -> None:
    """LimitExceeded("max_concurrent") if `tenant`'s queued and running jobs and live world sessions fill
    max_concurrent (counted in `s`: call it under the row lock of `hold_limits` or of a create)."""
    running = s.execute(
        USAGE, {"tenant": tenant, "since": now_utc(), "max_active": max_concurrent, "max_recent": 0}
    ).one()[0]
    if (running or 0) >= max_concurrent:
        raise too_many(running, max_concurrent)


def too_many(running: int, max_concurrent: int) -> LimitExceeded:
    return LimitExceeded(
        "max_concurrent",
        f"Too many concurrent generations: {running} of {max_concurrent}; wait for one to finish",
        retry_after_s=5,
    )


def admit(s: Session, tenant: str, max_concurrent: int, max_per_minute: int, now: datetime) -> None:
    """Raise LimitExceeded unless `tenant` may queue one more job now (inside create's transaction)."""
    since = now - RATE_WINDOW
    running, recent, oldest = s.execute(
        USAGE, {"tenant": tenant, "since": since, "max_active": max_concurrent, "max_recent": max_per_minute}
    ).one()
    if (running or 0) >= max_concurrent:
        raise too_many(running, max_concurrent)
    if (recent or 0) >= max_per_minute:
        wait_s = max(1, math.ceil((oldest - since).total_seconds())) if oldest else int(RATE_WINDOW.total_seconds())
        raise LimitExceeded("max_per_minute", f"Rate limit: {max_per_minute} generations per minute", wait_s)

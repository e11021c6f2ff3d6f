"""The webhook outbox: one row per state change of a generation with a callback_url.

Rows are written in the same transaction as the state change, so a change is never announced
without happening, nor happens without being announced; `noor.runtime.webhooks` delivers them.

A deliverer takes a due row under a lease (its `next_attempt_at` moves past the delivery's deadline, on
the condition that nobody moved it first), so one row is in flight in one place at a time, and a
deliverer that dies mid-flight leaves it due again when the lease ends. The outcome is recorded on the
condition that the row still has the attempt count it was leased with: each attempt is counted once, a
row is marked delivered once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ColumnElement, Index, Integer, String, Text, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from noor.jobs.generation import Base, Generation, UTCDateTime, now_utc


class WebhookDelivery(Base):
    __tablename__ = "webhook_outbox"
    __table_args__ = (Index("ix_webhook_outbox_due", "delivered_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation_id: Mapped[str] = mapped_column(String(36))
    tenant: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the generation as it was at the change
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    gave_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


def snapshot(g: Generation) -> dict[str, Any]:
    return {
        "id": g.id,
        "generation_type": g.generation_type,
        "state": g.state,
        "failure_reason": g.failure_reason,
        "created_at": g.created_at.isoformat(),
        "assets": g.assets,  # asset keys; the deliverer turns them into signed links
        "model": g.request.get("model") or g.model,
        "request": g.request,
    }


def enqueue(session: Session, g: Generation) -> None:
    if g.callback_url:
        session.add(WebhookDelivery(generation_id=g.id, tenant=g.tenant, url=g.callback_url, payload=snapshot(g)))


@dataclass(frozen=True)
class Due:
    """A row to attempt, as it was read (plain data: it outlives the session that read it)."""

    id: int
    tenant: str
    url: str
    attempts: int
    payload: dict[str, Any]


def _is_due(now: datetime) -> list[ColumnElement[bool]]:
    return [
        WebhookDelivery.delivered_at.is_(None),
        WebhookDelivery.gave_up_at.is_(None),
        WebhookDelivery.next_attempt_at <= now,
    ]


def due(session: Session, now: datetime, per_tenant: int, limit: int) -> list[Due]:
    """Due rows, oldest first within a tenant and taken in turns across tenants (each tenant's oldest,
    then each one's second, …, at most `per_tenant` each), so one tenant's backlog never hides another's.

    Only a generation's oldest pending row is handed out: while one of its changes is in flight, waiting
    to be retried or not yet due, its later changes wait, so a receiver gets a generation's changes in the
    order they happened even with many deliveries in flight at once ("dreaming" never after "completed")."""
    pending = [WebhookDelivery.delivered_at.is_(None), WebhookDelivery.gave_up_at.is_(None)]
    head = select(func.min(WebhookDelivery.id)).where(*pending).group_by(WebhookDelivery.generation_id)
    turn = func.row_number().over(partition_by=WebhookDelivery.tenant, order_by=WebhookDelivery.id).label("turn")
    ranked = select(WebhookDelivery.id, turn).where(*_is_due(now), WebhookDelivery.id.in_(head)).subquery()
    rows = session.scalars(
        select(WebhookDelivery)
        .join(ranked, WebhookDelivery.id == ranked.c.id)
        .where(ranked.c.turn <= per_tenant)
        .order_by(ranked.c.turn, WebhookDelivery.id)
        .limit(limit)
    ).all()
    return [Due(r.id, r.tenant, r.url, r.attempts, r.payload) for r in rows]


def lease(session: Session, row: Due, now: datetime, until: datetime) -> bool:
    """Take `row` for one attempt until `until`; False if another deliverer took it or it changed since read."""
    taken = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == row.id, WebhookDelivery.attempts == row.attempts, *_is_due(now))
        .values(next_attempt_at=until)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def record(session: Session, row: Due, **values: Any) -> bool:
    """Record the outcome of the attempt `row` was leased for (attempts + 1 and `values`), exactly once."""
    done = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == row.id,
            WebhookDelivery.attempts == row.attempts,
            WebhookDelivery.delivered_at.is_(None),
        )
        .values(attempts=row.attempts + 1, **values)
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]

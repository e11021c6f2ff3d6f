"""The webhook outbox: one row per state change of a generation with a callback_url.

Rows are written in the same transaction as the state change, so a change is never announced
without happening, nor happens without being announced; `noor.runtime.webhooks` delivers them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
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

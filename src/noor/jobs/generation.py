"""The Generation record and its state machine.

queued -> dreaming -> completed | failed. The only other moves: an expired lease puts a dreaming job
back to queued (bounded by `max_attempts`), and a queued job can fail without running (refused,
or deleted before it started).
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from noor.jobs.money import cents


class State(enum.StrEnum):
    QUEUED = "queued"
    DREAMING = "dreaming"
    COMPLETED = "completed"
    FAILED = "failed"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.DREAMING, State.FAILED}),
    State.DREAMING: frozenset({State.COMPLETED, State.FAILED, State.QUEUED}),
    State.COMPLETED: frozenset(),
    State.FAILED: frozenset(),
}


class InvalidTransition(ValueError):
    pass


def check_transition(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"a generation cannot go from {old.value} to {new.value}")


def now_utc() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps none of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (
        Index("ix_generations_queue", "state", "priority", "created_at"),
        Index("ix_generations_tenant", "tenant", "created_at"),
        Index("ix_generations_tenant_state", "tenant", "state", "deleted_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    tenant: Mapped[str] = mapped_column(String(64))
    generation_type: Mapped[str] = mapped_column(String(16), default="video")  # "video" | "image"
    state: Mapped[str] = mapped_column(String(16), default=State.QUEUED.value)
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    model: Mapped[str] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # the creating request, echoed back
    task: Mapped[dict[str, Any]] = mapped_column(JSON)  # what the engine runs, resolved
    region: Mapped[str | None] = mapped_column(String(32), default=None)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # lower runs first
    # money in integer micro-cents (noor.jobs.money): the price quoted, and what was taken from the tenant's
    # credits for it (0 for an unmetered tenant), which is exactly what a failure gives back
    price_microcents: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_microcents: Mapped[int] = mapped_column(BigInteger, default=0)
    eta_s: Mapped[float | None] = mapped_column(Float, default=None)
    # jobs with the same key run together in one call (noor.scheduling.batching.batch_key); None: never batched
    batch_key: Mapped[str | None] = mapped_column(String(200), default=None)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1 while dreaming
    assets: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    callback_url: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    # who took it last, and where: kept after it ends (residency is checked from these, and `noor cluster status`)
    worker: Mapped[str | None] = mapped_column(String(64), default=None)
    worker_node: Mapped[str | None] = mapped_column(String(64), default=None)
    worker_region: Mapped[str | None] = mapped_column(String(32), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    @property
    def price_cents(self) -> float:
        """The price as the API's `price_cents` field carries it."""
        return cents(self.price_microcents or 0)

    @property
    def is_done(self) -> bool:
        return self.state in (State.COMPLETED.value, State.FAILED.value)

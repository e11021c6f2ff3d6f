"""The audit log: security events, append-only and hash-chained, in the job store (tables `audit_log`, `audit_head`).

Each entry carries the SHA-256 of the one before it (`prev_hash`) and its own (`hash`, over its number, time,
event, tenant, fields and `prev_hash`), so an entry edited, deleted or moved breaks the chain from there on;
`audit_head` holds the last number and hash, so entries cut off the end are missed too. `verify` walks the chain
and names the first entry that does not fit (`noor audit verify`).

It is a table, not a file: every server and `noor` command of a deployment writes one chain in the database they
share, under its locks. An append first bumps the head's number in one UPDATE, which holds PostgreSQL's row lock or
SQLite's write lock until the entry is in, so two processes appending at once are put one after the other and the
chain never forks.

Events recorded today (a later feature adds its own in one line, `audit.record("moderation.refused", ...)`):
`key.created`, `key.revoked`, `tenant.created`, `tenant.changed` (its old and new values), `access.refused` (a
tenant asked for another tenant's resource and got a 404).

A chain can be rewritten whole by whoever can write the database: keep the head's hash (`noor audit verify`
prints it) somewhere else, and `verify(..., expect=(seq, hash))` checks the log still holds that entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Index, Integer, String, Table, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from noor.jobs.generation import Base, UTCDateTime, now_utc
from noor.jobs.store import Store

GENESIS = "0" * 64  # the prev_hash of the first entry
HEAD_ID = 1
_EVENT = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant", "tenant", "seq"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # 1, 2, 3, ... no gaps
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    event: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str | None] = mapped_column(String(64), default=None)  # the tenant it concerns, if one
    fields: Mapped[str] = mapped_column(Text)  # canonical JSON (sorted keys): hashed as stored
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's end: one row (id 1), the last entry's number and hash."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


_head = cast(Table, AuditHead.__table__)


class AuditError(ValueError):
    pass


def entry_hash(seq: int, at: datetime, event: str, tenant: str | None, fields: str, prev_hash: str) -> str:
    line = json.dumps([seq, at.astimezone(UTC).isoformat(timespec="microseconds"), event, tenant, fields, prev_hash])
    return hashlib.sha256(line.encode()).hexdigest()


def record(event: str, *, store: Store | None = None, **fields: Any) -> AuditEntry:
    """Append `event` with `fields` (JSON values; `tenant` also files it under that tenant) to the deployment's
    log: `store`'s, else the configured database's (NOOR_DATABASE_URL)."""
    if not _EVENT.match(event):
        raise AuditError(f"event must be dotted lowercase words like 'key.created', got {event!r}")
    try:
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise AuditError(f"fields of {event!r} must be JSON values: {err}") from err
    tenant = fields.get("tenant")
    store = store or default_store()
    with store.session.begin() as s:
        # 1. the next number and the last hash, the head locked until this transaction ends (see the docstring)
        seq, prev_hash = s.execute(
            update(_head).where(_head.c.id == HEAD_ID).values(seq=_head.c.seq + 1).returning(_head.c.seq, _head.c.hash)
        ).one()
        # 2. the entry, chained to the one before, and the head moved onto it
        at = now_utc()
        digest = entry_hash(seq, at, event, tenant, text, prev_hash)
        entry = AuditEntry(seq=seq, at=at, event=event, tenant=tenant, fields=text, prev_hash=prev_hash, hash=digest)
        s.add(entry)
        s.flush()
        s.execute(update(_head).where(_head.c.id == HEAD_ID).values(hash=digest))
    return entry


@functools.cache
def _store_at(url: str) -> Store:
    return Store(url)


def default_store() -> Store:
    """The configured database's store (opened once per process), for callers that hold none."""
    from noor.config import settings

    return _store_at(settings().resolved_database_url)


def entries(
    store: Store, tenant: str | None = None, event: str | None = None, limit: int | None = None
) -> list[AuditEntry]:
    """The log's last `limit` entries (all without one), oldest first; only `tenant`'s, or only `event`'s, if given."""
    query = select(AuditEntry).order_by(AuditEntry.seq.desc())
    if tenant is not None:
        query = query.where(AuditEntry.tenant == tenant)
    if event is not None:
        query = query.where(AuditEntry.event == event)
    with store.session() as s:
        return list(reversed(s.scalars(query.limit(limit)).all()))


@dataclass(frozen=True)
class Verdict:
    entries: int  # how many were read
    head_seq: int
    head_hash: str
    problem: str | None = None  # the first entry that does not fit, and how; None: intact
    bad_seq: int | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


def verify(store: Store, expect: tuple[int, str] | None = None) -> Verdict:
    """Walk the chain from the first entry: each must have the next number, follow the one before (`prev_hash`)
    and hash to its `hash`; the head must name the last. `expect` = (seq, hash) of an entry seen before (a kept
    head): it must still be there with that hash."""
    with store.session() as s:
        head = s.execute(select(_head.c.seq, _head.c.hash).where(_head.c.id == HEAD_ID)).one_or_none()
        if head is None:
            return Verdict(0, 0, "", "the chain's head (table audit_head) is gone: the log was tampered with", 0)
        result = s.execute(select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=1000))
        try:
            count, last_seq, last_hash, trouble = _walk(result.scalars(), expect)
        finally:
            result.close()  # a walk that stops early leaves PostgreSQL's server-side cursor open otherwise
    if trouble is None and head.seq != last_seq:
        gone = f"{last_seq + 1}" if head.seq == last_seq + 1 else f"{last_seq + 1}..{head.seq}"
        trouble = last_seq + 1, f"entry {gone} is missing: the log ends at entry {last_seq}, its head at {head.seq}"
    elif trouble is None and head.hash != last_hash:
        trouble = last_seq, f"entry {last_seq} is not the one the head names: it was replaced"
    elif trouble is None and expect is not None and expect[0] > last_seq:
        trouble = expect[0], f"entry {expect[0]} is missing: the log ends at entry {last_seq}"
    if trouble is None:
        return Verdict(count, head.seq, head.hash)
    return Verdict(count, head.seq, head.hash, trouble[1], trouble[0])


def _walk(rows: Iterable[AuditEntry], expect: tuple[int, str] | None) -> tuple[int, int, str, tuple[int, str] | None]:
    """(entries read, the last one's number and hash, the first trouble as (number, what) or None)."""
    count, prev_seq, prev_hash = 0, 0, GENESIS
    for row in rows:
        trouble = _trouble(row, prev_seq, prev_hash, expect)
        if trouble is not None:
            return count, prev_seq, prev_hash, trouble
        count, prev_seq, prev_hash = count + 1, row.seq, row.hash
    return count, prev_seq, prev_hash, None


def _trouble(row: AuditEntry, prev_seq: int, prev_hash: str, expect: tuple[int, str] | None) -> tuple[int, str] | None:
    """What is wrong with `row` after the entry (prev_seq, prev_hash), as (the entry to name, what), or None."""
    what = f"entry {row.seq} ({row.event} at {row.at:%Y-%m-%d %H:%M:%S})"
    if row.seq != prev_seq + 1:
        missing = f"{prev_seq + 1}" if row.seq == prev_seq + 2 else f"{prev_seq + 1}..{row.seq - 1}"
        return prev_seq + 1, f"entry {missing} is missing: the log goes from entry {prev_seq} to {row.seq}"
    if entry_hash(row.seq, row.at, row.event, row.tenant, row.fields, row.prev_hash) != row.hash:
        return row.seq, f"{what} was edited or moved: its contents do not match its hash"
    if row.prev_hash != prev_hash:
        return row.seq, f"{what} does not follow entry {prev_seq}: one of them was replaced or moved"
    if expect is not None and row.seq == expect[0] and row.hash != expect[1]:
        return row.seq, f"{what} is not the entry kept as {expect[0]}:{expect[1][:16]}..."
    return None

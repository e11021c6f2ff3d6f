"""Idempotent creates: one create per (tenant, key); a repeat gets the first answer and creates nothing.

A key is claimed by inserting its row, unique on (tenant, key), before the create runs (state `pending`): of
any number of concurrent requests with one key exactly one inserts it and creates; the others find the row and
wait for its answer (`done`), which is kept for `TTL` and replayed byte for byte. Another body under a used key
is refused (`Mismatch`). A create that fails releases its claim (it created nothing), so a retry runs again.

Two kinds of key share the table: the client's `Idempotency-Key` (kept 24 h), and for the official SDKs, which
send no key but count their retries (`x-stainless-retry-count`), the request's own fingerprint under
`retry_key`: each first attempt records its answer there, and a retry of the same body within `RETRY_WINDOW`
gets it (HTTP glue: `noor.api.idempotency`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Index, Integer, LargeBinary, String, Table, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from noor.jobs.generation import Base, UTCDateTime, now_utc
from noor.jobs.store import Store

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
TTL = timedelta(hours=24)
# An SDK retries a create after its read timeout (the openai SDK's is 600 s, lumaai's 60 s) plus at most 8 s of
# backoff, twice by default: a retry of the same body later than this is taken for a new request.
RETRY_WINDOW = timedelta(minutes=15)
# A claim still pending after this belongs to a request that died between its claim and its answer (the longest
# create, a sync image, answers within 60 s): the next request with the key takes it over.
PENDING_TIMEOUT = timedelta(minutes=2)
PURGE_EVERY_S = 60.0
PENDING, DONE = "pending", "done"


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires", "expires_at"),)

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_CHARS), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the method, path and canonical body
    owner: Mapped[str] = mapped_column(String(32))  # the claiming request: only it answers or releases
    state: Mapped[str] = mapped_column(String(8))  # pending | done
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    media_type: Mapped[str | None] = mapped_column(String(128), default=None)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BadKey(ValueError):
    pass


def check_key(key: str) -> str:
    """The key as given, or BadKey naming the header and what is wrong with it."""
    if not key.strip():
        raise BadKey(f"{HEADER} must not be empty, got {key!r}")
    if len(key) > MAX_KEY_CHARS:
        raise BadKey(f"{HEADER} must be at most {MAX_KEY_CHARS} characters, got {len(key)}: {key[:20]!r}...")
    return key


def fingerprint(method: str, path: str, canonical_body: bytes) -> str:
    """What makes two requests the same request: method, path and body (in a canonical form: see the caller)."""
    digest = hashlib.sha256(f"{method.upper()} {path}\n".encode())
    digest.update(canonical_body)
    return digest.hexdigest()


def retry_key(request_fingerprint: str) -> str:
    """The key an SDK's attempts of one request share when the client gave none."""
    return f"sdk-retry:{request_fingerprint}"


@dataclass(frozen=True)
class Answer:
    """A create's first answer, as it is replayed."""

    status_code: int
    media_type: str | None
    body: bytes


@dataclass(frozen=True)
class Claimed:
    """This request holds the key: it creates, then `finish`es (an answer to keep) or `release`s (none)."""

    tenant: str
    key: str
    owner: str


@dataclass(frozen=True)
class Replay:
    answer: Answer


@dataclass(frozen=True)
class InProgress:
    """Another request holds the key and has not answered yet."""


@dataclass(frozen=True)
class Mismatch:
    """The key was used with another request."""


Outcome = Claimed | Replay | InProgress | Mismatch


def claim(store: Store, tenant: str, key: str, request_fingerprint: str, ttl: timedelta = TTL) -> Outcome:
    """Claim `key` for this request, or say what holds it. Safe under concurrency: the claim is one insert that
    at most one request wins (a unique (tenant, key)), or one conditional update of a lapsed row."""
    _purge_now_and_then(store)
    for _ in range(3):  # a row that vanishes or changes between the read and the write: read again
        now = now_utc()
        # 1. what is there (most repeats find an answered key: a read, no write)
        with store.session() as s:
            row = s.get(IdempotencyRecord, (tenant, key))
        if row is not None and not _lapsed(row, now):
            if row.fingerprint != request_fingerprint:
                return Mismatch()
            if row.state == PENDING:
                return InProgress()
            return Replay(Answer(row.status_code or 200, row.media_type, row.body or b""))
        # 2. take it: a new row, or this lapsed one (only as it was read: a concurrent taker wins once)
        owner = secrets.token_hex(16)
        values = _pending(tenant, key, request_fingerprint, owner, now, ttl)
        with store.session.begin() as s:
            if row is None:
                inserted = _insert(s).values(**values).on_conflict_do_nothing()
                taken = len(s.execute(inserted.returning(IdempotencyRecord.owner)).all())
            else:
                same = [*_is(tenant, key), IdempotencyRecord.owner == row.owner]
                result: Any = s.execute(update(IdempotencyRecord).where(*same).values(**values))
                taken = result.rowcount
        if taken == 1:
            return Claimed(tenant, key, owner)
    return InProgress()


def take(store: Store, tenant: str, key: str, request_fingerprint: str, ttl: timedelta) -> Claimed:
    """Claim `key` whatever holds it (an SDK's first attempt: a new request even when the body repeats one)."""
    _purge_now_and_then(store)
    owner = secrets.token_hex(16)
    values = _pending(tenant, key, request_fingerprint, owner, now_utc(), ttl)
    with store.session.begin() as s:
        upsert = _insert(s).values(**values)
        s.execute(upsert.on_conflict_do_update(index_elements=["tenant", "key"], set_=values))
    return Claimed(tenant, key, owner)


def finish(store: Store, claimed: Claimed, answer: Answer) -> bool:
    """Keep the answer of the create `claimed` ran; False if its claim was taken over meanwhile."""
    with store.session.begin() as s:
        kept: Any = s.execute(
            update(IdempotencyRecord)
            .where(*_owned(claimed))
            .values(state=DONE, status_code=answer.status_code, media_type=answer.media_type, body=answer.body)
        )
    return bool(kept.rowcount == 1)


def release(store: Store, claimed: Claimed) -> None:
    """Give the key up: the create failed and created nothing, so the next request with it runs."""
    with store.session.begin() as s:
        s.execute(delete(IdempotencyRecord).where(*_owned(claimed), IdempotencyRecord.state == PENDING))


def purge(store: Store) -> int:
    """Delete expired records; how many."""
    with store.session.begin() as s:
        purged: Any = s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now_utc()))
    return int(purged.rowcount)


_purged_at: weakref.WeakKeyDictionary[Store, float] = weakref.WeakKeyDictionary()


def _purge_now_and_then(store: Store) -> None:
    """Expired rows go at most once a minute per process and store (a lapsed row is also taken over in place)."""
    if time.monotonic() - _purged_at.get(store, -PURGE_EVERY_S) >= PURGE_EVERY_S:
        _purged_at[store] = time.monotonic()
        purge(store)


def _lapsed(row: IdempotencyRecord, now: datetime) -> bool:
    return row.expires_at <= now or (row.state == PENDING and row.created_at <= now - PENDING_TIMEOUT)


def _pending(
    tenant: str, key: str, request_fingerprint: str, owner: str, now: datetime, ttl: timedelta
) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "key": key,
        "fingerprint": request_fingerprint,
        "owner": owner,
        "state": PENDING,
        "status_code": None,
        "media_type": None,
        "body": None,
        "created_at": now,
        "expires_at": now + ttl,
    }


def _is(tenant: str, key: str) -> list[ColumnElement[bool]]:
    return [IdempotencyRecord.tenant == tenant, IdempotencyRecord.key == key]


def _owned(claimed: Claimed) -> list[ColumnElement[bool]]:
    return [*_is(claimed.tenant, claimed.key), IdempotencyRecord.owner == claimed.owner]


def _insert(s: Session) -> postgresql.Insert | sqlite.Insert:
    """INSERT with ON CONFLICT, in the session's dialect (both spell it the same way)."""
    dialect = s.get_bind().dialect.name
    table = cast(Table, IdempotencyRecord.__table__)
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)

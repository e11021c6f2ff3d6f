"""Tenants and their API keys. A key is shown once; only its SHA-256 is stored.

Keys are 256-bit random tokens, so a plain SHA-256 (no salt, no slow hash) is the usual and safe way
to store them: it is a lookup index, not a password.

A tenant is metered (each generation's price comes out of its credits, 402 when they run short) or
unmetered (never charged: the local user of a single-user `noor serve`). Money is integer micro-cents
(noor.jobs.money); the functions here take and give cents, as the API and the CLI do.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, case, select, update
from sqlalchemy.orm import Mapped, mapped_column

from noor.jobs import money
from noor.jobs.generation import Base, UTCDateTime, now_utc
from noor.jobs.store import Store

KEY_PREFIX = "noor_"
PREFIX_CHARS = 12  # the start of a key kept in the clear, to tell keys apart in listings
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Tenant(Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    regions: Mapped[list[str] | None] = mapped_column(JSON, default=None)  # None: any region
    credits_microcents: Mapped[int] = mapped_column(BigInteger, default=0)
    metered: Mapped[bool] = mapped_column(Boolean, default=True)  # False: never charged, credits unused
    max_concurrent: Mapped[int] = mapped_column(Integer, default=10)  # queued + dreaming at once
    max_per_minute: Mapped[int] = mapped_column(Integer, default=20)  # creates per rolling minute
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    @property
    def credits_cents(self) -> float:
        return money.cents(self.credits_microcents or 0)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant"),)

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.name"))
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell keys apart in listings
    role: Mapped[str] = mapped_column(String(16), default="tenant", server_default="tenant")  # or "worker"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class TenantError(ValueError):
    pass


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _credits(cents: float, field: str = "credits") -> int:
    try:
        amount = money.microcents(cents, field)
    except money.MoneyError as err:
        raise TenantError(str(err)) from err
    if amount < 0:
        raise TenantError(f"{field} must not be negative, got {cents!r}")
    return amount


def _check_limits(max_concurrent: int | None, max_per_minute: int | None) -> None:
    for field, value in (("max_concurrent", max_concurrent), ("max_per_minute", max_per_minute)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise TenantError(f"{field} must be a whole number >= 0, got {value!r}")


def create_tenant(
    store: Store,
    name: str,
    regions: list[str] | None = None,
    credits_cents: float = 0.0,
    max_concurrent: int = 10,
    max_per_minute: int = 20,
    metered: bool = True,
) -> Tenant:
    """A new tenant: metered (it starts with `credits_cents`) or unmetered (never charged; no credits)."""
    if not _NAME.match(name):
        raise TenantError(f"tenant name must be lowercase letters, digits, - or _, got {name!r}")
    credits = _credits(credits_cents)
    if not metered and credits:
        raise TenantError(f"an unmetered tenant is never charged: give no credits, got {credits_cents!r}")
    _check_limits(max_concurrent, max_per_minute)
    with store.session.begin() as s:
        if s.get(Tenant, name) is not None:
            raise TenantError(f"tenant {name!r} exists already")
        tenant = Tenant(
            name=name,
            regions=regions,
            credits_microcents=credits,
            metered=metered,
            max_concurrent=max_concurrent,
            max_per_minute=max_per_minute,
        )
        s.add(tenant)
    return tenant


def get_tenant(store: Store, name: str) -> Tenant:
    with store.session() as s:
        tenant = s.get(Tenant, name)
    if tenant is None:
        raise TenantError(f"no tenant {name!r}")
    return tenant


def set_tenant(
    store: Store,
    name: str,
    *,
    credits_cents: float | None = None,
    add_credits_cents: float | None = None,
    metered: bool | None = None,
    max_concurrent: int | None = None,
    max_per_minute: int | None = None,
) -> Tenant:
    """Change a tenant in one UPDATE: set its balance, or add to it (a top-up; negative takes away, never below
    zero), make it metered or unmetered, change its limits. Setting credits makes it metered."""
    values: dict[str, Any] = {}
    if credits_cents is not None and add_credits_cents is not None:
        raise TenantError("give credits or add_credits, not both")
    if credits_cents is not None:
        values["credits_microcents"] = _credits(credits_cents)
        if metered is False:
            raise TenantError("an unmetered tenant is never charged: do not set its credits")
        values["metered"] = True
    if add_credits_cents is not None:
        try:
            delta = money.microcents(add_credits_cents, "add_credits")
        except money.MoneyError as err:
            raise TenantError(str(err)) from err
        topped_up = Tenant.credits_microcents + delta
        values["credits_microcents"] = case((topped_up < 0, 0), else_=topped_up)
    if metered is not None:
        values["metered"] = metered
    _check_limits(max_concurrent, max_per_minute)
    if max_concurrent is not None:
        values["max_concurrent"] = max_concurrent
    if max_per_minute is not None:
        values["max_per_minute"] = max_per_minute
    if not values:
        raise TenantError("nothing to change: give credits, add_credits, metered or a limit")
    with store.session.begin() as s:
        changed: Any = s.execute(update(Tenant).where(Tenant.name == name).values(**values))
        if changed.rowcount != 1:
            raise TenantError(f"no tenant {name!r}")
    return get_tenant(store, name)


ROLES = ("tenant", "worker")
WORKERS_TENANT = "workers"  # worker keys hang off this tenant, which owns no generations


def create_key(store: Store, tenant: str, role: str = "tenant") -> str:
    """A new key for `tenant`; the only time the key itself is seen. A "worker" key may claim and run jobs
    (`noor worker`) and nothing else; it cannot call the tenant API."""
    if role not in ROLES:
        raise TenantError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.session.begin() as s:
        if s.get(Tenant, tenant) is None:
            raise TenantError(f"no tenant {tenant!r}")
        s.add(ApiKey(key_hash=hash_key(key), tenant=tenant, prefix=key[:PREFIX_CHARS], role=role))
    return key


def create_worker_key(store: Store) -> str:
    if all(t.name != WORKERS_TENANT for t in list_tenants(store)):
        create_tenant(store, WORKERS_TENANT, max_concurrent=0, max_per_minute=0)
    return create_key(store, WORKERS_TENANT, role="worker")


def authenticate(store: Store, key: str, role: str = "tenant") -> Tenant | None:
    """The tenant a live key of `role` belongs to, else None."""
    with store.session() as s:
        row = s.scalar(
            select(Tenant)
            .join(ApiKey, ApiKey.tenant == Tenant.name)
            .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None), ApiKey.role == role)
        )
    return row


def revoke_key(store: Store, key: str) -> bool:
    with store.session.begin() as s:
        result: Any = s.execute(
            update(ApiKey)
            .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
            .values(revoked_at=now_utc())
        )
    return bool(result.rowcount == 1)


def revoke_prefix(store: Store, prefix: str) -> ApiKey:
    """Revoke the one live key that starts with `prefix` (its first 12 characters, as `list_keys` shows them)."""
    if not prefix.startswith(KEY_PREFIX) or len(prefix) < PREFIX_CHARS:
        raise TenantError(f"key must be a key or its {PREFIX_CHARS}-character prefix (noor keys list), got {prefix!r}")
    with store.session.begin() as s:
        live = ApiKey.revoked_at.is_(None)
        matches = list(s.scalars(select(ApiKey).where(live, ApiKey.key_hash == hash_key(prefix))).all())
        if not matches and len(prefix) == PREFIX_CHARS:
            matches = list(s.scalars(select(ApiKey).where(live, ApiKey.prefix == prefix)).all())
        if not matches:
            raise TenantError(f"no live key {prefix!r}")
        if len(matches) > 1:
            raise TenantError(f"{len(matches)} live keys start with {prefix!r}: give the whole key")
        key = matches[0]
        key.revoked_at = now_utc()
    return key


def list_keys(store: Store, tenant: str | None = None) -> list[ApiKey]:
    """Every key (its prefix, tenant, role, and when it was created and revoked), oldest first."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.prefix)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    with store.session() as s:
        return list(s.scalars(query).all())


def charge(store: Store, tenant: str, cents: float) -> float:
    """Take `cents` from the tenant's credits (refund with a negative amount); returns the new balance in cents."""
    try:
        amount = money.microcents(cents, "cents")
    except money.MoneyError as err:
        raise TenantError(str(err)) from err
    with store.session.begin() as s:
        balance = s.scalar(
            update(Tenant)
            .where(Tenant.name == tenant)
            .values(credits_microcents=Tenant.credits_microcents - amount)
            .returning(Tenant.credits_microcents)
        )
    if balance is None:
        raise TenantError(f"no tenant {tenant!r}")
    return money.cents(balance)


def balance(store: Store, tenant: str) -> float:
    """The tenant's credits in cents (an unmetered tenant's are never used: see `get_tenant(...).metered`)."""
    with store.session() as s:
        value = s.scalar(select(Tenant.credits_microcents).where(Tenant.name == tenant))
    if value is None:
        raise TenantError(f"no tenant {tenant!r}")
    return money.cents(value)


def list_tenants(store: Store) -> list[Tenant]:
    with store.session() as s:
        return list(s.scalars(select(Tenant).order_by(Tenant.name)).all())

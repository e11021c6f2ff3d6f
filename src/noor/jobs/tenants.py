"""Tenants and their API keys. A key is shown once; only its SHA-256 is stored.

Keys are 256-bit random tokens, so a plain SHA-256 (no salt, no slow hash) is the usual and safe way
to store them: it is a lookup index, not a password.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, select, update
from sqlalchemy.orm import Mapped, mapped_column

from noor.jobs.generation import Base, UTCDateTime, now_utc
from noor.jobs.store import Store

KEY_PREFIX = "noor_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Tenant(Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    regions: Mapped[list[str] | None] = mapped_column(JSON, default=None)  # None: any region
    credits_cents: Mapped[float] = mapped_column(Float, default=0.0)
    max_concurrent: Mapped[int] = mapped_column(Integer, default=10)  # queued + dreaming at once
    max_per_minute: Mapped[int] = mapped_column(Integer, default=20)  # creates per rolling minute
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


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


def create_tenant(
    store: Store,
    name: str,
    regions: list[str] | None = None,
    credits_cents: float = 0.0,
    max_concurrent: int = 10,
    max_per_minute: int = 20,
) -> Tenant:
    if not _NAME.match(name):
        raise TenantError(f"tenant name must be lowercase letters, digits, - or _, got {name!r}")
    if credits_cents < 0:
        raise TenantError(f"credits must not be negative, got {credits_cents!r}")
    with store.session.begin() as s:
        if s.get(Tenant, name) is not None:
            raise TenantError(f"tenant {name!r} exists already")
        tenant = Tenant(
            name=name,
            regions=regions,
            credits_cents=credits_cents,
            max_concurrent=max_concurrent,
            max_per_minute=max_per_minute,
        )
        s.add(tenant)
    return tenant


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
        s.add(ApiKey(key_hash=hash_key(key), tenant=tenant, prefix=key[:12], role=role))
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


def charge(store: Store, tenant: str, cents: float) -> float:
    """Take `cents` from the tenant's credits (refund with a negative amount); returns the new balance."""
    with store.session.begin() as s:
        s.execute(update(Tenant).where(Tenant.name == tenant).values(credits_cents=Tenant.credits_cents - cents))
        balance = s.scalar(select(Tenant.credits_cents).where(Tenant.name == tenant))
    if balance is None:
        raise TenantError(f"no tenant {tenant!r}")
    return float(balance)


def balance(store: Store, tenant: str) -> float:
    with store.session() as s:
        value = s.scalar(select(Tenant.credits_cents).where(Tenant.name == tenant))
    if value is None:
        raise TenantError(f"no tenant {tenant!r}")
    return float(value)


def list_tenants(store: Store) -> list[Tenant]:
    with store.session() as s:
        return list(s.scalars(select(Tenant).order_by(Tenant.name)).all())

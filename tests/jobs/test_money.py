"""Money and limits under concurrency: refunds happen once, limits hold, balances stay exact (#25 8, 9; #26 6)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from noor.jobs import money, tenants
from noor.jobs.generation import now_utc
from noor.jobs.limits import InsufficientCredits, LimitExceeded
from noor.jobs.store import NotFound, Store

PRICE = 2336  # micro-cents: 0.002336 cents, a noor-tiny job on a CPU


def _create(store: Store, tenant: str = "acme", price: int = PRICE) -> str:
    return store.create(tenant=tenant, model="tiny", request={}, task={}, price_microcents=price).id


def _race(n: int, fn: Callable[[], Any]) -> list[Any]:
    """`fn` run by `n` threads released together; each result or the exception it raised."""
    start = threading.Barrier(n)

    def one() -> Any:
        start.wait()
        try:
            return fn()
        except Exception as err:
            return err

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: one(), range(n)))


def test_racing_deletes_refund_each_job_exactly_once(store: Store) -> None:
    # the probe: 20 queued jobs x 10 concurrent DELETEs refunded 102 times instead of 20
    tenants.create_tenant(store, "acme", credits_cents=1, max_concurrent=100, max_per_minute=100)
    ids = [_create(store) for _ in range(20)]
    assert tenants.balance(store, "acme") == money.cents(1_000_000 - 20 * PRICE)
    for gid in ids:
        results = _race(10, lambda gid=gid: store.delete("acme", gid))
        won = [r for r in results if not isinstance(r, Exception)]
        assert len(won) == 1 and won[0].state == "failed" and won[0].failure_reason == "Deleted"
        assert all(isinstance(r, NotFound) for r in results if r not in won)
    assert tenants.get_tenant(store, "acme").credits_microcents == 1_000_000  # every price back, once


def test_a_deleted_running_job_is_refunded_once_by_the_reaper_not_by_the_delete(store: Store) -> None:
    tenants.create_tenant(store, "acme", credits_cents=1)
    gid = _create(store)
    now = now_utc()
    assert store.claim("w1", 30, now=now) is not None
    assert store.delete("acme", gid).state == "dreaming"  # a running job: stops at its next heartbeat, no refund
    assert tenants.get_tenant(store, "acme").credits_microcents == 1_000_000 - PRICE
    with pytest.raises(NotFound):
        store.delete("acme", gid)
    assert store.requeue_expired(now + timedelta(seconds=60)) == 1  # its lease runs out: failed, refunded
    assert store.requeue_expired(now + timedelta(seconds=120)) == 0
    assert tenants.get_tenant(store, "acme").credits_microcents == 1_000_000


def test_racing_creates_never_pass_the_concurrency_limit(store: Store) -> None:
    # the probe: 100 concurrent creates with a limit of 5 concurrent left 44 active
    tenants.create_tenant(store, "acme", credits_cents=1, max_concurrent=5, max_per_minute=1000)
    results = _race(40, lambda: _create(store))
    created = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, LimitExceeded)]
    assert len(created) == 5 and len(refused) == 35 and all(r.limit == "max_concurrent" for r in refused)
    assert store.usage("acme", now_utc() - timedelta(minutes=1))[0] == 5
    # only the admitted ones paid
    assert tenants.get_tenant(store, "acme").credits_microcents == 1_000_000 - 5 * PRICE


def test_racing_creates_never_pass_the_rate_limit(store: Store) -> None:
    # the probe: with 10 per minute, 48 were created
    tenants.create_tenant(store, "acme", credits_cents=1, max_concurrent=1000, max_per_minute=10)
    results = _race(40, lambda: _create(store))
    refused = [r for r in results if isinstance(r, LimitExceeded)]
    assert sum(isinstance(r, str) for r in results) == 10 and len(refused) == 30
    assert all(r.limit == "max_per_minute" and 1 <= r.retry_after_s <= 60 for r in refused)


def test_racing_creates_never_overdraw_the_credits(store: Store) -> None:
    tenants.create_tenant(store, "acme", credits_cents=money.cents(7 * PRICE), max_concurrent=100, max_per_minute=100)
    results = _race(20, lambda: _create(store))
    assert sum(isinstance(r, str) for r in results) == 7
    assert sum(isinstance(r, InsufficientCredits) for r in results) == 13
    assert tenants.get_tenant(store, "acme").credits_microcents == 0


def test_a_refused_create_stores_nothing_and_charges_nothing(store: Store) -> None:
    tenants.create_tenant(store, "acme", credits_cents=1, max_concurrent=1)
    _create(store)
    with pytest.raises(LimitExceeded, match="Too many concurrent generations: 1 of 1"):
        _create(store)
    with pytest.raises(InsufficientCredits, match=r"costs \$0.01000001, the balance is \$0.00997664"):
        _create(store, price=1_000_001)
    assert store.list("acme")[1] == 1 and tenants.balance(store, "acme") == 0.997664


def test_balances_stay_exact_over_many_charges_and_refunds(store: Store) -> None:
    # floats drifted: the balance read 4999.982268000002
    tenants.create_tenant(store, "acme", credits_cents=5000, max_concurrent=1000, max_per_minute=1000)
    ids = [_create(store) for _ in range(30)]
    for gid in ids[:10]:
        store.delete("acme", gid)
    balance = tenants.balance(store, "acme")
    assert balance == 4999.95328 and repr(balance) == "4999.95328"
    assert money.usd(tenants.get_tenant(store, "acme").credits_microcents) == "$49.9995328"
    assert store.get("acme", ids[-1]).price_cents == 0.002336


def test_an_unmetered_tenant_is_never_charged_nor_refunded(store: Store) -> None:
    tenants.create_tenant(store, "local", metered=False, max_concurrent=5)
    gid = _create(store, tenant="local", price=10**12)  # a price far beyond any balance: still admitted
    g = store.get("local", gid)
    assert (g.price_microcents, g.paid_microcents) == (10**12, 0)
    store.delete("local", gid)
    assert tenants.get_tenant(store, "local").credits_microcents == 0  # nothing was taken, nothing given back
    with pytest.raises(tenants.TenantError, match="unmetered tenant is never charged"):
        tenants.create_tenant(store, "other", metered=False, credits_cents=5)


def test_a_refund_gives_back_what_was_paid_even_after_the_tenant_changes(store: Store) -> None:
    tenants.create_tenant(store, "acme", credits_cents=1)
    paid = _create(store)
    tenants.set_tenant(store, "acme", metered=False)
    free = _create(store)
    tenants.set_tenant(store, "acme", metered=True)
    store.delete("acme", free)  # created unmetered: nothing to give back
    assert tenants.get_tenant(store, "acme").credits_microcents == 1_000_000 - PRICE
    store.delete("acme", paid)
    assert tenants.get_tenant(store, "acme").credits_microcents == 1_000_000


def test_tenants_are_topped_up_set_and_limited(store: Store) -> None:
    tenants.create_tenant(store, "acme", credits_cents=100)
    assert tenants.set_tenant(store, "acme", add_credits_cents=0.5).credits_microcents == 100_500_000
    assert tenants.set_tenant(store, "acme", add_credits_cents=-1000).credits_microcents == 0  # never below zero
    t = tenants.set_tenant(store, "acme", credits_cents=25, max_concurrent=3, max_per_minute=7)
    assert (t.credits_cents, t.metered, t.max_concurrent, t.max_per_minute) == (25.0, True, 3, 7)
    for bad, match in [
        ({"credits_cents": -1}, "credits must not be negative"),
        ({"credits_cents": float("nan")}, "credits must be a finite number"),
        ({"max_concurrent": -2}, "max_concurrent must be a whole number"),
        ({}, "nothing to change"),
        ({"credits_cents": 1, "add_credits_cents": 1}, "not both"),
    ]:
        with pytest.raises(tenants.TenantError, match=match):
            tenants.set_tenant(store, "acme", **bad)
    with pytest.raises(tenants.TenantError, match="no tenant 'nobody'"):
        tenants.set_tenant(store, "nobody", credits_cents=1)


def test_keys_are_listed_and_revoked_by_their_prefix(store: Store) -> None:
    tenants.create_tenant(store, "acme")
    first, second = tenants.create_key(store, "acme"), tenants.create_key(store, "acme")
    listed = tenants.list_keys(store, "acme")
    assert [k.prefix for k in listed] == [first[:12], second[:12]] and all(k.revoked_at is None for k in listed)
    assert tenants.revoke_prefix(store, first[:12]).tenant == "acme"
    assert tenants.authenticate(store, first) is None and tenants.authenticate(store, second) is not None
    with pytest.raises(tenants.TenantError, match="no live key"):
        tenants.revoke_prefix(store, first[:12])
    assert tenants.revoke_prefix(store, second).revoked_at is not None  # the whole key works too
    with pytest.raises(tenants.TenantError, match="prefix"):
        tenants.revoke_prefix(store, "noor_")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_migration_turns_float_cents_into_exact_microcents(backend: str, tmp_path: Path) -> None:
    """A database at 0007 with float money upgrades to integers; the old balance and prices survive."""
    from alembic import command
    from alembic.config import Config

    from noor.jobs.db import MIGRATIONS, connect

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        cleanup: Callable[[], None] = lambda: None  # noqa: E731
    else:
        from tests.jobs.conftest import POSTGRES

        schema = f"m_{now_utc().strftime('%H%M%S%f')}"
        admin = create_engine(POSTGRES)
        with admin.begin() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{POSTGRES}?options=-csearch_path%3D{schema}"

        def cleanup() -> None:
            with admin.begin() as c:
                c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()

    db = connect(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with db.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0007")  # the revision before 0008
            now = now_utc()
            connection.execute(
                text("INSERT INTO tenants VALUES ('acme', NULL, 4999.982268000002, 10, 20, :now)"), {"now": now}
            )
            connection.execute(
                text(
                    "INSERT INTO generations (id, tenant, generation_type, state, model, request, task, priority, "
                    "price_cents, progress, attempts, max_attempts, created_at, updated_at) VALUES "
                    "('g1', 'acme', 'video', 'queued', 'tiny', '{}', '{}', 0, 0.002336, 0, 0, 3, :now, :now)"
                ),
                {"now": now},
            )
        db.dispose()
        store = Store(url)
        tenant = tenants.get_tenant(store, "acme")
        assert (tenant.credits_microcents, tenant.metered) == (4_999_982_268, True)
        g = store.get("acme", "g1")
        assert (g.price_microcents, g.paid_microcents) == (2336, 2336)
        store.delete("acme", "g1")  # it was paid: the refund is exact
        assert tenants.get_tenant(store, "acme").credits_microcents == 4_999_984_604
        store.close()
    finally:
        cleanup()

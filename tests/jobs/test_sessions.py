"""The world-session record: its state machine, billing once per second served, recovery (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from noor.jobs import sessions, tenants
from noor.jobs.sessions import EndReason
from noor.jobs.store import Store


def open_session(store: Store, tenant: str = "acme") -> sessions.WorldSession:
    row, token = sessions.create(
        store, tenant=tenant, model="world-tiny", prompt="a desert", seed=1, fps=10, max_seconds=60
    )
    assert len(token) >= 40 and row.token_hash == sessions.hash_token(token) and token not in row.token_hash
    return row


def test_the_state_machine_moves_once(store: Store) -> None:
    tenants.create_tenant(store, "acme", credits_cents=1.0)
    row = open_session(store)
    assert sessions.get(store, "acme", row.id).state == "queued"
    with pytest.raises(sessions.SessionNotFound):
        sessions.get(store, "other", row.id)  # another tenant's is not found
    assert sessions.activate(store, row.id, "host-1")
    assert not sessions.activate(store, row.id, "host-2")  # once
    # billing: 1.5 s at 1000 micro-cents a second, then 2 s; a stale record (fewer seconds) changes nothing
    assert sessions.record(store, row.id, frames=15, seconds=1.5, price_per_s_microcents=1000).cost_microcents == 1500
    assert sessions.record(store, row.id, frames=20, seconds=2.0, price_per_s_microcents=1000).cost_microcents == 2000
    assert not sessions.record(store, row.id, frames=12, seconds=1.2, price_per_s_microcents=1000).recorded
    assert tenants.balance(store, "acme") == pytest.approx(1.0 - 0.002)  # charged exactly once per second served
    assert sessions.end(store, row.id, EndReason.CLIENT)
    assert not sessions.end(store, row.id, EndReason.IDLE)  # once: the first reason stands
    got = sessions.get(store, "acme", row.id)
    assert (got.state, got.end_reason, got.frames, got.seconds, got.cost_cents) == ("ended", "client", 20, 2.0, 0.002)
    assert not sessions.record(store, row.id, frames=30, seconds=3.0, price_per_s_microcents=1000).recorded
    # recovery: a live session left by a dead server ends, billed for nothing more
    other = open_session(store)
    sessions.activate(store, other.id, "host-1")
    sessions.record(store, other.id, frames=5, seconds=0.5, price_per_s_microcents=1000)
    assert sessions.recover(store) == [other.id]
    got = sessions.get(store, "acme", other.id)
    assert (got.state, got.end_reason, got.cost_microcents) == ("ended", "server_restart", 500)
    assert tenants.balance(store, "acme") == pytest.approx(1.0 - 0.0025)
    assert [s.id for s in sessions.list_for(store, "acme")] == [other.id, row.id]  # newest first


def test_credits_run_out(store: Store) -> None:
    tenants.create_tenant(store, "acme", credits_cents=0.0015)  # 1500 micro-cents
    row = open_session(store)
    sessions.activate(store, row.id, "h")
    first = sessions.record(store, row.id, frames=10, seconds=1.0, price_per_s_microcents=1000)
    assert first.recorded and not first.out_of_credits
    second = sessions.record(store, row.id, frames=20, seconds=2.0, price_per_s_microcents=1000)
    assert second.recorded and second.out_of_credits and second.cost_microcents == 1500  # what was left, no more
    assert tenants.balance(store, "acme") == 0
    unmetered = "free"
    tenants.create_tenant(store, unmetered, metered=False)
    free = open_session(store, unmetered)
    sessions.activate(store, free.id, "h")
    billed = sessions.record(store, free.id, frames=10, seconds=3.0, price_per_s_microcents=1000)
    assert billed.cost_microcents == 3000 and not billed.out_of_credits  # what it cost, never charged
    assert sessions.get(store, unmetered, free.id).paid_microcents == 0


def test_tokens(store: Store) -> None:
    tenants.create_tenant(store, "acme", metered=False)
    row, token = sessions.create(store, tenant="acme", model="m", prompt="p", seed=0, fps=5, max_seconds=5)
    _, other_token = sessions.create(store, tenant="acme", model="m", prompt="p", seed=0, fps=5, max_seconds=5)
    assert sessions.check_token(store, row.id, token) is not None
    assert sessions.check_token(store, row.id, other_token) is None  # another session's
    assert sessions.check_token(store, row.id, token + "x") is None
    assert sessions.check_token(store, "nope", token) is None
    assert sessions.check_token(store, row.id, token, now=row.token_expires_at + timedelta(seconds=1)) is None
    assert row.token_expires_at - row.created_at == sessions.TOKEN_TTL

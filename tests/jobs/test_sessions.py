"""The world-session record: its state machine, billing once per second served, recovery (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from noor.jobs import sessions, tenants
from noor.jobs.limits import LimitExceeded
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


def _job(store: Store, tenant: str = "acme") -> str:
    return store.create(tenant=tenant, model="tiny", request={}, task={}).id


def test_live_sessions_count_against_max_concurrent_as_jobs_do(store: Store) -> None:
    """Decided (docs/serve.md, "Limits"): a queued or active session holds one place of max_concurrent, as a
    queued or running job does; a session is refused as a job is, and a job as a session is."""
    tenants.create_tenant(store, "acme", metered=False, max_concurrent=2)
    job = _job(store)
    session = open_session(store)  # one job and one session: 2 of 2
    with pytest.raises(LimitExceeded, match=r"^Too many concurrent generations: 2 of 2; wait for one to finish$"):
        open_session(store)
    with pytest.raises(LimitExceeded, match=r"^Too many concurrent generations: 2 of 2;") as refused:
        _job(store)
    assert (refused.value.limit, refused.value.retry_after_s) == ("max_concurrent", 5)
    assert store.usage("acme", sessions.now_utc())[0] == 2  # what the API's check_limits reads
    assert [s.id for s in sessions.list_for(store, "acme")] == [session.id]  # the refused one stored nothing
    # an ended session frees its place, for a job or a session alike
    assert sessions.end(store, session.id, EndReason.CLIENT)
    second = _job(store)
    with pytest.raises(LimitExceeded):
        open_session(store)
    store.delete("acme", second)
    assert open_session(store).state == "queued"
    assert store.get("acme", job).state == "queued"
    # a tenant without a row (an internal caller) has no limit, as for jobs
    for _ in range(3):
        open_session(store, "internal")


def test_a_job_is_not_claimed_while_its_tenants_sessions_fill_its_limit(store: Store) -> None:
    tenants.create_tenant(store, "acme", metered=False, max_concurrent=2)
    tenants.create_tenant(store, "other", metered=False)
    first = _job(store)
    session = open_session(store)
    sessions.activate(store, session.id, "host-1")
    # a running job and a session fill 2 of 2; the queued job was counted when it came, so it runs
    claimed = store.claim("w1", 30)
    assert claimed is not None and claimed.id == first
    store.complete(first, "w1", {})
    # acme's limit lowered below what its sessions hold: its queued job waits; another tenant's runs past it
    acme_job = _job(store)
    other_job = _job(store, "other")
    tenants.set_tenant(store, "acme", max_concurrent=1)
    claimed = store.claim("w1", 30)
    assert claimed is not None and claimed.id == other_job  # not head-of-line blocked by acme's
    assert store.claim("w2", 30) is None  # acme's session fills its 1
    sessions.end(store, session.id, EndReason.CLIENT)
    claimed = store.claim("w2", 30)
    assert claimed is not None and claimed.id == acme_job

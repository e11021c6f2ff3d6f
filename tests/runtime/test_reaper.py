"""The server's reaper and its supervised local workers: a dead worker's job goes back to the queue after its
lease with no other claim, a new worker process takes its place, and the job completes (or fails, announced)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import select

from noor.jobs.generation import now_utc
from noor.jobs.outbox import WebhookDelivery
from noor.jobs.store import Store
from noor.runtime.local import LocalWorkers, Restarts
from noor.runtime.reaper import Reaper
from tests.runtime.test_durability import TASK, _wait_for


def test_the_reaper_requeues_an_expired_lease_with_no_claim(store: Store) -> None:
    gid = store.create(tenant="acme", model="tiny", request={}, task=TASK).id
    assert store.claim("gone", lease_s=0.3) is not None  # a worker that then dies: no heartbeat, no claim
    reaper = Reaper(store, every_s=0.05).start()
    try:
        assert store.get("acme", gid).state == "dreaming"
        _wait_for(lambda: store.get("acme", gid).state == "queued", timeout_s=10)
    finally:
        reaper.close()
    job = store.get("acme", gid)
    assert reaper.reaped == 1 and job.attempts == 1 and job.lease_owner is None and job.progress == 0.0


def test_out_of_attempts_the_reaper_fails_the_job_with_a_reason_and_a_webhook(store: Store) -> None:
    hook = "https://example.com/hook"
    gid = store.create(tenant="acme", model="tiny", request={}, task=TASK, max_attempts=1, callback_url=hook).id
    assert store.claim("gone", lease_s=0.2) is not None
    reaper = Reaper(store, every_s=0.05).start()
    try:
        _wait_for(lambda: store.get("acme", gid).is_done, timeout_s=10)
    finally:
        reaper.close()
    job = store.get("acme", gid)
    assert job.state == "failed" and job.failure_reason == "Job failed: its worker was lost on every attempt"
    with store.session() as s:
        rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.generation_id == gid)).all()
    assert [(r.url, r.payload["state"]) for r in rows] == [(hook, "dreaming"), (hook, "failed")]
    assert rows[-1].payload["failure_reason"] == job.failure_reason


class _Flaky:
    """A store that cannot be reached on the first pass."""

    def __init__(self) -> None:
        self.calls = 0

    def requeue_expired(self) -> int:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("database is down")
        return 2


def test_the_reaper_logs_an_unreachable_store_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    flaky = _Flaky()
    reaper = Reaper(flaky)
    assert reaper.reap() == 0 and reaper.reap() == 2 and reaper.reaped == 2
    assert "reaper: cannot requeue expired leases" in caplog.text and "database is down" in caplog.text
    with pytest.raises(ValueError, match="every_s must be positive, got 0"):
        Reaper(flaky, every_s=0)


def test_a_worker_that_keeps_dying_at_start_is_restarted_with_backoff_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="noor.runtime")
    restarts = Restarts(backoff_s=0.05, max_backoff_s=0.1, max_quick_deaths=2)
    pool = LocalWorkers(1, "nosuchdb://nowhere", "/nonexistent", threads=1, restarts=restarts)  # dies on start
    pool.start()
    try:
        _wait_for(lambda: pool.slots[0].given_up, timeout_s=60)
    finally:
        pool.close()
    slot = pool.slots[0]
    assert slot.restarts == 1 and not slot.process.is_alive()
    died = [r.getMessage() for r in caplog.records if "died (exit code 1)" in r.getMessage()]
    assert len(died) == 2 and "restarting it in" in died[0]
    assert "not restarting it again" in died[1] and "2 deaths in a row" in died[1]
    assert "no local workers are left" in caplog.text
    with pytest.raises(ValueError, match="max_quick_deaths must be at least 1, got 0"):
        Restarts(max_quick_deaths=0)


@pytest.mark.slow
def test_a_sigkilled_local_worker_is_replaced_and_its_job_requeued_by_the_reaper(
    tmp_path: Path, toy_weights: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`noor serve`'s set-up: supervised local workers and the reaper. The only worker is SIGKILLed mid-job; no
    other worker is alive until its lease has run out, so only the reaper can put the job back in the queue."""
    caplog.set_level(logging.WARNING, logger="noor.runtime")
    monkeypatch.setenv("NOOR_TINY_WEIGHTS", str(toy_weights))
    url, assets_url = f"sqlite:///{tmp_path / 'noor.db'}", str(tmp_path / "assets")
    store = Store(url)
    hook = "https://example.com/hook"
    gid = store.create(tenant="acme", model="tiny", request={}, task=TASK | {"steps": 40}, callback_url=hook).id
    lease_s = 1.5
    # the restart waits longer than the lease: the new worker cannot be the one that requeues the job
    pool = LocalWorkers(1, url, assets_url, threads=1, lease_s=lease_s, restarts=Restarts(backoff_s=3 * lease_s))
    reaper = Reaper(store, every_s=0.2)
    pool.start()
    reaper.start()
    try:
        _wait_for(lambda: store.get("acme", gid).state == "dreaming" and store.get("acme", gid).progress > 0)
        first_pid = pool.processes[0].pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)  # mid-generation, no chance to clean up
        killed_at = now_utc()
        _wait_for(lambda: store.get("acme", gid).state == "queued", timeout_s=lease_s + 10)
        assert (now_utc() - killed_at).total_seconds() < 3 * lease_s  # well before the new worker starts
        assert reaper.reaped == 1 and pool.slots[0].restart_at is not None  # no worker alive: the reaper did it
        _wait_for(lambda: pool.processes[0].pid not in (None, first_pid) and pool.processes[0].is_alive())
        _wait_for(lambda: store.get("acme", gid).is_done, timeout_s=120)
    finally:
        reaper.close()
        pool.close()
    job = store.get("acme", gid)
    assert job.state == "completed" and job.attempts == 2 and pool.slots[0].restarts == 1
    assert "local worker local-0" in caplog.text and "died (killed by SIGKILL)" in caplog.text
    assert f"restarted: pid {pool.processes[0].pid} (was {first_pid})" in caplog.text
    with store.session() as s:
        states = s.scalars(select(WebhookDelivery.payload).where(WebhookDelivery.generation_id == gid)).all()
    assert [p["state"] for p in states] == ["dreaming", "dreaming", "completed"]  # each claim, then the result
    store.close()

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from noor.jobs import outbox
from noor.jobs.generation import now_utc
from noor.jobs.outbox import WebhookDelivery
from noor.jobs.store import Store
from noor.runtime.ssrf import Guard
from noor.runtime.webhooks import WebhookConfig, WebhookDeliverer, verify_signature

SECRET = b"hook-secret"


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """A real HTTP server on loopback that records what it gets; `fail` makes it answer 500 that many times."""
    state: dict[str, Any] = {"calls": [], "fail": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["calls"].append({"headers": dict(self.headers), "body": body})
            status = 500 if state["fail"] > 0 else 200
            state["fail"] -= 1
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # two deliverers open up to 16 connections at once; the default listen backlog (5) overflows on a loaded
        # host and the kernel resets a connection before it is accepted (a ReadError, a retry, a late delivery)
        request_queue_size = 64

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["port"] = server.server_address[1]
    yield state
    server.shutdown()
    server.server_close()


def loopback_guard() -> Guard:
    return Guard.from_strings(["127.0.0.1/32"], resolver=lambda host, port: {"hooks.test": ["127.0.0.1"]}[host])


def deliverer(store: Store, guard: Guard) -> WebhookDeliverer:
    return WebhookDeliverer(store, WebhookConfig(secret=SECRET, guard=guard, render=lambda p: p, base_delay_s=1.0))


def test_state_changes_are_delivered_signed_in_order(tmp_path: Path, receiver: dict[str, Any]) -> None:
    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    url = f"http://hooks.test:{receiver['port']}/cb"
    gid = store.create(tenant="acme", model="tiny", request={"prompt": "p"}, task={}, callback_url=url).id
    store.create(tenant="acme", model="tiny", request={}, task={})  # no callback: no deliveries
    assert store.claim("w", 30) is not None
    assert store.complete(gid, "w", {"video": "acme/x/video.mp4"})
    d = deliverer(store, loopback_guard())
    assert [d.deliver_due(), d.deliver_due()] == [1, 1]  # a pass sends a generation's oldest change only
    bodies = [json.loads(c["body"]) for c in receiver["calls"]]
    assert [b["state"] for b in bodies] == ["dreaming", "completed"] and bodies[1]["id"] == gid
    for call in receiver["calls"]:
        assert verify_signature(SECRET, call["headers"]["Noor-Signature"], call["body"], now=time.time())
        assert not verify_signature(b"wrong", call["headers"]["Noor-Signature"], call["body"], now=time.time())
        assert call["headers"]["Host"] == f"hooks.test:{receiver['port']}"
    assert deliverer(store, loopback_guard()).deliver_due() == 0  # delivered once
    store.close()


def test_failures_are_retried_with_backoff_then_given_up(tmp_path: Path, receiver: dict[str, Any]) -> None:
    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    url = f"http://hooks.test:{receiver['port']}/cb"
    store.create(tenant="acme", model="tiny", request={}, task={}, callback_url=url)
    assert store.claim("w", 30) is not None
    receiver["fail"] = 1
    d = deliverer(store, loopback_guard())
    t0 = now_utc()
    assert d.deliver_due(now=t0) == 0
    assert d.deliver_due(now=t0 + timedelta(seconds=0.5)) == 0  # not due yet
    assert d.deliver_due(now=t0 + timedelta(seconds=1.5)) == 1
    assert len(receiver["calls"]) == 2
    blocked = store.create(tenant="acme", model="tiny", request={}, task={}, callback_url="http://10.0.0.1/cb")
    assert store.claim("w", 30) is not None and blocked is not None
    assert deliverer(store, Guard()).deliver_due() == 0
    with store.session() as s:
        row = s.scalars(select(WebhookDelivery).where(WebhookDelivery.url == "http://10.0.0.1/cb")).one()
    assert row.gave_up_at is not None and "refused" in (row.last_error or "")
    store.close()


def _add_rows(store: Store, rows: list[tuple[str, str]]) -> None:
    """Outbox rows for (tenant, url) pairs, as state changes would write them."""
    with store.session.begin() as s:
        for i, (tenant, url) in enumerate(rows):
            s.add(WebhookDelivery(generation_id=f"g{i}", tenant=tenant, url=url, payload={"i": i}))


def test_two_deliverers_at_once_deliver_each_row_exactly_once(store: Store, receiver: dict[str, Any]) -> None:
    """Two servers' deliverers on one database (SQLite and PostgreSQL): the lease gives each row to one of them."""
    url = f"http://hooks.test:{receiver['port']}/cb"
    _add_rows(store, [(f"t{i % 4}", url) for i in range(24)])
    other = Store(store.db.url.render_as_string(hide_password=False))
    counts: list[int] = []
    passes = [  # three passes each: a pass starts at most per_host (8) deliveries to one host
        threading.Thread(target=lambda d=d: counts.extend(d.deliver_due(limit=100) for _ in range(3)))
        for d in (deliverer(store, loopback_guard()), deliverer(other, loopback_guard()))
    ]
    for t in passes:
        t.start()
    for t in passes:
        t.join()
    other.close()
    ids = sorted(int(c["headers"]["Noor-Webhook-Id"]) for c in receiver["calls"])
    assert ids == list(range(1, 25)) and sum(counts) == 24, (ids, counts)
    with store.session() as s:
        rows = s.scalars(select(WebhookDelivery)).all()
    wrong = [(r.id, r.attempts, r.delivered_at, r.last_error) for r in rows if not r.delivered_at or r.attempts != 1]
    assert len(rows) == 24 and not wrong, wrong


def test_due_rows_take_turns_across_tenants(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    _add_rows(store, [("busy", "http://a.test/cb")] * 30 + [("quiet", "http://b.test/cb")])
    with store.session() as s:
        due = outbox.due(s, now_utc(), per_tenant=16, limit=5)
    # one tenant's backlog of 30 does not hide the other's one row behind it
    assert [(r.tenant, r.id) for r in due] == [("busy", 1), ("quiet", 31), ("busy", 2), ("busy", 3), ("busy", 4)]
    store.close()


def test_a_generation_has_one_change_in_flight_at_a_time(tmp_path: Path) -> None:
    """Many deliveries run at once, but a generation's later change waits for its earlier one (in order)."""
    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    with store.session.begin() as s:
        for state in ("dreaming", "completed"):
            s.add(WebhookDelivery(generation_id="g1", tenant="acme", url="http://a.test/cb", payload={"state": state}))
        s.add(WebhookDelivery(generation_id="g2", tenant="acme", url="http://a.test/cb", payload={"state": "queued"}))
    now = now_utc()
    with store.session.begin() as s:
        due = outbox.due(s, now, per_tenant=16, limit=10)
        assert [r.payload["state"] for r in due] == ["dreaming", "queued"]  # not g1's "completed" beside its "dreaming"
        assert outbox.lease(s, due[0], now, until=now + timedelta(seconds=70))
        assert [r.id for r in outbox.due(s, now, per_tenant=16, limit=10)] == [3]  # leased: g1 still waits
        assert outbox.record(s, due[0], delivered_at=now, last_error=None)
        assert [r.payload["state"] for r in outbox.due(s, now, per_tenant=16, limit=10)] == ["completed", "queued"]
    store.close()


def test_a_leased_row_is_not_due_and_its_attempt_is_recorded_once(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    _add_rows(store, [("acme", "http://a.test/cb")])
    now = now_utc()
    with store.session.begin() as s:
        (row,) = outbox.due(s, now, per_tenant=16, limit=10)
        assert outbox.lease(s, row, now, until=now + timedelta(seconds=70))
        assert not outbox.lease(s, row, now, until=now + timedelta(seconds=70))  # taken already
        assert outbox.due(s, now + timedelta(seconds=69), per_tenant=16, limit=10) == []
        assert outbox.record(s, row, delivered_at=now, last_error=None)
        assert not outbox.record(s, row, last_error="a late second outcome")  # counted once
    with store.session() as s:
        stored = s.get(WebhookDelivery, row.id)
        assert stored is not None and stored.attempts == 1 and stored.delivered_at is not None
        assert stored.last_error is None
        assert outbox.due(s, now + timedelta(seconds=71), per_tenant=16, limit=10) == []  # delivered: never due
    store.close()


def test_a_delivery_that_fails_inside_noor_is_a_failed_attempt(tmp_path: Path, receiver: dict[str, Any]) -> None:
    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    url = f"http://hooks.test:{receiver['port']}/cb"
    _add_rows(store, [("acme", url), ("acme", url)])

    def render(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["i"] == 0:
            raise KeyError("assets")
        return payload

    d = WebhookDeliverer(store, WebhookConfig(secret=SECRET, guard=loopback_guard(), render=render))
    assert d.deliver_due() == 1  # the other delivery goes on
    with store.session() as s:
        broken, fine = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
    assert broken.attempts == 1 and broken.last_error == "KeyError: 'assets'" and broken.delivered_at is None
    assert broken.next_attempt_at > now_utc()  # retried with backoff, so given up in the end, never leased forever
    assert fine.delivered_at is not None
    assert d.slots.in_flight == 0
    store.close()

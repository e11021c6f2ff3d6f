from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from noor.jobs.generation import now_utc
from noor.jobs.outbox import WebhookDelivery
from noor.jobs.store import Store
from noor.runtime.ssrf import Guard, SSRFError
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

    server = HTTPServer(("127.0.0.1", 0), Handler)
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


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://192.168.1.1/x",
        "http://loopy.test/x",  # a name that resolves to loopback
        "http://mixed.test/x",  # one public and one private answer
        "ftp://93.184.216.34/x",
        "http://user:pw@93.184.216.34/x",
    ],
)
def test_ssrf_guard_refuses_the_inside(url: str) -> None:
    answers = {"loopy.test": ["127.0.0.1"], "mixed.test": ["93.184.216.34", "10.1.2.3"]}
    guard = Guard(resolver=lambda host, port: answers[host])
    with pytest.raises(SSRFError):
        guard.resolve(url)


def test_ssrf_guard_pins_the_checked_address() -> None:
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:  # public on the first look, loopback afterwards
        calls.append(host)
        return ["93.184.216.34"] if len(calls) == 1 else ["127.0.0.1"]

    pinned, host, ip = Guard(resolver=rebinding).resolve("https://hooks.example.com:8443/cb?x=1")
    assert (str(pinned), host, ip) == ("https://93.184.216.34:8443/cb?x=1", "hooks.example.com", "93.184.216.34")
    assert len(calls) == 1  # resolved once; the connection goes to that answer


def test_state_changes_are_delivered_signed_in_order(tmp_path: Path, receiver: dict[str, Any]) -> None:
    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    url = f"http://hooks.test:{receiver['port']}/cb"
    gid = store.create(tenant="acme", model="tiny", request={"prompt": "p"}, task={}, callback_url=url).id
    store.create(tenant="acme", model="tiny", request={}, task={})  # no callback: no deliveries
    assert store.claim("w", 30) is not None
    assert store.complete(gid, "w", {"video": "acme/x/video.mp4"})
    assert deliverer(store, loopback_guard()).deliver_due() == 2
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

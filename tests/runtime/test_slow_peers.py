"""Slow peers on loopback: a trickling image host and a trickling webhook receiver hold only their own share,
and only until the deadline (issue #25, item 12)."""

from __future__ import annotations

import asyncio
import select as sel
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from sqlalchemy import select

from noor.api.app import ApiConfig, create_app
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.outbox import WebhookDelivery
from noor.jobs.store import Store
from noor.runtime.slots import Busy, Slots
from noor.runtime.ssrf import FetchError, Guard, SSRFError
from noor.runtime.webhooks import WebhookConfig, WebhookDeliverer

GAP_S = 0.2  # between two bytes of a trickle: well inside any per-read timeout
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
STATUS_LINE = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"


class Peer:
    """A real HTTP server on loopback: /trickle-body sends its headers, then a byte every GAP_S; /trickle-headers
    (and every POST) sends even its status line a byte at a time; /endless streams without a length; /image
    and POST /fast answer at once. It counts the slow connections open at once and what reached /fast."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.open = self.max_open = 0
        self.fast: dict[str, float] = {}  # Noor-Webhook-Id -> when it arrived (monotonic)
        self.slow_starts: list[float] = []  # when each slow request came in (monotonic)
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def trickle(self, data: bytes) -> None:
                for i in range(len(data)):
                    readable, _, _ = sel.select([self.connection], [], [], GAP_S)
                    if peer.stop.is_set() or (readable and not self.connection.recv(1, socket.MSG_PEEK)):
                        return  # stopped, or the client hung up
                    self.wfile.write(data[i : i + 1])

            def serve(self) -> None:
                if self.path == "/fast":
                    peer.fast[self.headers["Noor-Webhook-Id"]] = time.monotonic()
                    self.send_response(204)
                    self.end_headers()
                elif self.path == "/image":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(IMAGE)))
                    self.end_headers()
                    self.wfile.write(IMAGE)
                elif self.path == "/endless":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                    while not peer.stop.is_set():
                        self.wfile.write(b"\0" * 65536)
                elif self.path == "/trickle-body":
                    self.wfile.write(STATUS_LINE)
                    self.trickle(b"\x89PNG" + b"\0" * 996)
                else:
                    self.trickle(STATUS_LINE + b"\0" * 1000)

            def handle_one_request_counted(self) -> None:
                slow = self.path != "/fast"
                with peer.lock:
                    peer.open += slow
                    peer.max_open = max(peer.max_open, peer.open)
                    if slow:
                        peer.slow_starts.append(time.monotonic())
                try:
                    if self.command == "POST":
                        self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    self.serve()
                except OSError:  # the client hung up: what a deadline does
                    pass
                finally:
                    with peer.lock:
                        peer.open -= slow

            do_GET = do_POST = handle_one_request_counted

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


def loopback_guard(**kwargs: Any) -> Guard:
    # every name resolves to loopback, which this deployment's allow list lets through
    return Guard.from_strings(["127.0.0.1/32"], resolver=lambda host, port: ["127.0.0.1"], **kwargs)


def _wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.mark.parametrize("path", ["/trickle-body", "/trickle-headers"])
def test_a_trickling_keyframe_fetch_ends_at_its_deadline(peer: Peer, path: str) -> None:
    guard = loopback_guard(fetch_deadline_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(FetchError, match=r"did not answer in full within its 1 s deadline"):
        guard.fetch(f"http://images.example:{peer.port}{path}", 20 * 2**20, tenant="acme")
    elapsed_s = time.monotonic() - t0
    assert 1.0 <= elapsed_s < 1.5, elapsed_s  # before: 10 s per read, so a byte every 0.2 s held it ~200 s
    assert guard.fetch_slots.in_flight == 0  # the slot is back


def test_a_body_without_a_length_is_cut_at_max_bytes(peer: Peer) -> None:
    with pytest.raises(FetchError, match="is larger than 1000000 bytes"):
        loopback_guard().fetch(f"http://images.example:{peer.port}/endless", 1_000_000)


def test_a_fetch_from_async_code_holds_no_thread(peer: Peer) -> None:
    async def two_at_once() -> list[bytes | BaseException]:
        guard = loopback_guard(fetch_slots=Slots(8, {"tenant": 1}))
        url = f"http://images.example:{peer.port}/image"
        return await asyncio.gather(*(guard.fetch_async(url, 2**20, tenant="acme") for _ in range(2)),
                                    return_exceptions=True)  # fmt: skip

    first, second = asyncio.run(two_at_once())
    assert first == IMAGE
    assert isinstance(second, Busy)  # the tenant's one slot was taken: bounded on a loop as on threads


def test_a_name_lookup_that_hangs_is_given_up() -> None:
    answer = threading.Event()

    def hanging(host: str, port: int) -> list[str]:  # a name server that does not answer (until the test ends)
        answer.wait(10)
        return ["93.184.216.34"]

    try:
        guard = Guard(resolver=hanging, lookup_deadline_s=0.3, fetch_deadline_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(SSRFError, match=r"cannot resolve 'slow-dns\.example': no answer within 0\.3 s"):
            guard.resolve("http://slow-dns.example/cb")  # a callback_url check on a request thread
        with pytest.raises(FetchError, match=r"within its 0\.5 s deadline"):
            guard.fetch("http://slow-dns.example/x.png", 2**20)
        assert time.monotonic() - t0 < 1.2
    finally:
        answer.set()


def test_slots_are_taken_all_or_nothing() -> None:
    slots = Slots(3, {"host": 1, "tenant": 2})
    assert slots.take({"host": "a", "tenant": "acme"})
    assert not slots.take({"host": "a", "tenant": "globex"})  # host a is full: globex's count is not touched
    assert slots.take({"host": "b", "tenant": "globex"}) and slots.take({"host": "c", "tenant": "globex"})
    assert not slots.take({"host": "d", "tenant": "initech"})  # 3 in total
    slots.give({"host": "a", "tenant": "acme"})
    assert slots.in_flight == 2 and slots.take({"host": "a", "tenant": "initech"})
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0, {"host": 1})


def test_fetches_hold_at_most_their_slots_per_tenant_and_in_total(peer: Peer) -> None:
    guard = loopback_guard(fetch_deadline_s=1.0, fetch_slots=Slots(3, {"tenant": 2}))
    url = f"http://images.example:{peer.port}/trickle-body"
    errors: list[Exception] = []

    def fetch(tenant: str) -> None:
        try:
            guard.fetch(url, 2**20, tenant=tenant)
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=fetch, args=(t,)) for t in ("acme", "acme", "globex")]
    for t in threads:
        t.start()
    _wait_for(lambda: peer.open == 3)
    t0 = time.monotonic()
    with pytest.raises(Busy, match="tenant 'acme' already has 2 in flight"):
        guard.fetch(url, 2**20, tenant="acme")
    with pytest.raises(Busy, match="this server already has 3 in flight"):
        guard.fetch(url, 2**20, tenant="initech")
    assert time.monotonic() - t0 < 0.1  # refused at once, not queued behind the slow ones
    for t in threads:
        t.join()
    assert len(errors) == 3 and all("deadline" in str(e) for e in errors)
    assert guard.fetch_slots.in_flight == 0


@pytest.mark.slow
def test_trickling_keyframes_do_not_starve_other_tenants_requests(tmp_path: Path, peer: Peer) -> None:
    """Keyframe URLs that trickle, from several tenants at once, against a real server whose request-thread pool is
    cut to 6 (so a few requests stand for a loaded server's 40): before, each fetch held a request thread for its
    whole trickle and another tenant's GET waited for them."""
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    keys = {}
    for name in [f"t{i}" for i in range(5)] + ["probe"]:
        tenants.create_tenant(store, name, credits_cents=10_000, max_concurrent=100, max_per_minute=600)
        keys[name] = tenants.create_key(store, name)
    guard = loopback_guard(fetch_deadline_s=3.0, fetch_slots=Slots(3, {"tenant": 1}))
    app = create_app(store, AssetStore(str(tmp_path / "assets")), ApiConfig(secret=b"s", guard=guard))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    async def serve() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 6
        await server.serve(sockets=[sock])

    serving = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    serving.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _wait_for(lambda: server.started)

    answers: list[httpx.Response] = []
    body = {
        "prompt": "a red square",
        "keyframes": {"frame0": {"type": "image", "url": f"http://images.example:{peer.port}/trickle-body"}},
    }

    def post(tenant: str) -> None:
        headers = {"Authorization": f"Bearer {keys[tenant]}"}
        answers.append(httpx.post(f"{base}/generations/video", json=body, headers=headers, timeout=30))

    posts = [threading.Thread(target=post, args=(f"t{i % 5}",)) for i in range(10)]
    for t in posts:
        t.start()
    _wait_for(lambda: peer.open >= 3)  # the fetches that got a slot are trickling now
    probe = {"Authorization": f"Bearer {keys['probe']}"}
    t1 = time.monotonic()
    listed = httpx.get(f"{base}/generations", headers=probe, timeout=10)
    probe_s = time.monotonic() - t1
    assert listed.status_code == 200, listed.text
    assert probe_s < 1.0, probe_s  # answered while the trickles go on (before: when the first fetch's 3 s ended)
    for t in posts:
        t.join()
    server.should_exit = True
    serving.join()
    store.close()

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [400] * 3 + [429] * 7, statuses
    for a in answers:
        detail = a.json()["detail"]
        assert ("within its 3 s deadline" if a.status_code == 400 else "in flight") in detail, detail
    assert peer.max_open == 3  # never more fetches at once than the server's slots


@pytest.mark.slow
def test_a_trickling_receiver_does_not_hold_back_other_tenants_webhooks(tmp_path: Path, peer: Peer) -> None:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    with store.session.begin() as s:  # the trickler's rows first, so a one-at-a-time deliverer meets them first
        for i in range(6):
            s.add(WebhookDelivery(generation_id=f"s{i}", tenant="slow", url=f"http://slow.test:{peer.port}/cb",
                                  payload={"i": i}))  # fmt: skip
        for i in range(10):
            s.add(WebhookDelivery(generation_id=f"f{i}", tenant=f"fast{i % 5}",
                                  url=f"http://fast{i % 5}.test:{peer.port}/fast", payload={"i": i}))  # fmt: skip
    config = WebhookConfig(secret=b"k", guard=loopback_guard(), render=lambda p: p, deadline_s=3.0, per_host=2)
    deliverer = WebhookDeliverer(store, config)
    stop = threading.Event()
    t0 = time.monotonic()
    running = threading.Thread(target=deliverer.run_forever, args=(stop,), kwargs={"poll_s": 0.05})
    running.start()
    try:
        _wait_for(lambda: len(peer.fast) == 10, timeout_s=10)
        fast_s = max(peer.fast.values()) - t0
        assert fast_s < 2.0, fast_s  # not behind the trickles (before: one at a time, behind six trickles of ~200 s)
        _wait_for(lambda: time.monotonic() - t0 > 3.5)
    finally:
        stop.set()
        running.join()
    # the slow host had its per-host bound in flight, and no more until the first ones' deadline ended them
    first_s = peer.slow_starts[0]
    assert len([t for t in peer.slow_starts if t < first_s + 2.4]) == 2, [t - first_s for t in peer.slow_starts]
    with store.session() as s:
        rows = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
    slow, fast = rows[:6], rows[6:]
    assert all(r.delivered_at is not None and r.attempts == 1 for r in fast)
    tried = [r for r in slow if r.attempts]
    assert len(tried) >= 2 and all(r.delivered_at is None for r in slow)
    for r in tried:  # ended by the deadline, to be retried with backoff
        assert r.attempts == 1 and "within its 3 s deadline" in (r.last_error or ""), r.last_error
        assert r.gave_up_at is None and r.next_attempt_at > r.created_at
    store.close()

"""Deliver the webhook outbox: POST the Generation JSON, signed, retried with backoff, SSRF-guarded,
many at once, each whole within a deadline.

Signature: header `Noor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`; a
receiver recomputes it over the raw body and rejects old timestamps. `Noor-Webhook-Id` is stable per
delivery, so a receiver can drop the duplicates that at-least-once delivery can produce.

Deliveries run as tasks on one event loop, up to `in_flight` at once, at most `per_host` to one host and
`per_tenant` for one tenant, so a receiver that answers slowly (or trickles) holds only its own host's
share and only until the deadline; everyone else's deliveries go on beside it. docs/webhooks.md has the
receiver's side.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from noor.jobs import outbox
from noor.jobs.generation import now_utc
from noor.jobs.store import Store
from noor.runtime.slots import Slots
from noor.runtime.ssrf import FetchError, Guard, SSRFError
from noor.runtime.worker import Stop

log = logging.getLogger("noor.webhooks")


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: bytes, header: str, body: bytes, now: float, tolerance_s: float = 300) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


@dataclass
class WebhookConfig:
    secret: bytes
    guard: Guard
    render: Callable[[dict[str, Any]], dict[str, Any]]  # outbox payload -> the Generation JSON a tenant sees
    max_attempts: int = 8
    deadline_s: float = 10.0  # wall clock for one attempt: lookup, connect, send, status line and headers
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    in_flight: int = 64  # deliveries at once (tasks on one loop: a slow receiver costs a socket, not a thread)
    per_host: int = 8
    per_tenant: int = 16
    lease_margin_s: float = 60.0  # a row taken for an attempt is due again this long after the deadline


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or url).lower()
    except ValueError:
        return url


class WebhookDeliverer:
    def __init__(self, store: Store, config: WebhookConfig):
        self.store, self.config = store, config
        self.slots = Slots(config.in_flight, {"host": config.per_host, "tenant": config.per_tenant})

    def backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.config.max_delay_s, self.config.base_delay_s * 2 ** (attempts - 1)))

    def deliver_due(self, now: datetime | None = None, limit: int = 50) -> int:
        """One pass on the calling thread: start every due delivery there is a slot for, wait for them all;
        returns how many were delivered."""

        async def one_pass() -> int:
            started = await self._start_due(now, limit)
            return sum(await asyncio.gather(*started))

        return asyncio.run(one_pass())

    def run_forever(self, stop: Stop, poll_s: float = 0.5) -> None:
        """Start due deliveries every `poll_s` without waiting for the ones in flight, until `stop` is set.
        Deliveries still in flight then are dropped; their rows are due again when their leases end."""
        asyncio.run(self._run(stop, poll_s))

    async def _run(self, stop: Stop, poll_s: float) -> None:
        running: set[asyncio.Task[int]] = set()
        while not stop.is_set():
            try:
                running |= await self._start_due(None, limit=self.config.in_flight)
            except Exception:  # keep delivering after a database hiccup; the rows stay in the outbox
                log.exception("webhook delivery pass failed")
            running = {t for t in running if not t.done()}
            await asyncio.sleep(poll_s)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _start_due(self, now: datetime | None, limit: int) -> set[asyncio.Task[int]]:
        # the database calls off the loop: a slow write (SQLite's lock) must not stall the sockets in flight
        taken = await asyncio.to_thread(self._take_due, now, limit)
        return {asyncio.create_task(self._deliver(row, keys, now), name=f"webhook {row.id}") for row, keys in taken}

    def _take_due(self, now: datetime | None, limit: int) -> list[tuple[outbox.Due, dict[str, str]]]:
        """Lease the due rows whose host and tenant have a free slot; the others wait for a later pass."""
        # 1. the due rows, in turns across tenants
        with self.store.session.begin() as s:
            rows = outbox.due(s, now or now_utc(), self.config.per_tenant, limit)
        taken = []
        for row in rows:
            # 2. a slot for its host and its tenant, else it stays due
            keys = {"host": _host(row.url), "tenant": row.tenant}
            if not self.slots.take(keys):
                continue
            # 3. the lease, else another deliverer has it
            t = now or now_utc()
            until = t + timedelta(seconds=self.config.deadline_s + self.config.lease_margin_s)
            try:
                with self.store.session.begin() as s:
                    leased = outbox.lease(s, row, t, until)
            except Exception:  # the database: start what is leased so far, try the rest next pass
                self.slots.give(keys)
                log.exception("webhook %s could not be leased", row.id)
                break
            if leased:
                taken.append((row, keys))
            else:
                self.slots.give(keys)
        return taken

    async def _deliver(self, row: outbox.Due, keys: dict[str, str], now: datetime | None) -> int:
        """Attempt and record one delivery; 1 if delivered. Never raises (a task nobody awaits must not)."""
        try:
            error = await self._attempt(row)
        except Exception as err:  # a bug or a payload that does not render: a failed attempt, so it ends
            log.exception("webhook %s: the attempt failed inside Noor", row.id)
            error = f"{type(err).__name__}: {err}"
        finally:
            self.slots.give(keys)
        try:
            return await asyncio.to_thread(self._record, row, now or now_utc(), error)
        except Exception:  # the database: the row stays leased, and is attempted again when the lease ends
            log.exception("webhook %s: the outcome (%s) could not be recorded", row.id, error or "delivered")
            return 0

    async def _attempt(self, row: outbox.Due) -> str | None:
        """One POST; the error that makes it a failed attempt, or None."""
        body = json.dumps(self.config.render(row.payload), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Noor-Webhooks/1",
            "Noor-Webhook-Id": str(row.id),
            "Noor-Signature": signature(self.config.secret, int(time.time()), body),
        }
        try:
            answer = await self.config.guard.send(
                "POST", row.url, content=body, headers=headers, deadline_s=self.config.deadline_s
            )
        except SSRFError as err:
            return f"refused: {err}"
        except FetchError as err:
            return str(err)
        except httpx.HTTPError as err:
            return f"{type(err).__name__}: {err}"
        return None if 200 <= answer.status < 300 else f"HTTP {answer.status}"

    def _record(self, row: outbox.Due, now: datetime, error: str | None) -> int:
        attempts = row.attempts + 1
        values: dict[str, Any] = {"last_error": error}
        if error is None:
            values["delivered_at"] = now
        elif attempts >= self.config.max_attempts or error.startswith("refused"):
            values["gave_up_at"] = now
            log.warning("webhook %s to %s given up after %d attempts: %s", row.id, row.url, attempts, error)
        else:
            values["next_attempt_at"] = now + self.backoff(attempts)
        with self.store.session.begin() as s:
            if not outbox.record(s, row, **values):
                log.warning(
                    "webhook %s: its attempt %d was already recorded; this outcome is dropped", row.id, attempts
                )
                return 0
        return int(error is None)

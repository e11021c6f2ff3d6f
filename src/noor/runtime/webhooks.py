"""Deliver the webhook outbox: POST the Generation JSON, signed, retried with backoff, SSRF-guarded.

Signature: header `Noor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`; a
receiver recomputes it over the raw body and rejects old timestamps. `Noor-Webhook-Id` is stable per
delivery, so a receiver can drop the duplicates that at-least-once delivery can produce.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from noor.jobs.generation import now_utc
from noor.jobs.outbox import WebhookDelivery
from noor.jobs.store import Store
from noor.runtime.ssrf import Guard, SSRFError
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
    timeout_s: float = 5.0
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0


class WebhookDeliverer:
    def __init__(self, store: Store, config: WebhookConfig):
        self.store, self.config = store, config

    def backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.config.max_delay_s, self.config.base_delay_s * 2 ** (attempts - 1)))

    def deliver_due(self, now: datetime | None = None, limit: int = 50) -> int:
        """Try every due delivery once; returns how many were delivered."""
        now = now or now_utc()
        with self.store.session.begin() as s:
            due = s.scalars(
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.delivered_at.is_(None),
                    WebhookDelivery.gave_up_at.is_(None),
                    WebhookDelivery.next_attempt_at <= now,
                )
                .order_by(WebhookDelivery.id)
                .limit(limit)
            ).all()
        delivered = 0
        for row in due:
            delivered += self._attempt(row, now)
        return delivered

    def _attempt(self, row: WebhookDelivery, now: datetime) -> int:
        body = json.dumps(self.config.render(row.payload), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Noor-Webhooks/1",
            "Noor-Webhook-Id": str(row.id),
            "Noor-Signature": signature(self.config.secret, int(time.time()), body),
        }
        error = None
        try:
            response = self.config.guard.request("POST", row.url, content=body, headers=headers,
                                                 timeout_s=self.config.timeout_s)  # fmt: skip
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}"
        except SSRFError as err:
            error = f"refused: {err}"
        except httpx.HTTPError as err:
            error = f"{type(err).__name__}: {err}"
        attempts = row.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if error is None:
            values["delivered_at"] = now
        elif attempts >= self.config.max_attempts or error.startswith("refused"):
            values["gave_up_at"] = now
            log.warning("webhook %s to %s given up after %d attempts: %s", row.id, row.url, attempts, error)
        else:
            values["next_attempt_at"] = now + self.backoff(attempts)
        with self.store.session.begin() as s:
            s.execute(update(WebhookDelivery).where(WebhookDelivery.id == row.id).values(**values))
        return int(error is None)

    def run_forever(self, stop: Stop, poll_s: float = 0.5) -> None:
        while not stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # keep delivering after a database hiccup; the rows stay in the outbox
                log.exception("webhook delivery pass failed")
            stop.wait(poll_s)

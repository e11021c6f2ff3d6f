"""Prometheus metrics at /metrics: request counts and latency, and the job store's queue by state."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noor.jobs.generation import Generation
from noor.jobs.store import Store

access = logging.getLogger("noor.access")


class Observe:
    """Pure ASGI middleware (Starlette's BaseHTTPMiddleware costs a task and a stream per request):
    times each HTTP request and hands (scope, status, seconds) to `record`."""

    def __init__(self, app: ASGIApp, record: Callable[[Scope, int, float], None]):
        self.app, self.record = app, record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.record(scope, status, time.perf_counter() - started)


def install(app: FastAPI, store: Store, prefixes: tuple[str, ...] = ()) -> None:
    """`prefixes`: where one router is mounted more than once; the label keeps them apart."""
    registry = CollectorRegistry()  # one per app, so tests and several apps in a process do not collide
    requests = Counter("noor_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram(
        "noor_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    )  # fmt: skip
    generations = Gauge("noor_generations", "Generations by state and model", ["state", "model"], registry=registry)

    def record(scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", "unmatched")  # the route template, not the raw path: bounded labels
        raw: str = scope["path"]
        mount = next((p for p in prefixes if raw.startswith(p + "/")), "")
        path = mount + path if route is not None and not path.startswith(mount + "/") else path
        method = scope["method"]
        requests.labels(method, path, str(status)).inc()
        latency.labels(method, path).observe(seconds)
        access.info(
            "%s %s %d", method, raw, status, extra={"status": status, "route": path, "duration_ms": seconds * 1e3}
        )

    app.add_middleware(Observe, record=record)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        counts: dict[tuple[str, str], int] = {}
        for each in store.stores():  # the central store and each region's data plane
            with each.session() as s:
                rows = s.execute(
                    select(Generation.state, Generation.model, func.count()).group_by(
                        Generation.state, Generation.model
                    )
                ).all()
            for state, model, count in rows:
                counts[(state, model)] = counts.get((state, model), 0) + count
        generations.clear()
        for (state, model), count in counts.items():
            generations.labels(state, model).set(count)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

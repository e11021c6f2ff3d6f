"""Prometheus metrics at /metrics: request counts and latency, and the job store's queue by state."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select

from noor.jobs.generation import Generation
from noor.jobs.store import Store


def install(app: FastAPI, store: Store, prefixes: tuple[str, ...] = ()) -> None:
    """`prefixes`: where one router is mounted more than once; the label keeps them apart."""
    registry = CollectorRegistry()  # one per app, so tests and several apps in a process do not collide
    requests = Counter("noor_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram(
        "noor_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    )  # fmt: skip
    generations = Gauge("noor_generations", "Generations by state and model", ["state", "model"], registry=registry)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")  # the route template, not the raw path: bounded labels
        mount = next((p for p in prefixes if request.url.path.startswith(p + "/")), "")
        path = mount + path if route is not None and not path.startswith(mount + "/") else path
        requests.labels(request.method, path, str(response.status_code)).inc()
        latency.labels(request.method, path).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        with store.session() as s:
            rows = s.execute(
                select(Generation.state, Generation.model, func.count()).group_by(Generation.state, Generation.model)
            ).all()
        generations.clear()
        for state, model, count in rows:
            generations.labels(state, model).set(count)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

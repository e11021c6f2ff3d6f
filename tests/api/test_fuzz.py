"""Schemathesis over the served OpenAPI schema: hundreds of generated requests, no 5xx, errors as {"detail": ...},
and every response one the document declares, with the declared body (issue #25: 194 violations of 2 kinds)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from noor.api.app import ApiConfig, create_app
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store

AUTH: dict[str, str] = {}
# the status is one the operation declares, and the body and content type are the ones declared for it
RESPONSE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    tmp = tmp_path_factory.mktemp("fuzz")
    store = Store(f"sqlite:///{tmp / 'noor.db'}")
    tenants.create_tenant(store, "fuzz", credits_cents=1e9, max_concurrent=10**6, max_per_minute=10**6)
    AUTH["Authorization"] = f"Bearer {tenants.create_key(store, 'fuzz')}"
    app = create_app(store, AssetStore(str(tmp / "assets")), ApiConfig(secret=b"s"))
    with TestClient(app) as client:  # the first create loads the perf model (seconds on a busy machine)
        assert client.post("/generations/video", json={"prompt": "warm up"}, headers=AUTH).status_code == 201
    yield app
    store.close()


def _operations(app: FastAPI) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.slow
def test_no_generated_request_is_a_server_error(fuzzed_app: FastAPI) -> None:
    """Hypothesis draws requests from each operation's schema (valid and, via the negative mode, invalid)."""
    cases: list[tuple[str, int]] = []

    @settings(max_examples=45, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        if isinstance(case.body, dict) and case.body.get("sync") is True:
            # no worker runs here: a sync image would wait its whole sync_timeout (default 60 s) past the
            # client's 10 s read timeout; a short wait (one poll) still exercises the path
            case.body["sync_timeout"] = 0.1
        # a generous read timeout: this checks answers, not latency (CI on a slow shared host once saw one
        # create stall past schemathesis's default 10 s and pass on replay)
        response = case.call(headers=AUTH, timeout=120)
        cases.append((case.operation.label, response.status_code))
        assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)
        case.validate_response(response, checks=RESPONSE_CHECKS)
        if 400 <= response.status_code < 500:
            assert "detail" in response.json(), response.text

    for operation in _operations(fuzzed_app):
        given(case=operation.as_strategy())(check)()
    assert len(cases) >= 500, len(cases)
    statuses = {status for _, status in cases}
    assert any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses), statuses


@pytest.mark.slow
def test_without_a_key_every_secured_operation_is_a_declared_401(fuzzed_app: FastAPI) -> None:
    """The document's `security` is the truth: each operation that declares the bearer scheme answers 401 (with its
    declared body) without a key, and the others answer without one."""
    seen: dict[str, set[int]] = {}

    @settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        response = case.call(timeout=120)
        seen.setdefault(case.operation.label, set()).add(response.status_code)
        case.validate_response(response, checks=RESPONSE_CHECKS)
        if case.operation.definition.raw.get("security"):
            assert response.status_code == 401, (case.operation.label, response.text)

    for operation in _operations(fuzzed_app):
        given(case=operation.as_strategy())(check)()
    secured = {label for label, statuses in seen.items() if statuses == {401}}
    assert "POST /dream-machine/v1/generations/video" in secured and "POST /v1/videos" in secured
    assert 401 not in seen["GET /dream-machine/v1/ping"]

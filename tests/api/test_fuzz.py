"""Schemathesis over the served OpenAPI schema: hundreds of generated requests, no 5xx, errors as {"detail": ...}."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from noor.api.app import ApiConfig, create_app
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store

AUTH: dict[str, str] = {}


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    tmp = tmp_path_factory.mktemp("fuzz")
    store = Store(f"sqlite:///{tmp / 'noor.db'}")
    tenants.create_tenant(store, "fuzz", credits_cents=1e9, max_concurrent=10**6, max_per_minute=10**6)
    AUTH["Authorization"] = f"Bearer {tenants.create_key(store, 'fuzz')}"
    yield create_app(store, AssetStore(str(tmp / "assets")), ApiConfig(secret=b"s"))
    store.close()


def _operations(app: FastAPI) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_generated_request_is_a_server_error(fuzzed_app: FastAPI) -> None:
    """Hypothesis draws requests from each operation's schema (valid and, via the negative mode, invalid)."""
    cases: list[tuple[str, int]] = []

    @settings(max_examples=45, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        response = case.call(headers=AUTH)
        cases.append((case.operation.label, response.status_code))
        assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)
        if 400 <= response.status_code < 500:
            assert "detail" in response.json(), response.text

    for operation in _operations(fuzzed_app):
        given(case=operation.as_strategy())(check)()
    assert len(cases) >= 500, len(cases)
    statuses = {status for _, status in cases}
    assert any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses), statuses

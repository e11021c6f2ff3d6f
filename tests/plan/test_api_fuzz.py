"""Schemathesis over the planner routes only: generated bodies (valid and invalid) never give a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
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
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    tmp: Path = tmp_path_factory.mktemp("plan-fuzz")
    store = Store(f"sqlite:///{tmp / 'noor.db'}")
    tenants.create_tenant(store, "fuzz")
    AUTH["Authorization"] = f"Bearer {tenants.create_key(store, 'fuzz')}"
    yield create_app(store, AssetStore(str(tmp / "assets")), ApiConfig(secret=b"s"))
    store.close()


def test_generated_plan_requests_are_never_a_server_error(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [op for op in operations if op.path.startswith("/v1/plan/")]
    assert {op.path for op in operations} == {"/v1/plan/site", "/v1/plan/chips"}
    statuses: list[int] = []

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        response = case.call(headers=AUTH)
        statuses.append(response.status_code)
        assert response.status_code < 500, (case.formatted_path, case.body, response.text)
        if response.status_code >= 400:
            assert "detail" in response.json(), response.text

    for op in operations:
        given(case=op.as_strategy())(check)()
    assert any(s == 422 for s in statuses)

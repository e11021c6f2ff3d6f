from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from noor.jobs.store import Store

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'noor.db'}")
        yield s
        s.close()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"  # a schema per test: real PostgreSQL, no cross-test state
    admin = create_engine(POSTGRES)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    s = Store(f"{POSTGRES}?options=-csearch_path%3D{schema}")
    try:
        yield s
    finally:
        s.close()
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

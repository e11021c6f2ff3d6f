# The job store on SQLite and on PostgreSQL (a fresh database per test), for the tests that drive the live claim.
from tests.jobs.conftest import store

__all__ = ["store"]

"""The job store's database plumbing: the engine (SQLite in WAL mode, or PostgreSQL), the Alembic migrations, and
the two SQL functions the queue needs spelled per dialect (`epoch_s`, `greatest`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Float, create_engine, event
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


# Sync routes run on anyio's thread pool (40 threads): with SQLAlchemy's default pool (5 + 10 overflow) a busy
# server opened and closed a connection (and ran the pragmas) for most requests beyond the 15th concurrent one.
POOL_SIZE = 40


def connect(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = create_engine(
            url, connect_args={"check_same_thread": False}, pool_size=POOL_SIZE, max_overflow=POOL_SIZE // 4
        )
        event.listen(db, "connect", _sqlite_pragmas)
        return db
    # a PostgreSQL connection costs the server a process: fewer kept open, the rest on demand
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE // 4, max_overflow=POOL_SIZE)


def migrate(db: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class epoch_s(FunctionElement[float]):
    """Seconds since 1970 of a stored UTC datetime, as a float on both databases: whole seconds exact, as the
    simulator's (SQLite's julianday drops the microseconds, and a difference of two is off by ~20 us more: fair
    share would break ties unlike the simulator)."""

    type = Float()
    inherit_cache = True


@compiles(epoch_s, "sqlite")
def epoch_s_sqlite(element: epoch_s, compiler: Any, **kw: Any) -> str:
    # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's format): whole seconds, then the fraction after them
    value = compiler.process(element.clauses, **kw)
    return f"(CAST(strftime('%s', {value}) AS REAL) + CAST(substr({value}, 20) AS REAL))"


@compiles(epoch_s, "postgresql")
def epoch_s_postgresql(element: epoch_s, compiler: Any, **kw: Any) -> str:
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


class greatest(FunctionElement[float]):
    type = Float()
    inherit_cache = True


@compiles(greatest, "sqlite")
def greatest_sqlite(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"  # SQLite's max() of several arguments is a scalar


@compiles(greatest, "postgresql")
def greatest_postgresql(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"GREATEST({compiler.process(element.clauses, **kw)})"

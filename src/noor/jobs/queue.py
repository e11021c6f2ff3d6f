"""The queue as SQL: the statements `Store.queued` runs to read the queued jobs a worker may run, in a policy's
order, from the indexes (never the whole queue), and the batch key a stored task is queued under."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, literal, or_, select, union_all
from sqlalchemy.sql.util import ClauseAdapter

from noor.jobs.generation import Generation, State
from noor.scheduling.batching import batch_key

_generations = Generation.__table__

SORT_BY = {
    "priority": _generations.c.priority,
    "submitted_at_s": _generations.c.created_at,
    "predicted_gpu_s": _generations.c.eta_s.nulls_first(),
}  # live jobs run on one GPU
GROUP_BY = {"tenant": _generations.c.tenant, "predicted_gpu_s": _generations.c.eta_s}


@functools.lru_cache(maxsize=256)
def queued_statements(
    models: tuple[str, ...] | None,
    regions: tuple[str, ...] | None,
    elsewhere: tuple[str, ...],
    order: tuple[str, ...],
    group: str | None,
    limit: int | None,
    keyed: bool = False,
    one_tenant: bool = False,
) -> tuple[Any, Any]:
    """`Store.queued`'s statements, built once per worker's view (building one costs more than running it):
    the ids of each group's first job (None without a group), and the rows (of those ids, bound as `ids`).
    `keyed`: only the jobs of one batch key (bound as `batch_key`); `one_tenant`: of one tenant (bound as `tenant`)."""
    from noor.jobs.tenants import Tenant

    # 1. which queued jobs this worker may run (the same conditions for every read)
    may_run: list[ColumnElement[bool]] = [
        _generations.c.state == State.QUEUED.value,
        _generations.c.deleted_at.is_(None),
    ]
    if models is not None:
        may_run.append(_generations.c.model.in_(models))
    if regions is not None:
        may_run.append(or_(_generations.c.region.is_(None), _generations.c.region.in_(regions)))
    if elsewhere:
        may_run.append(_generations.c.tenant.not_in(elsewhere))
    if keyed:
        may_run.append(_generations.c.batch_key == bindparam("batch_key"))
    if one_tenant:
        may_run.append(_generations.c.tenant == bindparam("tenant"))
    columns = [SORT_BY[name] for name in order] + [_generations.c.id]
    # 2. the first `limit` in order, or the first of each group (a point read per group from the index; their
    # ids first, then their rows: in one statement PostgreSQL joined them with a table scan)
    heads = None if group is None else _heads(may_run, columns, GROUP_BY[group], limit)
    chosen = may_run if heads is None else [_generations.c.id.in_(bindparam("ids", expanding=True))]
    query = (
        select(
            _generations.c.id, _generations.c.tenant, _generations.c.model, _generations.c.created_at,
            _generations.c.eta_s, _generations.c.priority, _generations.c.region, _generations.c.batch_key,
            Tenant.regions,
        )
        .outerjoin(Tenant, Tenant.name == _generations.c.tenant)
        .where(*chosen)
        .order_by(*columns)
        .limit(limit)
    )  # fmt: skip
    return heads, query


def _heads(
    may_run: Sequence[ColumnElement[bool]], columns: Sequence[ColumnElement[Any]], field: Any, limit: int | None
) -> Any:
    """The ids of the jobs that are first in `columns` order among those with their value of `field`, for the
    lowest `limit` values (NULL, if any, first). The values are found by skipping through the index from one to
    the next, a point read each (PostgreSQL has no skip scan, and DISTINCT would walk every queued job)."""
    skip, inner = _generations.alias("skip"), _generations.alias("inner")
    to_skip, to_inner = ClauseAdapter(skip).traverse, ClauseAdapter(inner).traverse
    # in the index's own order (eta_s is indexed NULLS FIRST: PostgreSQL uses that index only for that order)
    ascending = field.nulls_first() if field.nullable else field
    lowest = select(field).where(*may_run, field.is_not(None)).order_by(ascending).limit(1)
    values = select(lowest.scalar_subquery().label("value"), literal(1).label("n")).cte(recursive=True)
    after = (
        select(skip.c[field.name]).where(*map(to_skip, may_run), skip.c[field.name] > values.c.value)
        .order_by(to_skip(ascending)).limit(1)
    )  # fmt: skip
    more = [values.c.value.is_not(None)] + ([values.c.n < limit] if limit is not None else [])
    values = values.union_all(select(after.scalar_subquery(), values.c.n + 1).where(*more))

    def first(same_value: ColumnElement[bool]) -> Any:
        rows = select(inner.c.id).where(*map(to_inner, may_run), same_value)
        return rows.order_by(*map(to_inner, columns)).limit(1).scalar_subquery()

    heads = select(first(inner.c[field.name] == values.c.value).label("id")).where(values.c.value.is_not(None))
    return union_all(heads, select(first(inner.c[field.name].is_(None)).label("id"))) if field.nullable else heads


def task_batch_key(model: str, task: Mapping[str, Any]) -> str | None:
    """A stored task's batch key (`noor.scheduling.batching.batch_key`); None for a task that always runs alone:
    an upscale (its source clip is its own), one with concepts (adapters are loaded per call), or a task with no
    shape (internal callers)."""
    if task.get("kind") is not None or task.get("concepts") or task.get("source") is not None:
        return None
    try:
        width, height, num_frames = int(task["width"]), int(task["height"]), int(task["num_frames"])
    except (KeyError, TypeError, ValueError):
        return None
    # what conditions the clip: frames pinned (start, end, keyframes at indexes) batch only with their own kind
    inputs = "+".join(name for name in ("start", "end", "keyframes") if task.get(name)) or "text"
    if task.get("loop"):
        inputs += "+loop"
    return batch_key(model, width, height, num_frames, task.get("steps"), task.get("guidance"), inputs)

"""The job store: generations per tenant, and the lease protocol workers use to run them.

SQLite by default (WAL), PostgreSQL with a URL; the schema comes from Alembic migrations. Every
state change is one conditional UPDATE, so two workers can never both win a job, and a worker whose
lease expired can no longer finish the job someone else has since claimed (exactly-once completion).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from noor import scheduling
from noor.jobs import eta, outbox
from noor.jobs.db import connect, epoch_s, greatest, migrate
from noor.jobs.generation import Generation, State, check_transition, now_utc
from noor.jobs.limits import TENANTS, USAGE, InsufficientCredits, admit
from noor.jobs.planes import DataPlanes, RegionUnavailable, by_job, by_tenant, first_line
from noor.jobs.queue import GROUP_BY, SORT_BY, queued_statements, task_batch_key

_generations = Generation.__table__
_GET = select(_generations).where(
    _generations.c.id == bindparam("gid"),
    _generations.c.tenant == bindparam("tenant"),
    _generations.c.deleted_at.is_(None),
)
_EXISTS = select(_generations.c.id).where(
    _generations.c.id == bindparam("gid"),
    _generations.c.tenant == bindparam("tenant"),
    _generations.c.deleted_at.is_(None),
)
REQUEUE_EVERY = timedelta(seconds=1)
# A claim reads the few jobs its policy could put first (`scheduling.frontier`), never the whole queue; it tries
# this many of them, and reads again this many times, before it gives up on a queue other workers race it for.
CLAIM_RETRIES = 8
QUEUED_LIMIT = 256  # what `queued()` reads by default (a dispatcher's look at the queue's head, by priority then age)
USAGE_WINDOW = timedelta(hours=1)  # fair share counts the GPU-seconds each tenant was given in this window
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _held(generation_id: str, worker: str) -> ColumnElement[bool]:
    """`worker` holds the job's lease and its tenant still wants it."""
    return and_(
        Generation.id == generation_id,
        Generation.state == State.DREAMING.value,
        Generation.lease_owner == worker,
        Generation.deleted_at.is_(None),
    )


def _failed(reason: str, now: datetime) -> dict[str, Any]:
    """The columns of a generation that ends failed: no lease, finished now, with its reason."""
    return {
        "state": State.FAILED.value,
        "failure_reason": reason,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": now,
        "updated_at": now,
    }


class NotFound(LookupError):
    """No such generation for this tenant (another tenant's is not found either)."""


class Store(DataPlanes):
    """The job store: the central one, or one region's data plane (`region`; where tenants' rows live and how calls
    reach them: `noor.jobs.planes`)."""

    def __init__(
        self,
        url: str,
        *,
        run_migrations: bool = True,
        scheduler: scheduling.Policy | None = None,
        planes: Mapping[str, str] | None = None,
        region: str | None = None,
        ledger: Store | None = None,
    ):
        """`scheduler`: the queue-order policy claims follow (noor.scheduling; default: priority tiers, then oldest).
        `planes`: the regions with a database of their own; each is reached now (RegionUnavailable if it cannot be).
        `region`, `ledger`: this store is that region's data plane, its credits kept by `ledger`."""
        self.scheduler = scheduler or scheduling.get("priority")
        self.db = connect(url)
        # A point read of a local SQLite file (WAL: readers never wait for writers) is a few hundred microseconds
        # of CPU; an async caller may run it in place rather than hop to a thread (which, under load, costs more
        # than the read). A networked database is I/O: callers keep it off the event loop.
        self.reads_inline = url.startswith("sqlite")
        self._reach(region, run_migrations)
        self.session = sessionmaker(self.db, expire_on_commit=False)
        self._requeued_at: datetime | None = None
        self._open_planes(region, ledger, planes, run_migrations)

    def _reach(self, region: str | None, run_migrations: bool) -> None:
        """Migrate (or, for a plane, at least reach) the database; a plane that cannot be reached: RegionUnavailable."""
        try:
            if run_migrations:
                migrate(self.db)
            elif region is not None:
                with self.db.connect() as conn:
                    conn.execute(text("SELECT 1"))
        except SQLAlchemyError as err:
            if region is None:
                raise
            self.db.dispose()
            raise RegionUnavailable(region, first_line(err)) from err

    def close(self) -> None:
        for plane in self.planes.values():
            plane.close()
        self.db.dispose()

    # --- tenants' view -----------------------------------------------------------------------

    def create(
        self,
        *,
        tenant: str,
        model: str,
        request: dict[str, Any],
        task: dict[str, Any],
        generation_type: str = "video",
        priority: int = 0,
        price_microcents: int = 0,
        eta_s: float | None = None,
        callback_url: str | None = None,
        region: str | None = None,
        max_attempts: int = 3,
    ) -> Generation:
        """Admit and queue one job, all in one transaction: the tenant's limits hold and its credits pay, or
        nothing is stored (InsufficientCredits, LimitExceeded).

        A tenant without a row (internal callers, tests) has no limits and no credits: only free jobs."""
        if price_microcents < 0:
            raise ValueError(f"price_microcents must not be negative, got {price_microcents}")
        home = self.home(tenant)
        with self.session.begin() as s:
            # 1. pay, and lock the tenant's row: one conditional UPDATE, so admissions of one tenant run one at a
            # time until this transaction ends (PostgreSQL: the row lock; SQLite: the database's write lock, taken
            # by this first statement before anything is read). A metered tenant pays the price; the WHERE keeps
            # the balance from going negative.
            metered = TENANTS.c.metered.is_(True)
            admitted = s.execute(
                update(TENANTS)
                .where(TENANTS.c.name == tenant, or_(~metered, TENANTS.c.credits_microcents >= price_microcents))
                .values(
                    credits_microcents=TENANTS.c.credits_microcents
                    - case((metered, price_microcents), else_=literal(0, BigInteger))
                )
                .returning(TENANTS.c.metered, TENANTS.c.max_concurrent, TENANTS.c.max_per_minute)
            ).one_or_none()
            if admitted is None:
                balance = s.scalar(select(TENANTS.c.credits_microcents).where(TENANTS.c.name == tenant))
                if balance is not None or price_microcents > 0:
                    raise InsufficientCredits(int(balance or 0), price_microcents)
            # 2. the limits, counted under that lock: no other create of this tenant can slip in between (the clock is
            # read under it too, so one tenant's jobs are created in the order they were admitted)
            now = now_utc()
            # 3. the job, with what it paid (refunded exactly if it fails), in its tenant's data plane: that
            # region's transaction commits inside this one, so a job is never stored unpaid for, and a plane that
            # cannot be reached leaves nothing written anywhere and nothing charged
            paid = price_microcents if admitted is not None and admitted.metered else 0
            generation = home._insert(
                s if home is self else None,
                admitted,
                tenant=tenant,
                model=model,
                request=request,
                task=task,
                generation_type=generation_type,
                priority=priority,
                price_microcents=price_microcents,
                paid_microcents=paid,
                eta_s=eta_s,
                batch_key=task_batch_key(model, task),
                callback_url=callback_url,
                region=home.region or region,
                max_attempts=max_attempts,
                created_at=now,
                updated_at=now,
            )
        return generation

    def _insert(self, s: Session | None, admitted: Any, **columns: Any) -> Generation:
        """Count the tenant's limits and store its job here, in `s` (the central store's create) or in a
        transaction of this data plane's own."""
        if s is None:
            try:
                with self.session.begin() as own:
                    return self._insert(own, admitted, **columns)
            except (OperationalError, InterfaceError) as err:  # its database went away: a 503, nothing written
                raise RegionUnavailable(self.region or "central", first_line(err)) from err
        if admitted is not None:
            admit(s, columns["tenant"], admitted.max_concurrent, admitted.max_per_minute, columns["created_at"])
        generation = Generation(**columns)
        s.add(generation)
        return generation

    @by_tenant
    def get(self, tenant: str, generation_id: str) -> Generation:
        """A detached copy of one visible generation: the hot path of every SDK poll, so one compiled Core
        statement and a plain row, not an ORM query (4x less CPU per call)."""
        with self.db.connect() as conn:
            row = conn.execute(_GET, {"gid": generation_id, "tenant": tenant}).mappings().first()
        if row is None:
            raise NotFound(generation_id)
        return Generation(**row)

    def timing(self, job: Generation, now: datetime | None = None) -> eta.Timing:
        """When `job` will start and be done on this deployment's workers, as the queue stands now
        (`noor.jobs.eta`). A job not stored yet (a quote) waits behind the whole queue (of its tenant's plane)."""
        home = self.home(job.tenant)
        if home is not self:
            return home.timing(job, now)
        with self.session() as s:
            return eta.Clock(s, now or now_utc()).timing(job)

    @by_tenant
    def exists(self, tenant: str, generation_id: str) -> bool:
        """Whether the generation is there for its tenant (not deleted): asset downloads ask this."""
        with self.db.connect() as conn:
            return conn.execute(_EXISTS, {"gid": generation_id, "tenant": tenant}).first() is not None

    @by_tenant
    def list(self, tenant: str, limit: int = 100, offset: int = 0) -> tuple[list[Generation], int]:
        """Newest first, and how many there are in all."""
        visible = and_(Generation.tenant == tenant, Generation.deleted_at.is_(None))
        with self.session() as s:
            rows = s.scalars(
                select(Generation)
                .where(visible)
                .order_by(Generation.created_at.desc(), Generation.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            total = s.scalar(select(func.count()).select_from(Generation).where(visible)) or 0
        return list(rows), total

    @by_tenant
    def page(
        self, tenant: str, limit: int = 20, after: str | None = None, ascending: bool = False
    ) -> tuple[builtins.list[Generation], bool]:
        """Cursor paging (OpenAI style): up to `limit` after the generation `after`, and whether more follow."""
        visible = and_(Generation.tenant == tenant, Generation.deleted_at.is_(None))
        order = (
            (Generation.created_at, Generation.id)
            if ascending
            else (Generation.created_at.desc(), Generation.id.desc())
        )
        query = select(Generation).where(visible)
        with self.session() as s:
            if after is not None:
                cursor = s.scalar(select(Generation).where(visible, Generation.id == after))
                if cursor is None:
                    raise NotFound(after)
                if ascending:
                    query = query.where(
                        or_(
                            Generation.created_at > cursor.created_at,
                            and_(Generation.created_at == cursor.created_at, Generation.id > cursor.id),
                        )
                    )
                else:
                    query = query.where(
                        or_(
                            Generation.created_at < cursor.created_at,
                            and_(Generation.created_at == cursor.created_at, Generation.id < cursor.id),
                        )
                    )
            rows = list(s.scalars(query.order_by(*order).limit(limit + 1)).all())
        return rows[:limit], len(rows) > limit

    @by_tenant
    def usage(
        self, tenant: str, since: datetime, max_active: int = 2**31, max_recent: int = 2**31
    ) -> tuple[int, int, datetime | None]:
        """(active jobs, jobs created since `since`, the oldest of those) for rate and concurrency limits.

        Counts stop at `max_active` and `max_recent` (the limits being checked): a create costs the same
        whether its tenant has ten jobs queued or ten thousand. Compiled once: this runs on every create."""
        with self.db.connect() as conn:
            running, recent, oldest = conn.execute(
                USAGE, {"tenant": tenant, "since": since, "max_active": max_active, "max_recent": max_recent}
            ).one()
        return int(running or 0), int(recent or 0), oldest

    @by_tenant
    def tally(self, tenant: str, **request: str) -> builtins.list[tuple[str, str | None, int, int]]:
        """(state, request type, jobs, microcents kept) of `tenant`'s visible generations whose creating request has
        these values (e.g. api="agents", user_id="u1"): one grouped query, not a walk over its generations. What a
        failed job paid was refunded, so it keeps nothing."""
        kind = Generation.request["type"].as_string()
        kept = func.sum(case((Generation.state == State.FAILED.value, 0), else_=Generation.price_microcents))
        matches = [Generation.request[key].as_string() == value for key, value in request.items()]
        query = (
            select(Generation.state, kind, func.count(), kept)
            .where(Generation.tenant == tenant, Generation.deleted_at.is_(None), *matches)
            .group_by(Generation.state, kind)
        )
        with self.session() as s:
            return [(state, t, int(n), int(m or 0)) for state, t, n, m in s.execute(query)]

    @by_tenant
    def delete(self, tenant: str, generation_id: str) -> Generation:
        """Hide it from its tenant; a queued job fails at once (refunded), a running one stops at its next
        heartbeat. Two conditional UPDATEs: of racing deletes exactly one wins (the others: NotFound), and only
        the one that moved the job from queued to failed refunds it."""
        now = now_utc()
        check_transition(State.QUEUED, State.FAILED)
        with self.session.begin() as s:
            # 1. hide it: the winner's UPDATE also locks the row (the database, on SQLite) to the end
            hidden = s.scalars(
                update(Generation)
                .where(Generation.id == generation_id, Generation.tenant == tenant, Generation.deleted_at.is_(None))
                .values(deleted_at=now, updated_at=now)
                .returning(Generation),
                execution_options={"synchronize_session": False},
            ).one_or_none()
            if hidden is None:
                raise NotFound(generation_id)
            # 2. a queued job fails now, and gives its price back
            failed = s.scalars(
                update(Generation)
                .where(Generation.id == generation_id, Generation.state == State.QUEUED.value)
                .values(**_failed("Deleted", now))
                .returning(Generation),
                execution_options={"synchronize_session": False, "populate_existing": True},
            ).one_or_none()
            if failed is not None:
                self._refund(s, [failed])
        return failed or hidden

    # --- workers' view -----------------------------------------------------------------------

    def claim(
        self,
        worker: str,
        lease_s: float,
        models: Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        now: datetime | None = None,
        node: str | None = None,
    ) -> Generation | None:
        """Hand `worker` the queued job the scheduling policy puts first over the whole queue, under a lease
        (`claim_batch` with max_batch 1)."""
        claimed = self.claim_batch(worker, lease_s, models, regions, now, node)
        return claimed[0] if claimed else None

    def claim_batch(
        self,
        worker: str,
        lease_s: float,
        models: Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        now: datetime | None = None,
        node: str | None = None,
        max_batch: int = 1,
    ) -> builtins.list[Generation]:
        """Hand `worker` the queued job the scheduling policy puts first over the whole queue, and up to
        `max_batch - 1` queued jobs that run with it in one call, each under a lease; [] if nothing is queued
        for it.

        The same `noor.scheduling` policy the simulator drives: 1. of the jobs this worker may run (its models
        and regions: residency), the few the policy could put first are read in index order
        (`scheduling.frontier`: not the whole queue, never just the oldest); 2. the policy orders them (fair
        share with each tenant's GPU-seconds in the usage window); 3. one conditional UPDATE takes the first.
        A job another worker took meanwhile is skipped for the next; if all were taken the queue is read again.
        4. with max_batch > 1, the jobs of the first one's batch key are read in the policy's order and
        `scheduling.batch` picks the batch (the function `scheduling.assign` and so the dispatcher use), each
        taken by its own conditional UPDATE: one another worker took meanwhile is skipped.
        """
        if max_batch < 1:
            raise scheduling.SchedulingError(f"max_batch: must be >= 1, got {max_batch!r}")
        now = now or now_utc()
        # a worker of a region with a data plane runs that region's jobs first (only its workers reach them), then
        # the central queue's that may run there; a worker of no region, only the central queue's
        for name in regions or ():
            plane = self.planes.get(name)
            if plane is not None:
                got = plane.claim_batch(worker, lease_s, models, [name], now, node, max_batch)
                for generation in got:
                    self.held_by(generation.id, plane)
                if got:
                    return got
        # expired leases are looked for at most once a second per store, not on every idle poll
        if self._requeued_at is None or not timedelta(0) <= now - self._requeued_at < REQUEUE_EVERY:
            self.requeue_expired(now)
            self._requeued_at = now
        check_transition(State.QUEUED, State.DREAMING)
        now_s = (now - EPOCH).total_seconds()
        usage = None if self.scheduler.static else self._usage(now)
        region = regions[0] if regions is not None and len(regions) == 1 else None

        full = self.full_tenants()  # tenants whose world sessions fill max_concurrent wait for them

        def read(order: tuple[str, ...], depth: int | None, group: str | None) -> builtins.list[scheduling.QueuedJob]:
            return self.queued(depth, models=models, regions=regions, order=order, group=group, exclude=full)

        for _ in range(CLAIM_RETRIES):
            # 1. candidates: what the policy could put first, read from an index
            candidates = scheduling.frontier(self.scheduler, read, now_s, usage)
            if not candidates:
                return []
            # 2. the policy's order, 3. take the first still queued (a conditional UPDATE: one worker wins a job)
            for job in self.scheduler.order(candidates, now_s, usage)[:CLAIM_RETRIES]:
                claimed = self._take(job.id, worker, lease_s, now, node, region)
                if claimed is not None:
                    if max_batch == 1 or job.batch_key is None:
                        return [claimed]
                    # 4. the jobs that run with it
                    rest = self._batch_after(
                        job, worker, lease_s, now, node, region, max_batch, usage, full, models, regions
                    )
                    return [claimed, *rest]
        return []

    def _batch_after(
        self,
        head: scheduling.QueuedJob,
        worker: str,
        lease_s: float,
        now: datetime,
        node: str | None,
        region: str | None,
        max_batch: int,
        usage: Mapping[str, float] | None,
        exclude: tuple[str, ...],
        models: Sequence[str] | None,
        regions: Sequence[str] | None,
    ) -> builtins.list[Generation]:
        """Take up to `max_batch - 1` queued jobs of `head`'s batch key (already taken by `worker`), in policy order.

        The jobs of one key are one model at one shape, so they are predicted alike and each policy ranks them as
        its scans read them: each scan read a few more than the batch needs (no group: every job, not one per tenant
        or length) holds the policy's first ones.
        Fair share ranks tenants, not jobs: its batch takes the head's tenant's jobs, as the simulator's queues (one
        per tenant and class under fair share) do."""
        now_s = (now - EPOCH).total_seconds()
        depth = max_batch - 1 + CLAIM_RETRIES  # room for a few taken by other workers meanwhile
        pool: dict[str, scheduling.QueuedJob] = {}
        tenant = head.tenant if self.scheduler.per_tenant else None
        for order, _ in self.scheduler.scans():
            for job in self.queued(
                depth, models, regions, order, exclude=exclude, batch_key=head.batch_key, tenant=tenant
            ):
                if job.id != head.id:
                    pool[job.id] = job
        ordered = self.scheduler.order(list(pool.values()), now_s, usage)
        taken: builtins.list[Generation] = []
        while ordered and len(taken) < max_batch - 1:
            chosen = scheduling.batch(head, ordered, max_batch - len(taken))[1:]
            if not chosen:
                break
            for job in chosen:
                claimed = self._take(job.id, worker, lease_s, now, node, region)
                if claimed is not None:
                    taken.append(claimed)
            gone = {job.id for job in chosen}
            ordered = [job for job in ordered if job.id not in gone]
        return taken

    def queued(
        self,
        limit: int | None = QUEUED_LIMIT,
        models: Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        order: tuple[str, ...] = ("priority", "submitted_at_s"),
        group: str | None = None,
        exclude: Sequence[str] = (),
        batch_key: str | None = None,
        tenant: str | None = None,
    ) -> builtins.list[scheduling.QueuedJob]:
        """The queue as the scheduling policies read it: the first `limit` jobs (None: all) in `order` (fields
        of `scheduling.QueuedJob`, then id; each order has an index). With `group` ("tenant" or
        "predicted_gpu_s"), only the first job of each value of that field, of its lowest `limit` values (what
        `scheduling.frontier` reads). Each job carries the regions it may run in: its own region if it has one
        (and its tenant allows it), else its tenant's; None: any.

        With `models` and `regions` (a worker's), only the jobs that worker may run: residency holds for a
        region-bound tenant's jobs on every path (local, remote and Ray workers). The jobs of the tenants in
        `exclude` are left out (a claim's: tenants whose world sessions fill max_concurrent). With `batch_key`, only
        the jobs of that key (a batch's); with `tenant`, only that tenant's.
        """
        from noor.jobs.tenants import Tenant

        unknown = [name for name in order if name not in SORT_BY]
        if unknown:
            raise ValueError(f"order: unknown field {unknown[0]!r}; valid: {', '.join(SORT_BY)}")
        if group is not None and group not in GROUP_BY:
            raise ValueError(f"group: unknown field {group!r}; valid: {', '.join(GROUP_BY)}")
        with self.session() as s:
            elsewhere: tuple[str, ...] = ()
            if regions is not None:  # tenants bound to other regions only (few rows: excluded in SQL, so LIMIT holds)
                bound = s.execute(select(Tenant.name, Tenant.regions).where(Tenant.regions.is_not(None)))
                elsewhere = tuple(
                    name for name, allowed in bound if allowed is not None and not set(allowed) & set(regions)
                )
            if exclude:
                elsewhere = tuple(sorted(set(elsewhere) | set(exclude)))
            heads, query = queued_statements(
                tuple(models) if models is not None else None, tuple(regions) if regions is not None else None,
                elsewhere, order, group, limit, batch_key is not None, tenant is not None,
            )  # fmt: skip
            params: dict[str, Any] = {k: v for k, v in (("batch_key", batch_key), ("tenant", tenant)) if v is not None}
            ids = [] if heads is None else [gid for gid in s.scalars(heads, params) if gid is not None]
            if heads is not None:
                params["ids"] = ids
            out = []
            for row in s.execute(query, params):
                allowed: tuple[str, ...] | None = tuple(row.regions) if row.regions is not None else None
                if row.region is not None:  # a job bound to one region: that one, if its tenant allows it
                    allowed = (row.region,) if allowed is None or row.region in allowed else ()
                out.append(
                    scheduling.QueuedJob(
                        id=row.id,
                        tenant=row.tenant,
                        model=row.model,
                        submitted_at_s=(row.created_at - EPOCH).total_seconds(),
                        predicted_s=row.eta_s or 0.0,
                        priority=row.priority,
                        regions=allowed,
                        batch_key=row.batch_key,
                    )
                )
        return out

    @by_job
    def claim_job(
        self,
        generation_id: str,
        worker: str,
        lease_s: float,
        *,
        node: str | None = None,
        region: str | None = None,
        now: datetime | None = None,
    ) -> Generation | None:
        """Lease one named job to `worker` (a dispatcher chose it with `noor.scheduling`); None if it is no
        longer queued. Records the worker's node and region with the job."""
        check_transition(State.QUEUED, State.DREAMING)
        return self._take(generation_id, worker, lease_s, now or now_utc(), node, region)

    @by_job
    def release(self, generation_id: str, worker: str, now: datetime | None = None) -> bool:
        """`worker` is gone (its process or node died): its lease on the job ends now, so the job goes back to
        the queue at once (or fails, out of attempts) instead of after the lease. False if it was not holding it."""
        now = now or now_utc()
        statement = (
            update(Generation)
            .where(Generation.id == generation_id, Generation.state == State.DREAMING.value)
            .where(Generation.lease_owner == worker)
            .values(lease_expires_at=now - timedelta(microseconds=1))
        )
        with self.session.begin() as s:
            ended = s.execute(statement).rowcount == 1  # type: ignore[attr-defined]
        if ended:
            self.requeue_expired(now)
        return ended

    def _take(
        self,
        generation_id: str,
        worker: str,
        lease_s: float,
        now: datetime,
        node: str | None = None,
        region: str | None = None,
    ) -> Generation | None:
        statement = (
            update(Generation)
            .where(
                Generation.id == generation_id,
                Generation.state == State.QUEUED.value,
                Generation.deleted_at.is_(None),
            )
            .values(
                state=State.DREAMING.value,
                lease_owner=worker,
                lease_expires_at=now + timedelta(seconds=lease_s),
                worker=worker,
                worker_node=node,
                worker_region=region,
                attempts=Generation.attempts + 1,
                progress=0.0,
                started_at=now,
                updated_at=now,
            )
            .returning(Generation)
        )
        with self.session.begin() as s:
            claimed = s.scalars(statement, execution_options={"synchronize_session": False}).one_or_none()
            if claimed is not None:
                outbox.enqueue(s, claimed)
            return claimed

    def _usage(self, now: datetime) -> dict[str, float]:
        """GPU-seconds each tenant was given in the last USAGE_WINDOW: each run's part inside it, a running job's
        up to `now` (what the simulator counts, with no window). Each run's seconds are computed in SQL (no
        datetime converted per row), from the state and finished_at indexes; summed here (a GROUP BY made SQLite
        walk the whole table in tenant order instead). The jobs of one batch held the GPU together, so each counts
        its share of the batch's seconds, as the simulator counts a batch once."""
        now_s, since_s = (now - EPOCH).total_seconds(), (now - USAGE_WINDOW - EPOCH).total_seconds()
        g = _generations.c
        given_s = func.coalesce(epoch_s(g.finished_at), now_s) - greatest(epoch_s(g.started_at), since_s)
        query = select(g.id, g.tenant, g.worker, g.started_at, g.batch_key, given_s).where(
            g.started_at.is_not(None), or_(g.state == State.DREAMING.value, g.finished_at >= now - USAGE_WINDOW)
        )
        with self.session() as s:
            runs = s.execute(query).all()
        # one claim's batch: one worker, one start, one key (a job with no key ran alone). Its seconds are summed per
        # tenant before they are shared, so a batch of one tenant counts exactly its run's seconds (fair share
        # breaks ties on equal usage)
        in_batch: dict[tuple[Any, ...], int] = {}
        given: dict[tuple[Any, ...], float] = {}
        for gid, tenant, worker, started_at, key, seconds in runs:
            batch = (worker, started_at, key) if key is not None else (gid,)
            in_batch[batch] = in_batch.get(batch, 0) + 1
            given[(tenant, batch)] = given.get((tenant, batch), 0.0) + max(0.0, float(seconds))
        usage: dict[str, float] = {}
        for (tenant, batch), seconds in given.items():
            usage[tenant] = usage.get(tenant, 0.0) + seconds / in_batch[batch]
        return usage

    @by_job
    def heartbeat(
        self,
        generation_id: str,
        worker: str,
        lease_s: float,
        progress: float | None = None,
        now: datetime | None = None,
        preview: str | None = None,
    ) -> bool:
        """Extend the lease (and record progress, and the asset key of a preview of the work so far).
        False: stop, the job is no longer this worker's to run."""
        now = now or now_utc()
        values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_s), "updated_at": now}
        if progress is not None:
            values["progress"] = max(0.0, min(1.0, progress))
        if preview is not None:
            values["assets"] = {"video": None, "image": None, "progress_video": preview}
        statement = update(Generation).where(_held(generation_id, worker)).values(**values)
        with self.session.begin() as s:
            return s.execute(statement).rowcount == 1  # type: ignore[attr-defined]

    @by_job
    def leased(self, generation_id: str, worker: str) -> Generation | None:
        """The job if `worker` holds its lease right now, else None."""
        with self.session() as s:
            return s.scalar(select(Generation).where(_held(generation_id, worker)))

    def complete(self, generation_id: str, worker: str, assets: dict[str, Any], now: datetime | None = None) -> bool:
        check_transition(State.DREAMING, State.COMPLETED)
        return self._finish(generation_id, worker, State.COMPLETED, {"assets": assets, "progress": 1.0}, now)

    def fail(self, generation_id: str, worker: str, reason: str, now: datetime | None = None) -> bool:
        check_transition(State.DREAMING, State.FAILED)
        return self._finish(generation_id, worker, State.FAILED, {"failure_reason": reason}, now)

    @by_job
    def _finish(
        self, generation_id: str, worker: str, state: State, values: dict[str, Any], now: datetime | None
    ) -> bool:
        now = now or now_utc()
        statement = (
            update(Generation)
            .where(
                Generation.id == generation_id,
                Generation.state == State.DREAMING.value,
                Generation.lease_owner == worker,
            )
            .values(state=state.value, lease_owner=None, lease_expires_at=None, finished_at=now, updated_at=now)
            .values(**values)
            .returning(Generation)
        )
        with self.session.begin() as s:
            finished = s.scalars(statement, execution_options={"synchronize_session": False}).one_or_none()
            if finished is not None and state is State.FAILED:
                self._refund(s, [finished])
            if finished is not None and finished.deleted_at is None:
                outbox.enqueue(s, finished)
            return finished is not None

    def requeue_expired(self, now: datetime | None = None) -> int:
        """Dreaming jobs whose lease ran out go back to the queue, or fail once out of attempts (here and in
        every data plane)."""
        now = now or now_utc()
        planes = sum(plane.requeue_expired(now) for plane in self.planes.values())
        check_transition(State.DREAMING, State.QUEUED)
        expired = and_(Generation.state == State.DREAMING.value, Generation.lease_expires_at < now)
        with self.session.begin() as s:
            lost = s.scalars(
                update(Generation)
                .where(expired, Generation.attempts >= Generation.max_attempts, Generation.deleted_at.is_(None))
                .values(**_failed("Job failed: its worker was lost on every attempt", now))
                .returning(Generation),
                execution_options={"synchronize_session": False},
            ).all()
            for row in lost:
                outbox.enqueue(s, row)
            deleted = s.scalars(
                update(Generation)
                .where(expired, Generation.deleted_at.is_not(None))
                .values(**_failed("Deleted", now))
                .returning(Generation),
                execution_options={"synchronize_session": False},
            ).all()
            self._refund(s, [*lost, *deleted])
            requeued = s.execute(
                update(Generation)
                .where(expired, Generation.attempts < Generation.max_attempts, Generation.deleted_at.is_(None))
                .values(state=State.QUEUED.value, lease_owner=None, lease_expires_at=None, progress=0.0, updated_at=now)
            ).rowcount  # type: ignore[attr-defined]
        return int(len(lost) + len(deleted) + requeued) + planes

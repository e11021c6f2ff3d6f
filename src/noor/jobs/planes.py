"""Data planes (NOOR_REGIONS; docs/trust.md, "Data residency"): where a region-bound tenant's rows live, and how the
central store reaches them.

The central store keeps what routing and billing need: tenants, their key hashes, regions and credits, the audit
log, and the generations of tenants bound to no region with a database. A tenant bound to such a region keeps its
generations, prompts, idempotent answers and webhook outbox in that region's database only (its data plane, a
`Store` of its own): the central store routes the tenant's calls there (`by_tenant`), a worker's calls on a job to
the plane that holds it (`by_job`), and charges and refunds the tenant's credits itself (the plane's `ledger`).
World sessions follow the same rule (noor.jobs.sessions routes its calls with `home` and `keeping`).
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import Engine, String, column, event, select, table, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from noor.jobs.generation import Generation
from noor.jobs.limits import FULL_TENANTS, PLACES_HELD, TENANTS

if TYPE_CHECKING:
    from noor import scheduling
    from noor.jobs.store import Store

HOME_TTL_S = 5.0  # how long a store remembers which data plane a tenant's rows live in
HELD_MAX = 10_000  # job and session ids a store remembers the store of (a worker holds a few at a time)
_generations = Generation.__table__
_world_sessions = table("world_sessions", column("id", String))  # (noor.jobs.sessions imports this module)
R = TypeVar("R")


class RegionUnavailable(RuntimeError):
    """A region's data plane cannot be reached: the server does not start, a create answers 503 (nothing is
    written anywhere else)."""

    def __init__(self, region: str, why: str):
        self.region = region
        super().__init__(f"region {region!r}: its database cannot be reached ({why})")


def first_line(err: Exception) -> str:
    """The first line of a database error, as an operator reads it."""
    cause = getattr(err, "orig", None) or err
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


def reach(store: Store, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """`fn(store, ...)`; on a data plane, its database gone away is not a bug but a 503 (RegionUnavailable). The
    central store's errors stay what they are."""
    if store.region is None:
        return fn(store, *args, **kwargs)
    try:
        return fn(store, *args, **kwargs)
    except (OperationalError, InterfaceError) as err:
        raise RegionUnavailable(store.region, first_line(err)) from err


def routed(where: Callable[[Store, str], Store]) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """A decorator: `fn(store, key, ...)` runs on the store `where(store, key)` names (`store` itself, or one of its
    data planes: reached with `reach`). `by_tenant`, `by_job` and `by_session` below."""

    def wrap(fn: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(fn)
        def route(store: Store, key: str, *args: Any, **kwargs: Any) -> R:
            target = where(store, key)
            if target is store:
                return fn(store, key, *args, **kwargs)
            return reach(target, fn, key, *args, **kwargs)

        return route

    return wrap


class DataPlanes:
    """What a `Store` knows of data planes: its own region if it is one (and the `ledger` that keeps its tenants'
    credits), or, for the central store, the planes of the regions that have a database."""

    region: str | None
    ledger: Store
    planes: dict[str, Store]
    scheduler: scheduling.Policy
    reads_inline: bool
    session: sessionmaker[Session]
    db: Engine

    def _open_planes(
        self, region: str | None, ledger: Store | None, planes: Mapping[str, str] | None, run_migrations: bool
    ) -> None:
        self.region, self.ledger = region, ledger or cast("Store", self)
        if self.ledger is not self:  # refunds of a plane's jobs go to the central credits once its transaction commits
            event.listen(self.session, "after_commit", self._credit_refunds)
        self.planes = {}
        self._homes: dict[str, tuple[float, Store]] = {}
        self._holder: dict[str, Store] = {}  # job or world session id (UUIDs: one map) -> the store that holds it
        from noor.jobs.store import Store  # (a Store is DataPlanes)

        try:
            for name, url in (planes or {}).items():
                self.planes[name] = Store(
                    url, run_migrations=run_migrations, scheduler=self.scheduler, region=name, ledger=cast(Store, self)
                )
        except RegionUnavailable:
            cast("Store", self).close()
            raise
        # a routed read may reach a plane's networked database: then no caller reads on its event loop
        self.reads_inline = self.reads_inline and all(plane.reads_inline for plane in self.planes.values())

    @classmethod
    def configured(
        cls, settings: Any, *, run_migrations: bool = True, scheduler: scheduling.Policy | None = None
    ) -> Store:
        """The deployment's central store and its regions' data planes (NOOR_DATABASE_URL, NOOR_REGIONS)."""
        from noor.jobs.store import Store

        planes = {r: url for r in settings.regions if (url := settings.region_database_url(r)) is not None}
        return Store(settings.resolved_database_url, run_migrations=run_migrations, scheduler=scheduler, planes=planes)

    def stores(self) -> builtins.list[Store]:
        """This store and its regions' data planes: each has its own queue, leases and webhook outbox."""
        return [cast("Store", self), *self.planes.values()]

    def home(self, tenant: str) -> Store:
        """Where `tenant`'s generations live: the data plane of the first of its regions that has one, else here.
        Read from its tenant row, remembered for HOME_TTL_S (a tenant's regions are set when it is created)."""
        me = cast("Store", self)
        if not self.planes:
            return me
        now = time.monotonic()
        known = self._homes.get(tenant)
        if known is not None and known[0] > now:
            return known[1]
        with self.db.connect() as conn:
            regions = conn.scalar(select(TENANTS.c.regions).where(TENANTS.c.name == tenant))
        home = next((self.planes[r] for r in regions or () if r in self.planes), me)
        self._homes[tenant] = (now + HOME_TTL_S, home)
        return home

    def holding(self, generation_id: str) -> Store:
        """The store that holds a job: remembered when it was claimed or first found, else looked up (planes
        first, then here)."""
        me = cast("Store", self)
        held = self._holder.get(generation_id)
        if held is not None or not self.planes:
            return held or me
        for plane in self.planes.values():
            with plane.db.connect() as conn:
                if conn.scalar(select(_generations.c.id).where(_generations.c.id == generation_id)) is not None:
                    self.held_by(generation_id, plane)
                    return plane
        return me

    def held_by(self, generation_id: str, plane: Store) -> None:
        """Remember that a plane holds a job (a claim from it), or which store holds a world session."""
        if len(self._holder) >= HELD_MAX:  # forget the oldest half (dicts keep insertion order)
            for gid in builtins.list(self._holder)[: HELD_MAX // 2]:
                self._holder.pop(gid, None)  # (session threads and request threads forget alike)
        self._holder[generation_id] = plane

    def keeping(self, session_id: str) -> Store:
        """The store that holds a world session: remembered when it was created or first found, else looked up
        (here first: most tenants are bound to no plane, then each plane); here if none holds it."""
        me = cast("Store", self)
        held = self._holder.get(session_id)
        if held is not None or not self.planes:
            return held or me
        for store in self.stores():
            if reach(store, _has_session, session_id):
                self.held_by(session_id, store)
                return store
        return me

    @contextlib.contextmanager
    def inside(self, outer: Store, s: Session) -> Iterator[Session]:
        """A transaction of this store within `outer`'s transaction `s`: `s` itself when this store is `outer`, else
        one of its own that commits when the block ends, before `s` does (two databases share no transaction: what
        `s` writes after the block is lost if the process dies in between). A plane's database gone away:
        RegionUnavailable, and both roll back."""
        if self is outer:
            yield s
            return
        try:
            with self.session.begin() as own:
                yield own
        except (OperationalError, InterfaceError) as err:
            raise RegionUnavailable(self.region or "?", first_line(err)) from err

    def full_tenants(self) -> tuple[str, ...]:
        """The tenants holding a live world session whose running jobs and live sessions fill max_concurrent: a
        claim here skips their queued jobs. A data plane counts its own rows against the limits its ledger keeps
        (its tenants' rows are there)."""
        if self.ledger is self:
            with self.db.connect() as conn:
                return tuple(conn.scalars(FULL_TENANTS).all())
        with self.db.connect() as conn:
            held = {tenant: int(places) for tenant, places in conn.execute(PLACES_HELD)}
        if not held:
            return ()
        with self.ledger.db.connect() as conn:
            limits = conn.execute(select(TENANTS.c.name, TENANTS.c.max_concurrent).where(TENANTS.c.name.in_(held)))
            return tuple(sorted(name for name, limit in limits if held[name] >= limit))

    def _refund(self, s: Session, rows: Sequence[Generation]) -> None:
        """A job that ends failed gives back exactly what was taken for it (nothing, for an unmetered tenant).
        Called only with the rows a conditional UPDATE has just moved to failed, so once per job. The central
        store credits in the same transaction; a data plane, in the central one right after its own commits
        (two databases share no transaction: a crash in between loses the refund, never doubles it)."""
        paid = [(row.tenant, row.paid_microcents) for row in rows if row.paid_microcents]
        if not paid:
            return
        if self.ledger is not self:
            s.info.setdefault("refunds", []).extend(paid)
            return
        for tenant, microcents in paid:
            s.execute(
                update(TENANTS)
                .where(TENANTS.c.name == tenant)
                .values(credits_microcents=TENANTS.c.credits_microcents + microcents)
            )

    def _credit_refunds(self, s: Session) -> None:
        refunds = s.info.pop("refunds", None)
        if refunds:
            with self.ledger.session.begin() as ledger:
                self.ledger._refund(ledger, [Generation(tenant=t, paid_microcents=m) for t, m in refunds])


def _has_session(store: Store, session_id: str) -> bool:
    with store.db.connect() as conn:
        return conn.scalar(select(_world_sessions.c.id).where(_world_sessions.c.id == session_id)) is not None


by_tenant = routed(DataPlanes.home)  # a tenant's generations and sessions: where its data lives
by_job = routed(DataPlanes.holding)  # a worker's call on a job it was leased (or is leased now): where the job lives
by_session = routed(DataPlanes.keeping)  # one world session, by id: the store that holds it

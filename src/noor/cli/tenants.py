"""`noor tenants`: list, show and change tenants: credits, metering and limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from noor.cli.base import BadInput, app
from noor.cli.keys import audited, open_store

if TYPE_CHECKING:
    from noor.jobs.store import Store
    from noor.jobs.tenants import Tenant

tenants_app = typer.Typer(help="Tenants: their credits, metering and limits.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")


def credits_text(tenant: Tenant) -> str:
    """A tenant's balance as every command shows it: dollars, or that it is never charged."""
    from noor.jobs import money

    return money.usd(tenant.credits_microcents) if tenant.metered else "unmetered (never charged)"


def describe(tenant: Tenant, live_keys: int) -> str:
    return "\n".join(
        [
            f"tenant:          {tenant.name}",
            f"billing:         {'metered' if tenant.metered else 'unmetered'}",
            f"credits:         {credits_text(tenant)}",
            f"max concurrent:  {tenant.max_concurrent} (queued + running)",
            f"per minute:      {tenant.max_per_minute} (creates)",
            f"regions:         {', '.join(tenant.regions) if tenant.regions else 'any'}",
            f"live keys:       {live_keys}",
            f"created (UTC):   {tenant.created_at:%Y-%m-%d %H:%M:%S}",
        ]
    )


def _live_keys(store: Store, name: str) -> int:
    from noor.jobs import tenants

    return sum(k.revoked_at is None for k in tenants.list_keys(store, name))


@tenants_app.command("list")
def tenants_list() -> None:
    """Every tenant with its billing, credits and limits."""
    from noor.jobs import tenants

    with open_store() as store:
        rows = tenants.list_tenants(store)
    print(f"{'tenant':<20} {'credits':<28} {'max concurrent':>14} {'per minute':>10}  regions")
    for t in rows:
        regions = ",".join(t.regions) if t.regions else "any"
        print(f"{t.name:<20} {credits_text(t):<28} {t.max_concurrent:>14} {t.max_per_minute:>10}  {regions}")


@tenants_app.command("show")
def tenants_show(name: Annotated[str, typer.Argument(help="tenant name")]) -> None:
    """One tenant: billing, credits, limits, regions and how many live keys it has."""
    from noor.jobs import tenants

    with open_store() as store:
        print(describe(tenants.get_tenant(store, name), _live_keys(store, name)))


@tenants_app.command("set")
def tenants_set(
    name: Annotated[str, typer.Argument(help="tenant name")],
    credits: Annotated[
        float | None, typer.Option(help="set the balance, in US cents (the tenant becomes metered)")
    ] = None,
    add_credits: Annotated[
        float | None,
        typer.Option("--add-credits", help="add to the balance, in US cents (a top-up; negative takes away)"),
    ] = None,
    metered: Annotated[
        bool | None,
        typer.Option("--metered/--unmetered", help="charge each generation's price, or never charge"),
    ] = None,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", min=1, help="queued+running jobs at once")
    ] = None,
    per_minute: Annotated[int | None, typer.Option("--per-minute", min=1, help="creates per rolling minute")] = None,
) -> None:
    """Change a tenant's credits, metering or limits; prints the tenant as it is now."""
    from noor.jobs import tenants

    if credits is not None and add_credits is not None:
        raise BadInput("--credits and --add-credits: give one of them")
    if credits is not None and metered is False:
        raise BadInput("--credits and --unmetered: an unmetered tenant is never charged; give one of them")
    if all(v is None for v in (credits, add_credits, metered, max_concurrent, per_minute)):
        raise BadInput("noor tenants set: give --credits, --add-credits, --metered/--unmetered or a limit")
    with open_store() as store:
        before = tenants.get_tenant(store, name)
        changed = tenants.set_tenant(
            store,
            name,
            credits_cents=credits,
            add_credits_cents=add_credits,
            metered=metered,
            max_concurrent=max_concurrent,
            max_per_minute=per_minute,
        )
        fields = ("credits_cents", "metered", "max_concurrent", "max_per_minute")
        changes = {
            f: [getattr(before, f), getattr(changed, f)] for f in fields if getattr(before, f) != getattr(changed, f)
        }
        audited(store, "tenant.changed", tenant=name, changes=changes)
        print(describe(changed, _live_keys(store, name)))

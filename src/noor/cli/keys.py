"""`noor keys`: create, list and revoke API keys (a key is printed once; only its hash is kept)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from noor.cli.base import BadInput, app, fail

if TYPE_CHECKING:
    from noor.jobs.store import Store

keys_app = typer.Typer(help="API keys of tenants and workers.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

DEFAULT_MAX_CONCURRENT = 10
DEFAULT_PER_MINUTE = 20


@contextmanager
def open_store() -> Iterator[Store]:
    """The configured store; a tenant error inside is a one-line CLI error."""
    from noor.config import settings
    from noor.jobs import tenants
    from noor.jobs.store import Store

    store = Store(settings().resolved_database_url)
    try:
        yield store
    except tenants.TenantError as err:
        raise BadInput(str(err)) from err
    finally:
        store.close()


def audited(store: Store, event: str, **fields: object) -> None:
    """An audit-log entry for what this command did, saying it came from the CLI and which OS user ran it."""
    import getpass

    from noor.trust import audit

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = None
    audit.record(event, store=store, via="cli", by=user, **fields)


def _regions(text: str | None) -> list[str] | None:
    """--regions as a list: region names, each configured where the deployment names its regions (NOOR_REGIONS)."""
    from noor.config import REGION, settings

    if text is None:
        return None
    names = [r.strip() for r in text.split(",") if r.strip()]
    if not names:
        fail("--regions", text, "name at least one region, e.g. me-riyadh")
    configured = settings().regions
    for name in names:
        if not REGION.match(name):
            fail("--regions", text, f"region names are lowercase letters, digits and - ({name!r} is not)")
        if configured and name not in configured:
            fail(
                "--regions", text, f"region {name!r} is not configured (NOOR_REGIONS: {', '.join(sorted(configured))})"
            )
    return names


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str | None, typer.Option(help="tenant name (created if new)")] = None,
    worker: Annotated[bool, typer.Option("--worker", help="a key for `noor worker` instead of a tenant")] = False,
    regions: Annotated[str | None, typer.Option(help="a new tenant's regions, comma-separated (default: any)")] = None,
    credits: Annotated[
        float | None,
        typer.Option(help="a new tenant's credits in US cents: it is metered (without: unmetered, never charged)"),
    ] = None,
    max_concurrent: Annotated[
        int | None,
        typer.Option("--max-concurrent", min=1, help=f"queued+running jobs at once [{DEFAULT_MAX_CONCURRENT}]"),
    ] = None,
    per_minute: Annotated[
        int | None, typer.Option("--per-minute", min=1, help=f"creates per rolling minute [{DEFAULT_PER_MINUTE}]")
    ] = None,
) -> None:
    """Create an API key (and the tenant if it is new). The key is printed once; only its hash is kept.

    A new tenant created without --credits is unmetered (the single user of a local server); with --credits it is
    metered and pays each generation's price from them. An existing tenant is changed with `noor tenants set`."""
    from noor.jobs import money, tenants

    if worker == (tenant is not None):
        fail("--tenant", tenant, "give --tenant NAME for a tenant key, or --worker for a worker key")
    with open_store() as store:
        if tenant is None:  # --worker
            key = tenants.create_worker_key(store)
            audited(
                store, "key.created", tenant=tenants.WORKERS_TENANT, prefix=key[: tenants.PREFIX_CHARS], role="worker"
            )
            print(key)
            return
        given = {"--credits": credits, "--regions": regions, "--max-concurrent": max_concurrent}
        given["--per-minute"] = per_minute
        if tenant in {t.name for t in tenants.list_tenants(store)}:
            for option, value in given.items():
                if value is not None:  # never accepted and ignored
                    fail(option, value, f"tenant {tenant!r} exists; change it with `noor tenants set {tenant}`")
        else:
            bound = _regions(regions)
            try:
                created = tenants.create_tenant(
                    store,
                    tenant,
                    regions=bound,
                    credits_cents=credits or 0.0,
                    metered=credits is not None,
                    max_concurrent=DEFAULT_MAX_CONCURRENT if max_concurrent is None else max_concurrent,
                    max_per_minute=DEFAULT_PER_MINUTE if per_minute is None else per_minute,
                )
            except tenants.TenantError as err:
                option = "--credits" if str(err).startswith("credits") else "--tenant"
                raise BadInput(f"{option}: {err}") from err
            billing = f"metered, credits {money.usd(created.credits_microcents)}" if created.metered else "unmetered"
            audited(
                store,
                "tenant.created",
                tenant=tenant,
                metered=created.metered,
                credits_cents=created.credits_cents,
                max_concurrent=created.max_concurrent,
                max_per_minute=created.max_per_minute,
                regions=created.regions,
            )
            print(f"tenant {tenant} created ({billing})", file=sys.stderr)
        key = tenants.create_key(store, tenant)
        audited(store, "key.created", tenant=tenant, prefix=key[: tenants.PREFIX_CHARS], role="tenant")
        print(key)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's keys")] = None,
) -> None:
    """Every key: its first characters (all that is kept in the clear), tenant, role, created and revoked."""
    from noor.jobs import tenants

    with open_store() as store:
        if tenant is not None:
            tenants.get_tenant(store, tenant)  # an unknown tenant is an error, not an empty list
        keys = tenants.list_keys(store, tenant)
    print(f"{'key':<15} {'tenant':<20} {'role':<8} {'created (UTC)':<20} revoked (UTC)")
    for k in keys:
        revoked = k.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if k.revoked_at else "-"
        print(f"{k.prefix + '...':<15} {k.tenant:<20} {k.role:<8} {k.created_at:%Y-%m-%d %H:%M:%S}  {revoked}")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="the key, or its first 12 characters as `noor keys list` shows them")],
) -> None:
    """Revoke a key: it stops working within seconds (servers cache a key for at most 5 s)."""
    from noor.jobs import tenants

    with open_store() as store:
        revoked = tenants.revoke_prefix(store, key.removesuffix("..."))
        audited(store, "key.revoked", tenant=revoked.tenant, prefix=revoked.prefix, role=revoked.role)
    print(f"revoked {revoked.prefix}... ({revoked.role} key of {revoked.tenant})")


@keys_app.command("signing")
def keys_signing(
    rotate: Annotated[
        bool, typer.Option("--rotate", help="a new signer key and certificate under the deployment's existing CA")
    ] = False,
) -> None:
    """Create the deployment's C2PA signing key and certificate (a self-signed CA and a signer it issues, in the
    data dir), or rotate the signer key. Files signed before a rotation still verify: the CA stays."""
    from noor.config import settings
    from noor.trust import signing

    config = settings()
    if config.signing_cert is not None:
        fail(
            "NOOR_SIGNING_CERT",
            str(config.signing_cert),
            "this deployment signs with that certificate; replace it there",
        )
    try:
        where = signing.create(config, rotate=rotate)
        credentials = signing.load(config, create_missing=False)
    except signing.SigningError as err:
        raise BadInput(str(err)) from err
    action = "rotated" if rotate else "created"
    print(
        f"signing key {action} in {where} (deployment id {credentials.deployment_id}, {credentials.alg}, "
        f"signer valid until {credentials.not_after:%Y-%m-%d})"
    )

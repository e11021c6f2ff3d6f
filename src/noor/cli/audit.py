"""`noor audit`: the audit log of security events (noor.trust.audit): list it, verify its hash chain."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer

from noor.cli.base import app, fail
from noor.cli.keys import open_store

audit_app = typer.Typer(help="The audit log of security events (append-only, hash-chained).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

_KEPT = re.compile(r"^(\d+):([0-9a-f]{64})$")


@audit_app.command("verify")
def audit_verify(
    expect: Annotated[
        str | None,
        typer.Option(help="SEQ:HASH of an entry kept from before (the head a verify printed): it must still be there"),
    ] = None,
) -> None:
    """Walk the hash chain: exit 0 when it is intact (prints the head to keep), 1 naming the first entry that was
    edited, deleted or moved."""
    from noor.trust import audit

    kept = None
    if expect is not None:
        match = _KEPT.match(expect.strip().lower())
        if match is None:
            fail("--expect", expect, "must be SEQ:HASH, the 64-hex-digit hash as `noor audit verify` prints it")
        kept = (int(match[1]), match[2])
    with open_store() as store:
        verdict = audit.verify(store, kept)
    if not verdict.intact:
        print(f"noor: audit log broken: {verdict.problem}", file=sys.stderr)
        raise typer.Exit(1)
    entries = f"{verdict.entries} {'entry' if verdict.entries == 1 else 'entries'}"
    print(f"audit log intact: {entries}, head {verdict.head_seq}:{verdict.head_hash}")


@audit_app.command("list")
def audit_list(
    tenant: Annotated[str | None, typer.Option(help="only the events of this tenant")] = None,
    event: Annotated[str | None, typer.Option(help="only this event, e.g. key.created")] = None,
    limit: Annotated[int, typer.Option(min=1, help="the last N entries")] = 50,
) -> None:
    """The last entries, oldest first: number, time (UTC), event, tenant and fields."""
    from noor.trust import audit

    with open_store() as store:
        rows = audit.entries(store, tenant, event, limit)
    print(f"{'seq':>6}  {'at (UTC)':<19}  {'event':<20} {'tenant':<20} fields")
    for row in rows:
        print(f"{row.seq:>6}  {row.at:%Y-%m-%d %H:%M:%S}  {row.event:<20} {row.tenant or '-':<20} {row.fields}")

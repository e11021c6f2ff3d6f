"""`noor keys create|list|revoke` and `noor tenants list|show|set`, in process (exit codes kept) (#26 5)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from noor.config import settings
from noor.jobs import tenants
from noor.jobs.store import Store

Noor = Callable[..., tuple[int, str, str]]


def _store() -> Store:
    return Store(settings().resolved_database_url)


def test_a_tenant_without_credits_is_unmetered_and_with_credits_metered(noor: Noor) -> None:
    code, out, err = noor("keys", "create", "--tenant", "me")
    assert code == 0 and out.startswith("noor_") and "tenant me created (unmetered)" in err
    code, out, err = noor("keys", "create", "--tenant", "acme", "--credits", "1000", "--max-concurrent", "3")
    assert code == 0 and "tenant acme created (metered, credits $10.00)" in err
    store = _store()
    me, acme = tenants.get_tenant(store, "me"), tenants.get_tenant(store, "acme")
    assert (me.metered, acme.metered, acme.credits_microcents, acme.max_concurrent) == (False, True, 10**9, 3)
    store.close()
    code, out, _ = noor("tenants", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:2] == ["tenant", "credits"]
    assert lines[1].split()[:2] == ["acme", "$10.00"] and lines[2].startswith("me ") and "unmetered" in lines[2]


def test_options_for_an_existing_tenant_are_refused_not_ignored(noor: Noor) -> None:
    assert noor("keys", "create", "--tenant", "acme", "--credits", "5")[0] == 0
    code, out, err = noor("keys", "create", "--tenant", "acme", "--credits", "5000")
    assert code == 2 and out == ""
    assert err.strip() == (
        "noor: error: --credits: tenant 'acme' exists; change it with `noor tenants set acme`, got 5000.0"
    )
    code, _, err = noor("keys", "create", "--tenant", "acme", "--per-minute", "9")
    assert code == 2 and err.startswith("noor: error: --per-minute: tenant 'acme' exists")
    code, out, _ = noor("keys", "create", "--tenant", "acme")  # another key for it, nothing else
    assert code == 0 and out.startswith("noor_")


def test_tenants_are_shown_topped_up_and_limited(noor: Noor) -> None:
    noor("keys", "create", "--tenant", "acme", "--credits", "100")
    code, out, _ = noor("tenants", "set", "acme", "--add-credits", "0.002336")
    assert code == 0 and "credits:         $1.00002336" in out and "billing:         metered" in out
    code, out, _ = noor("tenants", "set", "acme", "--max-concurrent", "4", "--per-minute", "30")
    assert code == 0 and "max concurrent:  4 " in out and "per minute:      30 " in out
    code, out, _ = noor("tenants", "set", "acme", "--unmetered")
    assert code == 0 and "credits:         unmetered (never charged)" in out
    code, out, _ = noor("tenants", "set", "acme", "--credits", "250")  # setting credits meters it again
    assert code == 0 and "billing:         metered" in out and "credits:         $2.50" in out
    code, out, _ = noor("tenants", "show", "acme")
    assert code == 0 and out.splitlines()[0] == "tenant:          acme" and "live keys:       1" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tenants", "show", "nobody"), "no tenant 'nobody'"),
        (("tenants", "set", "nobody", "--credits", "1"), "no tenant 'nobody'"),
        (("tenants", "set", "acme"), "give --credits, --add-credits, --metered/--unmetered or a limit"),
        (("tenants", "set", "acme", "--credits", "-5"), "credits must not be negative, got -5.0"),
        (("tenants", "set", "acme", "--credits", "1", "--add-credits", "1"), "--credits and --add-credits"),
        (("tenants", "set", "acme", "--credits", "1", "--unmetered"), "--credits and --unmetered"),
        (("tenants", "set", "acme", "--max-concurrent", "0"), "'--max-concurrent'"),
        (("keys", "revoke", "noor_x"), "key must be a key or its 12-character prefix"),
        (("keys", "list", "--tenant", "nobody"), "no tenant 'nobody'"),
        (("keys", "create", "--tenant", "Bad Name"), "--tenant: tenant name must be lowercase"),
        (("keys", "create", "--tenant", "new", "--credits", "-1"), "--credits: credits must not be negative, got -1.0"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(noor: Noor, args: tuple[str, ...], message: str) -> None:
    noor("keys", "create", "--tenant", "acme")
    code, _, err = noor(*args)
    assert code == 2 and err.startswith("noor: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_keys_are_listed_and_revoked(noor: Noor) -> None:
    first = noor("keys", "create", "--tenant", "acme")[1].strip()
    second = noor("keys", "create", "--tenant", "acme")[1].strip()
    worker = noor("keys", "create", "--worker")[1].strip()
    code, out, _ = noor("keys", "list")
    rows = [line.split() for line in out.splitlines()[1:]]
    assert code == 0 and [r[:3] for r in rows] == [
        [first[:12] + "...", "acme", "tenant"],
        [second[:12] + "...", "acme", "tenant"],
        [worker[:12] + "...", "workers", "worker"],
    ]
    assert all(first not in line for line in out.splitlines())  # only the prefix is ever shown
    code, out, _ = noor("keys", "revoke", first[:12] + "...")  # as `keys list` shows it
    assert code == 0 and out.strip() == f"revoked {first[:12]}... (tenant key of acme)"
    store = _store()
    assert tenants.authenticate(store, first) is None and tenants.authenticate(store, second) is not None
    store.close()
    code, out, _ = noor("keys", "list", "--tenant", "acme")
    assert code == 0 and out.splitlines()[1].split()[-2:] != ["-"] and out.splitlines()[2].endswith("-")
    code, _, err = noor("keys", "revoke", first[:12])
    assert code == 2 and f"no live key '{first[:12]}'" in err


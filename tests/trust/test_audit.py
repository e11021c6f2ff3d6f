"""The audit log (noor.trust.audit, `noor audit`): the hash chain, what breaks it, two processes appending at once
(SQLite and PostgreSQL), the CLI's events, and the API's cross-tenant refusals."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, update

from noor.config import settings
from noor.jobs.store import Store
from noor.trust import audit
from noor.trust.audit import AuditEntry, AuditHead
from tests.api.world_server import world_server
from tests.conftest import REPO, free_port, serve_process
from tests.jobs.conftest import store  # noqa: F401  (SQLite, and PostgreSQL in a schema of its own)
from tests.trust.test_idempotency import api  # noqa: F401  (the app on `store`, tenants acme and globex)

Noor = Callable[..., tuple[int, str, str]]


def five(db: Store) -> None:
    for i in range(5):
        audit.record("key.created", store=db, tenant="acme", prefix=f"noor_{i}", role="tenant")


def test_an_intact_chain_verifies(store: Store) -> None:  # noqa: F811
    assert audit.verify(store) == audit.Verdict(0, 0, audit.GENESIS)
    five(store)
    entry = audit.record("tenant.changed", store=store, tenant="acme", changes={"max_concurrent": [10, 3]})
    verdict = audit.verify(store)
    assert verdict.intact and verdict.entries == 6 and (verdict.head_seq, verdict.head_hash) == (6, entry.hash)
    rows = audit.entries(store)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6] and rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert rows[-1].fields == '{"changes":{"max_concurrent":[10,3]},"tenant":"acme"}'
    assert [r.seq for r in audit.entries(store, event="key.created", limit=2)] == [4, 5]
    assert audit.verify(store, expect=(3, rows[2].hash)).intact


def _edit(db: Store, number: int, /, **values: Any) -> None:
    with db.session.begin() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == number).values(**values))


def _drop(db: Store, seq: int) -> None:
    with db.session.begin() as s:
        s.execute(delete(AuditEntry).where(AuditEntry.seq == seq))


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "problem"),
    [
        (lambda db: _edit(db, 3, fields='{"prefix":"noor_x","role":"tenant","tenant":"acme"}'), 3,
         "entry 3 (key.created at {at3}) was edited or moved: its contents do not match its hash"),
        (lambda db: _edit(db, 2, tenant="globex"), 2, "entry 2 (key.created at {at2}) was edited or moved"),
        (lambda db: _drop(db, 3), 3, "entry 3 is missing: the log goes from entry 2 to 4"),
        (lambda db: _drop(db, 5), 5, "entry 5 is missing: the log ends at entry 4, its head at 5"),
        # entries 2 and 3 swapped, numbers and all
        (lambda db: (_edit(db, 2, seq=99), _edit(db, 3, seq=2), _edit(db, 99, seq=3)), 2, "entry 2 (key.created"),
        # entry 3 rewritten with a hash of its own that fits: the next one no longer follows it
        (lambda db: _rewrite(db, 3), 4, "entry 4 (key.created at {at4}) does not follow entry 3"),
    ],
)  # fmt: skip
def test_an_edited_deleted_or_moved_entry_is_named(
    store: Store,  # noqa: F811
    tamper: Callable[[Store], Any],
    bad_seq: int,
    problem: str,
) -> None:
    five(store)
    at = {f"at{r.seq}": f"{r.at:%Y-%m-%d %H:%M:%S}" for r in audit.entries(store)}
    tamper(store)
    verdict = audit.verify(store)
    assert not verdict.intact and verdict.bad_seq == bad_seq
    assert verdict.problem is not None and verdict.problem.startswith(problem.format(**at)), verdict.problem


def test_a_deleted_head_is_named(store: Store) -> None:  # noqa: F811
    five(store)
    with store.session.begin() as s:
        s.execute(delete(AuditHead))
    verdict = audit.verify(store)
    assert verdict.problem == "the chain's head (table audit_head) is gone: the log was tampered with"


def _rewrite(db: Store, seq: int) -> None:
    [row] = [r for r in audit.entries(db) if r.seq == seq]
    fields = row.fields.replace("noor_2", "noor_X")
    _edit(db, seq, fields=fields, hash=audit.entry_hash(seq, row.at, row.event, row.tenant, fields, row.prev_hash))


def test_a_chain_rewritten_from_the_start_fails_a_kept_head(store: Store) -> None:  # noqa: F811
    """A whole chain recomputed verifies on its own: only a hash kept elsewhere tells."""
    five(store)
    kept = audit.verify(store)
    with store.session.begin() as s:
        s.execute(delete(AuditEntry))
        s.execute(update(AuditHead).values(seq=0, hash=audit.GENESIS))
    five(store)  # the same events again, at other times: other hashes
    assert audit.verify(store).intact
    verdict = audit.verify(store, expect=(kept.head_seq, kept.head_hash))
    assert not verdict.intact and verdict.problem is not None and "is not the entry kept as 5:" in verdict.problem


def test_bad_events_and_fields_are_refused(tmp_path: Path) -> None:
    db = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    try:
        with pytest.raises(audit.AuditError, match=r"event must be dotted lowercase words .* got 'Key Created'"):
            audit.record("Key Created", store=db)
        with pytest.raises(audit.AuditError, match=r"fields of 'key\.created' must be JSON values"):
            audit.record("key.created", store=db, when=object())
        assert audit.verify(db).entries == 0  # nothing half-written
    finally:
        db.close()


APPENDER = """
import sys, time
from pathlib import Path
from noor.jobs.store import Store
from noor.trust import audit
url, name, n, barrier = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
store = Store(url, run_migrations=False)
(barrier / f"ready-{name}").touch()
while not (barrier / "go").exists():
    time.sleep(0.005)
for i in range(n):
    audit.record("test.appended", store=store, process=name, i=i)
store.close()
"""


def _store_url(db: Store) -> str:
    return db.db.url.render_as_string(hide_password=False)


def test_two_processes_appending_at_once_do_not_fork_the_chain(store: Store, tmp_path: Path) -> None:  # noqa: F811
    n = 40
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, _store_url(store), name, str(n), str(tmp_path)], cwd=REPO)
        for name in ("a", "b")
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{name}").exists() for name in ("a", "b")):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "an appender did not start"
            time.sleep(0.01)
        (tmp_path / "go").touch()
        assert [p.wait(60) for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    verdict = audit.verify(store)
    assert verdict.intact and verdict.entries == verdict.head_seq == 2 * n, verdict
    writers = [r.fields.split('"process":"')[1][0] for r in audit.entries(store)]
    assert sorted(writers) == ["a"] * n + ["b"] * n
    assert any(x != y for x, y in itertools.pairwise(writers)), "the appends never interleaved"


def test_the_cli_records_keys_and_tenant_changes_and_verifies(noor: Noor) -> None:
    assert noor("keys", "create", "--tenant", "acme", "--credits", "100")[0] == 0
    code, worker_key, _ = noor("keys", "create", "--worker")
    assert code == 0
    assert noor("tenants", "set", "acme", "--max-concurrent", "3", "--per-minute", "20")[0] == 0
    assert noor("keys", "revoke", worker_key.strip()[:12])[0] == 0
    code, out, _ = noor("audit", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["seq", "at", "(UTC)", "event", "tenant", "fields"]
    events = [line.split()[3:5] for line in lines[1:]]
    assert events == [["tenant.created", "acme"], ["key.created", "acme"], ["key.created", "workers"],
                      ["tenant.changed", "acme"], ["key.revoked", "workers"]]  # fmt: skip
    assert '"changes":{"max_concurrent":[10,3]}' in lines[4] and '"via":"cli"' in lines[4]  # per minute was 20
    assert f'"prefix":"{worker_key[:12]}","role":"worker"' in lines[5]
    code, out, _ = noor("audit", "list", "--tenant", "acme", "--event", "key.created")
    assert code == 0 and len(out.splitlines()) == 2
    code, out, err = noor("audit", "verify")
    assert code == 0 and out.startswith("audit log intact: 5 entries, head 5:") and err == ""
    head = out.split()[-1]
    assert noor("audit", "verify", "--expect", head)[0] == 0
    # an entry edited in the database: exit 1, one line naming it
    db = Store(settings().resolved_database_url)
    _edit(db, 4, fields='{"changes":{"max_concurrent":[10,1000]},"tenant":"acme"}')
    db.close()
    code, out, err = noor("audit", "verify")
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("noor: audit log broken: entry 4 (tenant.changed at ")
    code, _, err = noor("audit", "verify", "--expect", "5:abc")
    assert code == 2 and err.strip() == (
        "noor: error: --expect: must be SEQ:HASH, the 64-hex-digit hash as `noor audit verify` prints it, got '5:abc'"
    )


def test_another_tenants_resource_is_a_404_and_an_audit_entry(api: dict[str, Any]) -> None:  # noqa: F811
    c, db, globex = TestClient(api["app"]), api["store"], api["globex"]
    body = {"model": "ray-2", "prompt": "a red circle", "duration": "5s", "resolution": "540p"}
    gid = c.post("/dream-machine/v1/generations/video", json=body, headers=api["acme"]).json()["id"]
    assert c.get(f"/dream-machine/v1/generations/{gid}", headers=globex).status_code == 404
    assert c.delete(f"/dream-machine/v1/generations/{gid}", headers=globex).status_code == 404
    assert c.post(f"/dream-machine/v1/generations/{gid}/upscale", json={}, headers=globex).status_code == 404
    assert c.get(f"/v1/videos/{gid}", headers=globex).status_code == 404
    assert c.get("/dream-machine/v1/generations/no-such-id", headers=globex).status_code == 404  # not an event
    assert c.get(f"/dream-machine/v1/generations/{gid}", headers=api["acme"]).status_code == 200
    refused = audit.entries(db, event="access.refused")
    assert [(r.tenant, r.fields) for r in refused] == [
        ("globex", f'{{"id":"{gid}","kind":"{kind}","owner":"acme","tenant":"globex"}}')
        for kind in ("generation", "generation", "generation", "video")
    ]
    assert audit.verify(db).intact


def test_another_tenants_session_and_asset_are_audited(tmp_path: Path) -> None:
    with world_server(tmp_path) as w:
        session = w.open()
        globex = w.key_for("globex")
        assert w.client.get(f"/v1/worlds/sessions/{session['id']}", headers=globex).status_code == 404
        upload = w.client.post("/v1/uploads", files={"file": ("a.png", _png(), "image/png")}, headers=w.auth)
        key = upload.json()["url"].split("/assets/", 1)[1].split("?")[0]
        assert w.client.get(f"/assets/{key}", headers=globex).status_code == 404
        assert w.client.get("/assets/acme/uploads/nothing.png", headers=globex).status_code == 404  # not an event
        refused = [(r.fields) for r in audit.entries(w.store, event="access.refused")]
        assert refused == [
            f'{{"id":"{session["id"]}","kind":"world_session","owner":"acme","tenant":"globex"}}',
            f'{{"id":"{key}","kind":"asset","owner":"acme","tenant":"globex"}}',
        ]


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow  # a real `noor serve` process up to its first answer: 27 s on the loaded 2-core dev machine
def test_noor_serve_audits_the_admin_key_it_makes_on_first_start(tmp_path: Path) -> None:
    # the session's data dir (its cpu-local measurement is made once), a database of the test's own
    url = f"sqlite:///{tmp_path / 'noor.db'}"
    env = {**os.environ, "NOOR_DATABASE_URL": url, "NOOR_LOG_LEVEL": "WARNING", "NOOR_THREADS": "1"}
    started: list[subprocess.Popen[str]] = []
    try:
        _, key = serve_process("noor.cli", free_port(), env, "--workers", "0", started=started)
    finally:
        for proc in started:
            proc.terminate()
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()
    db = Store(url)
    try:
        [entry] = audit.entries(db)
        fields = json.loads(entry.fields)
        assert (entry.event, entry.tenant, fields["role"]) == ("key.created", "admin", "tenant")
        assert key.startswith(fields["prefix"]) and len(fields["prefix"]) == 12 and audit.verify(db).intact
    finally:
        db.close()

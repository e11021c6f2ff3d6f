"""Per-region data planes (NOOR_REGIONS): a region-bound tenant's generations, prompts, idempotent answers,
webhook outbox and files are written only in its region's database and store; the central store keeps its tenant
row and credits. Two real PostgreSQL databases (central, me-riyadh) and a SQLite one (eu-london)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from noor.api.app import ApiConfig, create_app
from noor.config import Settings, settings
from noor.engine.tiny.backend import TinyBackend
from noor.jobs import tenants
from noor.jobs.assets import RegionalAssets
from noor.jobs.planes import RegionUnavailable
from noor.jobs.store import Store
from noor.runtime.ssrf import Guard
from noor.runtime.worker import Worker, WorkerConfig

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
# the tables that hold a tenant's data, and its column that names the tenant
TENANT_DATA = {"generations": "tenant", "idempotency_keys": "tenant", "world_sessions": "tenant"}


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    """Two fresh PostgreSQL databases on the machine's server: the central one and me-riyadh's."""
    names = {role: f"noor_{role}_{uuid.uuid4().hex[:8]}" for role in ("central", "riyadh")}
    admin = create_engine(f"{SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        for name in names.values():
            c.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield {role: f"{SERVER}/{name}" for role, name in names.items()}
    finally:
        with admin.connect() as c:
            for name in names.values():
                c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, central: str, regions: dict[str, dict[str, str]]
) -> tuple[Settings, Store, RegionalAssets]:
    """The environment `noor serve` reads (central database `central`, these regions), and the store and files it
    opens from it."""
    monkeypatch.setenv("NOOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NOOR_DATABASE_URL", central)
    monkeypatch.setenv("NOOR_ASSETS_URL", str(tmp_path / "central-files"))
    monkeypatch.setenv("NOOR_REGIONS", json.dumps(regions))
    settings.cache_clear()
    cfg = settings()
    return cfg, Store.configured(cfg), RegionalAssets(cfg.resolved_assets_url, locate=cfg.region_assets_url)


@pytest.fixture
def deployment(
    databases: dict[str, str], tmp_path: Path, toy_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    london = f"sqlite:///{tmp_path / 'london.db'}"
    regions = {
        "me-riyadh": {"database_url": databases["riyadh"], "assets_url": str(tmp_path / "riyadh-files")},
        "eu-london": {"database_url": london, "assets_url": str(tmp_path / "london-files")},
    }
    cfg, store, assets = configured(monkeypatch, tmp_path, databases["central"], regions)
    tenants.create_tenant(store, "sovereign", regions=["me-riyadh"], credits_cents=1000)
    tenants.create_tenant(store, "free", credits_cents=1000)
    backend = TinyBackend(toy_weights)

    def worker(region: str | None) -> Worker:
        """A worker of `region` as `noor serve` starts one there: that region's plane and files only."""
        planes = {region: url} if region and (url := cfg.region_database_url(region)) else {}
        own = Store(cfg.resolved_database_url, run_migrations=False, planes=planes)
        reads: dict[str | None, str] = {None: cfg.resolved_assets_url, region: cfg.region_assets_url(region)}
        files = RegionalAssets(cfg.region_assets_url(region), region, reads)
        config = WorkerConfig(name=f"w-{region}", region=region)
        return Worker(own, files, config, load_backend=lambda model: backend)

    app = create_app(store, assets, ApiConfig(secret=b"s", guard=Guard.from_strings(["127.0.0.1/32"])))
    with TestClient(app) as client:
        yield {
            "client": client,
            "store": store,
            "worker": worker,
            "urls": {"central": databases["central"], "me-riyadh": databases["riyadh"], "eu-london": london},
            "files": {r: tmp_path / f"{r}-files" for r in ("central", "riyadh", "london")},
            "auth": {
                name: {"Authorization": f"Bearer {tenants.create_key(store, name)}"} for name in ("sovereign", "free")
            },
        }
    store.close()
    settings.cache_clear()


def rows_of(url: str, tenant: str) -> dict[str, int]:
    """How many rows of `tenant` each data table of the database at `url` holds (webhook outbox rows included)."""
    db = create_engine(url)
    try:
        with db.connect() as c:
            counts = {
                table: c.execute(text(f"SELECT count(*) FROM {table} WHERE {column} = :t"), {"t": tenant}).scalar_one()
                for table, column in TENANT_DATA.items()
            }
            counts["webhook_outbox"] = c.execute(
                text("SELECT count(*) FROM webhook_outbox o JOIN generations g ON g.id = o.generation_id "
                     "WHERE g.tenant = :t"), {"t": tenant},
            ).scalar_one()  # fmt: skip
            counts["prompt_text"] = c.execute(
                text("SELECT count(*) FROM generations WHERE CAST(request AS TEXT) LIKE :p"), {"p": "%palm%"}
            ).scalar_one()
        return counts
    finally:
        db.dispose()


def files_of(root: Path, tenant: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and tenant in p.parts] if root.exists() else []


@pytest.mark.postgres
def test_a_bound_tenants_data_stays_in_its_region(deployment: dict[str, Any]) -> None:
    c, auth, store = deployment["client"], deployment["auth"], deployment["store"]
    body = {"prompt": "a green palm sways", "aspect_ratio": "1:1", "resolution": "540p", "duration": "5s",
            "callback_url": "http://127.0.0.1:9/noor"}  # fmt: skip
    made = [
        c.post(
            "/dream-machine/v1/generations/video", json=body, headers=auth["sovereign"] | {"Idempotency-Key": f"k{i}"}
        )
        for i in range(3)
    ]
    assert all(r.status_code == 201 for r in made), [r.text for r in made]
    assert {r.json()["region"] for r in made} == {"me-riyadh"}  # the response says where its data lives
    upload = c.post("/v1/uploads", files={"file": ("a.png", _png(), "image/png")}, headers=auth["sovereign"])
    assert upload.status_code == 201, upload.text
    unbound = c.post("/dream-machine/v1/generations/video", json=body, headers=auth["free"]).json()
    assert unbound["region"] is None

    # a worker of another region, or of none, never sees the bound tenant's jobs
    london = deployment["worker"]("eu-london")
    assert london.run_once() and store.get("free", unbound["id"]).state == "completed"  # the unbound job may run there
    assert not london.run_once()  # and the bound tenant's are not there to take
    riyadh = deployment["worker"]("me-riyadh")
    while riyadh.run_once():
        pass
    for r in made:
        done = c.get(f"/dream-machine/v1/generations/{r.json()['id']}", headers=auth["sovereign"]).json()
        assert done["state"] == "completed", done
        assert c.get(done["assets"]["video"]).status_code == 200  # the server reads it from the region's store
    # the same key again: the kept answer, from the region's database
    again = c.post(
        "/dream-machine/v1/generations/video", json=body, headers=auth["sovereign"] | {"Idempotency-Key": "k0"}
    )
    assert again.json()["id"] == made[0].json()["id"]
    # a deleted queued job's refund reaches the central credits
    queued = c.post("/dream-machine/v1/generations/video", json=body, headers=auth["sovereign"]).json()
    before = tenants.get_tenant(store, "sovereign").credits_microcents
    assert c.delete(f"/dream-machine/v1/generations/{queued['id']}", headers=auth["sovereign"]).status_code == 204
    assert tenants.get_tenant(store, "sovereign").credits_microcents > before

    urls, files = deployment["urls"], deployment["files"]
    inside = rows_of(urls["me-riyadh"], "sovereign")
    assert inside["generations"] == 4 and inside["idempotency_keys"] >= 3 and inside["webhook_outbox"] >= 3
    nothing = dict.fromkeys([*TENANT_DATA, "webhook_outbox"], 0)
    for elsewhere in ("central", "eu-london"):
        counts = rows_of(urls[elsewhere], "sovereign")
        assert {k: v for k, v in counts.items() if k != "prompt_text"} == nothing, elsewhere
    assert rows_of(urls["eu-london"], "sovereign")["prompt_text"] == 0
    assert rows_of(urls["central"], "free")["prompt_text"] == 1  # the only prompt there: the unbound tenant's
    assert files_of(files["riyadh"], "sovereign"), "its outputs and upload are in its region's store"
    assert not files_of(files["central"], "sovereign") and not files_of(files["london"], "sovereign")
    # the central store keeps what billing needs: the tenant and its credits, charged for 3 completed jobs
    assert tenants.get_tenant(store, "sovereign").credits_microcents < 1000 * 1_000_000


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.postgres
def test_a_region_down_stops_the_start_and_answers_503(
    deployment: dict[str, Any], tmp_path: Path, noor: Callable[..., tuple[int, str, str]]
) -> None:
    cfg = Settings(database_url=deployment["urls"]["central"], regions={"me-riyadh": {"database_url": DOWN}})  # type: ignore[call-arg]
    with pytest.raises(RegionUnavailable, match="region 'me-riyadh': its database cannot be reached"):
        Store.configured(cfg)
    # `noor serve` says so in one line, exit 2, and does not start
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NOOR_DATA_DIR", str(tmp_path / "d"))
        env.setenv("NOOR_DATABASE_URL", f"sqlite:///{tmp_path / 'd.db'}")
        env.setenv("NOOR_REGIONS", json.dumps({"me-riyadh": {"database_url": DOWN}}))
        code, _, err = noor("serve", "--workers", "0", "--port", "1")
    assert code == 2, err
    assert err.startswith("noor: error: NOOR_REGIONS: region 'me-riyadh': its database cannot be reached"), err
    # a plane that goes away while serving: its tenant's create is a 503, nothing written anywhere, nothing charged
    store, c, auth = deployment["store"], deployment["client"], deployment["auth"]
    plane = store.planes["me-riyadh"]
    plane.session.configure(bind=create_engine(DOWN))
    before = tenants.get_tenant(store, "sovereign").credits_microcents
    r = c.post("/dream-machine/v1/generations/video", json={"prompt": "a red circle"}, headers=auth["sovereign"])
    assert r.status_code == 503 and "me-riyadh" in r.json()["detail"], r.text
    assert tenants.get_tenant(store, "sovereign").credits_microcents == before
    assert rows_of(deployment["urls"]["central"], "sovereign")["generations"] == 0
    # a tenant bound to two regions, the first (its data's home) down: the same 503, naming it; nothing is written
    # to its other region (or anywhere) instead
    tenants.create_tenant(store, "dual", regions=["me-riyadh", "eu-london"], credits_cents=1000)
    dual = {"Authorization": f"Bearer {tenants.create_key(store, 'dual')}"}
    r = c.post("/dream-machine/v1/generations/video", json={"prompt": "a red circle"}, headers=dual)
    assert r.status_code == 503 and "region 'me-riyadh'" in r.json()["detail"], r.text
    assert tenants.get_tenant(store, "dual").credits_microcents == 1000 * 10**6
    assert all(rows_of(deployment["urls"][db], "dual")["generations"] == 0 for db in ("central", "eu-london"))
    # an unbound tenant is not held up by it
    assert (
        c.post("/dream-machine/v1/generations/video", json={"prompt": "a red circle"}, headers=auth["free"]).status_code
        == 201
    )


def test_regions_configuration_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noor: Callable[..., tuple[int, str, str]]
) -> None:
    toml = tmp_path / "regions.toml"
    toml.write_text('[me-riyadh]\ndatabase_url = "sqlite:///r.db"\nassets_url = "/srv/riyadh"\n')
    cfg = Settings(regions_file=toml)  # type: ignore[call-arg]
    assert (
        cfg.region_database_url("me-riyadh") == "sqlite:///r.db" and cfg.region_assets_url("me-riyadh") == "/srv/riyadh"
    )
    toml.write_text("[me-riyadh\n")
    with pytest.raises(ValueError, match=r"NOOR_REGIONS_FILE: .* is not TOML"):
        Settings(regions_file=toml)  # type: ignore[call-arg]
    toml.write_text('[me-riyadh]\ndatabase = "x"\n')
    with pytest.raises(ValueError, match="database"):
        Settings(regions_file=toml)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="region names are lowercase"):
        Settings(regions={"Riyadh": {}})  # type: ignore[call-arg]
    # a tenant bound to a region the deployment does not configure
    monkeypatch.setenv("NOOR_REGIONS", json.dumps({"me-riyadh": {}}))
    code, _, err = noor("keys", "create", "--tenant", "acme", "--regions", "eu-paris")
    assert code == 2
    assert err == "noor: error: --regions: region 'eu-paris' is not configured (NOOR_REGIONS: me-riyadh)\n"

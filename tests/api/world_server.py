"""A Noor API with world sessions on the terrain double (tests/world_double.py): what the session tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from noor.api.app import ApiConfig, create_app
from noor.config import settings
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.interactive import HostConfig, SessionHost
from tests import world_double


@dataclass
class WorldServer:
    client: TestClient
    store: Store
    host: SessionHost
    double: world_double.TerrainDouble
    auth: dict[str, str]  # tenant acme's key

    def key_for(self, tenant: str, **fields: object) -> dict[str, str]:
        tenants.create_tenant(self.store, tenant, **fields)  # type: ignore[arg-type]
        return {"Authorization": f"Bearer {tenants.create_key(self.store, tenant)}"}

    def open(self, **body: object) -> dict[str, object]:
        """POST a session on the double (fps 20 unless given); the 201's body."""
        answer = self.client.post(
            "/v1/worlds/sessions",
            json={"prompt": "a city at night", "model": "terrain-double", "fps": 20} | body,
            headers=self.auth,
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())


@contextmanager
def world_server(
    tmp: Path,
    config: HostConfig | None = None,
    double: world_double.TerrainDouble | None = None,
    store_url: str | None = None,
    create_acme: bool = True,
    **acme: object,
) -> Iterator[WorldServer]:
    """A fresh data dir and store, tenant `acme` (unmetered unless credits are given) with a key, the double
    registered, and the app (its session host on `config`) under a TestClient, lifespan running."""
    double = double or world_double.TerrainDouble()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOOR_DATA_DIR", str(tmp / "data"))
        settings.cache_clear()
        world_double.register(double)
        store = Store(store_url or f"sqlite:///{tmp / 'noor.db'}")
        if create_acme:
            tenants.create_tenant(store, "acme", **({"metered": "credits_cents" in acme} | acme))  # type: ignore[arg-type]
        auth = {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}
        app = create_app(store, AssetStore(str(tmp / "assets")), ApiConfig(secret=b"test-secret"))
        host = app.state.world_host = SessionHost(store, config or HostConfig(slots=2, queue=2, idle_s=30))
        try:
            with TestClient(app) as client:
                yield WorldServer(client, store, host, double, auth)
        finally:
            world_double.unregister()
            store.close()
    settings.cache_clear()

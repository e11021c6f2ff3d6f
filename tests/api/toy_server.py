"""A Noor API over installed toy diffusers models: the setup the API and live-pricing tests share."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from noor.api.app import ApiConfig, create_app
from noor.config import settings
from noor.engine.diffusers import installed
from noor.engine.diffusers.installed import InstalledModel
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.local import load_backend
from noor.runtime.worker import Worker, WorkerConfig


@contextmanager
def toy_server(
    tmp: Path, models: list[InstalledModel], credits_cents: float = 1000, chip: str | None = None
) -> Iterator[dict[str, Any]]:
    """`models` installed under a fresh data dir, a tenant `acme` with a key, the app (workers on `chip`)
    and an in-process worker for them: {"client", "auth", "worker", "tmp"}."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOOR_DATA_DIR", str(tmp / "data"))
        settings.cache_clear()
        for entry in models:
            installed.add(entry)
        store = Store(f"sqlite:///{tmp / 'noor.db'}")
        assets = AssetStore(str(tmp / "assets"))
        tenants.create_tenant(store, "acme", credits_cents=credits_cents)
        config = ApiConfig(secret=b"test-secret", **({"chip": chip} if chip else {}))
        worker = Worker(store, assets, WorkerConfig(name="w", models=[m.id for m in models]), load_backend=load_backend)
        auth = {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}
        try:
            with TestClient(create_app(store, assets, config)) as client:
                yield {"client": client, "auth": auth, "worker": worker, "tmp": tmp}
        finally:
            store.close()
    settings.cache_clear()


@contextmanager
def on_loopback(app: FastAPI) -> Iterator[int]:
    """`app` under a real uvicorn on a free loopback port (for what TestClient cannot do: chunked bodies, raw
    sockets, concurrent connections); yields the port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)

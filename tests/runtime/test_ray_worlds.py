"""World sessions under `noor serve --ray`: each session's world in a Ray actor on a node of its tenant's region.

A real Ray cluster on this machine (a me-riyadh head and an eu-london node: the `local_ray` fixture of
tests/runtime/conftest.py, one for the package's Ray tests), a real app and WebSocket client, the terrain double
(tests/world_double.py) as the model, loaded inside the actors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import ray
from fastapi.testclient import TestClient

from noor.api import worlds
from noor.api.app import ApiConfig, create_app
from noor.config import settings
from noor.jobs import sessions, tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.interactive import HostConfig, SessionHost
from noor.runtime.ray_cluster import NAMESPACE
from noor.runtime.ray_worlds import RayWorlds, RayWorldsConfig, RemoteWorld
from tests import world_double
from tests.api.test_worlds import frame_of, next_status, wait_for
from tests.runtime.conftest import LocalRay

pytestmark = pytest.mark.ray


@dataclass
class RayWorldServer:
    client: TestClient
    store: Store
    host: SessionHost
    keys: dict[str, dict[str, str]]  # tenant -> its Authorization header

    def open(self, tenant: str, expect: int = 201) -> dict[str, Any]:
        answer = self.client.post(
            "/v1/worlds/sessions",
            json={"prompt": "a desert at noon", "model": world_double.MODEL_ID, "fps": 20, "max_seconds": 60},
            headers=self.keys[tenant],
        )
        assert answer.status_code == expect, answer.text
        return dict(answer.json())

    def get(self, tenant: str, session_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/v1/worlds/sessions/{session_id}", headers=self.keys[tenant]).json())

    def world(self, session_id: str) -> RemoteWorld:
        live = self.host.live(session_id)
        assert live is not None
        world = wait_for(lambda: live.world)
        assert isinstance(world, RemoteWorld)
        return world


@pytest.fixture(scope="module")
def server(local_ray: LocalRay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayWorldServer]:
    """The app with its sessions on `RayWorlds` (one world slot per node), tenants bound to one region each."""
    tmp = tmp_path_factory.mktemp("ray-worlds")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOOR_DATA_DIR", str(tmp / "data"))
        settings.cache_clear()
        world_double.register()  # here; the actors get the resolved spec, its `load` included
        store = Store(f"sqlite:///{tmp / 'noor.db'}")
        keys = {}
        for tenant, regions in (("sovereign", ["me-riyadh"]), ("londoner", ["eu-london"]), ("westerner", ["us-west"])):
            tenants.create_tenant(store, tenant, regions=regions, metered=False)
            keys[tenant] = {"Authorization": f"Bearer {tenants.create_key(store, tenant)}"}
        app = create_app(store, AssetStore(str(tmp / "assets")), ApiConfig(secret=b"test-secret"))
        runner = RayWorlds(RayWorldsConfig(slots_per_node=1), ray=ray)
        host = worlds.run_worlds_on(app, runner, HostConfig(slots=1, queue=2, idle_s=30))
        try:
            with TestClient(app) as client:
                yield RayWorldServer(client, store, host, keys)
        finally:
            world_double.unregister()
            store.close()
    settings.cache_clear()


def _connect(s: RayWorldServer, session: dict[str, Any]) -> Any:
    return s.client.websocket_connect(f"/v1/worlds/sessions/{session['id']}/stream")


def test_a_region_bound_session_runs_on_an_actor_in_its_region_and_streams_frames(
    server: RayWorldServer,
    local_ray: LocalRay,
) -> None:
    s = server
    # 1. a tenant whose region has no node: 403, naming its region and the cluster's
    refused = s.client.post(
        "/v1/worlds/sessions", json={"prompt": "a forest", "model": world_double.MODEL_ID}, headers=s.keys["westerner"]
    )
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "tenant 'westerner' may run only in us-west; no node of the Ray cluster is in those regions "
        "(its nodes: eu-london, me-riyadh)"
    )
    # 2. each bound tenant's world opens on an actor on its own region's node, and the record says so
    riyadh, london = s.open("sovereign"), s.open("londoner")
    for session, region in ((riyadh, "me-riyadh"), (london, "eu-london")):
        assert session["state"] == "active"
        where = s.world(session["id"]).where()
        assert (where["node"], where["region"]) == (local_ray.nodes[region], region)
        assert s.get("sovereign" if region == "me-riyadh" else "londoner", session["id"])["region"] == region
    # 3. the me-riyadh node's one slot is taken: the next sovereign session waits (a london slot does not help it)
    waiting = s.open("sovereign")
    assert (waiting["state"], waiting["queue_position"]) == ("queued", 1)
    # 4. frames drawn on the actor arrive over the socket and follow the action
    with _connect(s, riyadh) as ws:
        ws.send_json({"token": riyadh["token"]})
        data, status = next_status(ws)
        assert data is not None and frame_of(data).shape == (64, 64, 3)
        ws.send_json({"action": "right"})
        while status.get("action") != "right":
            _, status = next_status(ws)
        assert status["state"] == "active" and status["frame"] >= 1
        first = status["frame"]
        _, later = next_status(ws)
        assert later["frame"] > first
    assert s.world(riyadh["id"]).steps >= later["frame"]
    # 5. the first ends: the waiting one gets the freed me-riyadh slot (the same actor, its model loaded)
    actor = s.world(riyadh["id"]).actor_name
    assert s.client.delete(f"/v1/worlds/sessions/{riyadh['id']}", headers=s.keys["sovereign"]).status_code == 204
    wait_for(lambda: s.get("sovereign", waiting["id"])["state"] == "active")
    assert s.world(waiting["id"]).actor_name == actor
    assert s.get("sovereign", waiting["id"])["region"] == "me-riyadh"
    for tenant, session in (("sovereign", waiting), ("londoner", london)):
        assert s.client.delete(f"/v1/worlds/sessions/{session['id']}", headers=s.keys[tenant]).status_code == 204


def test_a_killed_actor_ends_its_session_failed_billed_for_the_seconds_served(server: RayWorldServer) -> None:
    s = server
    session = s.open("sovereign")
    with _connect(s, session) as ws:
        ws.send_json({"token": session["token"]})
        next_status(ws)
        time.sleep(1.2)  # a second is recorded and billed
        victim = s.world(session["id"]).actor_name
        ray.kill(ray.get_actor(victim, namespace=NAMESPACE), no_restart=True)
        while True:  # frames until the next step finds the actor gone
            _, message = next_status(ws)
            if message["type"] == "ended":
                break
    assert message["reason"] == "error" and f"world actor {victim} died" in message["failure_reason"]
    row = sessions.by_id(s.store, session["id"])
    assert row is not None and (row.state, row.end_reason) == ("failed", "error")
    assert 1.0 <= row.seconds <= 30.0 and row.frames >= 1  # (a loaded 2-core machine draws fewer than 20 a second)
    assert row.cost_microcents == round(row.seconds * s.host.price_per_s_microcents)
    # the slot is free again and the next session gets a fresh actor on the same node
    again = s.open("sovereign")
    assert again["state"] == "active"
    assert s.world(again["id"]).actor_name != victim
    assert s.client.delete(f"/v1/worlds/sessions/{again['id']}", headers=s.keys["sovereign"]).status_code == 204

"""World sessions on Ray: each session's `World` in a Ray actor on a node of a region its tenant may use.

Under `noor serve --ray` a region-bound tenant's work runs in its regions: its jobs on worker actors there
(runtime/ray_cluster.py), and its sessions' models here. The API host keeps what is near the player (the socket,
the tick loop, the billing: runtime/interactive.py `SessionHost`); only the model moves, behind the same
`WorldRunner` interface as the local threads. Per tick the host makes one remote `step` call and gets one frame
back (64x64x3 uint8: 12 KB).

Slots: NOOR_WORLD_SLOTS per node (Noor counts them, as it counts the local host's: a world actor reserves no
Ray CPU, so it is never stuck behind the job workers that fill a node's CPUs). An actor opens one world at a
time and is kept, model loaded, for the node's next session. An actor that dies mid-session (killed, its node
lost) ends the session `failed`, billed for the seconds it was served; the next session on that node gets a
fresh actor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from noor.engine.interactive import World, WorldSpec
from noor.runtime.interactive import Placement
from noor.runtime.ray_cluster import NAMESPACE, NODE_ID_LABEL, Node, list_nodes, require_ray

log = logging.getLogger("noor.runtime")

ACTOR_PREFIX = "noor-world"  # actor names: noor-world.REGION.NODE8.TAG-N (not `noor cluster status`'s workers)


@dataclass
class RayWorldsConfig:
    slots_per_node: int = 1  # NOOR_WORLD_SLOTS: sessions one node runs at once
    threads: int = 1  # torch threads of a world model in its actor
    open_timeout_s: float = 120.0  # starting an actor and loading its model
    step_timeout_s: float = 30.0  # one frame; longer: the session fails (a hung actor)
    nodes_every_s: float = 1.0  # how long the list of alive nodes is trusted

    def __post_init__(self) -> None:
        if self.slots_per_node < 0:
            raise ValueError(f"slots_per_node: must be >= 0, got {self.slots_per_node!r}")
        if self.threads < 1:
            raise ValueError(f"threads: must be >= 1, got {self.threads!r}")


class WorldLost(RuntimeError):
    """The actor running a session's world died (killed, or its node lost)."""


class WorldActor:
    """An interactive model inside a Ray actor, pinned to one node: one open world at a time."""

    def __init__(self, region: str | None, threads: int, env: dict[str, str]):
        os.environ.update(env)  # the server's settings (NOOR_*: weights, log level) on this node
        from noor import config as noor_config

        noor_config.settings.cache_clear()
        self.region, self.threads = region, threads
        self.models: dict[str, Any] = {}  # spec id -> the loaded model, kept for the node's next session
        self.world: World | None = None

    def where(self) -> dict[str, Any]:
        """Where this actor runs (Ray's node id, its process) and the region it was placed for."""
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "region": self.region, "pid": os.getpid()}

    def open(self, spec: WorldSpec, prompt: str, seed: int, start_image: np.ndarray | None) -> np.ndarray:
        """Open a world (loading the model once per actor); its opening frame, (H, W, 3) uint8."""
        self.close()
        if spec.id not in self.models:
            self.models[spec.id] = spec.load(threads=self.threads)
        self.world = self.models[spec.id].start(prompt, seed, start_image)
        return self.world.frame

    def step(self, action: str) -> np.ndarray:
        if self.world is None:
            raise RuntimeError("no world is open in this actor")
        return self.world.step(action)

    def close(self) -> None:
        if self.world is not None:
            world, self.world = self.world, None
            world.close()


class RemoteWorld:
    """A `World` whose model runs in a `WorldActor`: each step is one remote call."""

    def __init__(self, worlds: RayWorlds, placement: Placement, actor: Any, name: str, frame: np.ndarray):
        self._worlds, self.placement, self.actor, self.actor_name = worlds, placement, actor, name
        self._frame, self._steps = frame, 0

    @property
    def frame(self) -> np.ndarray:
        return self._frame

    @property
    def steps(self) -> int:
        return self._steps

    def step(self, action: str) -> np.ndarray:
        self._frame = self._worlds.call(self.actor, self.actor_name, "step", action)
        self._steps += 1
        return self._frame

    def where(self) -> dict[str, Any]:
        """Where the actor says it runs: {"node", "region", "pid"}."""
        found: dict[str, Any] = self._worlds.call(self.actor, self.actor_name, "where")
        return found

    def close(self) -> None:
        """Close the world; the actor goes back to its node's pool (or, if it is dead, is forgotten)."""
        try:
            self._worlds.call(self.actor, self.actor_name, "close", timeout_s=5.0)
        except Exception:  # dead or hung: not reused
            self._worlds.discard(self.actor)
            return
        self._worlds.keep(self.placement, self.actor, self.actor_name)


class RayWorlds:
    """The `WorldRunner` of `noor serve --ray`: slots on the cluster's nodes, by region."""

    region: str | None = None  # each world's region is its node's

    def __init__(self, config: RayWorldsConfig, env: dict[str, str] | None = None, ray: Any = None):
        """`env`: the NOOR_* settings the actors get (ray_cluster.settings_env); `ray`: a connected ray."""
        self.ray = ray or require_ray()
        self.config, self.env = config, env or {}
        self._actor_class = self.ray.remote(WorldActor)
        self._lock = threading.RLock()  # slots and pools; free() and reserve() list nodes under it
        self._busy: dict[str, int] = {}  # node id -> slots reserved on it
        self._idle: dict[str, list[tuple[Any, str]]] = {}  # node id -> (actor, name) with no world open
        self._nodes: list[Node] = []
        self._nodes_at = -1e9
        self._tag, self._count = uuid.uuid4().hex[:4], 0

    # --- slots ---

    def nodes(self) -> list[Node]:
        """The alive nodes Noor may use (a bad region label: not used), listed at most once a `nodes_every_s`."""
        with self._lock:
            if time.monotonic() - self._nodes_at >= self.config.nodes_every_s:
                self._refresh()
            return self._nodes

    def _refresh(self) -> None:
        self._nodes = [n for n in list_nodes(self.ray) if n.alive and not n.problem]
        self._nodes_at = time.monotonic()
        alive = {n.id for n in self._nodes}
        for node_id in [k for k in self._idle if k not in alive]:  # their actors died with the node
            for actor, _ in self._idle.pop(node_id):
                self.discard(actor)

    def _allowed(self, regions: list[str] | None) -> list[Node]:
        return [n for n in self.nodes() if regions is None or n.region in regions]

    def refuse(self, regions: list[str] | None) -> str | None:
        if regions is None or self._allowed(regions):
            return None
        where = sorted({n.region or "no region" for n in self.nodes()})
        return f"no node of the Ray cluster is in those regions (its nodes: {', '.join(where) or 'none'})"

    def free(self, regions: list[str] | None) -> int:
        with self._lock:
            return sum(max(0, self.config.slots_per_node - self._busy.get(n.id, 0)) for n in self._allowed(regions))

    def reserve(self, regions: list[str] | None) -> Placement | None:
        """The allowed node with the most free slots (ties: the first listed)."""
        with self._lock:
            best, most = None, 0
            for node in self._allowed(regions):
                free = self.config.slots_per_node - self._busy.get(node.id, 0)
                if free > most:
                    best, most = node, free
            if best is None:
                return None
            self._busy[best.id] = self._busy.get(best.id, 0) + 1
        return Placement(best.region, best.id)

    def release(self, placement: Placement) -> None:
        with self._lock:
            if placement.node is not None and self._busy.get(placement.node, 0) > 0:
                self._busy[placement.node] -= 1

    # --- worlds ---

    def open(
        self, placement: Placement, spec: WorldSpec, prompt: str, seed: int, start_image: np.ndarray | None
    ) -> World:
        """Open the world in a pooled actor on the placement's node, else in a new one pinned there."""
        assert placement.node is not None
        with self._lock:
            pooled = self._idle.get(placement.node, [])
            reused = bool(pooled)
            actor, name = pooled.pop() if reused else self._start(placement)
        args = (spec, prompt, seed, start_image)
        try:
            frame = self.call(actor, name, "open", *args, timeout_s=self.config.open_timeout_s)
        except WorldLost:
            self.discard(actor)
            if not reused:
                raise
            with self._lock:  # a pooled actor had died since its last session: one fresh try
                actor, name = self._start(placement)
            try:
                frame = self.call(actor, name, "open", *args, timeout_s=self.config.open_timeout_s)
            except Exception:
                self.discard(actor)
                raise
        except Exception:  # the model refused (a bad start image...): the actor is sound, keep it
            self.keep(placement, actor, name)
            raise
        return RemoteWorld(self, placement, actor, name, frame)

    def _start(self, placement: Placement) -> tuple[Any, str]:
        """A new actor pinned to the placement's node (caller holds the lock)."""
        assert placement.node is not None
        self._count += 1
        name = f"{ACTOR_PREFIX}.{placement.region or '-'}.{placement.node[:8]}.{self._tag}-{self._count}"
        options = {
            "name": name,
            "namespace": NAMESPACE,
            "max_restarts": 0,
            "label_selector": {NODE_ID_LABEL: placement.node},
            "num_cpus": 0,
            "num_gpus": 0,
        }
        actor = self._actor_class.options(**options).remote(placement.region, self.config.threads, self.env)
        log.info("starting world actor %s on node %s (region %s)", name, placement.node, placement.region)
        return actor, name

    def call(self, actor: Any, name: str, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """One remote call; WorldLost if the actor died or did not answer in time. The model's own errors are
        raised as they were raised there (the session's failure_reason reads as it would on the local host)."""
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        try:
            ref = getattr(actor, method).remote(*args)
            return self.ray.get(ref, timeout=timeout_s or self.config.step_timeout_s)
        except RayTaskError as err:
            if isinstance(err.cause, Exception):
                raise err.cause from None
            raise
        except RayActorError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise WorldLost(f"world actor {name} died: {type(err).__name__}: {first}"[:400]) from err
        except GetTimeoutError as err:
            waited_s = timeout_s or self.config.step_timeout_s
            raise WorldLost(f"world actor {name} did not answer {method} within {waited_s:g} s") from err

    def keep(self, placement: Placement, actor: Any, name: str) -> None:
        assert placement.node is not None
        with self._lock:
            self._idle.setdefault(placement.node, []).append((actor, name))

    def discard(self, actor: Any) -> None:
        with contextlib.suppress(Exception):  # already dead
            self.ray.kill(actor, no_restart=True)

    def close(self) -> None:
        """Kill the pooled actors (a session's actor is closed with its session first)."""
        with self._lock:
            pooled = [actor for actors in self._idle.values() for actor, _ in actors]
            self._idle.clear()
        for actor in pooled:
            self.discard(actor)

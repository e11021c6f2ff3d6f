"""A k-rank worker: k processes, one per GPU (NCCL) or per CPU slot (gloo), on one machine, driven together. Without
Ray they are local processes (`LocalRanks`); under `noor serve --ray`, Ray actors in one STRICT_PACK placement
group (`RayRanks`).

Each rank process loads the model as one rank of a `torch.distributed` group (`DiffusersBackend` with a
parallel plan) and waits for work. `LocalRanks.generate` hands every rank the same tasks; rank 0 reports
each denoising step and returns the media. The ranks agree at every step whether to go on (rank 0
broadcasts the driver's cancel), so a cancelled job stops all of them between the same two steps.

A rank that dies, raises, or stays silent for `step_timeout_s` fails the attempt with `RankFailed` (an
`AttemptFailed`): the processes (or actors) are stopped and started afresh for the next job, and the worker gives
the job back to the queue, to be retried as a job whose worker was lost is (it was charged once, at create).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import socket
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Any

from noor.engine import ddp
from noor.engine.backend import AttemptFailed, Cancelled, Preview, Progress
from noor.engine.registry import ModelSpec
from noor.engine.task import Media, Task
from noor.perf.parallelism import ParallelPlan

log = logging.getLogger("noor.ranks")


def on_gpus(spec: ModelSpec) -> bool:
    import torch

    return spec.device != "cpu" and torch.cuda.is_available()


def rank_threads(spec: ModelSpec, plan: ParallelPlan, threads: int | None) -> int | None:
    """Torch threads per rank: on GPUs each rank's own default; on the CPU the worker's threads shared out,
    so k ranks do not oversubscribe the cores they were given."""
    if threads is None or on_gpus(spec):
        return threads
    return max(1, threads // plan.gpus)


class RankFailed(AttemptFailed, ddp.RankFailed):
    """A rank of a k-rank worker died, raised or hung: the attempt fails and the job is retried. The same
    failure as a training run's (`noor.engine.ddp.RankFailed`), for a generation."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rank:
    """One rank of a k-rank worker, in its own process (a local process or a Ray actor): joins the group, loads
    the model split by the plan, and runs the calls every rank gets."""

    def __init__(self, rank: int, world: int, spec: ModelSpec, plan: ParallelPlan, threads: int | None):
        self.rank, self.world, self.spec, self.plan, self.threads = rank, world, spec, plan, threads
        self.backend: Any = None

    def join(self, address: str, port: int) -> None:
        import torch
        import torch.distributed as dist

        os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port))
        cuda = on_gpus(self.spec)
        if cuda:  # under Ray, the one GPU the actor was given; locally, one GPU per rank
            torch.cuda.set_device(self.rank % torch.cuda.device_count())
        dist.init_process_group("nccl" if cuda else "gloo", rank=self.rank, world_size=self.world)
        self.backend = self.spec.load(threads=self.threads, parallel=self.plan)  # one rank of the split

    def run(self, tasks: list[Task], report: Any, cancelled: Any) -> list[Media] | None:
        """The tasks' media (rank 0; None on the others). Each step, every rank takes rank 0's word on whether
        to go on (`cancelled()`, read on rank 0 only), so all stop, or none, between the same two steps;
        `report(done, total)` is called on rank 0."""
        import torch
        import torch.distributed as dist

        go_on = torch.zeros(1)

        def on_step(done: int, total: int) -> None:
            go_on[0] = 0.0 if self.rank == 0 and cancelled() else 1.0
            dist.broadcast(go_on, src=0)
            if self.rank == 0:
                report(done, total)
            if go_on.item() == 0.0:
                raise Cancelled

        media = self.backend.generate(tasks, on_step)
        return media if self.rank == 0 else None

    def leave(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _rank_main(rank: Rank, port: int, inbox: Any, outbox: Any, cancel: Any) -> None:
    """A local rank process: join, then run what the driver sends until None, answering on `outbox`."""
    try:
        try:
            rank.join("127.0.0.1", port)
        except Exception as err:
            outbox.put(("error", rank.rank, f"{type(err).__name__}: {err}"))
            return
        outbox.put(("ready", rank.rank, None))
        while (tasks := inbox.get()) is not None:
            try:
                media = rank.run(tasks, lambda done, total: outbox.put(("progress", 0, (done, total))), cancel.is_set)
                outbox.put(("done", rank.rank, media))
            except Cancelled:
                outbox.put(("cancelled", rank.rank, None))
            except Exception as err:
                outbox.put(("error", rank.rank, f"{type(err).__name__}: {err}"))
                return  # the group may be left mid-collective: the driver restarts every rank
    finally:
        rank.leave()


class LocalRanks:
    """A Backend whose every call runs on `plan.gpus` local rank processes (see the module docstring)."""

    def __init__(
        self,
        spec: ModelSpec,
        plan: ParallelPlan,
        threads: int | None = None,
        *,
        start_timeout_s: float = 600.0,
        step_timeout_s: float = 600.0,
    ):
        self.spec, self.plan, self.threads = spec, plan, threads
        self.start_timeout_s, self.step_timeout_s = start_timeout_s, step_timeout_s
        self._context = mp.get_context("spawn")  # CUDA and torch's threads do not survive a fork
        self._procs: list[BaseProcess] = []
        self._inboxes: list[Any] = []
        self._outbox: Any = None
        self._cancel: Any = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def start(self) -> None:
        """Start the ranks and wait until each has loaded the model."""
        self.close()
        ctx, world, port = self._context, self.plan.gpus, _free_port()
        self._outbox, self._cancel = ctx.Queue(), ctx.Event()
        self._inboxes = [ctx.Queue() for _ in range(world)]
        for rank in range(world):
            one = Rank(rank, world, self.spec, self.plan, self.threads)
            args = (one, port, self._inboxes[rank], self._outbox, self._cancel)
            proc = ctx.Process(target=_rank_main, args=args, name=f"noor-rank-{rank}", daemon=True)
            proc.start()
            self._procs.append(proc)
        ready: set[int] = set()
        while len(ready) < world:
            kind, rank, detail = self._next(self.start_timeout_s, "loading the model")
            if kind != "ready":
                self._fail(f"rank {rank} could not load {self.spec.id} as {self.plan.text()}: {detail}")
            ready.add(rank)

    def generate(
        self, tasks: Sequence[Task], progress: Progress | None = None, preview: Preview | None = None
    ) -> list[Media]:
        """Run `tasks` on every rank; rank 0's media. Previews are not offered on several ranks (yet)."""
        if not self._procs:
            self.start()
        self._cancel.clear()
        for inbox in self._inboxes:
            inbox.put(list(tasks))
        result: list[Media] | None = None
        finished: set[int] = set()
        cancelled = False
        while len(finished) < len(self._procs):
            kind, rank, detail = self._next(self.step_timeout_s, "a denoising step")
            if kind == "progress" and progress is not None and not cancelled:
                try:
                    progress(*detail)  # rank 0's (done, total)
                except Cancelled:
                    cancelled = True
                    self._cancel.set()
            elif kind == "done":
                finished.add(rank)
                result = detail if rank == 0 else result
            elif kind == "cancelled":
                finished.add(rank)
                cancelled = True
            elif kind == "error":  # a rank that lost its peer says so; the peer that died is the cause
                self._fail(self._exited("a denoising step") or f"rank {rank} failed: {detail}")
        if cancelled:
            raise Cancelled
        assert result is not None
        return result

    def _next(self, timeout_s: float, doing: str) -> tuple[str, int, Any]:
        """The next message from the ranks; RankFailed when one has exited or none spoke within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                message: tuple[str, int, Any] = self._outbox.get(timeout=0.2)
                return message
            except queue.Empty:
                pass
            exited = self._exited(doing)
            if exited:
                self._fail(exited)
            if time.monotonic() > deadline:
                self._fail(f"no rank reported for {timeout_s:g} s during {doing}: a rank hung")

    def _exited(self, doing: str) -> str:
        for rank, proc in enumerate(self._procs):
            if not proc.is_alive():
                return f"rank {rank} of {len(self._procs)} exited (code {proc.exitcode}) during {doing}"
        return ""

    def _fail(self, reason: str) -> None:
        log.warning("%s (%s): %s", self.spec.id, self.plan.text(), reason)
        self.close()
        raise RankFailed(reason)

    def close(self) -> None:
        """Stop every rank (a rank blocked in a collective is killed)."""
        for inbox, proc in zip(self._inboxes, self._procs, strict=True):
            if proc.is_alive():
                inbox.put(None)
        for proc in self._procs:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._procs, self._inboxes = [], []

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the daemon processes die with it
            self.close()


class RankActor:
    """A `Rank` as a Ray actor (one GPU, or CPUs, of a STRICT_PACK placement group). Threaded (two calls at
    once), so the driver can read progress and cancel while `run` works."""

    def __init__(self, rank: int, world: int, spec: ModelSpec, plan: ParallelPlan, threads: int | None):
        import threading

        self.rank = Rank(rank, world, spec, plan, threads)
        self.steps = (0, 0)
        self.cancel = threading.Event()

    def address(self) -> tuple[str, int]:
        """Where the group meets: this actor's node and a free port on it (asked of rank 0)."""
        import ray  # type: ignore[import-not-found,unused-ignore]

        return str(ray.util.get_node_ip_address()), _free_port()

    def join(self, address: str, port: int) -> int:
        self.rank.join(address, port)
        return os.getpid()

    def run(self, tasks: list[Task]) -> list[Media] | None:
        self.cancel.clear()
        self.steps = (0, 0)

        def report(done: int, total: int) -> None:
            self.steps = (done, total)

        try:
            return self.rank.run(tasks, report, self.cancel.is_set)
        except Cancelled:
            return None

    def progress(self) -> tuple[int, int, bool]:
        return (*self.steps, self.cancel.is_set())

    def stop(self) -> None:
        self.cancel.set()


class NoPlacement(RuntimeError):
    """No node could hold a k-rank group within the wait (`start_timeout_s`), or the worker's group is smaller than
    the split: not an attempt that failed by chance, so the job fails with this reason rather than going back to
    the queue to wait again."""


class RayRanks:
    """A Backend whose every call runs on k Ray actors in one STRICT_PACK placement group (one GPU each, or
    `threads` CPUs each on a CPU deployment), driven together as `LocalRanks` drives local processes. An actor
    that dies fails the attempt (`RankFailed`); the next call starts fresh actors in the same group.

    The group is either given (`group`: a k-GPU worker's own, which the dispatcher made with the worker and
    removes with it; a split of up to k ranks takes its first bundles) or made here on the first call, pinned to
    `node`, kept across calls and removed by `close` (named `name`.ranks, so whoever started the caller can
    remove it should the caller die first)."""

    def __init__(
        self,
        spec: ModelSpec,
        plan: ParallelPlan,
        threads: int | None = None,
        *,
        gpus: bool = True,
        node: str | None = None,
        group: Any = None,
        name: str | None = None,
        start_timeout_s: float = 600.0,
        step_timeout_s: float = 600.0,
        poll_s: float = 0.1,
    ):
        """`node`: the Ray node id the group must be on (a worker actor's own node); None: any node. `name`: the
        rank actors' names are `name`.rank{i}-{start} (in the caller's namespace), the group's `name`.ranks."""
        from noor.runtime.ray_cluster import require_ray

        self.ray = require_ray()
        self.spec, self.plan, self.threads, self.gpus, self.node = spec, plan, threads, gpus, node
        self.name = name
        self.start_timeout_s, self.step_timeout_s, self.poll_s = start_timeout_s, step_timeout_s, poll_s
        self.given = group is not None
        if group is not None and group.bundle_count < plan.gpus:
            held = group.bundle_count
            raise NoPlacement(
                f"{plan.text()} needs {plan.gpus} ranks; this worker holds {held} GPUs (--gpus-per-worker {held})"
            )
        self.group: Any = group
        self.actors: list[Any] = []
        self.pids: list[int] = []
        self.starts = 0  # rank actors started afresh this many times (each after a failed attempt)

    def start(self) -> None:
        """The group (made once and kept; a given one as it is), then k fresh rank actors in it, each loaded."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self._stop_actors()
        ray, k = self.ray, self.plan.gpus
        if self.group is None:
            self.group = self._make_group()
        try:  # the group waits for k free GPUs on one node: a bounded wait, then the job fails saying why
            ray.get(self.group.ready(), timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            where = f"node {self.node}" if self.node else "no node"
            raise NoPlacement(
                f"{where} had {k} free {'GPUs' if self.gpus else 'CPU slots'} for {self.plan.text()} within "
                f"{self.start_timeout_s:g} s"
            ) from None
        actor = ray.remote(RankActor)
        resources = {"num_gpus": 1, "num_cpus": 0} if self.gpus else {"num_gpus": 0, "num_cpus": self.threads or 1}
        self.starts += 1
        self.actors = [
            actor.options(
                max_concurrency=2,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=i),
                **resources,
                **({"name": f"{self.name}.rank{i}-{self.starts}"} if self.name else {}),
            ).remote(i, k, self.spec, self.plan, self.threads)
            for i in range(k)
        ]
        try:
            address, port = ray.get(self.actors[0].address.remote())
            self.pids = ray.get([a.join.remote(address, port) for a in self.actors])
        except Exception as err:
            self._fail(f"a rank could not load {self.spec.id} as {self.plan.text()}: {_cause(err)}")

    def _make_group(self) -> Any:
        """k bundles on one node (STRICT_PACK: the collectives stay on it), on `node` if given."""
        from ray.util.placement_group import placement_group

        from noor.runtime.ray_cluster import NODE_ID_LABEL

        k = self.plan.gpus
        bundle = {"GPU": 1.0} if self.gpus else {"CPU": float(self.threads or 1)}
        pin = {"bundle_label_selector": [{NODE_ID_LABEL: self.node}] * k} if self.node else {}
        named = {"name": f"{self.name}.ranks"} if self.name else {}
        return placement_group([bundle] * k, strategy="STRICT_PACK", **pin, **named)

    def generate(
        self, tasks: Sequence[Task], progress: Progress | None = None, preview: Preview | None = None
    ) -> list[Media]:
        ray = self.ray
        if not self.actors:
            self.start()
        refs = [a.run.remote(list(tasks)) for a in self.actors]
        seen, cancelled = (0, 0), False
        last_change = time.monotonic()
        while True:
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=self.poll_s)
            failed = self._failed(refs, done)  # a rank that died or raised: its peers may wait on it for ever
            if failed:
                self._fail(failed)
            try:
                steps = ray.get(self.actors[0].progress.remote())
            except Exception as err:
                self._fail(f"rank 0 of {len(self.actors)} was lost: {_cause(err)}")
            if steps[:2] != seen:
                seen, last_change = steps[:2], time.monotonic()
                if progress is not None and not cancelled and seen[1]:
                    try:
                        progress(*seen)
                    except Cancelled:
                        cancelled = True
                        self.actors[0].stop.remote()
            if len(done) == len(refs):
                break
            if time.monotonic() - last_change > self.step_timeout_s:
                self._fail(f"no step for {self.step_timeout_s:g} s: a rank hung")
        results = ray.get(refs)
        if cancelled or results[0] is None:
            raise Cancelled
        media: list[Media] = results[0]
        return media

    def _failed(self, refs: list[Any], done: list[Any]) -> str:
        """Why the attempt failed, if a finished call did: the rank whose actor died first (its peers then fail
        too, having lost it), else the first that raised; "" if none did."""
        errors = []
        for ref in done:
            try:
                self.ray.get(ref)
            except Exception as err:
                died = isinstance(err, self.ray.exceptions.RayActorError)
                errors.append((not died, refs.index(ref), f"{'died' if died else 'failed'}: {_cause(err)}"))
        if not errors:
            return ""
        _, rank, why = min(errors)
        return f"rank {rank} of {len(refs)} {why}"

    def _fail(self, reason: str) -> None:
        log.warning("%s (%s on Ray): %s", self.spec.id, self.plan.text(), reason)
        self._stop_actors()
        raise RankFailed(reason)

    def _stop_actors(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
        self.actors, self.pids = [], []

    def close(self) -> None:
        """Stop the rank actors and remove the group made here (a given group stays its owner's)."""
        self._stop_actors()
        if self.group is not None and not self.given:
            from ray.util.placement_group import remove_placement_group

            with contextlib.suppress(Exception):
                remove_placement_group(self.group)
            self.group = None


def _cause(err: BaseException) -> str:
    """A Ray error's first line (the actor's own exception, or why the actor died)."""
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__

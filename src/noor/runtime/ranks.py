"""A k-rank worker on one machine: k local processes, one per GPU (NCCL) or per CPU slot (gloo), driven together.

Each rank process loads the model as one rank of a `torch.distributed` group (`DiffusersBackend` with a
parallel plan) and waits for work. `LocalRanks.generate` hands every rank the same tasks; rank 0 reports
each denoising step and returns the media. The ranks agree at every step whether to go on (rank 0
broadcasts the driver's cancel), so a cancelled job stops all of them between the same two steps.

A rank that dies, raises, or stays silent for `step_timeout_s` fails the attempt with `RankFailed`: the
processes are stopped and started afresh for the next job, and the worker fails the job with the reason,
so the store retries it once as it retries any failed attempt (nothing is billed twice: a job is charged
once, at create).
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

from noor.engine.backend import AttemptFailed, Cancelled, Preview, Progress
from noor.engine.diffusers.installed import InstalledModel
from noor.engine.diffusers.parallel import label
from noor.engine.task import Media, Task
from noor.perf.parallelism import ParallelPlan

log = logging.getLogger("noor.ranks")


def rank_threads(model: InstalledModel, plan: ParallelPlan, threads: int | None) -> int | None:
    """Torch threads per rank: on GPUs each rank's own default; on the CPU the worker's threads shared out,
    so k ranks do not oversubscribe the cores they were given."""
    from noor.engine.diffusers.installed import resolve_device

    if resolve_device(model.device) != "cpu" or threads is None:
        return threads
    return max(1, threads // plan.gpus)


class RankFailed(AttemptFailed):
    """A rank died, raised or hung: the attempt fails and the job is retried."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(
    rank: int,
    world: int,
    port: int,
    model: InstalledModel,
    plan: ParallelPlan,
    threads: int | None,
    inbox: Any,
    outbox: Any,
    cancel: Any,
) -> None:
    """One rank: join the group, load the model split by `plan`, then run what the driver sends until None."""
    import torch
    import torch.distributed as dist

    from noor.engine.diffusers.backend import DiffusersBackend

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.is_available() and model.device != "cpu"
    if cuda:
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        try:
            backend = DiffusersBackend(model, threads=threads, parallel=plan)
        except Exception as err:
            outbox.put(("error", rank, f"{type(err).__name__}: {err}"))
            return
        outbox.put(("ready", rank, None))
        go_on = torch.zeros(1)
        while (tasks := inbox.get()) is not None:

            def on_step(done: int, total: int) -> None:
                # every rank takes rank 0's word, so all stop (or none) between the same two steps
                go_on[0] = 0.0 if rank == 0 and cancel.is_set() else 1.0
                dist.broadcast(go_on, src=0)
                if rank == 0:
                    outbox.put(("progress", done, total))
                if go_on.item() == 0.0:
                    raise Cancelled

            try:
                media = backend.generate(tasks, on_step)
                outbox.put(("done", rank, media if rank == 0 else None))
            except Cancelled:
                outbox.put(("cancelled", rank, None))
            except Exception as err:
                outbox.put(("error", rank, f"{type(err).__name__}: {err}"))
                return  # the group may be left mid-collective: the driver restarts every rank
    finally:
        dist.destroy_process_group()


class LocalRanks:
    """A Backend whose every call runs on `plan.gpus` local rank processes (see the module docstring)."""

    def __init__(
        self,
        model: InstalledModel,
        plan: ParallelPlan,
        threads: int | None = None,
        *,
        start_timeout_s: float = 600.0,
        step_timeout_s: float = 600.0,
    ):
        self.model, self.plan, self.threads = model, plan, threads
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
            args = (rank, world, port, self.model, self.plan, self.threads, self._inboxes[rank], self._outbox)
            proc = ctx.Process(target=_rank_main, args=(*args, self._cancel), name=f"noor-rank-{rank}", daemon=True)
            proc.start()
            self._procs.append(proc)
        ready: set[int] = set()
        while len(ready) < world:
            kind, rank, detail = self._next(self.start_timeout_s, "loading the model")
            if kind != "ready":
                self._fail(f"rank {rank} could not load {self.model.id} as {label(self.plan)}: {detail}")
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
                    progress(rank, detail)  # ("progress", done, total)
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
        log.warning("%s (%s): %s", self.model.id, label(self.plan), reason)
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

"""A training process group: N local ranks started by torch's elastic launcher, one model replica each.

The whole API, for a trainer that should also run on several processes:

    def fit_on_rank(group: Group, cfg, out) -> Result:         # module level, so the launcher can pickle it
        model = group.wrap(build(cfg))                         # DistributedDataParallel when N > 1, else as is
        for step in range(cfg.steps):
            batch = make_batch(cfg, rng)                       # the whole global batch, the same on every rank
            loss = model(batch[group.shard(len(batch))])       # this rank's rows; backward all-reduces gradients
            ...
            log(group.mean(loss.item()))                       # the global batch's loss, for a progress bar
        if group.is_main:
            save(out)                                          # rank 0 alone writes outputs
        group.barrier()

    result = launch(nproc, fit_on_rank, cfg, out)              # rank 0's return value

`launch(1, ...)` calls the function in this process with `SINGLE` (no process group, no DDP, no launcher), so a
one-process run is exactly what it was before; `launch(N > 1, ...)` starts N ranks with
`torch.distributed.launcher.api.elastic_launch` (what `torchrun --standalone` runs: a c10d rendezvous on a free
local port, `spawn`), each of which joins the group from the launcher's environment (`RANK`, `WORLD_SIZE`,
`MASTER_ADDR`, ...), gloo on CPU or nccl on CUDA. A rank that dies (killed, out of memory, an exception) ends the
whole run with `RankFailed`, one line naming the rank and how it ended; no restarts (resume from a checkpoint:
`noor.engine.checkpoint`). Also: `group.broadcast(tensor, src)` shares work one rank did (noor-tiny's clip pool),
`group.on_main(bars)` enters a progress display on rank 0 only, and `train_on_rank` runs a trainer of the form
`train(*args, on_step=, group=)` with the CLI's bars on rank 0 (`noor train tiny|world`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

T = TypeVar("T")


class RankFailed(RuntimeError):
    """A rank of a launched run ended badly; the message is one line (which rank, exit code or signal)."""


@dataclass(frozen=True)
class Group:
    """This process's place in a training process group (`SINGLE`: a run of one process, no group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # "" when there is no process group

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that shows progress and writes outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def shard(self, n: int) -> slice:
        """The rows of a global batch of `n` that this rank trains on (contiguous, equal; `n` % world size must be
        0, else ValueError: the trainer's callers check it first, naming their option)."""
        if n % self.world_size:
            raise ValueError(f"a batch of {n} does not split over {self.world_size} ranks")
        size = n // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def wrap(self, module: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """`module` in `DistributedDataParallel` in a group (rank 0's weights broadcast to all, gradients averaged
        over the ranks in backward), `module` itself in a run of one process."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if self.backend == "nccl" else None
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)

    def mean(self, value: float) -> float:
        """The mean of `value` over the ranks (each rank's loss on its shard -> the global batch's loss)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item()) / self.world_size

    def broadcast(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """`tensor`, in place, as rank `src` has it (work one rank did, shared); unchanged in a run of one process."""
        if self.distributed:
            dist.broadcast(tensor, src)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def on_main(self, context: Callable[[], AbstractContextManager[T]] | None) -> AbstractContextManager[T | None]:
        """`context()` on rank 0 (e.g. the CLI's progress bars), a context yielding None on the other ranks."""
        return context() if context is not None and self.is_main else nullcontext(None)


SINGLE = Group()


def train_on_rank(
    group: Group, train: Callable[..., T], bars: Callable[[], AbstractContextManager[Any]] | None, *args: Any
) -> T:
    """`train(*args, on_step=..., group=group)` on one rank, with `bars()` (a progress display that yields the
    `on_step` callback, e.g. the CLI's bars) on rank 0 only and `on_step=None` on the others. What the trainers'
    CLI commands launch: `launch(n, train_on_rank, partial(train, ...), bars, cfg, out)`."""
    with group.on_main(bars) as on_step:
        return train(*args, on_step=on_step, group=group)


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def join(backend: str | None = None) -> Group:
    """Join the process group the launcher's environment describes (`SINGLE` when not launched by it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return SINGLE
    backend = backend or default_backend()
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Group(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def leave(group: Group) -> None:
    """Destroy the process group (after a last barrier, so no rank leaves while another still talks to it)."""
    if group.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@record  # a rank's exception (type, message, traceback) reaches the launcher's error report
def _rank_main(fn: Callable[..., T], backend: str | None, threads: int, args: tuple[Any, ...]) -> T:
    """What each launched rank runs: join, `fn(group, *args)`, leave."""
    torch.set_num_threads(threads)
    group = join(backend)
    try:
        return fn(group, *args)
    finally:
        leave(group)


def launch(nproc: int, fn: Callable[..., T], *args: Any, backend: str | None = None) -> T:
    """Run `fn(group, *args)` on `nproc` local ranks and return rank 0's result.

    `fn` must be importable (a module-level function) and `args` picklable: the ranks are spawned. With
    `nproc == 1` it runs here, with `SINGLE`. `backend`: "gloo" or "nccl" (default: nccl when CUDA is available)."""
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    if nproc == 1:
        return fn(SINGLE, *args)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free port, as `torchrun --standalone` picks
        max_restarts=0,  # a dead rank ends the run; `--resume` continues it from the last checkpoint
        monitor_interval=0.1,
        start_method="spawn",
    )
    # torchrun gives each rank OMP_NUM_THREADS=1 when unset; a share of the cores serves a CPU run better
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // nproc))
    try:
        results = elastic_launch(config, _rank_main)(fn, backend, threads, args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        how = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        raise RankFailed(f"rank {rank} of {nproc} failed ({how})") from err
    return results[0]

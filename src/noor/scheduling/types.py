"""Plain data the policies read: a queued job and a worker (a node's free GPUs). No I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueuedJob:
    id: str
    tenant: str
    model: str
    submitted_at_s: float
    predicted_s: float  # from noor.perf, on the chip it is expected to run on
    priority: int = 0  # lower runs first (as in the live store)
    gpus: int = 1  # k GPUs, all on one node
    memory_gb: float = 0.0  # peak per GPU
    regions: tuple[str, ...] | None = None  # where the job may run (its tenant's regions); None: anywhere
    batch_key: str | None = None  # jobs with the same key can run together in one call; None: never batched


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One node as the scheduler sees it: where it is, what it runs, what is free now."""

    id: str
    region: str | None
    chip: str
    free_gpus: int
    memory_gb: float  # per GPU; 0: unknown (memory is then not checked)
    models: tuple[str, ...] | None = None  # None: any model


@dataclass(frozen=True, slots=True)
class Assignment:
    """Jobs (one, or a batch of compatible ones) to start together on one worker."""

    worker_id: str
    jobs: tuple[QueuedJob, ...]

    @property
    def gpus(self) -> int:
        return self.jobs[0].gpus

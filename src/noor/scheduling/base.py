"""A queue-order policy: a small base class; one file per policy; a registry keyed by name (vidur-style)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from noor.scheduling.types import QueuedJob

Usage = Mapping[str, float]  # GPU-seconds each tenant has been given so far (for fair share)


class SchedulingError(ValueError):
    """A policy name or setting that does not exist; names the parameter and the value."""


class Policy(ABC):
    """Orders a queue. `order` is what the live store and the simulator call; it sorts by `key`.

    A policy whose `key` depends on neither `now_s` nor `usage` is `static`: the simulator can then keep
    its queues as heaps ordered by that key and get exactly the order `order` would give.
    """

    name: ClassVar[str]
    static: ClassVar[bool] = True

    @abstractmethod
    def key(self, job: QueuedJob, now_s: float = 0.0, usage: Usage | None = None) -> tuple[Any, ...]:
        """Lower runs first. Ties end on the job id, so the order is total and deterministic."""

    def order(self, queue: Sequence[QueuedJob], now_s: float = 0.0, usage: Usage | None = None) -> list[QueuedJob]:
        return sorted(queue, key=lambda job: self.key(job, now_s, usage))

    # How a store finds the first job in policy order without reading the whole queue (`scheduling.frontier`):
    # orders of a queued job's plain fields ("priority", "predicted_gpu_s", "submitted_at_s"; ties end on the id),
    # each served by an index, along which `key` never decreases. A scan with a group field reads only the first
    # job of each value of that field (the others rank behind it). With `per_tenant`, the policy ranks tenants,
    # not jobs: each tenant's first job in `scan` is read, and only those count.
    per_tenant: ClassVar[bool] = False
    scan: ClassVar[tuple[str, ...]] = ("submitted_at_s",)

    def scans(self) -> list[tuple[tuple[str, ...], str | None]]:
        """(order, group field or None) for each scan."""
        return [(self.scan, None)]

    def bound(self, lasts: Sequence[QueuedJob], now_s: float = 0.0, usage: Usage | None = None) -> tuple[Any, ...]:
        """A key no job read after `lasts` (the last job read in each of `scans`) can go below. The default holds
        when `key` sorts exactly as the one scan does."""
        return self.key(lasts[0], now_s, usage)

    @abstractmethod
    def key_columns(self, submitted_at_s: Any, priority: Any, predicted_gpu_s: Any) -> list[Any]:
        """`key` for many jobs at once, as numpy arrays without the final id (for the simulator, which
        ranks millions of jobs): sorting by these columns, then id, gives the order `key` gives.
        `predicted_gpu_s` = predicted_s x gpus. For a non-static policy: the order within one tenant."""


POLICIES: dict[str, Callable[..., Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    POLICIES[cls.name] = cls
    return cls


def get(name: str, **settings: Any) -> Policy:
    """The policy called `name`, built with its settings (e.g. get("sjf", aging_per_s=0.01))."""
    import noor.scheduling.policies  # noqa: F401  (registers every policy)

    if name not in POLICIES:
        raise SchedulingError(f"policy: unknown policy {name!r}; valid: {', '.join(sorted(POLICIES))}")
    try:
        return POLICIES[name](**settings)
    except TypeError as err:
        raise SchedulingError(f"policy {name!r}: bad settings {settings!r} ({err})") from err

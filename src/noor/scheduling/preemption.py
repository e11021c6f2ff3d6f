"""Pre-emption: which training partitions give their chips back to serving jobs that wait.

A training job holds a partition of a site (whole nodes, gang-scheduled: all of it or none) for days. Serving
jobs that outrank it (a lower `priority` value, the queue order's own tiers) and have waited `after_s` at its
site may take it back under a pre-emption policy; a pre-empted partition loses the work done since its last
checkpoint and waits to be taken again. The simulator's core calls `victims`; like the queue-order policies it
is pure, over plain numbers, and one small class per policy behind a registry.

from noor import scheduling
policy = scheduling.preemption_policy("priority")
policy.victims([Partition("pretrain", priority=10, gpus=4096, lost_s=1200.0)], needed_gpus=300, priority=0)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from noor.scheduling.base import SchedulingError


@dataclass(frozen=True, slots=True)
class Partition:
    """A running training job's hold on a site, as a pre-emption policy sees it."""

    id: str
    priority: int  # lower runs first, on the serving classes' scale
    gpus: int
    lost_s: float  # work done since its last checkpoint: what a pre-emption now throws away


class Preemption(ABC):
    """Chooses the partitions to take back for `needed_gpus` of serving work of priority `priority`."""

    name: ClassVar[str]

    @abstractmethod
    def victims(self, running: Sequence[Partition], needed_gpus: int, priority: int) -> list[Partition]:
        """The partitions to pre-empt, in the order they are taken back (none: serving waits)."""


PREEMPTIONS: dict[str, Callable[[], Preemption]] = {}


def _register(cls: type[Preemption]) -> type[Preemption]:
    PREEMPTIONS[cls.name] = cls
    return cls


@_register
class Never(Preemption):
    """Training keeps its partition until its work is done, whatever waits."""

    name = "never"

    def victims(self, running: Sequence[Partition], needed_gpus: int, priority: int) -> list[Partition]:
        return []


@_register
class ByPriority(Preemption):
    """Serving work that outranks a partition takes it back: the lowest-ranked partitions first, among equals
    the one that loses the least work, until `needed_gpus` are covered."""

    name = "priority"

    def victims(self, running: Sequence[Partition], needed_gpus: int, priority: int) -> list[Partition]:
        if needed_gpus <= 0:
            return []
        behind = sorted((p for p in running if p.priority > priority), key=lambda p: (-p.priority, p.lost_s, p.id))
        out: list[Partition] = []
        freed = 0
        for p in behind:
            out.append(p)
            freed += p.gpus
            if freed >= needed_gpus:
                break
        return out


def preemption_policy(name: str) -> Preemption:
    """The pre-emption policy called `name`."""
    if name not in PREEMPTIONS:
        raise SchedulingError(f"preemption: unknown policy {name!r}; valid: {', '.join(sorted(PREEMPTIONS))}")
    return PREEMPTIONS[name]()

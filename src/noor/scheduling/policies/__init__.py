"""One file per queue-order policy; importing this package registers them all."""

from noor.scheduling.policies import fair_share, fifo, priority, sjf

__all__ = ["fair_share", "fifo", "priority", "sjf"]

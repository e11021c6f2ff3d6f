"""The part of a queue a store must read for a policy's order to start exactly as over the whole queue.

A store cannot sort a backlog of 10,000 jobs on every claim, and must not sort only the oldest few (a short
job behind 300 long ones would never be seen by SJF). Each policy names the orders of plain fields its key
never decreases along (`Policy.scans`), so a store reads the queue from an index in each, `depth` rows at a
time, until `Policy.bound` shows no unread job can come first. `read` does the I/O; this stays pure.
"""

from __future__ import annotations

from collections.abc import Callable

from noor.scheduling.base import Policy, Usage
from noor.scheduling.types import QueuedJob

# `read(order, depth, group)`: the first `depth` queued jobs in `order` (then id; depth None: all); with a group
# field, only the first job of each of its values, those of the lowest `depth` values
Read = Callable[[tuple[str, ...], int | None, str | None], list[QueuedJob]]

FIRST_DEPTH = 16  # rows per order on the first read; a claim that lost a race falls back on the next ones


def frontier(
    policy: Policy, read: Read, now_s: float = 0.0, usage: Usage | None = None, depth: int = FIRST_DEPTH
) -> list[QueuedJob]:
    """Jobs that include the one `policy.order` puts first over the whole queue `read` reads from.

    Per-tenant policies (fair share) rank each tenant's first job only, so that job per tenant is enough.
    Otherwise each scan is read `depth` deep, 4x deeper each round, until a scan ran out (it then read the
    whole queue) or the best key seen is at most the bound on every unread job's key (Fagin's threshold
    algorithm; one round when the key is a scan's own order)."""
    if policy.per_tenant:
        return read(policy.scans()[0][0], None, "tenant")
    while True:
        scans = [read(order, depth, group) for order, group in policy.scans()]
        seen = list({job.id: job for scan in scans for job in scan}.values())
        if not seen or any(len(scan) < depth for scan in scans):
            return seen
        best = min(policy.key(job, now_s, usage) for job in seen)
        if best <= policy.bound([scan[-1] for scan in scans], now_s, usage):
            return seen
        depth *= 4

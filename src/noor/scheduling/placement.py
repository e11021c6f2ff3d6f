"""Where a job may run: region (data residency), model, memory fit, k GPUs on one node.

`eligible` and `fits` are the rules both the live store and the simulator apply. `Nodes` is the one best-fit
rule: the simulator's sites are `Nodes`, and `place` picks among workers with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from noor.scheduling.types import QueuedJob, WorkerView


def region_allowed(job: QueuedJob, region: str | None) -> bool:
    """Residency: a job bound to regions runs only in one of them; a worker of no region takes only unbound jobs."""
    return job.regions is None or (region is not None and region in job.regions)


def eligible(job: QueuedJob, worker: WorkerView) -> bool:
    """Could this job ever run on this worker (ignoring what is busy now)?"""
    return (
        region_allowed(job, worker.region)
        and (worker.models is None or job.model in worker.models)
        and (worker.memory_gb <= 0 or job.memory_gb <= worker.memory_gb)
    )


def fits(job: QueuedJob, worker: WorkerView) -> bool:
    """Can this job start on this worker now: eligible, and k free GPUs on this one node."""
    return job.gpus <= worker.free_gpus and eligible(job, worker)


class Nodes:
    """Free GPUs on each node of a pool, and best fit over them: `take(k)` starts k GPUs on the node with the
    fewest free GPUs that still has k (keeps whole nodes free for k-GPU jobs), the most recently freed of those
    first; O(1) amortised, so the simulator places a job per event on a 10,000-GPU fleet.

    A node can be kept (`reserve`) for the first job in policy order when it is wider than any node's free GPUs:
    narrower jobs then start on other nodes only (EASY-style backfill), so they cannot delay it.
    """

    __slots__ = ("by_free", "levels", "node_down", "node_free", "node_size", "per_node", "reserved", "reserved_k")

    def __init__(self, sizes: Sequence[int], per_node: int | None = None):
        self.per_node = per_node if per_node is not None else max(sizes, default=0)
        self.node_free = list(sizes)
        self.node_size = list(sizes)
        self.levels = [range(k, self.per_node + 1) for k in range(self.per_node + 1)]  # free counts that fit k
        self.node_down = [0] * len(sizes)
        # by_free[c]: a stack of nodes that had c free GPUs when pushed; stale entries are dropped when met
        # (a set's next(iter()) slows down after many deletions; this stays O(1) amortised). Node 0 on top.
        self.by_free: list[list[int]] = [[] for _ in range(self.per_node + 1)]
        for n in reversed(range(len(sizes))):
            self.by_free[sizes[n]].append(n)
        self.reserved = -1  # a node kept for the first job that needs more GPUs than any node has free
        self.reserved_k = 0

    def take(self, k: int) -> int:
        """Best fit: a node with the fewest free GPUs >= k (not the reserved node unless k is as wide as the
        job it is kept for), its free count lowered by k; -1 if none."""
        by_free, node_free = self.by_free, self.node_free
        if self.reserved < 0:  # the common case, kept short: this runs once per job
            for c in self.levels[k]:
                stack = by_free[c]
                while stack:
                    node = stack.pop()
                    if node_free[node] == c:
                        node_free[node] = c - k
                        by_free[c - k].append(node)
                        return node
            return -1
        reserved = self.reserved
        for c in range(k, self.per_node + 1):
            stack = by_free[c]
            skipped = -1
            while stack:
                node = stack.pop()
                if node_free[node] != c:
                    continue  # stale
                if node == reserved and k < self.reserved_k:
                    skipped = node
                    continue
                if skipped >= 0:
                    stack.append(skipped)
                node_free[node] = c - k
                by_free[c - k].append(node)
                if k >= self.reserved_k:
                    self.reserved, self.reserved_k = -1, 0  # the wide job this was kept for (or its like) runs
                return node
            if skipped >= 0:
                stack.append(skipped)
        return -1

    def reserve(self, k: int) -> None:
        """Keep the node nearest to k free GPUs for a k-GPU job: narrower jobs may not start there meanwhile."""
        if self.reserved >= 0:
            return
        best = -1
        for c in range(self.per_node, -1, -1):  # the most free GPUs first: the top of each stack
            stack = self.by_free[c]
            while stack and self.node_free[stack[-1]] != c:
                stack.pop()  # stale
            for node in reversed(stack):
                if self.node_free[node] == c and self.node_size[node] - self.node_down[node] >= k:
                    best = node
                    break
            if best >= 0:
                break
        self.reserved, self.reserved_k = best, (k if best >= 0 else 0)

    def take_whole(self, count: int) -> list[int]:
        """`count` whole nodes (every GPU up and free, none kept for a wide job) for a partition held as one, the
        most recently freed first; [] (and nothing taken) if fewer are whole. O(nodes): called per partition."""
        full, node_free = self.per_node, self.node_free
        whole: list[int] = []
        for node in dict.fromkeys(reversed(self.by_free[full])):  # top of the stack first, each node once
            if node_free[node] == full and node != self.reserved:
                whole.append(node)
        if len(whole) < count:
            return []
        taken, kept = whole[:count], whole[count:]
        for node in taken:
            node_free[node] = 0
        self.by_free[full] = kept[::-1]  # the stack without its stale entries
        return taken

    def give_back(self, nodes: Sequence[int]) -> None:
        """A partition's nodes are free again (their GPUs that are down stay down)."""
        for node in nodes:
            self.move(node, self.node_size[node] - self.node_down[node])

    def move(self, node: int, new: int) -> None:
        """The node now has `new` free GPUs (a job ended, a GPU failed or was repaired)."""
        self.node_free[node] = new
        self.by_free[new].append(node)


def place(job: QueuedJob, workers: Sequence[WorkerView]) -> WorkerView | None:
    """Best fit (`Nodes.take`) among the workers the job fits now: the fewest free GPUs, then the one listed
    first. None if no worker can take it now."""
    fitting = [worker for worker in workers if fits(job, worker)]
    if not fitting:
        return None
    return fitting[Nodes([worker.free_gpus for worker in fitting]).take(job.gpus)]

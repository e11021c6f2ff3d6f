"""`take`, the one batching rule of the live claim and the simulator: the head, then the next jobs that may join
it in policy order, read one at a time and no further than a full batch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from noor import scheduling
from noor.scheduling.batching import take


def test_take_skips_jobs_that_cannot_join_and_reads_no_further_than_a_full_batch() -> None:
    read: list[int] = []

    def queue() -> Iterator[int]:
        for j in range(1, 10):
            read.append(j)
            yield j

    assert take(0, queue(), 3, lambda j: j % 2 == 0) == [0, 2, 4]
    assert read == [1, 2, 3, 4]  # 5 and later were never read: the batch was full at 4


def test_a_head_that_cannot_join_a_batch_runs_alone_and_reads_nothing() -> None:
    read: list[int] = []

    def queue() -> Iterator[int]:
        read.append(1)
        yield 1

    assert take(7, queue(), 4, lambda j: j != 7) == [7]
    assert take(2, queue(), 1, lambda j: True) == [2]
    assert read == []


def test_max_batch_below_one_is_refused() -> None:
    with pytest.raises(scheduling.SchedulingError, match="max_batch: must be >= 1, got 0"):
        take(0, iter(()), 0, bool)


def test_batch_takes_the_heads_key_and_gpus_only() -> None:
    def job(i: int, key: str | None = "k", gpus: int = 1, predicted_s: float = 1.0) -> scheduling.QueuedJob:
        return scheduling.QueuedJob(f"j{i}", "t", "m", float(i), predicted_s, gpus=gpus, batch_key=key)

    head = job(0)
    rest = [head, job(1, key="other"), job(2, gpus=2), job(3, predicted_s=90.0), job(4), job(5), job(6)]
    assert [j.id for j in scheduling.batch(head, rest, 3, max_predicted_s=60.0)] == ["j0", "j4", "j5"]
    assert scheduling.batch(job(8, key=None), [job(9, key=None)], 4) == [job(8, key=None)]
    long_head = job(10, predicted_s=90.0)
    assert scheduling.batch(long_head, [job(11)], 4, max_predicted_s=60.0) == [long_head]

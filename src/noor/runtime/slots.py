"""Slots: how many outbound requests may be in flight, in total and per key (a tenant, a host).

A slow peer can then hold at most its key's share of the threads or tasks that talk to peers, never
all of them. Taking is all-or-nothing and never waits: the caller refuses (429) or tries again later.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


class Busy(RuntimeError):
    """No free slot for this key (or in total) right now."""


class Slots:
    def __init__(self, total: int, per_key: Mapping[str, int]):
        """`per_key` maps a kind of key ("tenant", "host") to its bound; keys are (kind, value) pairs."""
        if total < 1 or any(n < 1 for n in per_key.values()):
            raise ValueError(f"slot bounds must be at least 1, got total={total}, per_key={dict(per_key)}")
        self.total, self.per_key = total, dict(per_key)
        self._held: Counter[tuple[str, str]] = Counter()
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def take(self, keys: Mapping[str, str]) -> bool:
        """One slot in total and one for each (kind, value) in `keys`, or nothing and False."""
        with self._lock:
            if self._in_flight >= self.total or any(self._held[k] >= self.per_key[k[0]] for k in keys.items()):
                return False
            self._in_flight += 1
            self._held.update(keys.items())
            return True

    def give(self, keys: Mapping[str, str]) -> None:
        with self._lock:
            self._in_flight -= 1
            self._held.subtract(keys.items())
            self._held += Counter()  # drop the zero counts, so the table stays as big as what is in flight

    @contextmanager
    def hold(self, keys: Mapping[str, str]) -> Iterator[None]:
        if not self.take(keys):
            full = [f"{kind} {value!r} already has {self.per_key[kind]}" for kind, value in keys.items()
                    if self._held[(kind, value)] >= self.per_key[kind]]  # fmt: skip
            raise Busy(f"{' and '.join(full) or f'this server already has {self.total}'} in flight")
        try:
            yield
        finally:
            self.give(keys)

"""Admission of interactive sessions: start now, wait in the queue at a position, or be refused.

A session holds a slot (its chips) for as long as it lasts, so it is admitted, not ordered: the live
server's session host (`POST /v1/worlds/sessions`: a slot, a queue position, or 429 with Retry-After) and the
simulator call the same pure functions over plain numbers.

from noor import scheduling
scheduling.admit(free_slots=0, queued=3, max_queue=8)          # Admission("queue", position=4)
scheduling.admit(0, 8, 8, mean_session_s=600, slots=100)       # Admission("refuse", retry_after_s=6.0)
scheduling.meets_frame_slo(frame_latency_s=0.03, fps=24)        # True: 30 ms <= 41.7 ms
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from noor.scheduling.base import SchedulingError


@dataclass(frozen=True)
class Admission:
    decision: Literal["start", "queue", "refuse"]
    position: int | None = None  # 1-based place in the queue, when queued
    retry_after_s: float | None = None  # when refused: the mean time until a slot frees, if known


def admit(
    free_slots: int,
    queued: int,
    max_queue: int | None,
    mean_session_s: float | None = None,
    slots: int | None = None,
) -> Admission:
    """Start if a slot is free and nobody waits ahead; else queue behind `queued` sessions while the queue is
    shorter than `max_queue` (None: no limit); else refuse. A refusal's Retry-After is the mean time until one
    of `slots` busy slots frees, mean_session_s / slots (the minimum of that many exponential lengths)."""
    for name, value in (("free_slots", free_slots), ("queued", queued)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SchedulingError(f"{name} must be an integer >= 0, got {value!r}")
    if max_queue is not None and (isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0):
        raise SchedulingError(f"max_queue must be an integer >= 0 or None, got {max_queue!r}")
    if free_slots > 0 and queued == 0:
        return Admission("start")
    if max_queue is None or queued < max_queue:
        return Admission("queue", position=queued + 1)
    retry = mean_session_s / slots if mean_session_s is not None and slots else None
    return Admission("refuse", retry_after_s=retry)


def meets_frame_slo(frame_latency_s: float | None, fps: float) -> bool:
    """Whether a chip draws a session's frames in time: a frame's time on it at most 1 / fps
    (None: the model does not fit on the chip)."""
    if not fps > 0:
        raise SchedulingError(f"fps must be above 0, got {fps!r}")
    return frame_latency_s is not None and frame_latency_s <= 1 / fps

"""Each generation's ETA and price, from the perf model (`noor.perf`) for the chip its workers run on.

The price is what the request's predicted seconds cost at that chip's $/hour (catalog, overridable),
times a markup from settings; it is taken from the tenant's credits when the job is created and given
back if the job fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from noor import catalog
from noor.engine import registry
from noor.engine.task import Task
from noor.perf import estimate_task
from noor.perf.shape import PerfError

log = logging.getLogger("noor.api")


@dataclass(frozen=True)
class Quote:
    eta_s: float | None  # predicted seconds of work on one worker, None if the model is unknown to the catalog
    price_cents: float


FREE = Quote(None, 0.0)
_unpriced: set[str] = set()


def perf_id(model_id: str) -> str | None:
    """The catalog architecture a Noor model id runs: the one its registry entry names (an installed diffusers
    model's `perf_id`, see `noor models add`), else its own id when the catalog has it (`tiny`)."""
    try:
        named = getattr(registry.get(model_id), "perf_id", None)
    except registry.UnknownModel:
        named = None
    if named in catalog.models():
        return str(named)
    return model_id if model_id in catalog.models() else None


def quote(model_id: str, task: dict[str, Any], chip: str = "cpu-local", markup: float = 1.0) -> Quote:
    if task.get("kind") == "upscale":  # Lanczos resampling: no model, not billed
        return FREE
    arch = perf_id(model_id)
    if arch is None:
        if model_id not in _unpriced:  # once per model, not once per request
            _unpriced.add(model_id)
            log.warning("no perf model for %s: its generations carry no ETA and are not billed", model_id)
        return FREE
    width, height, num_frames, steps = drawn_shape(model_id, task)
    try:
        e = estimate_task(arch, width, height, num_frames, steps, chip)
    except (catalog.UnknownId, PerfError) as err:
        log.warning("cannot price %s on %s: %s", model_id, chip, err)
        return FREE
    if not e.fits or e.latency_s is None:
        log.warning("cannot price %s on %s: %s", model_id, chip, e.why_not or "no latency")
        return FREE
    return Quote(round(e.latency_s, 3), round((e.cost_usd or 0.0) * 100.0 * markup, 6))


def drawn_shape(model_id: str, task: dict[str, Any]) -> tuple[int, int, int, int | None]:
    """(width, height, frames, steps) the worker will run: the model's own rounding (an installed model
    draws sides in its multiples and t*k+1 frames) and its default steps when the request names none."""
    try:
        spec = registry.get(model_id)
    except registry.UnknownModel:
        return task["width"], task["height"], task["num_frames"], task.get("steps")
    probe = Task(
        prompt="-",
        width=task["width"],
        height=task["height"],
        num_frames=task["num_frames"],
        fps=task.get("fps") or spec.default_fps,
        start_frame=_KEYFRAME if task.get("start") else None,
    )
    fitted, _ = spec.fit(probe)
    return fitted.width, fitted.height, fitted.num_frames, task.get("steps") or spec.default_steps


_KEYFRAME = np.zeros((1, 1, 3), np.uint8)  # keyframes matter to the shape only by being there

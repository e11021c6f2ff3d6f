"""Entry points by id: `predict` for tools, `estimate_task` for the API's per-request ETA and price."""

from __future__ import annotations

from functools import lru_cache

from noor import catalog
from noor.perf.estimate import Estimate, estimate
from noor.perf.parallelism import ParallelPlan
from noor.perf.shape import Shape


def predict(model_id: str, chip_id: str, shape: Shape | None = None, plan: ParallelPlan | None = None) -> Estimate:
    """Estimate by catalog ids; unknown ids raise catalog.UnknownId listing the valid ones."""
    model = catalog.model(model_id)
    chip = catalog.chip(chip_id)
    return estimate(model, shape or Shape.default(model), chip, plan or ParallelPlan())


@lru_cache(maxsize=4096)
def estimate_task(
    model_id: str,
    width: int,
    height: int,
    num_frames: int,
    steps: int | None = None,
    chip: str = "cpu-local",
    plan: ParallelPlan | None = None,
) -> Estimate:
    """ETA and price of one generation on one worker of `plan.gpus` chips (default: one). Cheap: the catalog,
    efficiencies and cpu-local's measurement are loaded once per process (cpu-local: from the data-dir cache, or
    measured once and cached); identical requests hit an in-process cache. Treat the result as read-only."""
    return predict(model_id, chip, Shape(width, height, num_frames, steps), plan or ParallelPlan())

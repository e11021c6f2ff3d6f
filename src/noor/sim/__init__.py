"""Fleet simulation: a discrete-event core driving `noor.scheduling` with `noor.perf` durations, and
queueing approximations (`noor.sim.analytic`) for fleets too large to simulate job by job.

from noor import sim
result = sim.run(sim.load("examples/sim/three-regions.toml"))   # dict: fleet, classes, regions, series...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from noor.sim.scenario import Scenario, ScenarioError, apply_overrides, load, parse


def run(
    scenario: Scenario,
    progress: Callable[[float], None] | None = None,
    analytic: bool = False,
    keep: bool = False,
    jobs: int = 2,
) -> dict[str, Any]:
    """Simulate (or, with `analytic`, approximate) a scenario; the result holds the resolved scenario.

    A [campus] runs hall by hall, `jobs` processes at once (`noor.sim.campus`). With `keep`, the result of
    any other scenario also holds "_world" and "_record" (not JSON) for reports and tests."""
    from noor.sim import core, metrics
    from noor.sim.fleet import resolve

    fleet = resolve(scenario, draw=not analytic and scenario.campus is None)
    if scenario.campus is not None:
        from noor.sim import campus

        out = campus.run(scenario, analytic=analytic, jobs=jobs, progress=progress)
    elif analytic:
        from noor.sim.approximate import summarize

        out = summarize(fleet)
    else:
        record = core.simulate(fleet, progress)
        out = metrics.summarize(fleet, record)
        if keep:
            out["_record"] = record
    out["mode"] = "analytic" if analytic else "event"
    out["scenario"] = scenario.model_dump(mode="json")
    out["resolved_sites"] = [
        {"name": x.name, "region": x.region, "chip": x.chip, "gpus": x.gpus, "gpus_per_node": x.gpus_per_node,
         "tdp_w": x.tdp_w, "usd_per_gpu_hour": x.usd_per_gpu_hour, "halls": site.hall_count}
        for x, site in zip(fleet.sites, scenario.sites, strict=True)
    ]
    out["resolved_classes"] = [
        {"name": c.name, "model": c.model, "width": c.shape.width, "height": c.shape.height,
         "frames": c.shape.num_frames, "steps": c.shape.steps, "gpus": c.gpus, "slo_s": c.slo_s,
         "latency_s": c.latency_s, "peak_memory_gb": c.memory_gb}
        for c in fleet.classes
    ]
    if keep and scenario.campus is None:
        out["_world"] = fleet
    return out


__all__ = ["Scenario", "ScenarioError", "apply_overrides", "load", "parse", "run"]

"""A campus of halls (`[campus]`, sites as ranges of halls): every hall simulated, identical halls once.

A campus's front end spreads each tenant's requests of each class over the halls that can serve them, in
proportion to the GPUs each hall has outside its training partitions, and every hall schedules its own queue
(its own `noor.scheduling` policy, placement, admission and pre-emption). A random split of a Poisson stream is
Poisson, so the halls of one site (same chip, size, training, share of the traffic) are independent copies of
one another: one of them is simulated event by event, on its own seed, and stands for all of them (counts,
GPU-hours, energy and cost x the halls; latency distributions weighted by the jobs they hold). The halls' sites
run in parallel processes (`jobs`), each a plain `noor.sim.run` of a one-hall scenario.

  1. split: one scenario per site, one hall of it, the tenants' rates and mixes cut to that hall's share;
  2. run: each in its own process (event: the core; analytic: the per-hour queueing model), returning its
     summary and each group's latency distribution as quantiles;
  3. merge: totals x halls, percentiles of the mixture of the halls' distributions.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from noor.sim.scenario import Scenario

GRID = np.linspace(0.0, 1.0, 2001)  # the probabilities each group's distribution is kept at
UNBOUNDED_S = 1e12  # an analytic wait in an hour at utilisation >= 1 (inf) is kept as this, and shown unbounded
QUANTILES = (50, 95, 99)


def split(s: Scenario) -> list[dict[str, Any]]:
    """One scenario dict per site: one hall, its training partitions, and its share of each tenant's traffic."""
    from noor.sim.arrivals import mix
    from noor.sim.fleet import resolve

    assert s.campus is not None
    fleet = resolve(s, draw=False)  # which sites may serve each (tenant, class): memory, frame SLO, residency
    serving = [site.gpus - sum(t.gpus for t in fleet.training if t.site == k) for k, site in enumerate(fleet.sites)]
    halls = [site.hall_count for site in s.sites]
    data = s.model_dump(mode="json", exclude={"campus"}, exclude_unset=True)  # as written: a class's own fields
    out = []
    for k, site in enumerate(s.sites):
        tenants = []
        for ti, ten in enumerate(s.tenants):
            p = mix(s, ti)
            weights = {}
            for ci, c in enumerate(s.classes):
                ok = fleet.sites_for.get((ti, ci), [])
                total = sum(halls[g] * serving[g] for g in ok)
                weights[c.name] = float(p[ci]) * serving[k] / total if k in ok and total > 0 else 0.0
            share = sum(weights.values())
            tenants.append({**data["tenants"][ti], "requests_per_h": ten.requests_per_h * share,
                            "classes": {name: w / share for name, w in weights.items()} if share > 0 else
                            {name: 1.0 for name in weights}})  # fmt: skip
        one = {**data, "name": f"{s.name}: {site.name}", "seed": s.seed * 1000 + k, "tenants": tenants,
               "sites": [{**data["sites"][k], "halls": None, "power_mw": None, "kw_per_gpu": None,
                          "gpus": fleet.sites[k].gpus}],
               "training": [{**t, "gpus": s.training[i].gpus_of(site), "share": None}
                            for i, t in enumerate(data.get("training", [])) if t["site"] == site.name]}  # fmt: skip
        out.append(one)
    return out


def _grid(values: np.ndarray) -> np.ndarray | None:
    return np.quantile(np.minimum(values, UNBOUNDED_S), GRID) if len(values) else None


def _event_groups(fleet: Any, rec: Any) -> dict[str, Any]:
    """Each latency group's finished jobs as quantiles of wait and end-to-end time (and SLO counts)."""
    s = fleet.scenario
    in_stats = rec.submitted_s >= s.warmup_h * 3600
    slo = np.array([c.slo_s if c.slo_s is not None else math.nan for c in fleet.classes])[rec.cls]
    wait, e2e = rec.start_s - rec.submitted_s, rec.end_s - rec.submitted_s

    def group(mask: np.ndarray) -> dict[str, Any]:
        done = mask & ~np.isnan(rec.end_s)
        has = done & ~np.isnan(slo)
        return {"n": int(done.sum()), "wait": _grid(wait[done]), "e2e": _grid(e2e[done]),
                "slo_n": int(has.sum()), "slo_met": int((e2e[has] <= slo[has]).sum())}  # fmt: skip

    out = {"all": group(in_stats)}
    for i, c in enumerate(fleet.classes):
        out[f"class:{c.name}"] = group(in_stats & (rec.cls == i))
        if c.interactive:
            started = in_stats & (rec.cls == i) & ~np.isnan(rec.start_s)
            out[f"session:{c.name}"] = {"n": int(started.sum()), "wait": _grid(wait[started])}
    for i, t in enumerate(s.tenants):
        out[f"tenant:{t.name}"] = group(in_stats & (rec.tenant == i))
    return out


def _analytic_groups(fleet: Any, result: dict[str, Any]) -> dict[str, Any]:
    """The analytic mode's drawn waits and end-to-end times as quantiles, weighted by the jobs each group holds."""
    draws = result.pop("_draws")
    c_of, t_of, wait, e2e = draws["cls"], draws["tenant"], draws["wait"], draws["e2e"]
    slo = np.array([c.slo_s if c.slo_s is not None else math.nan for c in fleet.classes])[c_of]

    def group(mask: np.ndarray, jobs: float) -> dict[str, Any]:
        has = mask & ~np.isnan(slo)
        met = float((e2e[has] <= slo[has]).mean()) if has.any() else 0.0
        return {"n": jobs, "wait": _grid(wait[mask]), "e2e": _grid(e2e[mask]),
                "slo_n": jobs if has.any() else 0, "slo_met": met * jobs if has.any() else 0}  # fmt: skip

    out = {"all": group(np.ones(len(c_of), bool), result["fleet"]["jobs"])}
    for i, c in enumerate(fleet.classes):
        out[f"class:{c.name}"] = group(c_of == i, result["classes"][i]["jobs"])
        if c.interactive:
            out[f"session:{c.name}"] = {"n": result["classes"][i]["jobs"], "wait": _grid(wait[c_of == i])}
    for i, t in enumerate(fleet.scenario.tenants):
        out[f"tenant:{t.name}"] = group(t_of == i, result["tenants"][i]["jobs"])
    return out


def run_hall(data: dict[str, Any], analytic: bool) -> dict[str, Any]:
    """One hall's scenario, simulated or approximated: its summary and its latency groups (in a worker process)."""
    from noor.sim import metrics
    from noor.sim.core import simulate
    from noor.sim.fleet import resolve
    from noor.sim.scenario import parse

    wall0, cpu0 = time.perf_counter(), time.process_time()
    s = parse(data)
    fleet = resolve(s, draw=not analytic)
    if analytic:
        from noor.sim.approximate import summarize

        out = summarize(fleet, draws=True)
        out["_groups"] = _analytic_groups(fleet, out)
        out["core"] = {"events": 0, "samples": out["core"]["samples"]}
    else:
        rec = simulate(fleet)
        out = metrics.summarize(fleet, rec)
        out["_groups"] = _event_groups(fleet, rec)
    out["core"].update(wall_s=time.perf_counter() - wall0, cpu_s=time.process_time() - cpu0, pid=os.getpid())
    return out


def _mixture_pcts(parts: list[tuple[float, np.ndarray | None]]) -> dict[str, float | None]:
    """Mean and percentiles of a mixture of distributions, each kept as quantiles at GRID, weighted."""
    kept = [(w, g) for w, g in parts if g is not None and w > 0]
    if not kept:
        return {"mean": None, **{f"p{q}": None for q in QUANTILES}}
    total = sum(w for w, _ in kept)
    xs = np.unique(np.concatenate([g for _, g in kept]))
    # each part's CDF at every x: the share of its quantile grid at or below x
    cdf = np.zeros(len(xs))
    for w, g in kept:
        cdf += w / total * np.interp(xs, g, GRID, left=0.0, right=1.0)
    mean = sum(w * float(np.trapezoid(g, GRID)) for w, g in kept) / total
    out: dict[str, float | None] = {"mean": None if any((g >= UNBOUNDED_S).any() for _, g in kept) else mean}
    for q in QUANTILES:
        i = int(np.searchsorted(cdf, q / 100 - 1e-12))
        out[f"p{q}"] = float(xs[min(i, len(xs) - 1)])
    return {k: None if v is not None and v >= UNBOUNDED_S / 2 else v for k, v in out.items()}  # unbounded: no value


def _merged_group(name: str, key: str, runs: list[dict[str, Any]], halls: list[int]) -> dict[str, Any]:
    parts = [(h * r["_groups"][key]["n"], r["_groups"][key]) for r, h in zip(runs, halls, strict=True)
             if key in r["_groups"]]  # fmt: skip
    jobs = sum(w for w, _ in parts)
    slo_n = sum(h * r["_groups"][key]["slo_n"] for r, h in zip(runs, halls, strict=True) if key in r["_groups"])
    slo_met = sum(h * r["_groups"][key]["slo_met"] for r, h in zip(runs, halls, strict=True) if key in r["_groups"])
    return {
        "name": name, "jobs": round(jobs), "completed": round(jobs),
        "wait_s": _mixture_pcts([(w, g["wait"]) for w, g in parts]),
        "e2e_s": _mixture_pcts([(w, g["e2e"]) for w, g in parts]),
        "slo_attainment": slo_met / slo_n if slo_n else None,
    }  # fmt: skip


def _summed(rows: list[dict[str, Any]], halls: list[int], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        values = [(h, r.get(key)) for r, h in zip(rows, halls, strict=True)]
        out[key] = None if any(v is None for _, v in values) else sum(h * v for h, v in values if v is not None)
    return out


def merge(s: Scenario, runs: list[dict[str, Any]], analytic: bool) -> dict[str, Any]:
    """The campus from its halls' runs: totals x halls, latency percentiles of the mixture."""
    halls = [site.hall_count for site in s.sites]
    horizon_s = s.horizon_h * 3600
    fleets = [r["fleet"] for r in runs]
    gpus = sum(h * f["gpus"] for f, h in zip(fleets, halls, strict=True))
    busy_gpu_h = sum(h * sum(x["busy_gpu_h"] for x in r["sites"]) for r, h in zip(runs, halls, strict=True))
    overall: dict[str, Any] = {
        "gpus": gpus, "halls": sum(halls), "utilisation": busy_gpu_h * 3600 / (gpus * horizon_s),
        **_summed(fleets, halls, ("jobs", "completed", "energy_kwh", "cost_usd", "gpu_hours_lost_to_failures",
                                  "lost_work_gpu_h", "down_gpu_h", "failures", "videos_per_hour", "images_per_hour")),
    }  # fmt: skip
    for kind in ("video", "image"):  # $ per item: the halls' costs of that kind over their items
        per_h = [(h, f[f"{kind}s_per_hour"], f[f"usd_per_{kind}"]) for f, h in zip(fleets, halls, strict=True)]
        count = sum(h * n for h, n, _ in per_h)
        overall[f"usd_per_{kind}"] = sum(h * n * (u or 0.0) for h, n, u in per_h) / count if count else None
    training_rows = [t for r in runs for t in r.get("training", [])]
    if training_rows:
        with_halls = [h for r, h in zip(runs, halls, strict=True) for _ in r.get("training", [])]
        overall.update(_summed(training_rows, with_halls, ("held_gpu_h", "lost_gpu_h")))
        overall["training_gpu_h"] = overall.pop("held_gpu_h")
        overall["training_lost_gpu_h"] = overall.pop("lost_gpu_h")
        counted = [(h, t["preemptions"]) for t, h in zip(training_rows, with_halls, strict=True)]
        overall["preemptions"] = sum(h * n for h, n in counted)
        overall["training_cost_usd"] = sum(h * r["fleet"].get("training_cost_usd", 0.0)
                                           for r, h in zip(runs, halls, strict=True))  # fmt: skip
    overall["unstable_hours"] = [u for r in runs for u in r["fleet"].get("unstable_hours", [])]
    everything = _merged_group("all", "all", runs, halls)
    overall.update({k: v for k, v in everything.items() if k not in ("name", "jobs", "completed")})

    classes = [_merged_group(c.name, f"class:{c.name}", runs, halls) for c in s.classes]
    tenants = [_merged_group(t.name, f"tenant:{t.name}", runs, halls) for t in s.tenants]
    regions = []
    for region in sorted({site.region for site in s.sites}):
        mine = [(r, h) for r, h, site in zip(runs, halls, s.sites, strict=True) if site.region == region]
        regions.append(_merged_group(region, "all", [r for r, _ in mine], [h for _, h in mine]))
    sessions = []
    for c in s.classes:
        rows = [
            (r, h, x)
            for r, h in zip(runs, halls, strict=True)
            for x in r["sessions"]
            if x["name"] == c.name and x["sessions"]
        ]  # halls that get none (training only) are not its chips
        if not rows:
            continue
        first = rows[0][2]
        counts = {k: sum(h * x[k] for _, h, x in rows) for k in ("sessions", "started", "refused", "queued",
                                                                  "chips_eligible", "concurrent_mean")}  # fmt: skip
        frame_ms: dict[str, float] = {}
        for _, _, x in rows:
            frame_ms.update(x["frame_latency_ms"])
        met = [(h * x["started"], x["frame_slo_met"]) for _, h, x in rows if x["frame_slo_met"] is not None]
        sessions.append({
            "name": c.name, "model": first["model"], "fps": first["fps"], **counts,
            "refused_share": counts["refused"] / counts["sessions"] if counts["sessions"] else None,
            "wait_s": _mixture_pcts([(h * r["_groups"][f"session:{c.name}"]["n"],
                                      r["_groups"][f"session:{c.name}"]["wait"]) for r, h, _ in rows]),
            # each hall's peak is its own: their sum bounds the campus's (the halls' peaks need not coincide)
            "concurrent_peak": None if analytic else sum(h * (x["concurrent_peak"] or 0) for _, h, x in rows),
            "frame_latency_ms": frame_ms,
            "frame_slo_met": sum(w * m for w, m in met) / sum(w for w, _ in met) if met else None,
            "session_utilisation": counts["concurrent_mean"] / counts["chips_eligible"]
            if counts["chips_eligible"] else None,
        })  # fmt: skip
    if sessions:
        overall["refused_sessions"] = sum(x["refused"] for x in sessions)

    sites, training = [], []
    for r, h, site in zip(runs, halls, s.sites, strict=True):
        (x,) = r["sites"]
        sites.append({**x, "name": f"{site.name} (halls {site.halls[0]}-{site.halls[1]})" if site.halls else x["name"],
                      "halls": h, "gpus": h * x["gpus"], "gpus_per_hall": x["gpus"],
                      **_summed([x], [h], ("busy_gpu_h", "down_gpu_h", "lost_work_gpu_h", "failures", "energy_kwh",
                                           "cost_usd", "training_gpu_h"))})  # fmt: skip
        for t in r.get("training", []):
            training.append({**t, "name": f"{t['name']} (x{h} halls)", "halls": h,
                             **_summed([t], [h], ("gpus", "held_gpu_h", "lost_gpu_h", "restart_gpu_h")),
                             "preemptions": h * t["preemptions"],
                             "failures": None if t["failures"] is None else h * t["failures"]})  # fmt: skip

    series: dict[str, Any] = {"t_h": runs[0]["series"]["t_h"]}
    for key in ("busy_gpus", "down_gpus", "training_gpus", "queued"):
        by_hall = [(h, r["series"][key]) for r, h in zip(runs, halls, strict=True) if key in r["series"]]
        if by_hall:
            merged: dict[str, list[float]] = {}
            for h, by_region in by_hall:
                for region, values in by_region.items():
                    old = merged.get(region, [0.0] * len(values))
                    merged[region] = [a + h * (b or 0.0) for a, b in zip(old, values, strict=True)]
            series[key] = merged
    series["gpus"] = {region: sum(h * r["series"]["gpus"].get(region, 0) for r, h in zip(runs, halls, strict=True))
                      for region in sorted({site.region for site in s.sites})}  # fmt: skip
    return {"fleet": overall, "classes": classes, "sessions": sessions, "training": training, "regions": regions,
            "tenants": tenants, "sites": sites, "series": series, "assumptions": {
                **runs[0]["assumptions"], "campus": (__doc__ or "").split("\n\n")[0] + " " +
                (__doc__ or "").split("\n\n")[1].replace("\n", " ")}}  # fmt: skip


def run(
    s: Scenario, analytic: bool = False, jobs: int = 2, progress: Callable[[float], None] | None = None
) -> dict[str, Any]:
    """Every site's hall in its own process (`jobs` at once), merged into the campus's result."""
    wall0 = time.perf_counter()
    parts = split(s)
    # the busiest halls first, so the processes finish together (a hall's jobs ~ its requests per hour)
    order = sorted(range(len(parts)), key=lambda k: -sum(t["requests_per_h"] for t in parts[k]["tenants"]))
    runs: list[dict[str, Any] | None] = [None] * len(parts)
    if jobs <= 1 or len(parts) == 1:
        for n, k in enumerate(order):
            runs[k] = run_hall(parts[k], analytic)
            if progress is not None:
                progress((n + 1) / len(parts))
    else:
        # spawn: a clean interpreter per worker (no fork of a threaded parent)
        with ProcessPoolExecutor(max_workers=min(jobs, len(parts)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:  # fmt: skip
            futures = {k: pool.submit(run_hall, parts[k], analytic) for k in order}
            for n, k in enumerate(order):
                runs[k] = futures[k].result()
                if progress is not None:
                    progress((n + 1) / len(parts))
    done = [r for r in runs if r is not None]
    out = merge(s, done, analytic)
    events = sum(r["core"]["events"] for r in done)
    wall_s = time.perf_counter() - wall0
    halls = [site.hall_count for site in s.sites]
    out["core"] = {
        "events": events, "wall_s": wall_s, "events_per_s": events / wall_s if wall_s > 0 else None,
        "events_represented": sum(h * r["core"]["events"] for r, h in zip(done, halls, strict=True)),
        "processes": min(jobs, len(parts)), "cpu_s": sum(r["core"]["cpu_s"] for r in done),
        "halls": [{"site": site.name, "halls": h, "events": r["core"]["events"], "wall_s": r["core"]["wall_s"],
                   "cpu_s": r["core"]["cpu_s"], "jobs": r["fleet"]["jobs"], "wait_s": r["fleet"]["wait_s"],
                   "utilisation": r["sites"][0]["utilisation"],
                   "preemptions": sum(t["preemptions"] or 0 for t in r.get("training", []))}
                  for site, h, r in zip(s.sites, halls, done, strict=True)],  # one hall of each site, as run
    }  # fmt: skip
    return out

"""From a run's flat record to the numbers a planner reads: latency percentiles and SLO attainment per
class and per region, utilisation, videos/hour, energy, cost, GPU-hours lost; and the time series.

Energy (an assumption, stated in each result): a busy GPU draws its TDP, an idle one
`idle_power_fraction` x TDP, a down one nothing; each up GPU adds `host_w_per_gpu` (its share of the
server: CPUs, NICs, fans); facility energy = IT energy x the site's PUE.
Cost: every GPU of the site is paid for the whole horizon at its $/GPU-hour (rented or amortised),
busy or not; training partitions take the share of it their held GPU-seconds make. Videos and images are
counted apart (a request of one frame is an image, as the planner counts them): $/video is the cost share
of the GPU-seconds the finished videos took (perf-model time on their site's chip plus the job overhead, x GPUs
per job; idle time shared alike) over the videos, and $/image the same over the images.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from noor import catalog
from noor.sim.core import Record
from noor.sim.fleet import Fleet, SiteInfo

QUANTILES = (50, 95, 99)
ENERGY_ASSUMPTION = (
    "busy GPU at TDP, idle GPU at idle_power_fraction x TDP, down GPU 0 W, + host_w_per_gpu while up; "
    "facility = IT x PUE; "
    "cost = all GPUs x horizon x $/GPU-hour, split between videos and images by the GPU-seconds each took"
)


def energy(site: SiteInfo, busy_gpu_s: float, idle_gpu_s: float) -> dict[str, Any]:
    """A site's facility kWh (None if its chip's power is unpublished) and the host power it assumed."""
    kwh = (((busy_gpu_s + idle_gpu_s * site.idle_power_fraction) * site.tdp_w
            + (busy_gpu_s + idle_gpu_s) * site.host_w_per_gpu) * site.pue / 3.6e6) if site.tdp_w else None
    return {"energy_kwh": kwh, "host_w_per_gpu": site.host_w_per_gpu, "host_w_source": site.host_w_source}


def is_video(fleet: Fleet) -> np.ndarray:
    """(class,) True where a class makes videos: more than one frame, as the model draws it (a session: no)."""
    return np.array([not c.interactive and c.shape.for_model(catalog.model(c.model)).num_frames > 1
                     for c in fleet.classes], dtype=bool)


def job_gpu_s(fleet: Fleet) -> np.ndarray:
    """(class, site) GPU-seconds one job takes: perf-model time on the site's chip + overhead, x its GPUs."""
    return np.array([[(c.latency_s.get(site.chip, math.nan) + site.job_overhead_s) * c.gpus for site in fleet.sites]
                     for c in fleet.classes]).reshape(len(fleet.classes), len(fleet.sites))


def per_kind(
    fleet: Fleet, done: np.ndarray, gpu_s: np.ndarray, cost_usd: float, training_gpu_s: float = 0.0
) -> dict[str, float | None]:
    """Videos and images apart: per hour, and each kind's share of the cost (by the GPU-seconds its finished
    jobs took, `gpu_s` per class, among those and the GPU-seconds training partitions held) over its count
    (`done` per class)."""
    video = is_video(fleet)
    clip = np.array([not c.interactive for c in fleet.classes], dtype=bool)
    total_gpu_s = float(gpu_s.sum()) + training_gpu_s
    out: dict[str, float | None] = {}
    for kind, mask in (("video", video), ("image", ~video & clip)):
        count = float(done[mask].sum())
        share = float(gpu_s[mask].sum()) / total_gpu_s if total_gpu_s > 0 else 0.0
        out[f"{kind}s_per_hour"] = count / fleet.scenario.horizon_h
        out[f"usd_per_{kind}"] = cost_usd * share / count if count else None
    if training_gpu_s:
        out["training_cost_usd"] = cost_usd * training_gpu_s / total_gpu_s
    return out


def _pcts(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {f"p{q}": None for q in QUANTILES}
    got = np.percentile(values, QUANTILES)
    return {f"p{q}": float(v) for q, v in zip(QUANTILES, got, strict=True)}


def _group(name: str, mask: np.ndarray, rec: Record, slo_s: np.ndarray) -> dict[str, Any]:
    done = mask & ~np.isnan(rec.end_s)
    wait = rec.start_s[done] - rec.submitted_s[done]
    e2e = rec.end_s[done] - rec.submitted_s[done]
    has_slo = ~np.isnan(slo_s[done])
    met = e2e[has_slo] <= slo_s[done][has_slo]
    return {
        "name": name,
        "jobs": int(mask.sum()),
        "completed": int(done.sum()),
        "wait_s": {"mean": float(wait.mean()) if len(wait) else None, **_pcts(wait)},
        "e2e_s": {"mean": float(e2e.mean()) if len(e2e) else None, **_pcts(e2e)},
        "slo_attainment": float(met.mean()) if len(met) else None,
    }


def concurrency(start_s: np.ndarray, end_s: np.ndarray, horizon_s: float) -> tuple[float, int]:
    """Mean and peak number of runs at once over [0, horizon] (runs clipped to it)."""
    ok = ~np.isnan(start_s) & (start_s < horizon_s)
    starts, ends = start_s[ok], np.minimum(np.nan_to_num(end_s[ok], nan=horizon_s), horizon_s)
    if not len(starts):
        return 0.0, 0
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
    order = np.lexsort((steps, times))  # at one instant an end (-1) before a start (+1)
    peak = int(np.cumsum(steps[order]).max())
    return float((ends - starts).sum() / horizon_s), peak


def sessions(fleet: Fleet, rec: Record, in_stats: np.ndarray) -> list[dict[str, Any]]:
    """Per interactive class: sessions, refused, queued, waits, sessions at once, the frame SLO and the
    utilisation of the chips it may use."""
    horizon_s = fleet.scenario.horizon_h * 3600
    refused = rec.refused if rec.refused is not None else np.zeros(len(rec.cls), dtype=bool)
    out = []
    for i, c in enumerate(fleet.classes):
        if not c.interactive:
            continue
        mine = rec.cls == i
        stats = mine & in_stats
        started = stats & ~np.isnan(rec.start_s)
        wait = rec.start_s[started] - rec.submitted_s[started]
        mean_at_once, peak = concurrency(rec.start_s[mine], rec.end_s[mine], horizon_s)
        used = sorted({int(k) for k in rec.site[mine & ~np.isnan(rec.start_s)] if k >= 0})
        frame_ms = {fleet.sites[k].chip: 1e3 * c.frame_latency_s[fleet.sites[k].chip] for k in used}
        on_time = [c.frame_latency_s[fleet.sites[int(k)].chip] <= 1 / (c.fps or math.inf) for k in rec.site[started]]
        eligible = sorted({k for (_, ci), ok in fleet.sites_for.items() if ci == i for k in ok})
        chips = sum(fleet.sites[k].gpus for k in eligible)
        out.append({
            "name": c.name, "model": c.model, "fps": c.fps, "sessions": int(stats.sum()),
            "started": int(started.sum()), "refused": int((stats & refused).sum()),
            "queued": int((wait > 0).sum()), "refused_share": int((stats & refused).sum()) / int(stats.sum())
            if stats.any() else None,
            "wait_s": {"mean": float(wait.mean()) if len(wait) else None, **_pcts(wait)},
            "concurrent_mean": mean_at_once, "concurrent_peak": peak,
            "frame_latency_ms": frame_ms, "frame_slo_met": float(np.mean(on_time)) if on_time else None,
            "chips_eligible": chips,
            "session_utilisation": mean_at_once / chips if chips else None,
        })  # fmt: skip
    return out


def training_totals(training: list[dict[str, Any]]) -> dict[str, Any]:
    """The fleet's training figures: GPU-hours held, work lost to interruptions, pre-emptions (None: not modelled,
    as in the analytic mode)."""
    counted = [t["preemptions"] for t in training if t["preemptions"] is not None]
    return {
        "training_gpu_h": sum(t["held_gpu_h"] for t in training),
        "training_lost_gpu_h": sum(t["lost_gpu_h"] for t in training),
        "preemptions": sum(counted) if counted else None,
    }


def summarize(fleet: Fleet, rec: Record) -> dict[str, Any]:
    s = fleet.scenario
    horizon_s = s.horizon_h * 3600
    in_stats = rec.submitted_s >= s.warmup_h * 3600
    slo = np.array([c.slo_s if c.slo_s is not None else math.nan for c in fleet.classes])[rec.cls]
    classes = [_group(c.name, in_stats & (rec.cls == i), rec, slo) for i, c in enumerate(fleet.classes)]
    regions = sorted({site.region for site in fleet.sites})
    site_region = np.array([fleet.sites[k].region for k in range(len(fleet.sites))] + [""])
    job_region = site_region[rec.site]  # site -1 (never ran) -> ""
    by_region = [_group(r, in_stats & (job_region == r), rec, slo) for r in regions]
    tenants = [_group(t.name, in_stats & (rec.tenant == i), rec, slo) for i, t in enumerate(s.tenants)]

    sites: list[dict[str, Any]] = []
    for k, site in enumerate(fleet.sites):
        gpu_s = site.gpus * horizon_s
        busy, down = rec.busy_gpu_s[k], rec.down_gpu_s[k]
        idle = max(gpu_s - busy - down, 0.0)
        sites.append({
            "name": site.name, "region": site.region, "chip": site.chip, "gpus": site.gpus,
            "utilisation": busy / gpu_s, "busy_gpu_h": busy / 3600, "down_gpu_h": down / 3600,
            "lost_work_gpu_h": rec.lost_gpu_s[k] / 3600, "failures": rec.failures[k],
            "training_gpu_h": sum(t["held_gpu_h"] for t in rec.training if t["site"] == k),
            **energy(site, busy, idle), "cost_usd": site.gpus * s.horizon_h * site.usd_per_gpu_hour,
        })
    total_gpus = sum(site.gpus for site in fleet.sites)
    finished = rec.end_s <= horizon_s  # nan (never finished) compares False
    n_classes = len(fleet.classes)
    done = np.bincount(rec.cls[finished], minlength=n_classes)
    work = np.nan_to_num(job_gpu_s(fleet)[rec.cls[finished], rec.site[finished]])
    class_gpu_s = np.bincount(rec.cls[finished], weights=work, minlength=n_classes)
    energies = [x["energy_kwh"] for x in sites]
    overall = {
        "gpus": total_gpus,
        "jobs": len(rec.submitted_s),
        "completed": int((~np.isnan(rec.end_s)).sum()),
        "utilisation": sum(rec.busy_gpu_s) / (total_gpus * horizon_s),
        "energy_kwh": sum(e for e in energies if e is not None) if all(e is not None for e in energies) else None,
        "cost_usd": sum(x["cost_usd"] for x in sites),
        "gpu_hours_lost_to_failures": (sum(rec.lost_gpu_s) + sum(rec.down_gpu_s)) / 3600,
        "lost_work_gpu_h": sum(rec.lost_gpu_s) / 3600,
        "down_gpu_h": sum(rec.down_gpu_s) / 3600,
        "failures": sum(rec.failures),
        "requeued_jobs": rec.requeued,
        "batches": rec.batches,
        "drained_at_h": rec.end_time_s / 3600,
        # latency over the jobs after the warm-up; "jobs" and "completed" above count every job
        **{k: v for k, v in _group("all", in_stats, rec, slo).items() if k not in ("name", "jobs", "completed")},
    }
    training_gpu_s = 3600 * sum(t["held_gpu_h"] for t in rec.training)
    overall.update(per_kind(fleet, done, class_gpu_s, overall["cost_usd"], training_gpu_s))
    region_of_site = [site.region for site in fleet.sites]
    home_of_tenant = [t.home or t.regions[0] for t in s.tenants]
    series = {
        "t_h": [t / 3600 for t in rec.ticks_s],
        "busy_gpus": {r: [sum(row[k] for k in range(len(row)) if region_of_site[k] == r) for row in rec.busy_series]
                      for r in regions},
        "down_gpus": {r: [sum(row[k] for k in range(len(row)) if region_of_site[k] == r) for row in rec.down_series]
                      for r in regions},
        "gpus": {r: sum(site.gpus for site in fleet.sites if site.region == r) for r in regions},
        # queued jobs by the home region of their tenant
        "queued": {r: [sum(row[i] for i in range(len(row)) if home_of_tenant[i] == r) for row in rec.queued_series]
                   for r in sorted(set(home_of_tenant))},
    }
    interactive = sessions(fleet, rec, in_stats)
    if interactive:
        overall["refused_sessions"] = sum(x["refused"] for x in interactive)
    training = [{**t, "site": fleet.sites[t["site"]].name} for t in rec.training]
    if training:
        overall.update(training_totals(training))
        series["training_gpus"] = {r: [sum(row[k] for k in range(len(row)) if region_of_site[k] == r)
                                       for row in rec.training_series] for r in regions}
    return {
        "fleet": overall,
        "classes": classes,
        "sessions": interactive,
        "training": training,
        "regions": by_region,
        "tenants": tenants,
        "sites": sites,
        "series": series,
        "core": {"events": rec.events, "wall_s": rec.wall_s, "events_per_s": rec.events / rec.wall_s
                   if rec.wall_s > 0 else None},
        "assumptions": {"energy_and_cost": ENERGY_ASSUMPTION},
    }


def latency_samples(fleet: Fleet, rec: Record) -> dict[str, dict[str, np.ndarray]]:
    """End-to-end seconds of every finished job, by class and by region (for CDF plots)."""
    s = fleet.scenario
    ok = (rec.submitted_s >= s.warmup_h * 3600) & ~np.isnan(rec.end_s)
    e2e = rec.end_s - rec.submitted_s
    by_class = {c.name: np.sort(e2e[ok & (rec.cls == i)]) for i, c in enumerate(fleet.classes)}
    by_region = {}
    for r in sorted({site.region for site in fleet.sites}):
        in_r = np.isin(rec.site, [k for k, site in enumerate(fleet.sites) if site.region == r])
        by_region[r] = np.sort(e2e[ok & in_r])
    return {"class": by_class, "region": by_region}

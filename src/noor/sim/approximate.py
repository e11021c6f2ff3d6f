"""Analytic mode: each site is a G/G/c pool, each hour of the day a steady state (Allen-Cunneen, analytic.py).

For fleets too large to simulate job by job. Per site and hour:
  1. arrivals: each (tenant, class) stream's mean rate over the hour (profile x bursts, as the event
     simulation draws them), split over the sites it may use in proportion to their GPUs (an assumption:
     the event simulation fills the tenant's first region first);
  2. service: the mix of the classes' perf-model durations on the site's chip, with the lognormal noise:
     E[S] = sum p_c d_c, E[S^2] = sum p_c d_c^2 exp(sigma^2), so cs^2 = E[S^2]/E[S]^2 - 1; Poisson arrivals (ca^2 = 1);
     an interactive class's d_c is its mean session length and its own spread replaces exp(sigma^2)
     (ClassInfo.length_m2); a bounded session queue (max_queue) is not modelled and is refused;
  3. servers: GPUs available on average (MTBF / (MTBF + MTTR)), less the GPUs training partitions hold in the
     hour (each from its start for its work's length: pre-emptions, failures' rollbacks and waits for whole
     nodes are the event simulation's), divided by the work-weighted GPUs per job;
  4. the hour's wait: P(W > t) = P(wait) exp(-t / m) (analytic.pool_stats).
Day-long percentiles come from the mixture over hours, weighted by arrivals, by drawing from it (seeded).
Not modelled: the queue carried from a busy hour into the next, batching, head-of-line blocking of k-GPU
jobs by smaller ones. Hours with utilisation >= 1 are unstable: their waits are reported as unbounded.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from noor.sim.analytic import pool_stats
from noor.sim.arrivals import mix, rate_per_s
from noor.sim.fleet import Fleet, session_lengths
from noor.sim.metrics import ENERGY_ASSUMPTION, QUANTILES, energy, per_kind, training_totals
from noor.sim.scenario import ScenarioError

SAMPLES = 200_000
STEPS_PER_HOUR = 60  # the rate is averaged over each hour at one-minute points


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _pcts(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"mean": None, **{f"p{q}": None for q in QUANTILES}}
    # no interpolation: waits of unstable hours are inf, and inf - inf is not a number
    got = np.percentile(values, QUANTILES, method="inverted_cdf")
    return {"mean": _finite(float(values.mean())), **{f"p{q}": _finite(v) for q, v in zip(QUANTILES, got, strict=True)}}


def summarize(fleet: Fleet, draws: bool = False) -> dict[str, Any]:
    """The analytic result; with `draws`, also "_draws": the drawn (class, tenant, wait, e2e) the percentiles
    come from (a campus merges its halls' distributions from them)."""
    s = fleet.scenario
    for i, c in enumerate(fleet.classes):
        if c.interactive and c.max_queue is not None:
            raise ScenarioError(f"classes[{i}].max_queue: a bounded session queue is not in the analytic mode (run "
                                f"the event simulation, or size a loss system with `noor plan players`), "
                                f"got {c.max_queue!r}")
    m2 = np.array([c.length_m2(s.duration_noise_sigma) for c in fleet.classes])  # E[(actual / mean)^2] per class
    hours = max(1, math.ceil(s.horizon_h))
    horizon_s = s.horizon_h * 3600
    sigma2 = s.duration_noise_sigma**2
    n_sites, n_classes, n_tenants = len(fleet.sites), len(fleet.classes), len(s.tenants)

    # 1. arrivals per (tenant, class, site, hour), per second while the hour lasts (the last may be partial)
    span_s = np.clip(horizon_s - np.arange(hours) * 3600.0, 0.0, 3600.0)
    rates = np.zeros((n_tenants, n_classes, hours))
    if s.trace is not None:  # a replayed trace: its own counts per hour
        hour = np.minimum((fleet.arrivals.t_s // 3600).astype(int), hours - 1)
        np.add.at(rates, (fleet.arrivals.tenant, fleet.arrivals.cls, hour), 1.0)
        rates /= span_s
    else:
        for ti in range(n_tenants):
            if s.tenants[ti].requests_per_h <= 0:
                continue
            points = (np.arange(hours * STEPS_PER_HOUR) + 0.5) / STEPS_PER_HOUR * 3600
            rate = rate_per_s(s, ti, points).reshape(hours, STEPS_PER_HOUR).mean(axis=1)
            rates[ti] = mix(s, ti)[:, None] * rate[None, :]
    lam = np.zeros((n_tenants, n_classes, n_sites, hours))
    for (ti, ci), ok in fleet.sites_for.items():
        if ok and rates[ti, ci].any():
            capacity = np.array([fleet.sites[k].gpus for k in ok], dtype=float)
            for k, share in zip(ok, capacity / capacity.sum(), strict=True):
                lam[ti, ci, k] += rates[ti, ci] * share
    if not lam.any() and not fleet.training:
        raise ScenarioError("tenants: no traffic to approximate")

    # 2-4. each site, each hour
    dur = np.array(
        [[c.latency_s.get(site.chip, math.nan) + site.job_overhead_s for site in fleet.sites] for c in fleet.classes]
    )
    k_of = np.array([c.gpus for c in fleet.classes], dtype=float)
    p_wait = np.zeros((n_sites, hours))
    tail = np.zeros((n_sites, hours))
    util = np.zeros((n_sites, hours))
    servers = np.zeros(n_sites, dtype=int)
    unstable: list[dict[str, Any]] = []
    busy_gpu_s = np.zeros(n_sites)
    held = np.zeros((n_sites, hours))  # GPUs held by training partitions, mean over each hour
    starts = np.arange(hours) * 3600.0
    for t in fleet.training:
        overlap = np.clip(np.minimum(starts + span_s, t.start_s + t.work_s) - np.maximum(starts, t.start_s), 0, None)
        held[t.site] += t.gpus * np.divide(overlap, span_s, out=np.zeros(hours), where=span_s > 0)
    busy_gpu_s += (held * span_s).sum(axis=1)
    for k, site in enumerate(fleet.sites):
        per_class = lam[:, :, k, :].sum(axis=0)  # (class, hour)
        avail = 1.0 if site.mtbf_s is None else site.mtbf_s / (site.mtbf_s + site.mttr_s)
        work = per_class.sum(axis=1) * np.nan_to_num(dur[:, k])  # class -> busy seconds per second
        k_eff = float((work * k_of).sum() / work.sum()) if work.sum() > 0 else 1.0
        servers[k] = max(1, int(site.gpus * avail / k_eff))
        for h in range(hours):
            lam_h = per_class[:, h]
            total = lam_h.sum()
            if total <= 0:
                continue
            serving = max(1, int((site.gpus - held[k, h]) * avail / k_eff))
            p = lam_h / total
            d = np.nan_to_num(dur[:, k])
            mean_s = float((p * d).sum())
            cs2 = float((p * d * d * m2).sum() / mean_s**2 - 1)
            stats = pool_stats(float(total), mean_s, serving, service_cv2=max(cs2, 0.0))
            util[k, h] = min(stats.utilisation, 1.0)
            p_wait[k, h] = stats.p_wait
            tail[k, h] = stats.wait_mean_s / stats.p_wait if stats.stable and stats.p_wait > 0 else (
                0.0 if stats.stable else math.inf)
            if not stats.stable:
                unstable.append({"site": site.name, "hour": h, "utilisation": stats.utilisation})
            busy_gpu_s[k] += float((lam_h * d * k_of).sum()) * span_s[h]

    # day-long distributions: draw (tenant, class, site, hour) by arrivals, then a wait and a duration
    rng = np.random.default_rng([s.seed, 7])
    per = lam * span_s  # jobs per (tenant, class, site, hour)
    weights = per.ravel()
    total_jobs = float(weights.sum())
    n_draws = SAMPLES if total_jobs > 0 else 0  # none: a site that only trains
    comp = rng.choice(weights.size, size=n_draws, p=weights / total_jobs) if n_draws else np.zeros(0, dtype=int)
    t_of, c_of, s_of, h_of = np.unravel_index(comp, lam.shape)
    waits = np.where(rng.uniform(size=n_draws) < p_wait[s_of, h_of],
                     rng.exponential(1.0, n_draws) * tail[s_of, h_of], 0.0)
    noise = np.exp(rng.normal(-sigma2 / 2, math.sqrt(sigma2), n_draws))
    for i, c in enumerate(fleet.classes):  # a session's length spreads its own way
        if c.interactive and (mine := c_of == i).any():
            noise[mine] = session_lengths(c, rng, int(mine.sum()))
    service = dur[c_of, s_of] * noise
    e2e = waits + service

    def group(name: str, mask: np.ndarray, jobs: float) -> dict[str, Any]:
        slo = np.array([c.slo_s if c.slo_s is not None else math.nan for c in fleet.classes])[c_of[mask]]
        has = ~np.isnan(slo)
        return {"name": name, "jobs": round(jobs), "completed": round(jobs), "wait_s": _pcts(waits[mask]),
                "e2e_s": _pcts(e2e[mask]),
                "slo_attainment": float((e2e[mask][has] <= slo[has]).mean()) if has.any() else None}

    classes = [group(c.name, c_of == i, float(per[:, i].sum())) for i, c in enumerate(fleet.classes)]
    regions = sorted({site.region for site in fleet.sites})
    site_region = np.array([site.region for site in fleet.sites])
    by_region = [group(r, site_region[s_of] == r, float(per[:, :, site_region == r].sum())) for r in regions]
    tenants = [group(t.name, t_of == i, float(per[i].sum())) for i, t in enumerate(s.tenants)]

    sites = []
    for k, site in enumerate(fleet.sites):
        gpu_s = site.gpus * horizon_s
        avail = 1.0 if site.mtbf_s is None else site.mtbf_s / (site.mtbf_s + site.mttr_s)
        busy, down = min(busy_gpu_s[k], gpu_s * avail), gpu_s * (1 - avail)
        idle = max(gpu_s - busy - down, 0.0)
        failures = site.gpus * avail * horizon_s / site.mtbf_s if site.mtbf_s else 0.0
        # a failure hits a busy GPU with probability = utilisation and throws away half a job on average
        mean_s = busy / max(per[:, :, k].sum(), 1e-12) / max(float(k_of.mean()), 1.0)
        lost = failures * (busy / gpu_s) * mean_s / 2 * float(k_of.mean())
        sites.append({
            "name": site.name, "region": site.region, "chip": site.chip, "gpus": site.gpus,
            "servers": int(servers[k]), "utilisation": busy / gpu_s, "busy_gpu_h": busy / 3600,
            "down_gpu_h": down / 3600, "lost_work_gpu_h": lost / 3600, "failures": failures,
            "training_gpu_h": float((held[k] * span_s).sum()) / 3600,
            **energy(site, busy, idle), "cost_usd": site.gpus * s.horizon_h * site.usd_per_gpu_hour,
        })
    total_gpus = sum(site.gpus for site in fleet.sites)
    energies = [x["energy_kwh"] for x in sites]
    overall: dict[str, Any] = {
        "gpus": total_gpus,
        "jobs": round(total_jobs),
        "completed": round(total_jobs),
        "utilisation": float(sum(x["busy_gpu_h"] for x in sites) * 3600 / (total_gpus * horizon_s)),
        "energy_kwh": sum(e for e in energies if e is not None) if all(e is not None for e in energies) else None,
        "cost_usd": sum(x["cost_usd"] for x in sites),
        "gpu_hours_lost_to_failures": sum(x["lost_work_gpu_h"] + x["down_gpu_h"] for x in sites),
        "lost_work_gpu_h": sum(x["lost_work_gpu_h"] for x in sites),
        "down_gpu_h": sum(x["down_gpu_h"] for x in sites),
        "failures": sum(x["failures"] for x in sites),
        "unstable_hours": unstable,
        **{key: v for key, v in group("all", np.ones(n_draws, bool), total_jobs).items() if key != "name"},
    }
    gpu_s = (per.sum(axis=(0, 3)) * np.nan_to_num(dur) * k_of[:, None]).sum(axis=1)  # (class,) GPU-seconds
    training = [{
        "name": t.name, "site": fleet.sites[t.site].name, "gpus": t.gpus, "priority": t.priority,
        "work_h": t.work_s / 3600, "progress_h": float(np.clip(horizon_s - t.start_s, 0, t.work_s)) / 3600,
        "done_at_h": (t.start_s + t.work_s) / 3600 if t.start_s + t.work_s <= horizon_s else None,
        "preemptions": None, "failures": None, "lost_gpu_h": 0.0, "restart_gpu_h": 0.0, "waited_h": 0.0,
        "held_gpu_h": t.gpus * float(np.clip(horizon_s - t.start_s, 0, t.work_s)) / 3600,
    } for t in fleet.training]  # fmt: skip
    training_gpu_s = float((held * span_s).sum())
    overall.update(per_kind(fleet, per.sum(axis=(0, 2, 3)), gpu_s, overall["cost_usd"], training_gpu_s))
    if training:
        overall.update(training_totals(training))
    lq = np.where(np.isfinite(tail), lam[:, :, :, :].sum(axis=(0, 1)) * p_wait * tail, math.nan)  # Little: Lq = λ Wq
    # busy GPUs per site and hour: offered GPU-seconds per second (all served, capped at the site's GPUs)
    busy_series = np.minimum(np.einsum("tcsh,cs,c->sh", lam, np.nan_to_num(dur), k_of) + held,
                             np.array([site.gpus for site in fleet.sites], dtype=float)[:, None])
    sessions = []
    for i, c in enumerate(fleet.classes):
        if not c.interactive:
            continue
        mine = c_of == i
        at_once = float((per[:, i] * np.nan_to_num(dur[i])[:, None]).sum() / horizon_s)  # Little: L = λ E[S]
        used = sorted({k for (_, ci), ok in fleet.sites_for.items() if ci == i for k in ok})
        chips = sum(fleet.sites[k].gpus for k in used)
        waited = float((per[:, i] * p_wait[None]).sum())
        sessions.append({
            "name": c.name, "model": c.model, "fps": c.fps, "sessions": round(float(per[:, i].sum())),
            "started": round(float(per[:, i].sum())), "refused": 0, "queued": round(waited), "refused_share": 0.0,
            "wait_s": _pcts(waits[mine]), "concurrent_mean": at_once, "concurrent_peak": None,
            "frame_latency_ms": {fleet.sites[k].chip: 1e3 * c.frame_latency_s[fleet.sites[k].chip] for k in used},
            "frame_slo_met": 1.0, "chips_eligible": chips, "session_utilisation": at_once / chips if chips else None,
        })  # fmt: skip
    home = [t.home or t.regions[0] for t in s.tenants]
    series = {
        "t_h": [h + 0.5 for h in range(hours)],
        "busy_gpus": {r: [float(busy_series[site_region == r, h].sum()) for h in range(hours)] for r in regions},
        "gpus": {r: sum(site.gpus for site in fleet.sites if site.region == r) for r in regions},
        # analytic queue lengths are per site; shown by the site's region
        "queued": {r: [_finite(float(lq[site_region == r, h].sum())) for h in range(hours)] for r in regions},
        "home_regions": sorted(set(home)),
    }
    if training:
        series["training_gpus"] = {r: [float(held[site_region == r, h].sum()) for h in range(hours)] for r in regions}
    extra = {"_draws": {"cls": c_of, "tenant": t_of, "wait": waits, "e2e": e2e}} if draws else {}
    return {**extra, "fleet": overall, "classes": classes, "sessions": sessions, "training": training,
            "regions": by_region,
            "tenants": tenants,
            "sites": sites,
            "series": series, "core": {"samples": SAMPLES},
            "assumptions": {"energy_and_cost": ENERGY_ASSUMPTION, "analytic": (__doc__ or "").strip()}}

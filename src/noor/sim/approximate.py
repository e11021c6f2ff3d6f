"""Analytic mode: each site a G/G/c pool, minute by minute: a steady state (Allen-Cunneen, analytic.py) while the
site keeps up, a fluid backlog (fluid.py) while it is offered more than it can do and until that queue drains.

For fleets too large to simulate job by job. Per site and step (a minute, fluid.STEP_S):
  1. arrivals: each (tenant, class) stream's rate at the step (profile x bursts, as the event simulation draws
     them; a replayed trace: its counts per hour), split over the sites it may use in proportion to their GPUs
     (an assumption: the event simulation fills the tenant's first region first);
  2. service: the mix of the classes' perf-model durations on the site's chip, with the lognormal noise:
     E[S] = sum p_c d_c, E[S^2] = sum p_c d_c^2 exp(sigma^2), so cs^2 = E[S^2]/E[S]^2 - 1; Poisson arrivals (ca^2 = 1);
     an interactive class's d_c is its mean session length and its own spread replaces exp(sigma^2)
     (ClassInfo.length_m2); a bounded session queue (max_queue) is not modelled and is refused;
  3. capacity: GPUs available on average (MTBF / (MTBF + MTTR)), less the GPUs training partitions hold
     (fluid.run_site: from their start until their work is done, given back to serving by the pre-emption policy
     when the backlog's wait reaches preempt_after_s), divided by the work-weighted GPUs per job for the queue;
  4. the wait: where the step carries no backlog, P(W > t) = P(wait) exp(-t / m) (analytic.pool_stats); where it
     does (offered work above capacity, or the queue it left still draining), the fluid wait: the GPU-seconds
     queued ahead over the capacity.
Day-long percentiles come from the mixture over steps, weighted by arrivals, by drawing from it (seeded).
Not modelled: batching, priorities among serving classes, head-of-line blocking of k-GPU jobs by smaller ones,
nodes too fragmented for a partition, failures' rollbacks of training. Hours whose offered work is at or above
their capacity are listed in `unstable_hours` (overloaded): their waits are the fluid backlog's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from noor.sim.analytic import PoolStats, pool_stats
from noor.sim.arrivals import mix, rate_per_s
from noor.sim.fleet import Fleet, session_lengths
from noor.sim.fluid import STEP_S, Backlog, occupancy, run_site
from noor.sim.metrics import ENERGY_ASSUMPTION, QUANTILES, energy, per_kind, training_totals
from noor.sim.scenario import ScenarioError

SAMPLES = 200_000


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _pcts(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"mean": None, **{f"p{q}": None for q in QUANTILES}}
    got = np.percentile(values, QUANTILES, method="inverted_cdf")
    return {"mean": _finite(float(values.mean())), **{f"p{q}": _finite(v) for q, v in zip(QUANTILES, got, strict=True)}}


def _rates(fleet: Fleet, step_len: np.ndarray) -> np.ndarray:
    """(tenant, class, step) arrivals per second: the drawn process's rate at each step's midpoint, or a replayed
    trace's count per hour over the hour."""
    s = fleet.scenario
    n_steps = len(step_len)
    rates = np.zeros((len(s.tenants), len(fleet.classes), n_steps))
    if s.trace is not None:
        hours = max(1, math.ceil(s.horizon_h))
        span_s = np.clip(s.horizon_h * 3600 - np.arange(hours) * 3600.0, 0.0, 3600.0)
        hour = np.minimum((fleet.arrivals.t_s // 3600).astype(int), hours - 1)
        per_h = np.zeros((len(s.tenants), len(fleet.classes), hours))
        np.add.at(per_h, (fleet.arrivals.tenant, fleet.arrivals.cls, hour), 1.0)
        step_hour = np.minimum((np.arange(n_steps) * STEP_S // 3600).astype(int), hours - 1)
        return (per_h / span_s)[:, :, step_hour]
    mid_s = np.arange(n_steps) * STEP_S + step_len / 2
    for ti, tenant in enumerate(s.tenants):
        if tenant.requests_per_h > 0:
            rates[ti] = mix(s, ti)[:, None] * rate_per_s(s, ti, mid_s)[None, :]
    return rates


def summarize(fleet: Fleet, draws: bool = False) -> dict[str, Any]:
    """The analytic result; with `draws`, also "_draws": the drawn (class, tenant, wait, e2e) the percentiles
    come from (a campus merges its halls' distributions from them)."""
    s = fleet.scenario
    for i, c in enumerate(fleet.classes):
        if c.interactive and c.max_queue is not None:
            raise ScenarioError(f"classes[{i}].max_queue: a bounded session queue is not in the analytic mode (run "
                                f"the event simulation, or size a loss system with `noor plan players`), "
                                f"got {c.max_queue!r}")
    # how each class's lengths spread around their mean (fluid.busy_integral): a clip's noise, a session's own law
    spread = [(c.session_dist, c.session_sigma) if c.interactive else ("lognormal", s.duration_noise_sigma)
              for c in fleet.classes]  # fmt: skip
    m2 = np.array([c.length_m2(s.duration_noise_sigma) for c in fleet.classes])  # E[(actual / mean)^2] per class
    horizon_s = s.horizon_h * 3600
    hours = max(1, math.ceil(s.horizon_h))
    n_steps = max(1, math.ceil(horizon_s / STEP_S - 1e-9))
    step_len = np.clip(horizon_s - np.arange(n_steps) * STEP_S, 0.0, STEP_S)
    step_hour = np.minimum((np.arange(n_steps) * STEP_S // 3600).astype(int), hours - 1)
    sigma2 = s.duration_noise_sigma**2
    n_sites, n_classes, n_tenants = len(fleet.sites), len(fleet.classes), len(s.tenants)

    # 1. arrivals per (tenant, class, site, step), per second
    rates = _rates(fleet, step_len)
    lam = np.zeros((n_tenants, n_classes, n_sites, n_steps))
    for (ti, ci), ok in fleet.sites_for.items():
        if ok and rates[ti, ci].any():
            capacity = np.array([fleet.sites[k].gpus for k in ok], dtype=float)
            for k, share in zip(ok, capacity / capacity.sum(), strict=True):
                lam[ti, ci, k] += rates[ti, ci] * share
    if not lam.any() and not fleet.training:
        raise ScenarioError("tenants: no traffic to approximate")

    # 2-4. each site, step by step: its backlog and partitions (fluid.py), the steady state where nothing is carried
    dur = np.array(
        [[c.latency_s.get(site.chip, math.nan) + site.job_overhead_s for site in fleet.sites] for c in fleet.classes]
    )
    k_of = np.array([c.gpus for c in fleet.classes], dtype=float)
    p_wait = np.zeros((n_sites, n_steps))
    tail = np.zeros((n_sites, n_steps))
    servers = np.zeros(n_sites, dtype=int)
    unstable: list[dict[str, Any]] = []
    backlogs: list[Backlog] = []
    training_rows: dict[str, dict[str, Any]] = {}  # by job name (unique), put back in the fleet's order below
    queued_jobs = np.zeros((n_sites, n_steps))  # mean jobs waiting in each step (Little for the steady ones)
    for k, site in enumerate(fleet.sites):
        per_class = lam[:, :, k, :].sum(axis=0)  # (class, step)
        d = np.nan_to_num(dur[:, k])
        total = per_class.sum(axis=0)  # (step,)
        # GPUs the arrivals would keep busy with as many as they want, at each step (its ends' mean): the lagged
        # offered load (fluid.occupancy); in a steady hour it is the work offered per second, λ E[S] k
        ends = np.zeros(n_steps)
        for ci in range(n_classes):
            ends += k_of[ci] * occupancy(per_class[ci], float(d[ci]), *spread[ci])
        offered = (ends + np.concatenate([[0.0], ends[:-1]])) / 2
        instant = (per_class * (d * k_of)[:, None]).sum(axis=0)  # λ E[S] k: work offered per second, no lag
        mean_job_s = np.divide((per_class * d[:, None]).sum(axis=0), total, out=np.zeros(n_steps), where=total > 0)
        avail = 1.0 if site.mtbf_s is None else site.mtbf_s / (site.mtbf_s + site.mttr_s)
        work = (per_class * step_len).sum(axis=1) * d  # class -> GPU-seconds per GPU of a job
        k_eff = float((work * k_of).sum() / work.sum()) if work.sum() > 0 else 1.0
        servers[k] = max(1, int(site.gpus * avail / k_eff))
        ranks = [s.classes[ci].priority + s.tenants[ti].priority
                 for ti in range(n_tenants) for ci in range(n_classes) if lam[ti, ci, k].any()]  # fmt: skip
        backlog = run_site(offered, mean_job_s, step_len, site.gpus, avail,
                           [t for t in fleet.training if t.site == k], s.scheduling.preemption,
                           s.scheduling.preempt_after_s, min(ranks) if ranks else None)  # fmt: skip
        backlogs.append(backlog)
        training_rows.update({row["name"]: {**row, "site": site.name} for row in backlog.training})
        carries = backlog.carries()
        mid_queue = (backlog.queued_s + np.maximum(backlog.queued_s + backlog.slope * step_len, 0.0)) / 2
        queued_jobs[k] = np.where(carries, np.divide(mid_queue, mean_job_s * k_eff, out=np.zeros(n_steps),
                                                     where=mean_job_s > 0), 0.0)  # fmt: skip
        cache: dict[tuple[float, float, float, int], PoolStats] = {}
        for i in np.flatnonzero(~carries & (total > 0)).tolist():
            p = per_class[:, i] / total[i]
            mean_s = float((p * d).sum())
            cs2 = max(float((p * d * d * m2).sum() / mean_s**2 - 1), 0.0)
            # the modified offered load: the steady state at the lagged load (Jennings, Mandelbaum, Massey and Whitt,
            # "Server staffing to meet time-varying demand", Management Science 42(10), 1996)
            arrivals = float(total[i] * offered[i] / instant[i]) if instant[i] > 0 else 0.0
            key = (arrivals, mean_s, cs2, max(1, int(backlog.capacity[i] / k_eff)))
            if key not in cache:
                cache[key] = pool_stats(key[0], mean_s, key[3], service_cv2=cs2)
            stats = cache[key]
            if stats.stable and stats.p_wait > 0:  # an unstable steady state here has no backlog yet: no wait
                p_wait[k, i], tail[k, i] = stats.p_wait, stats.wait_mean_s / stats.p_wait
                queued_jobs[k, i] = total[i] * stats.wait_mean_s
        for h in range(hours):
            mine = step_hour == h
            cap = float((backlog.capacity[mine] * step_len[mine]).sum())
            load = float((offered[mine] * step_len[mine]).sum())
            if load > 0 and load >= cap:
                unstable.append({"site": site.name, "hour": h, "utilisation": load / cap if cap > 0 else math.inf})

    training = [training_rows[t.name] for t in fleet.training]

    # day-long distributions: draw (tenant, class, site, step) by arrivals, then a wait and a duration
    rng = np.random.default_rng([s.seed, 7])
    per = lam * step_len  # jobs per (tenant, class, site, step)
    weights = per.ravel()
    total_jobs = float(weights.sum())
    n_draws = SAMPLES if total_jobs > 0 else 0  # none: a site that only trains
    comp = rng.choice(weights.size, size=n_draws, p=weights / total_jobs) if n_draws else np.zeros(0, dtype=int)
    t_of, c_of, s_of, i_of = np.unravel_index(comp, lam.shape)
    carried = np.array([b.carries() for b in backlogs]) if backlogs else np.zeros((0, n_steps), bool)
    fluid = np.zeros(n_draws)
    u = rng.uniform(size=n_draws)
    for k, backlog in enumerate(backlogs):
        mine = s_of == k
        fluid[mine] = backlog.wait_s(i_of[mine], u[mine], step_len)
    steady = np.where(rng.uniform(size=n_draws) < p_wait[s_of, i_of],
                      rng.exponential(1.0, n_draws) * tail[s_of, i_of], 0.0)  # fmt: skip
    waits = np.where(carried[s_of, i_of], fluid, steady)
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

    held = np.array([b.held for b in backlogs])  # (site, step) GPUs training holds
    sites = []
    for k, site in enumerate(fleet.sites):
        gpu_s = site.gpus * horizon_s
        avail = 1.0 if site.mtbf_s is None else site.mtbf_s / (site.mtbf_s + site.mttr_s)
        trained = float((held[k] * step_len).sum())
        busy, down = min(float(backlogs[k].served_s.sum()) + trained, gpu_s * avail), gpu_s * (1 - avail)
        idle = max(gpu_s - busy - down, 0.0)
        failures = site.gpus * avail * horizon_s / site.mtbf_s if site.mtbf_s else 0.0
        # a failure hits a busy GPU with probability = utilisation and throws away half a job on average
        mean_s = busy / max(per[:, :, k].sum(), 1e-12) / max(float(k_of.mean()), 1.0)
        lost = failures * (busy / gpu_s) * mean_s / 2 * float(k_of.mean())
        sites.append({
            "name": site.name, "region": site.region, "chip": site.chip, "gpus": site.gpus,
            "servers": int(servers[k]), "utilisation": busy / gpu_s, "busy_gpu_h": busy / 3600,
            "down_gpu_h": down / 3600, "lost_work_gpu_h": lost / 3600, "failures": failures,
            "training_gpu_h": trained / 3600,
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
    training_gpu_s = float((held * step_len).sum())
    overall.update(per_kind(fleet, per.sum(axis=(0, 2, 3)), gpu_s, overall["cost_usd"], training_gpu_s))
    if training:
        overall.update(training_totals(training))

    def hourly(x: np.ndarray) -> np.ndarray:
        """(site, step) -> (site, hour): the mean over each hour's steps."""
        out = np.zeros((x.shape[0], hours))
        for h in range(hours):
            mine = step_hour == h
            out[:, h] = (x[:, mine] * step_len[mine]).sum(axis=1) / step_len[mine].sum()
        return out

    served = np.array([b.served_s for b in backlogs]) / np.where(step_len > 0, step_len, 1.0)
    busy_series = np.minimum(hourly(served + held), np.array([site.gpus for site in fleet.sites], float)[:, None])
    lq, held_h = hourly(queued_jobs), hourly(held)
    sessions = []
    for i, c in enumerate(fleet.classes):
        if not c.interactive:
            continue
        mine = c_of == i
        at_once = float((per[:, i] * np.nan_to_num(dur[i])[:, None]).sum() / horizon_s)  # Little: L = λ E[S]
        used = sorted({k for (_, ci), ok in fleet.sites_for.items() if ci == i for k in ok})
        chips = sum(fleet.sites[k].gpus for k in used)
        waited = float((per[:, i] * np.where(carried, 1.0, p_wait)[None]).sum())
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
        series["training_gpus"] = {r: [float(held_h[site_region == r, h].sum()) for h in range(hours)]
                                   for r in regions}  # fmt: skip
    extra = {"_draws": {"cls": c_of, "tenant": t_of, "wait": waits, "e2e": e2e}} if draws else {}
    return {**extra, "fleet": overall, "classes": classes, "sessions": sessions, "training": training,
            "regions": by_region,
            "tenants": tenants,
            "sites": sites,
            "series": series, "core": {"samples": SAMPLES},
            "assumptions": {"energy_and_cost": ENERGY_ASSUMPTION, "analytic": (__doc__ or "").strip()}}

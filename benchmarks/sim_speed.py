"""Speed of Noor's simulation engine: the same M/G/c scenario in Noor's event core and in SimPy, then one
simulated day of a 10,000-GPU fleet.

1. M/G/c: `--gpus` GPUs (one per node), Poisson arrivals at `--load` utilisation, lognormal service around
   FLUX.1-dev's perf-model time on an H100. Both engines get exactly the same arrival times and service
   times (drawn once by Noor), and both serve first come first served, so every job's wait must agree:
   the script checks that job by job before it prints speeds. Speed is counted the same way for
   both: events per CPU-second of the engine's own run (time.process_time, so that other processes on a
   shared machine count less), where an event is an arrival or a completion (2 per job); each engine's
   best of `--repeats` alternating runs. Wall-clock seconds are printed too. Target: Noor >= 5x SimPy.
2. A day of 10,000 H100 (8 per node) serving the video mix of examples/sim/site-35mw.toml, scaled to
   the fleet: wall time. Target: <= 60 s.
3. `--campus examples/sim/halo-2gw.toml`: the 2 GW campus's day as `noor simulate run` runs it (every hall, one
   run per site of identical halls, `--processes` at once): wall time (target <= 60 s on 2 cores), events and
   events/s, CPU-seconds, the load average beside them; the analytic mode's utilisation and waits beside the
   event simulation's (target: within 10% on p95 wait and utilisation); then SimPy on the same queue: the
   busiest hall's first `--slice-h` hours of jobs (its arrival times and drawn durations, its serving GPUs as
   one first-come-first-served pool) in both engines, checked job by job, and the ratio of events per
   CPU-second.

    python benchmarks/sim_speed.py [--gpus 64] [--jobs 200000] [--load 0.85] [--repeats 3] [--skip-day]
    python benchmarks/sim_speed.py --campus examples/sim/halo-2gw.toml [--processes 2] [--slice-h 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from noor import perf, sim
from noor.sim.arrivals import Arrivals
from noor.sim.core import simulate
from noor.sim.fleet import Fleet, resolve

ROOT = Path(__file__).resolve().parents[1]


def mgc_scenario(gpus: int, jobs: int, load: float, seed: int) -> sim.Scenario:
    service_s = perf.predict("flux.1-dev", "h100-sxm").latency_s or 1.0
    per_h = load * gpus * 3600 / service_s
    return sim.parse({
        "name": "M/G/c", "seed": seed, "horizon_h": jobs / per_h, "duration_noise_sigma": 0.5,
        "sample_s": 3600.0,
        "regions": {"r": {"timezone": "UTC", "diurnal": "flat"}},
        "sites": [{"name": "pool", "region": "r", "chip": "h100-sxm", "gpus": gpus, "gpus_per_node": 1}],
        "classes": [{"name": "image", "model": "flux.1-dev"}],
        "tenants": [{"name": "t", "regions": ["r"], "requests_per_h": per_h}],
        "scheduling": {"policy": "fifo"},
    })


def run_simpy(arrival_s: list[float], service_s: list[float], gpus: int) -> tuple[float, float, np.ndarray]:
    """The textbook SimPy M/G/c: a source process, a Resource of `gpus`, one process per job."""
    import simpy

    env = simpy.Environment()
    pool = simpy.Resource(env, capacity=gpus)
    waits = np.zeros(len(arrival_s))

    def job(i: int):  # type: ignore[no-untyped-def]
        with pool.request() as req:
            yield req
            waits[i] = env.now - arrival_s[i]
            yield env.timeout(service_s[i])

    def source():  # type: ignore[no-untyped-def]
        last = 0.0
        for i, t in enumerate(arrival_s):
            yield env.timeout(t - last)
            last = t
            env.process(job(i))

    env.process(source())
    t0, c0 = time.perf_counter(), time.process_time()
    env.run()
    return time.perf_counter() - t0, time.process_time() - c0, waits


def mgc(gpus: int, jobs: int, load: float, seed: int, repeats: int) -> float:
    fleet = resolve(mgc_scenario(gpus, jobs, load, seed))
    return compare(fleet, gpus, load, repeats, f"M/G/{gpus}")


def compare(fleet: Fleet, gpus: int, load: float, repeats: int, label: str) -> float:
    """Noor's core and SimPy on the fleet's one FIFO pool: the same jobs, waits checked, events/CPU-s."""
    arrival = fleet.arrivals.t_s.tolist()
    service = (fleet.arrivals.noise * fleet.latency_s(0, "h100-sxm")).tolist()
    n = len(arrival)
    # alternate the engines and keep each one's best run: this machine is shared, and a busy moment
    # should not land on one engine only
    noor_s = simpy_s = noor_cpu = simpy_cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        rec = simulate(fleet)
        noor_s, noor_cpu = min(noor_s, time.perf_counter() - t0), min(noor_cpu, time.process_time() - c0)
        wall, cpu, simpy_waits = run_simpy(arrival, service, gpus)
        simpy_s, simpy_cpu = min(simpy_s, wall), min(simpy_cpu, cpu)
    noor_waits = rec.start_s - rec.submitted_s
    worst = int(np.argmax(np.abs(noor_waits - simpy_waits)))
    if not np.allclose(noor_waits, simpy_waits, rtol=1e-9, atol=1e-6):
        sys.exit(f"the engines disagree: job {worst} waited {noor_waits[worst]} s (noor), "
                 f"{simpy_waits[worst]} s (simpy)")
    events = 2 * n  # arrivals + completions, counted alike for both
    noor_eps, simpy_eps = events / noor_cpu, events / simpy_cpu
    print(f"{label}: {n:,} jobs at {load:.0%} load, mean wait {noor_waits.mean():.2f} s, "
          f"p95 {np.percentile(noor_waits, 95):.2f} s (identical in both engines); best of {repeats} runs each")
    print(f"  noor : {noor_cpu:6.2f} CPU-s ({noor_s:5.2f} s wall)  {noor_eps:12,.0f} events per CPU-second")
    print(f"  simpy: {simpy_cpu:6.2f} CPU-s ({simpy_s:5.2f} s wall)  {simpy_eps:12,.0f} events per CPU-second")
    ratio = noor_eps / simpy_eps
    print(f"  ratio: {ratio:.1f}x (wall-clock ratio {simpy_s / noor_s:.1f}x; target >= 5x)")
    return ratio


def fleet_day(gpus: int, seed: int) -> float:
    data = sim.apply_overrides(
        __import__("tomllib").loads((ROOT / "examples/sim/site-35mw.toml").read_text()),
        {"sites[0].gpus": gpus, "sites[0].power_mw": None, "sites[0].kw_per_gpu": None, "seed": seed},
    )
    scale = gpus / 19_600  # the example's traffic is for 19,600 GPUs
    for tenant in data["tenants"]:
        tenant["requests_per_h"] *= scale
    t0 = time.perf_counter()
    fleet = resolve(sim.parse(data))
    t1 = time.perf_counter()
    rec = simulate(fleet)
    t2 = time.perf_counter()
    done = int((~np.isnan(rec.end_s)).sum())
    print(f"one day of {gpus:,} GPUs: {len(fleet.arrivals):,} jobs ({done:,} done), {rec.events:,} events; "
          f"set-up {t1 - t0:.1f} s (perf model, arrivals), engine {t2 - t1:.1f} s "
          f"({rec.events / (t2 - t1):,.0f} events/s), total {t2 - t0:.1f} s (target <= 60 s); "
          f"utilisation {sum(rec.busy_gpu_s) / (gpus * 86400):.1%}, "
          f"p95 wait {statistics.quantiles((rec.start_s - rec.submitted_s).tolist(), n=20)[-1]:.1f} s")
    return t2 - t0


def campus_day(path: Path, processes: int, slice_h: float, repeats: int) -> None:
    from noor.sim import campus

    s = sim.load(path)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    event = sim.run(s, jobs=processes)
    t1 = time.perf_counter()
    analytic = sim.run(s, analytic=True, jobs=processes)
    t2 = time.perf_counter()
    core, f, a = event["core"], event["fleet"], analytic["fleet"]
    print(f"{s.name}: {f['gpus']:,} GPUs in {f['halls']} halls, {f['jobs']:,} jobs and "
          f"{f.get('training_gpu_h', 0):,.0f} training GPU-h in {s.horizon_h:g} h")
    print(f"  event: {t1 - t0:.1f} s wall (target <= 60 s), {core['processes']} processes, {core['cpu_s']:.1f} CPU-s; "
          f"{core['events']:,} events simulated ({core['events_per_s']:,.0f} events/s of wall) for "
          f"{core['events_represented']:,} in the campus; load average {load0[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    for hall in core["halls"]:
        print(f"    {hall['site']:>10} x{hall['halls']:<3} {hall['events']:>12,} events  {hall['wall_s']:6.1f} s wall  "
              f"{hall['cpu_s']:6.1f} CPU-s")
    print(f"  analytic: {t2 - t1:.1f} s wall")
    rows = [("utilisation", f["utilisation"], a["utilisation"])]
    rows += [(f"wait {k}", f["wait_s"][k], a["wait_s"][k]) for k in ("mean", "p95", "p99")]
    rows += [(f"{c['name']} wait p95", c["wait_s"]["p95"], d["wait_s"]["p95"])
             for c, d in zip(event["classes"], analytic["classes"], strict=True)]
    for name, e, x in rows:
        diff = "-" if e is None or x is None else ("0 = 0" if e == x == 0 else
                                                   f"{(x - e) / e:+.1%}" if e else "event 0")
        print(f"    {name:>22}: event {e if e is None else round(e, 4)!s:>10}  analytic "
              f"{x if x is None else round(x, 4)!s:>10}  ({diff})")
    # SimPy on the same queue: the busiest hall's jobs, its serving GPUs as one FIFO pool
    parts = campus.split(s)
    k = max(range(len(parts)), key=lambda i: sum(t["requests_per_h"] for t in parts[i]["tenants"]))
    hall = resolve(sim.parse({**parts[k], "horizon_h": slice_h}))
    chip = hall.sites[0].chip
    base = np.array([hall.classes[c].latency_s[chip] for c in hall.arrivals.cls])
    service_s = base * hall.arrivals.noise + hall.sites[0].job_overhead_s
    held = sum(t.gpus for t in hall.training)
    servers = hall.sites[0].gpus - held
    pool = resolve(mgc_scenario(servers, 1000, 0.5, s.seed))
    pool.arrivals = Arrivals(hall.arrivals.t_s, np.zeros(len(base), np.int32), np.zeros(len(base), np.int32),
                             service_s / pool.latency_s(0, "h100-sxm"))
    load = float(service_s.sum()) / (servers * slice_h * 3600)
    compare(pool, servers, load, repeats, f"the busiest hall ({parts[k]['sites'][0]['name']}), its first "
                                          f"{slice_h:g} h as one FIFO pool of {servers:,} GPUs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--jobs", type=int, default=200_000)
    ap.add_argument("--load", type=float, default=0.85)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fleet-gpus", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-day", action="store_true")
    ap.add_argument("--campus", type=Path, help="a [campus] scenario: its day, its analytic mode, SimPy on a hall")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--slice-h", type=float, default=1.0)
    args = ap.parse_args()
    if args.campus is not None:
        campus_day(args.campus, args.processes, args.slice_h, args.repeats)
        return
    mgc(args.gpus, args.jobs, args.load, args.seed, args.repeats)
    if not args.skip_day:
        fleet_day(args.fleet_gpus, args.seed)


if __name__ == "__main__":
    main()

"""The event simulation and the analytic mode side by side, measured in one run.

    noor simulate compare examples/sim/halo-2gw-peak.toml [--jobs 2] [--json compare.json]

Runs the same parsed scenario both ways (a campus's halls in `--jobs` processes each, as `noor simulate run`
does), then lists, for the whole fleet, each class and each site (on a campus: the one hall simulated for each
site of identical halls), the queue wait's mean, p95 and p99 and the utilisation in both modes with the analytic
mode's error relative to the event simulation, and how long each mode took (wall and CPU seconds, the load average
before and after: a shared machine's figures say so).
"""

from __future__ import annotations

import os
import time
from typing import Any

from rich.table import Table

from noor.sim.scenario import Scenario


def _diff(event: float | None, analytic: float | None) -> str:
    if event is None or analytic is None:
        return "-"
    if event == 0:
        return "both 0" if analytic == 0 else "event 0"
    return f"{(analytic - event) / event:+.1%}"


def _row(name: str, figure: str, event: float | None, analytic: float | None) -> dict[str, Any]:
    return {"name": name, "figure": figure, "event": event, "analytic": analytic, "diff": _diff(event, analytic)}


def compare(s: Scenario, jobs: int = 2) -> dict[str, Any]:
    """Both modes of `s`: their results' figures side by side (rows), and the time each took."""
    from noor.sim import run

    load0 = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    event = run(s, jobs=jobs)
    wall1, cpu1 = time.perf_counter(), time.process_time()
    analytic = run(s, analytic=True, jobs=jobs)
    wall2 = time.perf_counter()
    e, a = event["fleet"], analytic["fleet"]
    rows = [_row("fleet", "utilisation", e["utilisation"], a["utilisation"])]
    rows += [_row("fleet", f"wait {k}", e["wait_s"][k], a["wait_s"][k]) for k in ("mean", "p95", "p99")]
    rows += [_row(f"class {ce['name']}", "wait p95", ce["wait_s"]["p95"], ca["wait_s"]["p95"])
             for ce, ca in zip(event["classes"], analytic["classes"], strict=True)]  # fmt: skip
    if "halls" in event["core"]:  # a campus: the hall run for each site
        for he, ha in zip(event["core"]["halls"], analytic["core"]["halls"], strict=True):
            name = f"hall of {he['site']} (x{he['halls']})"
            rows.append(_row(name, "utilisation", he["utilisation"], ha["utilisation"]))
            rows += [_row(name, f"wait {k}", he["wait_s"][k], ha["wait_s"][k]) for k in ("mean", "p95", "p99")]
            if he["preemptions"] or ha["preemptions"]:
                rows.append(_row(name, "pre-emptions", he["preemptions"], ha["preemptions"]))
    else:
        rows += [_row(f"site {xe['name']}", "utilisation", xe["utilisation"], xa["utilisation"])
                 for xe, xa in zip(event["sites"], analytic["sites"], strict=True)]  # fmt: skip
    cpu_event = event["core"].get("cpu_s", cpu1 - cpu0)  # a campus: its halls' processes; else this process
    return {
        "scenario": s.name, "rows": rows,
        "event": {"wall_s": wall1 - wall0, "cpu_s": cpu_event, "events": event["core"]["events"],
                  "jobs": e["jobs"]},
        "analytic": {"wall_s": wall2 - wall1, "jobs": a["jobs"], "overloaded_site_hours": len(a["unstable_hours"])},
        "load_average": {"before": load0, "after": os.getloadavg()[0]}, "cpus": os.cpu_count(),
    }  # fmt: skip


def _fmt(x: float | None, figure: str) -> str:
    if x is None:
        return "-"
    if figure == "utilisation":
        return f"{100 * x:.2f}%"
    if figure == "pre-emptions":
        return f"{x:,.0f}"
    return f"{x:,.1f} s"


def table(out: dict[str, Any]) -> Table:
    ev, an, la = out["event"], out["analytic"], out["load_average"]
    t = Table(title=f"{out['scenario']}: event simulation vs analytic mode, one run")
    for col in ("where", "figure", "event", "analytic", "analytic vs event"):
        t.add_column(col, justify="left" if col in ("where", "figure") else "right")
    for r in out["rows"]:
        t.add_row(r["name"], r["figure"], _fmt(r["event"], r["figure"]), _fmt(r["analytic"], r["figure"]), r["diff"])
    t.caption = (f"event: {ev['wall_s']:.1f} s wall, {ev['cpu_s']:.1f} CPU-s, {ev['events']:,} events, "
                 f"{ev['jobs']:,} jobs; analytic: {an['wall_s']:.1f} s wall, {an['overloaded_site_hours']} site-hours "
                 f"offered at least their capacity; load average {la['before']:.1f} before, {la['after']:.1f} after "
                 f"({out['cpus']} CPUs)")  # fmt: skip
    return t

"""A run's result as rich tables for the terminal, and as JSON-safe data."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table


def _s(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x >= 3600:
        return f"{x / 3600:.1f} h"
    if x >= 100:
        return f"{x / 60:.1f} min"
    return f"{x:.1f} s"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:,.0f}{unit}"


def _usd(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}" if x < 0.1 else f"{x:.3f}"


def tables(result: dict[str, Any]) -> list[Table]:
    """Fleet totals, then latency and SLO per class, per region, per tenant; then sites."""
    f = result["fleet"]
    title = f"{result['scenario']['name']} ({result['mode']}"
    title += f", {result['core']['events']:,} events in {result['core']['wall_s']:.1f} s)" \
        if result["mode"] == "event" else ")"
    fleet = Table(title=title)
    for col in ("GPUs", "jobs", "utilisation", "videos/h", "images/h", "SLO met", "wait p95", "e2e p95", "energy MWh",
                "cost $", "$/video", "$/image", "GPU-h lost"):
        fleet.add_column(col, justify="right")
    fleet.add_row(
        _num(f["gpus"]), _num(f["jobs"]), _pct(f["utilisation"]), _num(f["videos_per_hour"]),
        _num(f["images_per_hour"]), _pct(f["slo_attainment"]), _s(f["wait_s"]["p95"]), _s(f["e2e_s"]["p95"]),
        "-" if f["energy_kwh"] is None else f"{f['energy_kwh'] / 1000:,.1f}", _num(f["cost_usd"]),
        _usd(f["usd_per_video"]), _usd(f["usd_per_image"]), f"{f['gpu_hours_lost_to_failures']:,.1f}",
    )
    unstable = f.get("unstable_hours") or []
    if unstable:
        hours = ", ".join(f"{u['site']} hour {u['hour']} ({100 * u['utilisation']:.0f}%)" for u in unstable[:6])
        more = f" and {len(unstable) - 6} more" if len(unstable) > 6 else ""
        fleet.caption = (f"{len(unstable)} site-hour(s) offered at least their capacity: {hours}{more}. No steady "
                         "state there: their queue grows and drains after, a fluid backlog (noor.sim.fluid).")
    core = result.get("core", {})
    if "halls" in f:  # a campus: every hall, one simulated per site of identical halls
        fleet.caption = (fleet.caption + "\n" if fleet.caption else "") + (
            f"{f['halls']} halls, one run per site of identical halls in {core.get('processes', 1)} processes"
            + (f": {core['events']:,} events simulated for {core['events_represented']:,} in the campus, "
               f"{core['events_per_s']:,.0f} events/s over {core['wall_s']:.1f} s wall ({core['cpu_s']:.1f} CPU-s)"
               if result["mode"] == "event" else f" ({core['wall_s']:.1f} s wall)"))  # fmt: skip
    out = [fleet]
    for key, label in (("classes", "class"), ("regions", "region (where it ran)"), ("tenants", "tenant")):
        t = Table(title=f"per {label}")
        t.add_column(label.split()[0])
        for col in ("jobs", "wait p50", "wait p95", "wait p99", "e2e p50", "e2e p95", "e2e p99", "SLO met"):
            t.add_column(col, justify="right")
        for g in result[key]:
            w, e = g["wait_s"], g["e2e_s"]
            t.add_row(g["name"], _num(g["jobs"]), _s(w["p50"]), _s(w["p95"]), _s(w["p99"]), _s(e["p50"]),
                      _s(e["p95"]), _s(e["p99"]), _pct(g["slo_attainment"]))
        out.append(t)
    if result.get("sessions"):
        t = Table(title="interactive sessions (a session holds one chip for its length)")
        for col in ("class", "fps", "sessions", "refused", "queued", "wait p50", "wait p95", "at once mean",
                    "at once peak", "frame ms", "frame SLO met", "chips", "utilisation"):
            t.add_column(col, justify="left" if col == "class" else "right")
        for x in result["sessions"]:
            frame = ", ".join(f"{chip} {ms:.1f}" for chip, ms in x["frame_latency_ms"].items()) or "-"
            t.add_row(x["name"], f"{x['fps']:g}", _num(x["sessions"]), _num(x["refused"]), _num(x["queued"]),
                      _s(x["wait_s"]["p50"]), _s(x["wait_s"]["p95"]), f"{x['concurrent_mean']:,.1f}",
                      _num(x["concurrent_peak"]), frame, _pct(x["frame_slo_met"]), _num(x["chips_eligible"]),
                      _pct(x["session_utilisation"]))
        out.append(t)
    if result.get("training"):
        t = Table(title="training (a partition of whole nodes, held until its work is done)")
        for col in ("job", "site", "GPUs", "priority", "work h", "done h", "finished at", "pre-empted", "failures",
                    "lost GPU-h", "waited h", "held GPU-h"):
            t.add_column(col, justify="left" if col in ("job", "site") else "right")
        for x in result["training"]:
            t.add_row(x["name"], x["site"], _num(x["gpus"]), str(x["priority"]), f"{x['work_h']:,.1f}",
                      f"{x['progress_h']:,.1f}", "-" if x["done_at_h"] is None else f"{x['done_at_h']:.1f} h",
                      _num(x["preemptions"]), _num(x["failures"]), f"{x['lost_gpu_h']:,.1f}",
                      f"{x['waited_h']:,.1f}", _num(x["held_gpu_h"]))
        out.append(t)
    sites = Table(title="per site")
    halls = any("halls" in x for x in result["sites"])
    for col in ("site", "region", "chip", *(["halls"] if halls else []), "GPUs", "utilisation", "failures",
                "down GPU-h", "energy MWh", "cost $"):
        sites.add_column(col, justify="left" if col in ("site", "region", "chip") else "right")
    for x in result["sites"]:
        sites.add_row(x["name"], x["region"], x["chip"], *([_num(x.get("halls", 1))] if halls else []),
                      _num(x["gpus"]), _pct(x["utilisation"]),
                      f"{x['failures']:,.0f}", f"{x['down_gpu_h']:,.1f}",
                      "-" if x["energy_kwh"] is None else f"{x['energy_kwh'] / 1000:,.1f}", _num(x["cost_usd"]))
    out.append(sites)
    return out


def jsonable(result: dict[str, Any]) -> dict[str, Any]:
    """Drop in-memory extras ("_world", "_record") and turn inf/nan into None."""

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if not str(k).startswith("_")}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    out: dict[str, Any] = clean(result)
    return out

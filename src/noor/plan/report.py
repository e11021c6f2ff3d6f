"""Reports of a plan document (the dict a plan's `to_dict()` returns): JSON, Markdown and HTML.

Every report carries the resolved inputs: power, chip, cooling, the mix, and each assumption with
its value and source ("override" when the caller set it). HTML charts are matplotlib (Agg) inline
SVG, so a report opens offline.
"""

from __future__ import annotations

import json
import math
from typing import Any


def jsonable(value: Any) -> Any:
    """The document with inf/NaN as None (JSON has no infinity) and tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(jsonable(doc), indent=2, allow_nan=False)


def _n(value: Any, digits: int = 3) -> str:
    """A number for people: 3 significant digits, thousands separated; '-' for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _usd(value: Any) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1e9:
        return f"${value / 1e9:,.2f}B"
    if abs(value) >= 1e6:
        return f"${value / 1e6:,.2f}M"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return f"${value:.4f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return out


def inputs_markdown(inputs: dict[str, Any]) -> list[str]:
    lines = ["## Inputs", ""]
    for key, value in inputs.items():
        if key not in ("mix", "assumptions", "overrides", "scenario"):
            lines.append(f"- **{key}**: {value}")
    mix = inputs.get("mix")
    if mix:
        lines += ["", f"### Request mix ({mix['source']})", ""]
        lines += _table(
            ["class", "model", "size", "frames", "steps", "share", "SLO"],
            [[c["name"], c["model"], f"{c['width']}x{c['height']}", c["frames"], c["steps"] or "default", c["share"],
              f"wait p95 <= {c['slo_wait_p95_s']:g} s" if c["slo_wait_p95_s"] is not None else
              f"e2e p95 <= {c['slo_e2e_p95_s']:g} s" if c["slo_e2e_p95_s"] is not None else "-"]
             for c in mix["classes"]],
        )
    lines += ["", "### Assumptions (every one can be overridden: --set key=value)", ""]
    lines += _table(
        ["key", "value", "unit", "source"],
        [[a["key"], _n(a["value"], 4), a["unit"], a["source"] if a["source"] != "override" else
          f"**override** (default {_n(a['default'], 4)})"] for a in inputs.get("assumptions", [])],
    )
    return lines


def site_markdown(doc: dict[str, Any]) -> str:
    p, hw, out, cost = doc["power"], doc["hardware"], doc["output"], doc["cost"]
    title = f"# Site plan: {_n(doc['inputs']['power_mw'])} MW of {hw['chip']} ({doc['inputs']['cooling']} cooling)"
    lines = [title, "", "## Output", ""]
    lines += _table(
        ["videos/day", "images/day", "videos/day per MW", "kWh/video", "$/video", "$/image", "video p95 e2e s"],
        [[_n(out["videos_per_day"]), _n(out["images_per_day"]), _n(out["videos_per_day_per_mw"]),
          _n(out["kwh_per_video"]), _usd(out["usd_per_video"]), _usd(out["usd_per_image"]),
          _n(out["video_e2e_p95_s"])]],
    )
    lines += ["", "## Power", ""]
    lines += _table(
        ["facility MW", "PUE", "IT MW", "accelerators MW", "hosts MW", "network MW", "storage MW",
         "cooling & losses MW", "used MW"],
        [[_n(p[k]) for k in ("facility_mw", "pue", "it_mw", "accelerators_mw", "hosts_mw", "network_mw",
                             "storage_mw", "cooling_and_losses_mw", "used_facility_mw")]],
    )
    lines += ["", "## Hardware", ""]
    lines += _table(
        ["chips", "W/chip", "servers", "chips/server", "kW/server", "servers/rack", "rack kW", "racks",
         "network+storage racks"],
        [[_n(hw[k]) for k in ("chips", "chip_tdp_w", "nodes", "chips_per_node", "node_kw", "nodes_per_rack",
                              "rack_kw", "racks", "network_storage_racks")]],
    )
    lines += ["", "## Request classes", ""]
    lines += _table(
        ["class", "kind", "chips/request", "plan", "latency s", "chips", "per day", "utilisation", "wait p95 s",
         "e2e p95 s"],
        [[c["name"], c["kind"], c["chips_per_request"], c["plan"], _n(c["latency_s"]), _n(c["chips"]),
          _n(c["per_day"]), _n(c["utilisation"]), _n(c["wait_p95_s"]), _n(c["e2e_p95_s"])] for c in doc["classes"]],
    )
    lines += ["", "## Cost", ""]
    lines += _table(
        ["item", "value"],
        [["accelerators", _usd(cost["accelerators_usd"])], ["servers (incl. accelerators)", _usd(cost["servers_usd"])],
         ["network and storage", _usd(cost["network_storage_usd"])], ["facility", _usd(cost["facility_usd"])],
         ["capex", _usd(cost["capex_usd"])], ["capex per day (amortised)", _usd(cost["capex_per_day_usd"])],
         ["energy per day", f"{_n(cost['energy_kwh_per_day'])} kWh = {_usd(cost['energy_per_day_usd'])}"],
         ["opex per day", _usd(cost["opex_per_day_usd"])], ["total per day", _usd(cost["total_per_day_usd"])]],
    )
    if doc.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    lines += ["", *inputs_markdown(doc["inputs"])]
    return "\n".join(lines) + "\n"


def chips_markdown(doc: dict[str, Any]) -> str:
    inputs = doc["inputs"]
    lines = [f"# Chips ranked for {_n(inputs['power_mw'])} MW ({inputs['cooling']} cooling) by {inputs['sort_by']}",
             ""]
    lines += _table(
        ["rank (per MW / $ / time)", "chip", "videos/day per MW", "videos/day", "$/video", "kWh/video",
         "video p95 e2e s", "chips", "racks", "what decides it", "note"],
        [[" / ".join(str(v) for v in r["ranks"].values()) if r["ok"] else "-", f"{r['chip']} ({r['status']})",
          _n(r.get("videos_per_day_per_mw")), _n(r.get("videos_per_day")),
          _usd(r.get("usd_per_video")), _n(r.get("kwh_per_video")), _n(r.get("video_e2e_p95_s")), _n(r.get("chips")),
          _n(r.get("racks")), "; ".join(filter(None, [r["driver"]["text"], r["driver"].get("same_as")]))
          if r["ok"] else "-", r["why_not"] or ""] for r in doc["ranking"]],
    )
    lines += ["", *inputs_markdown(inputs)]
    return "\n".join(lines) + "\n"



def train_markdown(doc: dict[str, Any]) -> str:
    inputs, fl, t, cost = doc["inputs"], doc["flops"], doc["time"], doc["cost"]
    what = inputs["model"] or f"{_n(inputs['params'] / 1e9)}B parameters"
    lines = [f"# Training plan: {what} on {_n(inputs['chips'])} {inputs['chip']}", ""]
    lines += _table(
        ["FLOPs", "of which attention", "MFU", "days", "chip-hours", "energy MWh", "energy $", "rental $",
         "checkpoints TB"],
        [[f"{fl['total']:.3g}", f"{fl['attention']:.3g}", _n(t["mfu"]), _n(t["days"]), _n(t["chip_hours"]),
          _n(doc["energy"]["mwh"]), _usd(doc["energy"]["usd"]), _usd(cost["rental_usd"]),
          _n(doc["checkpoints"]["tb_total"])]],
    )
    ck = doc["checkpoints"]
    lines += ["", "## How", "",
              f"- data: {_n(inputs['tokens'])} tokens" + (f" = {_n(inputs['videos'])} clips of {inputs['clip']}, "
                                                          f"{_n(fl['tokens_per_clip'])} tokens each"
                                                          if inputs["videos"] else ""),
              f"- FLOPs: 6 x {_n(inputs['active_params'])} active parameters x tokens = {fl['dense']:.3g}, "
              f"+ attention {fl['attention']:.3g}",
              f"- rate: {_n(inputs['chips'])} x {_n(t['bf16_peak_tflops'])} TFLOP/s (dense BF16) x MFU {inputs['mfu']}",
              f"- checkpoints: {_n(ck['gb_each'])} GB each ({ck['bytes_per_param']} bytes a parameter: bf16 weights "
              f"and gradients, fp32 master weights and Adam moments) x {ck['kept']} kept",
              f"- dollars: chip-hours x {_usd(cost['usd_per_chip_hour'])}/chip-hour (catalog rental; it includes "
              "power, which the energy line prices separately for an owned site)",
              f"- network: {doc['network']}"]
    lines += [f"- {n}" for n in doc["notes"]]
    lines += ["", *inputs_markdown({k: v for k, v in inputs.items() if v is not None})]
    return "\n".join(lines) + "\n"


def markdown(doc: dict[str, Any]) -> str:
    render = {"site": site_markdown, "chips": chips_markdown, "growth": growth_markdown,
              "optimise": optimise_markdown, "train": train_markdown}[doc["kind"]]
    return render(doc)


def html_report(doc: dict[str, Any]) -> str:
    from noor.plan.html import render

    return render(doc)


def _shortfall(phase: dict[str, Any]) -> str:
    """The phase's worst month-by-month shortfall and the months demand exceeds capacity (as the chart shows)."""
    months = phase["short_months"]
    if not months:
        return "0"
    span = f"month {_n(months[0])}" if len(months) == 1 else f"months {_n(months[0])}-{_n(months[-1])}"
    return f"{_n(phase['shortfall_videos_per_day'])} ({span})"


def growth_markdown(doc: dict[str, Any]) -> str:
    inputs = doc["inputs"]
    lines = [f"# Growth plan: {inputs['scenario']}", ""]
    summary = doc["summary"]
    short = summary["first_short_month"]
    lines += [f"- final power: {_n(summary['final_power_mw'])} MW, capacity "
              f"{_n(summary['final_capacity_videos_per_day'])} videos/day, "
              f"total capex {_usd(summary['total_capex_usd'])}",
              f"- demand first exceeds capacity at month {_n(short)}" if short is not None
              else "- capacity meets the forecast demand at every month"]
    lines += [f"- {_n(r['chips'])} {r['chip']} at {r['site']} reach end of life at month {_n(r['month'])} "
              "(life.accelerator_years): capacity drops unless refreshed" for r in summary["retirements"]]
    lines += [""]
    lines += ["## Phases", ""]
    lines += _table(
        ["phase", "month", "buy", "power MW", "capacity videos/day", "demand videos/day",
         "worst shortfall to next phase", "utilisation", "capex", "cost/day", "$/video served"],
        [[p["name"], _n(p["month"]),
          "; ".join(f"{_n(b['chips_to_buy'])} {b['chip']} at {b['site']} "
                    f"(+{_n(b['power_mw'])} MW, {_n(b['racks'])} racks)" for b in p["builds"]),
          _n(p["power_mw"]), _n(p["capacity_videos_per_day"]), _n(p["demand_videos_per_day"]),
          _shortfall(p), _n(p["utilisation"]), _usd(p["capex_usd"]), _usd(p["cost_per_day_usd"]),
          _usd(p["usd_per_video_served"])] for p in doc["phases"]],
    )
    if any(p.get("training_share") for p in doc["phases"]):
        lines += ["", "## Training (each phase's training_share of the fleet, until the next phase)", ""]
        lines += _table(
            ["phase", "training share", "training chips", "dense BF16 peak PFLOP/s", "cost/day", "serving capacity"],
            [[p["name"], _n(p["training_share"]),
              "; ".join(f"{_n(n)} {c}" for c, n in p["training_chips"].items()) or "0",
              _n(p["training_peak_pflops"]), _usd(p["training_cost_per_day_usd"]),
              f"{_n(1 - p['training_share'])} of the fleet: {_n(p['capacity_videos_per_day'])} videos/day"]
             for p in doc["phases"]],
        )
        lines += ["", "Days for a run on the training chips: `noor plan train --chip C --chips K` (docs/plan.md)."]
    lines += ["", "## Demand forecast", ""]
    lines += _table(["month", "videos/day"], [[_n(m), _n(v)] for m, v in
                                              zip(inputs["demand"]["month"], inputs["demand"]["videos_per_day"],
                                                  strict=True)])
    lines += ["", *inputs_markdown({k: v for k, v in inputs.items() if k not in ("phases", "demand")})]
    return "\n".join(lines) + "\n"


def optimise_markdown(doc: dict[str, Any]) -> str:
    inputs, out = doc["inputs"], doc["output"]
    lines = [f"# Optimised chip mix ({inputs['objective']})", ""]
    lines += _table(
        ["videos/day", "images/day", "capex", "cost/day", "$/video", "$/image"],
        [[_n(out["videos_per_day"]), _n(out["images_per_day"]), _usd(out["capex_usd"]), _usd(out["cost_per_day_usd"]),
          _usd(out["usd_per_video"]), _usd(out["usd_per_image"])]],
    )
    lines += ["", "## Allocation", ""]
    lines += _table(
        ["site", "chip", "servers", "chips", "videos/day", "facility MW", "capex", "cost/day"],
        [[r["site"], r["chip"], _n(r["servers"]), _n(r["chips"]), _n(r["videos_per_day"]), _n(r["facility_mw"]),
          _usd(r["capex_usd"]), _usd(r["cost_per_day_usd"])] for r in doc["allocation"]],
    )
    lines += ["", "## Constraints", ""] + [f"- {c['explanation']}" for c in doc["constraints"]]
    if doc["excluded"]:
        lines += ["", "## Left out", ""] + [f"- {k}: {v}" for k, v in doc["excluded"].items()]
    sites = ", ".join(f"{s['name']} {_n(s['power_mw'])} MW {s['cooling']}" for s in inputs["sites"])
    rest = {k: v for k, v in inputs.items() if k != "sites"}
    lines += ["", *inputs_markdown({"sites": sites, **rest})]
    return "\n".join(lines) + "\n"

"""An HTML report of a run that opens offline: matplotlib (Agg) plots inlined as SVG, tables, the scenario.

Plots: queue length and utilisation over the day per region, end-to-end latency CDF per class and per
region (event mode; the analytic mode has no per-job latencies and shows its percentiles in the tables).
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from noor.sim.summary import jsonable

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:1em}pre{background:#f7f7f7;padding:1em;overflow:auto}"""


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)  # creator, date: noise in a report
    return text[text.index("<svg"):]


def _series_plot(t_h: list[float], series: dict[str, list[float | None]], ylabel: str, title: str) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for name, ys in series.items():
        ax.plot(t_h, [math.nan if y is None else y for y in ys], label=name)
    ax.set_xlabel("hour (UTC)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


def _cdf_plot(samples: dict[str, Any], title: str) -> str:
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for name, xs in samples.items():
        if len(xs):
            xs = np.asarray(xs)
            step = max(1, len(xs) // 2000)  # at most ~2000 points per line keeps the SVG small
            ax.plot(xs[::step], np.arange(1, len(xs) + 1)[::step] / len(xs), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency (s)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _svg(fig)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.3f}" if abs(x) < 10 else f"{x:,.1f}"
    return html.escape(str(x))


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    body = ""
    for r in rows:
        cells = []
        for key, _ in cols:
            v: Any = r
            for part in key.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            cells.append(f"<td>{_fmt(v)}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


LATENCY_COLS = [("name", "name"), ("jobs", "jobs"), ("wait_s.p50", "wait p50 s"), ("wait_s.p95", "wait p95 s"),
                ("wait_s.p99", "wait p99 s"), ("e2e_s.p50", "e2e p50 s"), ("e2e_s.p95", "e2e p95 s"),
                ("e2e_s.p99", "e2e p99 s"), ("slo_attainment", "SLO met")]
SESSION_COLS = [("name", "class"), ("model", "world model"), ("fps", "fps"), ("sessions", "sessions"),
                ("refused", "refused"), ("queued", "queued"), ("wait_s.p50", "wait p50 s"),
                ("wait_s.p95", "wait p95 s"), ("concurrent_mean", "at once, mean"),
                ("concurrent_peak", "at once, peak"), ("frame_slo_met", "frame SLO met"), ("chips_eligible", "chips"),
                ("session_utilisation", "utilisation")]
TRAINING_COLS = [("name", "job"), ("site", "site"), ("gpus", "GPUs"), ("priority", "priority"), ("work_h", "work h"),
                 ("progress_h", "done h"), ("done_at_h", "finished at h"), ("preemptions", "pre-empted"),
                 ("failures", "failures"), ("lost_gpu_h", "lost GPU-h"), ("waited_h", "waited h"),
                 ("held_gpu_h", "held GPU-h")]


def html_report(result: dict[str, Any]) -> str:
    """The whole report as one HTML string (no scripts, no network)."""
    r = jsonable(result)
    f, series = r["fleet"], r["series"]
    t_h = series["t_h"]
    util = {reg: [b / series["gpus"][reg] if series["gpus"][reg] else 0 for b in busy]
            for reg, busy in series["busy_gpus"].items()}
    plots = [
        _series_plot(t_h, series["queued"], "queued jobs", "Queue length over the day"),
        _series_plot(t_h, util, "busy GPUs / GPUs", "Utilisation over the day"),
    ]
    if "_world" in result and "_record" in result:
        from noor.sim.metrics import latency_samples

        samples = latency_samples(result["_world"], result["_record"])
        plots += [_cdf_plot(samples["class"], "Latency CDF per class"),
                  _cdf_plot(samples["region"], "Latency CDF per region (where it ran)")]
    fleet_rows = [{"k": k, "v": v} for k, v in f.items() if not isinstance(v, dict | list)]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(r['scenario']['name'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(r['scenario']['name'])}</h1>",
        f"<p>Mode: <b>{r['mode']}</b>. Utilisation {100 * f['utilisation']:.1f}%, "
        f"{f['videos_per_hour']:,.0f} videos/hour, {f['images_per_hour']:,.0f} images/hour, "
        f"SLO met {_fmt(f['slo_attainment'])}, "
        f"energy {_fmt(f['energy_kwh'])} kWh, cost ${f['cost_usd']:,.0f}.</p>",
        "<div class='plots'>" + "".join(f"<figure>{p}</figure>" for p in plots) + "</div>",
        "<h2>Fleet</h2>" + _table(fleet_rows, [("k", "metric"), ("v", "value")]),
        "<h2>Per class</h2>" + _table(r["classes"], LATENCY_COLS),
        "<h2>Per region (where jobs ran)</h2>" + _table(r["regions"], LATENCY_COLS),
        "<h2>Per tenant</h2>" + _table(r["tenants"], LATENCY_COLS),
        *(["<h2>Interactive sessions</h2>" + _table(r["sessions"], SESSION_COLS)] if r.get("sessions") else []),
        *(["<h2>Training</h2>" + _table(r["training"], TRAINING_COLS)] if r.get("training") else []),
        "<h2>Per site</h2>" + _table(r["sites"], [("name", "site"), ("region", "region"), ("chip", "chip"),
                                                   ("gpus", "GPUs"), ("utilisation", "utilisation"),
                                                   ("failures", "failures"), ("down_gpu_h", "down GPU-h"),
                                                   ("lost_work_gpu_h", "lost work GPU-h"),
                                                   ("energy_kwh", "energy kWh"), ("cost_usd", "cost $")]),
        "<h2>Assumptions</h2><ul>" + "".join(f"<li>{html.escape(str(v))}</li>" for v in r["assumptions"].values())
        + "</ul>",
        "<h2>Scenario (resolved)</h2><pre>" + html.escape(json.dumps(
            {"scenario": r["scenario"], "sites": r["resolved_sites"], "classes": r["resolved_classes"]}, indent=2))
        + "</pre></body></html>",
    ]
    return "\n".join(parts)

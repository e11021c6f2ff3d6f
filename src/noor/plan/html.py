"""The HTML report: the Markdown report as HTML, plus matplotlib charts inlined as SVG.

No scripts, no CDN, no external files: the page opens offline. Figures are drawn with
matplotlib.figure.Figure directly (the Agg/SVG canvases, never pyplot's global state).
"""

from __future__ import annotations

import html
import io
import re
from typing import Any

from noor.plan import report

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
figure { margin: 1em 0; } svg { max-width: 100%; height: auto; }
"""


SEPARATOR_CELL = re.compile(r":?-+:?")  # a cell of the row under a Markdown table's header: ---, :---, ---:


def _cells(row: str) -> list[str]:
    """A pipe-table row's cells; report.py writes any `|` inside a cell as `/`, so every `|` is a border."""
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _inline(text: str) -> str:
    out = html.escape(text, quote=True)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def markdown_to_html(md: str) -> str:
    """The subset report.py writes: headings, bullet lists, pipe tables, paragraphs."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            head, body = rows[0], rows[1:]
            if body and all(SEPARATOR_CELL.fullmatch(c) for c in body[0]):
                body = body[1:]  # `|---|---|` ends the header; it is no row of data
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
            out.append("</tbody></table>")
            continue
        elif line.startswith("- "):
            out.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                out.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _figure(width: float = 8.0, height: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def readable(value: float, _position: object = None) -> str:
    """A tick label read at a glance: 10M, 2.5k, 0.5 (matplotlib's own would be 1, 2 and a "1e7" in the corner)."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _barh(title: str, labels: list[str], values: list[float], xlabel: str) -> str:
    from matplotlib.ticker import FuncFormatter

    fig = _figure(8, 0.45 * len(labels) + 1.2)
    ax = fig.subplots()
    ax.barh(labels[::-1], values[::-1], color="#3b75af")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_formatter(FuncFormatter(readable))
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def charts(doc: dict[str, Any]) -> list[str]:
    kind = doc["kind"]
    if kind == "site":
        p = doc["power"]
        parts = {"accelerators": p["accelerators_mw"], "hosts": p["hosts_mw"], "network": p["network_mw"],
                 "storage": p["storage_mw"], "cooling & losses": p["cooling_and_losses_mw"]}
        classes = doc["classes"]
        return [
            _barh("Where the facility power goes", list(parts), list(parts.values()), "MW"),
            _barh("Requests per day by class", [c["name"] for c in classes], [c["per_day"] for c in classes],
                  "requests/day"),
        ]
    if kind == "chips":
        ok = [r for r in doc["ranking"] if r["ok"]]
        priced = [r for r in ok if r.get("usd_per_video") is not None]
        return [
            _barh("Chips ranked: videos/day per MW", [r["chip"] for r in ok],
                  [r["videos_per_day_per_mw"] for r in ok], "videos/day per MW"),
            _barh("$ per video", [r["chip"] for r in priced], [r["usd_per_video"] for r in priced], "USD/video"),
        ]
    if kind == "growth":
        from matplotlib.ticker import FuncFormatter, NullFormatter

        fig = _figure(8, 3.6)
        ax = fig.subplots()
        months = [t["month"] for t in doc["timeline"]]
        ax.step(months, [t["capacity_videos_per_day"] for t in doc["timeline"]], where="post", label="capacity")
        ax.plot(months, [t["demand_videos_per_day"] for t in doc["timeline"]], label="demand")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(readable))
        ax.yaxis.set_minor_formatter(NullFormatter())  # 2x, 3x ... of each decade: ticks without labels
        ax.set_xlabel("month")
        ax.set_ylabel("videos/day")
        ax.set_title("Capacity vs demand")
        ax.grid(alpha=0.3)
        ax.legend()
        phases = doc["phases"]
        figures = [_svg(fig), _barh("Capex per phase", [p["name"] for p in phases],
                                    [p["capex_usd"] / 1e9 for p in phases], "billion USD")]
        if any(p.get("training_share") for p in phases):
            figures.append(_barh("Training: dense BF16 peak per phase", [p["name"] for p in phases],
                                 [p["training_peak_pflops"] for p in phases], "PFLOP/s"))
        return figures
    if kind == "optimise":
        rows = doc["allocation"]
        return [_barh("Videos/day by site and chip", [f"{r['site']}: {r['chip']}" for r in rows],
                      [r["videos_per_day"] for r in rows], "videos/day")] if rows else []
    return []


def render(doc: dict[str, Any]) -> str:
    md = report.markdown(doc)
    title = md.splitlines()[0].lstrip("# ").strip()
    figures = "\n".join(f"<figure>{svg}</figure>" for svg in charts(doc))
    body = markdown_to_html(md)
    # charts after the first section's table, before the details
    first_h2 = body.find("<h2>", body.find("<h2>") + 1)
    body = body[:first_h2] + figures + body[first_h2:] if first_h2 > 0 else body + figures
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")

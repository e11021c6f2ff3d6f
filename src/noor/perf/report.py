"""Tables and plain dicts of estimates and calibration checks, for the CLI and the docs."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from noor.catalog import Chip
from noor.perf.calibrate import Row, by_group, summary
from noor.perf.estimate import Estimate


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def measured_chip_lines(chip: Chip) -> list[str]:
    """A measured chip's (cpu-local's) figures, one per line: what its estimates are made of."""
    lines = [chip.name]
    lines += [f"  {kind:22s} {tflops * 1e3:8.1f} GFLOP/s" for kind, tflops in chip.class_tflops.items()]
    lines += [
        f"  {'elementwise':22s} {(chip.hbm_tbps or 0) * 1e3:8.1f} GB/s",
        f"  {'activation ops':22s} {(chip.activation_tbps or 0) * 1e3:8.1f} GB/s",
        f"  {'attention half-rate':22s} {chip.attention_half_tokens:8.0f} keys",
        f"  {'conv half-rate':22s} {chip.conv_half_channels:8.0f} channels",
        f"  {'attention call':22s} {chip.attention_call_s * 1e6:8.0f} us",
        f"  {'operator dispatch':22s} {chip.op_overhead_s * 1e6:8.1f} us",
    ]
    return lines


def as_json(e: Estimate) -> dict[str, Any]:
    """The fields a planner or API needs, with units in the names."""
    return {
        "model": e.model,
        "chip": e.chip,
        "plan": e.plan.label(),
        "gpus": e.plan.gpus,
        "degrees": {"ulysses": e.plan.ulysses, "ring": e.plan.ring, "cfg": e.plan.cfg},
        "shape": {
            "width": e.shape.width,
            "height": e.shape.height,
            "num_frames": e.shape.num_frames,
            "steps": e.shape.steps,
            "batch": e.shape.batch,
        },
        "fits": e.fits,
        "why_not": e.why_not,
        "latency_s": e.latency_s,
        "peak_memory_gb": e.peak_memory_gb,
        "energy_j": e.energy_j,
        "flops": e.flops,
        "cost_usd": e.cost_usd,
        "usd_per_hour": e.usd_per_hour,
        "stages": {s.name: {"latency_s": s.latency_s, "flops": s.flops, **s.detail} for s in e.stages},
        "memory_gb": e.memory_gb,
        "notes": e.notes,
    }


def estimate_table(e: Estimate) -> Table:
    table = Table(
        title=f"{e.model} on {e.chip} ({e.plan.label()}), {e.shape.width}x{e.shape.height}"
        f" x {e.shape.num_frames} frames, {e.shape.steps} steps"
    )
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("TFLOP", justify="right")
    for s in e.stages:
        table.add_row(s.name, f"{s.latency_s:.3f}", f"{s.flops / 1e12:.2f}")
    denoise = e.stage("denoise").detail
    for part in (
        "linear_s",
        "self_attention_s",
        "cross_attention_s",
        "conv_s",
        "elementwise_s",
        "ulysses_comm_s",
        "ring_comm_exposed_s",
    ):
        if denoise.get(part):
            table.add_row(f"  per step: {part.removesuffix('_s')}", f"{denoise[part]:.4f}", "")
    return table


def compare_table(estimates: list[Estimate]) -> Table:
    first = estimates[0]
    table = Table(
        title=f"{first.model}: {first.shape.width}x{first.shape.height} x {first.shape.num_frames} frames,"
        f" {first.shape.steps} steps"
    )
    for name, justify in (
        ("chip", "left"),
        ("plan", "left"),
        ("fits", "left"),
        ("seconds", "right"),
        ("peak GB/chip", "right"),
        ("energy kJ", "right"),
        ("$ / request", "right"),
        ("$/chip-h", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    ordered = sorted(estimates, key=lambda e: (not e.fits, e.latency_s or 0.0))
    for e in ordered:
        table.add_row(
            e.chip,
            e.plan.label(),
            "yes" if e.fits else f"no: {e.why_not}",
            _num(e.latency_s, "{:.1f}"),
            f"{e.peak_memory_gb:.1f}",
            _num(None if e.energy_j is None else e.energy_j / 1e3, "{:.1f}"),
            _num(e.cost_usd, "{:.4f}"),
            f"{e.usd_per_hour:.2f}",
        )
    return table


def check_table(rows: list[Row], title: str) -> Table:
    table = Table(title=title)
    for name, justify in (
        ("case", "left"),
        ("model", "left"),
        ("chip", "left"),
        ("published s", "right"),
        ("predicted s", "right"),
        ("error", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        kind = " (per step)" if r.case.per_step else " (per image)" if r.case.per_image else ""
        table.add_row(
            r.case.label + kind,
            r.case.model,
            r.case.chip,
            f"{r.case.seconds:.3f}",
            f"{r.predicted:.3f}",
            f"{r.error:+.1%}",
        )
    return table


def summary_line(rows: list[Row]) -> str:
    s = summary(rows)
    return f"{s['rows']:.0f} rows: median absolute error {s['median_ape']:.1%}, p90 {s['p90_ape']:.1%}"


def group_rows(in_sample: list[Row], held: list[Row], by: str) -> list[list[str]]:
    """Per model (or chip): rows, in-sample and held-out median absolute error; the overall row last."""
    inside, outside = by_group(in_sample, by), by_group(held, by)
    out = [
        [name, f"{s['rows']:.0f}", f"{s['median_ape']:.1%}", f"{outside[name]['median_ape']:.1%}"]
        for name, s in inside.items()
        if name in outside
    ]
    total_in, total_out = summary(in_sample), summary(held)
    out.append(
        ["overall", f"{total_in['rows']:.0f}", f"{total_in['median_ape']:.1%}", f"{total_out['median_ape']:.1%}"]
    )
    return out


def holdout_table(in_sample: list[Row], held: list[Row], by: str) -> Table:
    table = Table(title=f"leave one {by} out: median absolute error")
    for name, justify in ((by, "left"), ("rows", "right"), ("in-sample", "right"), (f"{by} held out", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in group_rows(in_sample, held, by):
        table.add_row(*row)
    return table


def calibration_markdown(
    in_sample: list[Row], held: dict[str, list[Row]], software: dict[str, dict[str, float]], command: str
) -> str:
    """The docs section `noor perf calibrate --docs` writes: summary, software factors, one table per holdout."""
    s = summary(in_sample)
    lines = [
        f"Regenerated by `{command}`.",
        "",
        f"In-sample (fitted on every row): {s['rows']:.0f} rows, median absolute error {s['median_ape']:.1%},"
        f" p90 {s['p90_ape']:.1%}.",
        "",
    ]
    if software:
        lines += ["Software generation (speed-up of a later release over the family's first in the data, fitted):", ""]
        lines += ["| family | release | speed-up |", "| --- | --- | ---: |"]
        lines += [f"| {fam} | {rel} | {v:.3f} |" for fam, table in software.items() for rel, v in table.items()]
        lines.append("")
    for by, rows in held.items():
        lines += [f"Leave one {by} out (fit without its rows, predict them):", ""]
        lines += [f"| {by} | rows | in-sample | held out |", "| --- | ---: | ---: | ---: |"]
        lines += ["| " + " | ".join(r) + " |" for r in group_rows(in_sample, rows, by)]
        lines.append("")
    return "\n".join(lines)

"""`noor perf`: what a request costs on a chip."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from noor.cli.base import BadInput, app, console, fail
from noor.config import PUBLISHED_DIR

perf_app = typer.Typer(help="What a request costs on a chip: seconds, memory, energy, dollars.", no_args_is_help=True)
app.add_typer(perf_app, name="perf")
PERF_OPTION_OF = {
    "width": "--width",
    "height": "--height",
    "num_frames": "--frames",
    "steps": "--steps",
    "gpus": "--gpus",
    "strategy": "--strategy",
    "usd_per_hour": "--usd-per-hour",
}
PublishedCsv = Annotated[Path, typer.Argument(metavar="CSV", help="a CSV in the shared published format")]


def _say_if_contended(chip_ids: list[str]) -> None:
    """One line on stderr when predictions came from a cpu-local record measured under load (stdout may be JSON)."""
    if "cpu-local" in chip_ids:
        from noor.catalog import local

        if note := local.contention_note():
            print(f"warning: {note}", file=sys.stderr)


def _perf_request(
    model: str,
    chips: list[str],
    gpus: int,
    strategy: str,
    width: int | None,
    height: int | None,
    frames: int | None,
    steps: int | None,
    precision: str,
    compiled: bool,
    usd_per_hour: float | None,
) -> list[Any]:
    """Parse the shared `noor perf` options and estimate on each chip; bad input names its option."""
    from noor import catalog, perf

    try:
        arch = catalog.model(model)
    except catalog.UnknownId as err:
        fail("--model", model, f"unknown model; valid: {', '.join(err.valid)}")
    for chip_id in chips:
        if chip_id not in catalog.chip_ids():
            fail("--chip", chip_id, f"unknown chip; valid: {', '.join(catalog.chip_ids())}")
    if precision not in ("auto", "bf16", "fp8"):
        fail("--precision", precision, "must be auto, bf16 or fp8")
    try:
        shape = perf.Shape(
            arch.default_width if width is None else width,
            arch.default_height if height is None else height,
            arch.default_frames if frames is None else frames,
            steps,
        )
        plan = perf.ParallelPlan(
            gpus=gpus,
            strategy=strategy,  # type: ignore[arg-type]
            precision=None if precision == "auto" else precision,  # type: ignore[arg-type]
            compiled=compiled,
            usd_per_hour=usd_per_hour,
        )
        return [perf.estimate(arch, shape, catalog.chip(c), plan) for c in chips]
    except perf.PerfError as err:
        raise BadInput(f"{PERF_OPTION_OF.get(err.field, err.field)}: {str(err).split(': ', 1)[1]}") from err


@perf_app.command("predict")
def perf_predict(
    model: Annotated[str, typer.Option(help="model id from the catalog, e.g. wan2.1-t2v-14b")],
    chip: Annotated[str, typer.Option(help="chip id, e.g. h100-sxm or cpu-local")],
    gpus: Annotated[int, typer.Option(help="chips working on the one request")] = 1,
    strategy: Annotated[str, typer.Option(help="auto, ulysses, ring, cfg or hybrid")] = "auto",
    width: Annotated[int | None, typer.Option(help="pixels (default: the model's)")] = None,
    height: Annotated[int | None, typer.Option(help="pixels (default: the model's)")] = None,
    frames: Annotated[int | None, typer.Option(help="frames (default: the model's; 1 for images)")] = None,
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the model's)")] = None,
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp8 (linear layers)")] = "auto",
    compiled: Annotated[bool, typer.Option("--compiled", help="torch.compile / TensorRT-style fused kernels")] = False,
    usd_per_hour: Annotated[float | None, typer.Option("--usd-per-hour", help="price per chip-hour")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Predict one request's latency, peak memory, energy, FLOPs and cost, with a per-stage breakdown."""
    from noor.perf import report

    (estimate,) = _perf_request(
        model, [chip], gpus, strategy, width, height, frames, steps, precision, compiled, usd_per_hour
    )
    _say_if_contended([chip])
    data = report.as_json(estimate)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    Console().print(report.estimate_table(estimate))
    if not estimate.fits:
        print(f"does not fit: {estimate.why_not} (peak {estimate.peak_memory_gb:.1f} GB per chip)")
        return
    energy = "-" if estimate.energy_j is None else f"{estimate.energy_j / 1e3:.1f} kJ"
    print(
        f"latency {estimate.latency_s:.2f} s, peak memory {estimate.peak_memory_gb:.1f} GB/chip, energy {energy},"
        f" {estimate.flops / 1e12:.1f} TFLOP, ${estimate.cost_usd:.4f} at ${estimate.usd_per_hour:.2f}/chip-h"
    )
    for note in estimate.notes:
        print(f"note: {note}")


@perf_app.command("compare")
def perf_compare(
    model: Annotated[str, typer.Option(help="model id from the catalog")],
    chips: Annotated[str | None, typer.Option(help="comma-separated chip ids (default: every catalog chip)")] = None,
    gpus: Annotated[int, typer.Option(help="chips per request")] = 1,
    strategy: Annotated[str, typer.Option(help="auto, ulysses, ring, cfg or hybrid")] = "auto",
    width: Annotated[int | None, typer.Option()] = None,
    height: Annotated[int | None, typer.Option()] = None,
    frames: Annotated[int | None, typer.Option()] = None,
    steps: Annotated[int | None, typer.Option()] = None,
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp8")] = "auto",
    compiled: Annotated[bool, typer.Option("--compiled")] = False,
) -> None:
    """One request on many chips, fastest first."""
    from noor import catalog
    from noor.perf import report

    ids = [c.strip() for c in chips.split(",") if c.strip()] if chips else sorted(catalog.chips())
    estimates = _perf_request(model, ids, gpus, strategy, width, height, frames, steps, precision, compiled, None)
    _say_if_contended(ids)
    Console(width=200).print(report.compare_table(estimates))


@perf_app.command("check")
def perf_check(csv_path: PublishedCsv) -> None:
    """Published vs predicted for every row of a CSV, with median and p90 absolute error."""
    from noor.perf import efficiency, published, report
    from noor.perf.calibrate import check

    if not csv_path.exists():
        fail("CSV", str(csv_path), "no such file")
    try:
        data = published.read_any(csv_path)
    except ValueError as err:
        fail("CSV", str(csv_path), str(err).split(": ", 1)[1])
    rows = check(data, efficiency.load())
    Console(width=220).print(report.check_table(rows, f"{csv_path.name}: published vs predicted"))
    for skipped in data.skipped:
        print(f"skipped  {skipped.label}: {skipped.reason}")
    print(report.summary_line(rows))


@perf_app.command("measure")
def perf_measure(
    threads: Annotated[int | None, typer.Option(help="torch threads (default: NOOR_THREADS, else torch's)")] = None,
) -> None:
    """Measure this machine again (cpu-local) and cache it: do it on a quiet machine, as ETAs follow it."""
    import torch

    from noor.catalog import local
    from noor.config import settings
    from noor.perf import report

    n = threads if threads is not None else settings().threads
    if n is not None and n < 1:
        fail("--threads", str(n), "must be at least 1")
    if n:
        torch.set_num_threads(n)
    with console.status("measuring this CPU…"):
        chip = local.remeasure()
    print("\n".join(report.measured_chip_lines(chip)))
    print(f"cached in {local.cache_path()}")
    _say_if_contended(["cpu-local"])


DOCS_BEGIN = "<!-- noor perf calibrate --docs: begin -->"
DOCS_END = "<!-- noor perf calibrate --docs: end -->"


@perf_app.command("calibrate")
def perf_calibrate(
    data: Annotated[Path, typer.Option(help="folder with measurements.csv and mlperf_sdxl.csv")] = PUBLISHED_DIR,
    out: Annotated[Path | None, typer.Option(help="where to write (default: the package's calibration.toml)")] = None,
    holdout: Annotated[
        list[str] | None,
        typer.Option(help="model or chip (repeatable): fit without each one's rows and predict them"),
    ] = None,
    docs: Annotated[
        Path | None, typer.Option(help="rewrite the calibration section of this markdown file (docs/perf.md)")
    ] = None,
) -> None:
    """Fit the efficiency factors on the published figures; print every row and write the constants file."""
    from noor.perf import calibrate, efficiency, report

    holdouts = tuple(dict.fromkeys(holdout or []))
    for by in holdouts:
        if by not in calibrate.HOLDOUTS:
            fail("--holdout", by, f"must be one of {', '.join(calibrate.HOLDOUTS)}")
    paths = [data / "measurements.csv", data / "mlperf_sdxl.csv"]
    for p in paths:
        if not p.exists():
            fail("--data", str(data), f"has no {p.name}")
    if docs is not None and (not docs.exists() or DOCS_BEGIN not in docs.read_text(encoding="utf-8")):
        fail("--docs", str(docs), f"needs a file with the markers {DOCS_BEGIN} ... {DOCS_END}")
    with console.status("fitting…" + (f" and holding out each {' and each '.join(holdouts)}" if holdouts else "")):
        eff, rows, held = calibrate.calibrate(paths, efficiency.load(), out, holdouts)
    efficiency.load.cache_clear()
    wide = Console(width=220)
    wide.print(report.check_table(rows, "calibration: published vs fitted"))
    print(report.summary_line(rows))
    for fam, table in eff.software.items():
        for release, speedup in table.items():
            print(f"software generation: {fam} {release} runs {speedup:.3f}x the family's first release in the data")
    for by, held_rows in held.items():
        wide.print(report.holdout_table(rows, held_rows, by))
    published = calibrate.read_all(paths)
    for name in calibrate.at_bound(eff, published):
        print(f"warning: fitted parameter on its bound: {name}", file=sys.stderr)
    print(f"wrote {out or efficiency.calibration_path()}")
    if docs is not None:
        command = "noor perf calibrate" + "".join(f" --holdout {by}" for by in holdouts) + f" --docs {docs}"
        text = docs.read_text(encoding="utf-8")
        head, rest = text.split(DOCS_BEGIN, 1)
        _, tail = rest.split(DOCS_END, 1)
        body = report.calibration_markdown(rows, held, eff.software, command)
        docs.write_text(f"{head}{DOCS_BEGIN}\n{body}\n{DOCS_END}{tail}", encoding="utf-8")
        print(f"wrote {docs}")


@perf_app.command("world")
def perf_world(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="world model id, e.g. matrix-game-2 (see below)")],
    chip: Annotated[str, typer.Option(help="chip id, e.g. h100-sxm or cpu-local")] = "h100-sxm",
    sessions: Annotated[int, typer.Option(help="sessions the chip runs at once (their chunks batched)")] = 1,
    steps: Annotated[int | None, typer.Option(help="denoising steps per chunk (default: the model's)")] = None,
    fps: Annotated[float, typer.Option(help="target frames/s of a session: how many sessions a chip holds")] = 24.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """An interactive world model on a chip: per-frame latency, frames/s, the breakdown, sessions per chip."""
    from noor import catalog
    from noor.perf import PerfError
    from noor.perf.world import estimate_world, sessions_per_chip

    try:
        world = catalog.world(model)
    except catalog.UnknownId as err:
        fail("MODEL", model, f"unknown world model; valid: {', '.join(err.valid)}")
    if chip not in catalog.chip_ids():
        fail("--chip", chip, f"unknown chip; valid: {', '.join(catalog.chip_ids())}")
    option = {"batch": "--sessions", "steps": "--steps", "fps": "--fps"}
    try:
        est = estimate_world(world, catalog.chip(chip), sessions, steps)
        most, at_most = sessions_per_chip(world, catalog.chip(chip), fps, steps)
    except PerfError as err:
        raise BadInput(f"{option.get(err.field, err.field)}: {str(err).split(': ', 1)[1]}") from err
    _say_if_contended([chip])
    if as_json:
        print(json.dumps({**est.to_dict(), "target_fps": fps, "sessions_per_chip_at_target": most}, indent=2))
        return
    from rich.table import Table

    title = f"{world.name} on {chip}: one chunk of {world.frames_per_chunk} frame(s) x {sessions} session(s)"
    table = Table(title=title)
    table.add_column("part")
    table.add_column("seconds", justify="right")
    table.add_column("GFLOP", justify="right")
    flops = {
        "linear_s": "linear",
        "self_attention_s": "self_attention",
        "cross_attention_s": "cross_attention",
        "vae_decode_s": "vae_decode",
    }
    for part, seconds in est.breakdown_s.items():
        gflop = est.flops_per_chunk.get(flops.get(part, ""), None)
        table.add_row(part.removesuffix("_s"), f"{seconds:.4f}", "" if gflop is None else f"{gflop / 1e9:,.1f}")
    Console().print(table)
    if est.frame_latency_s is None or est.chunk_latency_s is None:
        print(f"does not fit: {est.why_not}")
    else:
        print(
            f"frame latency {est.frame_latency_s * 1e3:.1f} ms, {est.fps:.1f} frames/s per session, chunk "
            f"{est.chunk_latency_s * 1e3:.1f} ms, {est.flops_per_frame / 1e9:,.2f} GFLOP/frame, peak memory "
            f"{est.peak_memory_gb:.1f} GB"
        )
    one = estimate_world(world, catalog.chip(chip), 1, steps)
    if one.fps is not None:
        print(f"largest frames/s one session gets on {chip}: {one.fps:.1f}")
    if most and at_most.frame_latency_s is not None:
        print(f"sessions per {chip} at {fps:g} frames/s: {most} (frame latency {at_most.frame_latency_s * 1e3:.1f} ms)")
    else:
        print(f"sessions per {chip} at {fps:g} frames/s: 0 (one session gets {one.fps or 0:.1f} frames/s)")
    for note in est.notes:
        print(f"note: {note}")


# --- end noor perf ---


# --- noor plan ---

"""`noor simulate`: a fleet over a day, with the live scheduling policies."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from noor.cli.base import BadInput, app, console, fail, progress

simulate_app = typer.Typer(help="Simulate a fleet over a day: queues, SLOs, failures, energy, cost.",
                           no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")
ScenarioFile = Annotated[Path, typer.Argument(metavar="SCENARIO.toml", help="a scenario (see examples/sim/)")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="override a key: sites[0].gpus=512 (repeatable)")]


def _toml_value(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def _scenario_data(path: Path, seed: int | None, sets: list[str] | None) -> dict[str, Any]:
    import tomllib

    from noor import sim

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail("SCENARIO", str(path), "no such file")
    except tomllib.TOMLDecodeError as err:
        fail("SCENARIO", str(path), f"not valid TOML ({err})")
    overrides: dict[str, Any] = {}
    for item in sets or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            fail("--set", item, "must be KEY=VALUE, e.g. sites[0].gpus=512")
        overrides[key.strip()] = _toml_value(value.strip())
    if seed is not None:
        overrides["seed"] = seed
    try:
        data = sim.apply_overrides(data, overrides)
    except sim.ScenarioError as err:
        raise BadInput(f"--set: {err}") from err
    if isinstance(data.get("trace"), dict) and "path" in data["trace"]:
        data["trace"]["path"] = str((path.parent / str(data["trace"]["path"])).resolve())
    return data


def _write(path: Path, text: str, option: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        fail(option, str(path), f"cannot write ({err.strerror})")


@simulate_app.command("run")
def simulate_run(
    scenario: ScenarioFile,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result (with the resolved scenario) "
                                                                  "as JSON; - for stdout")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="write an HTML report with plots")] = None,
    analytic: Annotated[bool, typer.Option("--analytic", help="queueing approximation per site and hour "
                                                             "instead of the event simulation")] = False,
    seed: Annotated[int | None, typer.Option(help="override the scenario's seed")] = None,
    set_: SetOption = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="a [campus]'s halls run at once (local "
                                                                  "processes)")] = 2,
) -> None:
    """Run one scenario: a summary table, and optionally JSON and an HTML report."""
    from noor import sim
    from noor.sim.summary import jsonable, tables

    data = _scenario_data(scenario, seed, set_)
    try:
        parsed = sim.parse(data)
        with progress() as bar:
            task = bar.add_task("simulating" if not analytic else "approximating", total=100, info=scenario.name)
            result = sim.run(parsed, progress=lambda x: bar.update(task, completed=100 * x), analytic=analytic,
                             keep=html is not None, jobs=jobs)
            bar.update(task, completed=100)
    except sim.ScenarioError as err:
        raise BadInput(f"{scenario.name}: {err}") from err
    out = Console(width=None if sys.stdout.isatty() else 160)  # piped: wide enough for the tables
    if json_out is not None and str(json_out) == "-":
        print(json.dumps(jsonable(result), indent=2))
    else:
        for table in tables(result):
            out.print(table)
        if json_out is not None:
            _write(json_out, json.dumps(jsonable(result), indent=2), "--json")
            console.print(f"wrote {json_out}")
    if html is not None:
        from noor.sim.report import html_report

        _write(html, html_report(result), "--html")
        console.print(f"wrote {html}")


@simulate_app.command("compare")
def simulate_compare(
    scenario: ScenarioFile,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the rows and timings as JSON")] = None,
    seed: Annotated[int | None, typer.Option(help="override the scenario's seed")] = None,
    set_: SetOption = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="a [campus]'s halls run at once (local "
                                                                  "processes)")] = 2,
) -> None:
    """Run one scenario both ways, event by event and analytically, in one run: each figure (fleet, class, hall)
    side by side with the analytic mode's error, and how long each mode took."""
    from noor import sim
    from noor.sim.compare import compare, table

    data = _scenario_data(scenario, seed, set_)
    try:
        parsed = sim.parse(data)
        with console.status(f"simulating {scenario.name} event by event, then analytically"):
            result = compare(parsed, jobs=jobs)
    except sim.ScenarioError as err:
        raise BadInput(f"{scenario.name}: {err}") from err
    Console(width=None if sys.stdout.isatty() else 160).print(table(result))
    if json_out is not None:
        _write(json_out, json.dumps(result, indent=2), "--json")
        console.print(f"wrote {json_out}")


@simulate_app.command("sweep")
def simulate_sweep(
    scenario: ScenarioFile,
    set_: Annotated[list[str] | None, typer.Option("--set", help="a key and its values: scheduling.policy=fifo,sjf "
                                                                 "(repeatable; the grid is every combination)")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="points run at once (local processes)")] = 2,
    ray: Annotated[bool, typer.Option("--ray", help="run the points as Ray tasks: on the cluster at RAY_ADDRESS, "
                                                    "else a local Ray (pip install 'noor[ray]')")] = False,
    analytic: Annotated[bool, typer.Option("--analytic", help="the queueing approximation for every point")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the rows as JSON")] = None,
) -> None:
    """Run a grid of variants of one scenario in parallel and tabulate them."""
    from noor.sim import sweep as sweeps
    from noor.sim.summary import jsonable

    data = _scenario_data(scenario, None, None)
    axes: dict[str, list[Any]] = {}
    for item in set_ or []:
        key, eq, values = item.partition("=")
        if not eq or not key or not sweeps.split_values(values):
            fail("--set", item, "must be KEY=V1,V2,..., e.g. sites[0].gpus=256,512")
        axes[key.strip()] = [_toml_value(v) for v in sweeps.split_values(values)]
    if not axes:
        fail("--set", None, "give at least one KEY=V1,V2,... to sweep")
    n = 1
    for axis in axes.values():
        n *= len(axis)
    try:
        if ray:
            sweeps.require_ray()
        with progress() as bar:
            task = bar.add_task("sweeping", total=n, info=f"{n} points, {'ray' if ray else f'{jobs} processes'}")
            rows = sweeps.sweep(data, axes, jobs=jobs, analytic=analytic, ray=ray,
                                progress=lambda done, total: bar.update(task, completed=done))
    except sweeps.SweepError as err:
        raise BadInput(str(err)) from err
    table = Table(title=f"{scenario.name}: {n} points ({'analytic' if analytic else 'event'})")
    for key in axes:
        table.add_column(key)
    for col in ("GPUs", "utilisation", "videos/h", "wait p95 s", "e2e p95 s", "SLO met", "energy MWh", "$/video"):
        table.add_column(col, justify="right")

    def num(x: Any, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    for row in rows:
        table.add_row(*(str(row[k]) for k in axes), f"{row['gpus']:,}", num(row["utilisation"], ".1%"),
                      num(row["videos_per_hour"], ",.0f"), num(row["wait_p95_s"], ",.1f"),
                      num(row["e2e_p95_s"], ",.1f"), num(row["slo_attainment"], ".1%"),
                      num(row["energy_kwh"] and row["energy_kwh"] / 1000, ",.1f"), num(row["usd_per_video"], ".3f"))
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if json_out is not None:
        _write(json_out, json.dumps(jsonable({"scenario": data, "axes": axes, "rows": rows}), indent=2), "--json")
        console.print(f"wrote {json_out}")



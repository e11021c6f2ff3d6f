"""`noor plan`: megawatts to chips, racks, videos/day and dollars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from noor.cli.base import BadInput, app, console

plan_app = typer.Typer(help="Plan the compute: megawatts -> chips, racks, videos/day and dollars.",
                       no_args_is_help=True)
app.add_typer(plan_app, name="plan")
PLAN_OPTION_OF = {"power_mw": "--power-mw", "chip": "--chip", "chips": "--chips", "cooling": "--cooling",
                  "pue": "--pue", "power_price": "--power-price", "life_years": "--life-years",
                  "utilisation": "--utilisation", "set": "--set", "assumptions_file": "--assumptions", "mix": "--mix",
                  "scenario": "SCENARIO", "budget_usd": "--budget-usd", "site": "--site", "objective": "--objective",
                  "demand_per_day": "--demand", "sort_by": "--by"}
PlanPue = Annotated[float | None, typer.Option("--pue", help="facility W per IT W (default: by --cooling)")]
PlanPowerPrice = Annotated[float | None, typer.Option("--power-price", help="USD per kWh")]
PlanLife = Annotated[float | None, typer.Option("--life-years", help="accelerator depreciation, years")]
PlanUtil = Annotated[float | None, typer.Option("--utilisation", help="max busy fraction of each pool, (0, 1]")]
PlanSet = Annotated[list[str] | None, typer.Option("--set", help="override any assumption: key=value (repeat)")]
PlanAssumptions = Annotated[Path | None, typer.Option("--assumptions", help="TOML of overrides: [assumptions] key = v")]
PlanMix = Annotated[Path | None, typer.Option("--mix", help="request mix TOML (default: the packaged one)")]
PlanCooling = Annotated[str, typer.Option("--cooling", help="air or liquid")]
PlanJson = Annotated[bool, typer.Option("--json", help="print the JSON document instead of Markdown")]
PlanHtml = Annotated[Path | None, typer.Option("--html", help="also write an HTML report (inline SVG charts)")]
PlanMd = Annotated[Path | None, typer.Option("--markdown", help="also write the Markdown report")]


def _plan_bad(err: Exception) -> NoReturn:
    from noor.plan import PlanError

    assert isinstance(err, PlanError)
    name = PLAN_OPTION_OF.get(err.field, err.field)
    raise BadInput(f"{name}: {err.message}, got {err.value!r}") from err


def _plan_inputs(pue: float | None, power_price: float | None, life_years: float | None, utilisation: float | None,
                 sets: list[str] | None, assumptions_file: Path | None, mix: Path | None) -> Any:
    from noor.plan import inputs
    from noor.plan.assumptions import parse_set

    overrides = parse_set(sets or [])
    opts = inputs.Options(pue=pue, power_price=power_price, life_years=life_years, utilisation=utilisation,
                          set=overrides, assumptions_file=assumptions_file, mix=mix)
    return inputs.resolve(opts, PLAN_OPTION_OF)


def _plan_emit(doc: dict[str, Any], as_json: bool, markdown_path: Path | None, html_path: Path | None) -> None:
    from noor.plan import report

    text = report.markdown(doc)
    if markdown_path:
        markdown_path.write_text(text, encoding="utf-8")
    if html_path:
        html_path.write_text(report.html_report(doc), encoding="utf-8")
    print(report.to_json(doc) if as_json else text, end="" if not as_json else "\n")
    for path in (markdown_path, html_path):
        if path:
            console.print(f"wrote {path}")


@plan_app.command("site")
def plan_site_cmd(
    power_mw: Annotated[float, typer.Option("--power-mw", help="facility power, MW")],
    chip: Annotated[str, typer.Option(help="chip id, e.g. b200 (see `noor plan chips`)")],
    cooling: PlanCooling = "liquid",
    pue: PlanPue = None,
    power_price: PlanPowerPrice = None,
    life_years: PlanLife = None,
    utilisation: PlanUtil = None,
    sets: PlanSet = None,
    assumptions_file: PlanAssumptions = None,
    mix: PlanMix = None,
    as_json: PlanJson = False,
    html_out: PlanHtml = None,
    md_out: PlanMd = None,
) -> None:
    """One site: facility MW -> IT -> chips, racks -> videos/day, kWh and $ per video; every assumption listed."""
    from noor.plan import PlanError
    from noor.plan.site import plan_site

    try:
        mix_, a = _plan_inputs(pue, power_price, life_years, utilisation, sets, assumptions_file, mix)
        doc = plan_site(power_mw, chip, mix_, a, cooling).to_dict()
    except PlanError as err:
        _plan_bad(err)
    _plan_emit(doc, as_json, md_out, html_out)


@plan_app.command("chips")
def plan_chips_cmd(
    power_mw: Annotated[float, typer.Option("--power-mw", help="facility power, MW")],
    chips: Annotated[str | None, typer.Option(help="comma-separated chip ids (default: every catalog chip)")] = None,
    by: Annotated[str, typer.Option("--by", help="videos_per_mw, usd_per_video or time_to_video")] = "videos_per_mw",
    cooling: PlanCooling = "liquid",
    pue: PlanPue = None,
    power_price: PlanPowerPrice = None,
    life_years: PlanLife = None,
    utilisation: PlanUtil = None,
    sets: PlanSet = None,
    assumptions_file: PlanAssumptions = None,
    mix: PlanMix = None,
    as_json: PlanJson = False,
    html_out: PlanHtml = None,
    md_out: PlanMd = None,
) -> None:
    """Every chip on the same power and mix, ranked by videos/day per MW, $/video or time; misfits marked."""
    from noor.plan import PlanError
    from noor.plan.chips import rank_chips

    ids = [c.strip() for c in chips.split(",") if c.strip()] if chips else None
    try:
        mix_, a = _plan_inputs(pue, power_price, life_years, utilisation, sets, assumptions_file, mix)
        doc = rank_chips(power_mw, mix_, a, cooling, ids, by).to_dict()
    except PlanError as err:
        _plan_bad(err)
    _plan_emit(doc, as_json, md_out, html_out)


@plan_app.command("growth")
def plan_growth_cmd(
    scenario: Annotated[Path, typer.Argument(metavar="SCENARIO", help="scenario TOML (see examples/plan/growth.toml)")],
    pue: PlanPue = None,
    power_price: PlanPowerPrice = None,
    life_years: PlanLife = None,
    utilisation: PlanUtil = None,
    sets: PlanSet = None,
    assumptions_file: PlanAssumptions = None,
    mix: PlanMix = None,
    as_json: PlanJson = False,
    html_out: PlanHtml = None,
    md_out: PlanMd = None,
) -> None:
    """Phases of building against a demand forecast: chips to buy, capacity vs demand, utilisation, spend."""
    from noor.plan import PlanError, growth

    try:
        sc = growth.load_scenario(scenario)
        mix_, a = _plan_inputs(pue, power_price, life_years, utilisation, sets, assumptions_file, mix)
        a = a.with_overrides({k: v for k, v in sc.overrides.items() if k not in a.overrides()})
        doc = growth.plan_growth(sc, a, mix_ if mix else None).to_dict()
    except PlanError as err:
        _plan_bad(err)
    _plan_emit(doc, as_json, md_out, html_out)


@plan_app.command("optimise")
def plan_optimise_cmd(
    site: Annotated[list[str], typer.Option("--site", help="NAME=MW[:air|liquid], repeat for each site")],
    chips: Annotated[str | None, typer.Option(help="comma-separated candidate chip ids (default: every chip)")] = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="capex limit, USD")] = None,
    objective: Annotated[str, typer.Option(help="max-output (videos/day) or min-cost (of --demand)")] = "max-output",
    demand: Annotated[float | None, typer.Option("--demand", help="videos/day to serve (min-cost)")] = None,
    supply: Annotated[list[str] | None, typer.Option("--supply", help="CHIP=MAX_CHIPS available, repeat")] = None,
    pue: PlanPue = None,
    power_price: PlanPowerPrice = None,
    life_years: PlanLife = None,
    utilisation: PlanUtil = None,
    sets: PlanSet = None,
    assumptions_file: PlanAssumptions = None,
    mix: PlanMix = None,
    as_json: PlanJson = False,
    html_out: PlanHtml = None,
    md_out: PlanMd = None,
) -> None:
    """The chip mix and split across sites that maximises videos/day or minimises cost (HiGHS MILP)."""
    from noor.plan import PlanError
    from noor.plan import optimise as opt

    ids = [c.strip() for c in chips.split(",") if c.strip()] if chips else None
    try:
        limits = [opt.parse_site(s, "--site") for s in site]
        caps: dict[str, int] = {}
        for item in supply or []:
            chip_id, sep, count = item.partition("=")
            if not sep or not count.strip().isdigit():
                raise PlanError("--supply", item, "must be CHIP=MAX_CHIPS")
            caps[chip_id.strip()] = int(count)
        mix_, a = _plan_inputs(pue, power_price, life_years, utilisation, sets, assumptions_file, mix)
        doc = opt.optimise(limits, ids, mix_, a, budget_usd, objective, demand, caps).to_dict()  # type: ignore[arg-type]
    except PlanError as err:
        _plan_bad(err)
    _plan_emit(doc, as_json, md_out, html_out)


# --- end noor plan ---



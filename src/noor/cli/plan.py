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
                  "demand_per_day": "--demand", "sort_by": "--by", "model": "--model", "fps": "--fps",
                  "blocking": "--blocking", "sessions_per_chip": "--sessions-per-chip",
                  "sessions_per_h": "--sessions-per-h", "mean_session_s": "--mean-session-s"}
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


@plan_app.command("players")
def plan_players_cmd(
    power_mw: Annotated[float, typer.Option("--power-mw", help="facility power, MW")],
    model: Annotated[str, typer.Option(help="world model id (noor perf world), e.g. matrix-game-2")],
    chip: Annotated[str, typer.Option(help="chip id, e.g. h100-sxm")],
    fps: Annotated[float, typer.Option(help="frames/s every player gets: a frame within 1/fps")] = 24.0,
    sessions_per_chip: Annotated[str, typer.Option("--sessions-per-chip",
                                                   help="sessions one chip holds: a number, or auto (the most "
                                                        "it batches within the frame budget)")] = "1",
    sessions_per_h: Annotated[float | None, typer.Option("--sessions-per-h",
                                                         help="demand: sessions starting an hour")] = None,
    mean_session_s: Annotated[float | None, typer.Option("--mean-session-s",
                                                         help="demand: mean session length, s")] = None,
    blocking: Annotated[float, typer.Option(help="target share of sessions refused (Erlang B)")] = 0.01,
    cooling: PlanCooling = "liquid",
    pue: PlanPue = None,
    power_price: PlanPowerPrice = None,
    life_years: PlanLife = None,
    sets: PlanSet = None,
    assumptions_file: PlanAssumptions = None,
    as_json: PlanJson = False,
) -> None:
    """How many concurrent players a site holds for a world model: chips, racks, MW, dollars, Erlang B sizing."""
    from noor.plan import PlanError, players, report

    per_chip: int | str = sessions_per_chip
    if sessions_per_chip != "auto":
        if not sessions_per_chip.strip().isdigit():
            raise BadInput(f"--sessions-per-chip: must be a positive integer or auto, got {sessions_per_chip!r}")
        per_chip = int(sessions_per_chip)
    try:
        _, a = _plan_inputs(pue, power_price, life_years, None, sets, assumptions_file, None)
        doc = players.plan_players(power_mw, model, chip, a, fps, cooling, per_chip, sessions_per_h,  # type: ignore[arg-type]
                                   mean_session_s, blocking).to_dict()
    except PlanError as err:
        _plan_bad(err)
    print(report.to_json(doc) if as_json else players.markdown(doc))


PLAN_OPTION_OF.update({"mfu": "--mfu", "params": "--params", "tokens": "--tokens", "videos": "--videos",
                       "checkpoints_kept": "--checkpoints-kept"})


@plan_app.command("train")
def plan_train_cmd(
    model: Annotated[str | None, typer.Option(help="catalog model id (noor perf models), e.g. wan2.1-t2v-14b")] = None,
    params: Annotated[float | None, typer.Option(help="parameters of a dense model, e.g. 70e9 (instead of "
                                                      "--model)")] = None,
    tokens: Annotated[float | None, typer.Option(help="training tokens, e.g. 2e12")] = None,
    videos: Annotated[float | None, typer.Option(help="training clips at the model's default size and frames "
                                                      "(with --model), converted to tokens")] = None,
    chip: Annotated[str | None, typer.Option(help="chip id, e.g. h100-sxm")] = None,
    chips: Annotated[int | None, typer.Option(help="chips training together")] = None,
    mfu: Annotated[str, typer.Option(help="model FLOP utilisation in (0, 1], or auto (fitted on published "
                                          "training runs)")] = "auto",
    checkpoints_kept: Annotated[int, typer.Option("--checkpoints-kept", help="checkpoints stored")] = 3,
    check: Annotated[bool, typer.Option("--check", help="print the published runs held out one at a time "
                                                        "against the MFU model, and nothing else")] = False,
    cooling: PlanCooling = "liquid",
    pue: PlanPue = None,
    power_price: PlanPowerPrice = None,
    sets: PlanSet = None,
    assumptions_file: PlanAssumptions = None,
    as_json: PlanJson = False,
    html_out: PlanHtml = None,
    md_out: PlanMd = None,
) -> None:
    """A training run: FLOPs, days on K chips at an MFU, energy, dollars, checkpoint storage, network tier."""
    from noor.plan import PlanError, train, training_runs

    if check:
        print(training_runs.check_markdown(training_runs.leave_one_out()), end="")
        return
    for name, value in (("--chip", chip), ("--chips", chips)):
        if value is None:
            raise BadInput(f"{name}: required (or --check)")
    if (model is None) == (params is None):
        raise BadInput(f"--model: give one of --model or --params, got {model!r} and {params!r}")
    try:
        if model is not None:
            job = train.job_for_model(model, tokens, videos)
        elif videos is not None:
            raise PlanError("videos", videos, "needs --model (clip size and VAE); give --tokens with --params")
        else:
            job = train.job_for_params(params or 0.0, tokens if tokens is not None else 0.0)
        _, a = _plan_inputs(pue, power_price, None, None, sets, assumptions_file, None)
        doc = train.plan_training(job, chip or "", chips or 0, mfu, a, cooling, checkpoints_kept).to_dict()
    except PlanError as err:
        _plan_bad(err)
    _plan_emit(doc, as_json, md_out, html_out)


# --- end noor plan ---



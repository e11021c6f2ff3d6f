"""`plan_growth`: phases of building (35 MW now, 150 MW at year end, a 2 GW campus later) against a
demand forecast: accelerators to buy per phase, capacity vs demand, utilisation and spend.

A scenario TOML:

    [scenario]
    name = "..."
    mix = "mix.toml"                      # optional, relative to the scenario file
    [assumptions]                         # optional overrides, as for --assumptions
    "power.usd_per_kwh" = 0.07
    [[phase]]
    name = "now"
    month = 0
    training_share = 0.25                 # optional: share of the fleet training models from here on (0..1)
    [[phase.build]]                       # power added in this phase at one site, with one chip
    site = "hall-1"
    power_mw = 35
    chip = "h100-sxm"
    cooling = "air"
    [demand]                              # forecast, linear between points, flat after the last
    month = [0, 12, 36]
    videos_per_day = [2e5, 2e6, 3e7]

Each build is planned as a site of its own (noor.plan.site) and stays in service to the horizon.
A phase's `training_share` of every chip in service (its own builds and the earlier ones) trains models until the
next phase; the rest serves. Serving capacity is the rest's; the training part is reported as chips and their
dense BF16 peak (what `noor plan train` turns into days for a run).
"""

from __future__ import annotations

import bisect
import itertools
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noor import catalog
from noor.plan import assumptions as assumptions_mod
from noor.plan import mix as mix_mod
from noor.plan.assumptions import Assumptions
from noor.plan.errors import PlanError
from noor.plan.mix import Mix
from noor.plan.site import SitePlan, check_chip, check_cooling, check_power, plan_site


@dataclass(frozen=True)
class Build:
    site: str
    power_mw: float
    chip: str
    cooling: str


@dataclass(frozen=True)
class Phase:
    name: str
    month: float
    builds: tuple[Build, ...]
    training_share: float = 0.0  # of the fleet in service, from this phase's month to the next phase's


@dataclass(frozen=True)
class Demand:
    months: tuple[float, ...]
    videos_per_day: tuple[float, ...]

    def at(self, month: float) -> float:
        """Linear between forecast points; flat before the first and after the last."""
        m, v = self.months, self.videos_per_day
        if month <= m[0]:
            return v[0]
        if month >= m[-1]:
            return v[-1]
        i = bisect.bisect_right(m, month)
        t = (month - m[i - 1]) / (m[i] - m[i - 1])
        return v[i - 1] + t * (v[i] - v[i - 1])


@dataclass(frozen=True)
class Scenario:
    name: str
    phases: tuple[Phase, ...]
    demand: Demand
    mix: Mix
    overrides: dict[str, float] = field(default_factory=dict)
    source: str = "request"


@dataclass
class PhaseResult:
    phase: Phase
    plans: list[tuple[Build, SitePlan]]  # the builds of this phase
    power_mw: float  # cumulative
    chips: dict[str, int]  # cumulative, by chip
    capacity_videos_per_day: float
    demand_videos_per_day: float
    capex_usd: float  # spent in this phase
    cost_per_day_usd: float  # whole fleet: amortised capex + energy + opex
    video_cost_per_day_usd: float  # the part spent on the chips serving videos
    training_chips: dict[str, int] = field(default_factory=dict)  # of `chips`, training (phase.training_share)
    training_peak_pflops: float = 0.0  # their dense BF16 peak
    training_cost_per_day_usd: float = 0.0

    @property
    def served(self) -> float:
        return min(self.demand_videos_per_day, self.capacity_videos_per_day)

    def utilisation(self, cap: float) -> float:
        """Busy fraction of the fleet: demand over capacity, times the cap capacity was planned at."""
        if self.capacity_videos_per_day <= 0:
            return 0.0
        return min(self.demand_videos_per_day / self.capacity_videos_per_day, 1.0) * cap


@dataclass
class GrowthPlan:
    scenario: Scenario
    assumptions: Assumptions
    phases: list[PhaseResult]
    timeline: list[dict[str, float]]  # month by month: capacity and demand
    retirements: list[dict[str, Any]] = field(default_factory=list)  # builds whose chips reach end of life

    def shortfall(self, index: int) -> tuple[float, list[float]]:
        """The largest shortfall (demand - capacity, videos/day) while phase `index` is the latest one built,
        read from the month-by-month timeline, and the months in which demand exceeds capacity then. A phase's
        own month is the day its capacity arrives: demand that outgrows it later shows only month by month."""
        start = self.phases[index].phase.month
        end = self.phases[index + 1].phase.month if index + 1 < len(self.phases) else math.inf
        window = [t for t in self.timeline
                  if start <= t["month"] < end or (end == math.inf and t["month"] >= start)]
        short = [t for t in window if t["demand_videos_per_day"] > t["capacity_videos_per_day"]]
        peak = max((t["demand_videos_per_day"] - t["capacity_videos_per_day"] for t in short), default=0.0)
        return peak, [t["month"] for t in short]

    def to_dict(self) -> dict[str, Any]:
        cap = self.assumptions.num("serve.utilisation")
        chips = sorted({b.chip for p in self.scenario.phases for b in p.builds})
        short = next((t["month"] for t in self.timeline if t["demand_videos_per_day"] > t["capacity_videos_per_day"]),
                     None)
        shortfalls = [self.shortfall(i) for i in range(len(self.phases))]
        return {
            "kind": "growth",
            "inputs": {
                "scenario": self.scenario.name,
                "source": self.scenario.source,
                "phases": [{"name": p.name, "month": p.month, "training_share": p.training_share,
                            "builds": [vars(b) for b in p.builds]} for p in self.scenario.phases],
                "demand": {"month": list(self.scenario.demand.months),
                           "videos_per_day": list(self.scenario.demand.videos_per_day)},
                "mix": self.scenario.mix.to_dict(),
                "overrides": self.assumptions.overrides(),
                "assumptions": [e.to_dict() for e in self.assumptions.listed(chips)],
            },
            "phases": [
                {
                    "name": r.phase.name,
                    "month": r.phase.month,
                    "builds": [
                        {"site": b.site, "chip": b.chip, "power_mw": b.power_mw, "cooling": b.cooling,
                         "chips_to_buy": s.hardware.chips, "racks": s.hardware.racks,
                         "videos_per_day": s.videos_per_day, "capex_usd": s.cost.capex_usd}
                        for b, s in r.plans
                    ],
                    "power_mw": r.power_mw,
                    "chips": r.chips,
                    "capacity_videos_per_day": r.capacity_videos_per_day,
                    "demand_videos_per_day": r.demand_videos_per_day,
                    "served_videos_per_day": r.served,
                    "shortfall_videos_per_day": shortfalls[i][0],  # the worst month until the next phase
                    "short_months": shortfalls[i][1],
                    "utilisation": r.utilisation(cap),
                    "capex_usd": r.capex_usd,
                    "cost_per_day_usd": r.cost_per_day_usd,
                    "usd_per_video_served": r.video_cost_per_day_usd / r.served if r.served > 0 else None,
                    "training_share": r.phase.training_share,
                    "training_chips": r.training_chips,
                    "training_peak_pflops": r.training_peak_pflops,
                    "training_cost_per_day_usd": r.training_cost_per_day_usd,
                }
                for i, r in enumerate(self.phases)
            ],
            "timeline": self.timeline,
            "summary": {
                "first_short_month": short,
                "total_capex_usd": sum(r.capex_usd for r in self.phases),
                "final_power_mw": self.phases[-1].power_mw if self.phases else 0.0,
                "final_capacity_videos_per_day": self.phases[-1].capacity_videos_per_day if self.phases else 0.0,
                "retirements": self.retirements,
            },
        }


def _number(where: str, value: object, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlanError(where, value, "must be a number")
    if value < minimum or (strict and value == minimum):
        raise PlanError(where, value, f"must be {'>' if strict else '>='} {minimum:g}")
    return float(value)


def scenario_from_dict(raw: dict[str, Any], base: Path | None = None, source: str = "request") -> Scenario:
    """A scenario from plain data (a parsed TOML); every bad field raises PlanError naming it."""
    head = raw.get("scenario", {})
    if not isinstance(head, dict):
        raise PlanError("scenario", head, "must be a table")
    phases_raw = raw.get("phase")
    if not isinstance(phases_raw, list) or not phases_raw:
        raise PlanError("phase", phases_raw, "needs at least one [[phase]]")
    phases: list[Phase] = []
    for i, p in enumerate(phases_raw):
        where = f"phase[{i}]"
        if not isinstance(p, dict):
            raise PlanError(where, p, "must be a table")
        month = _number(f"{where}.month", p.get("month"))
        if phases and month < phases[-1].month:
            why = f"must not be before phase[{i - 1}] (month {phases[-1].month:g})"
            raise PlanError(f"{where}.month", p.get("month"), why)
        builds_raw = p.get("build")
        if not isinstance(builds_raw, list) or not builds_raw:
            raise PlanError(f"{where}.build", builds_raw, "needs at least one [[phase.build]]")
        builds = []
        for j, b in enumerate(builds_raw):
            bw = f"{where}.build[{j}]"
            if not isinstance(b, dict):
                raise PlanError(bw, b, "must be a table")
            builds.append(Build(
                site=str(b.get("site", "site")),
                power_mw=check_power(b.get("power_mw"), f"{bw}.power_mw"),
                chip=check_chip(str(b.get("chip")), f"{bw}.chip"),
                cooling=check_cooling(str(b.get("cooling", "liquid")), f"{bw}.cooling"),
            ))
        share = _number(f"{where}.training_share", p.get("training_share", 0.0))
        if share > 1:
            raise PlanError(f"{where}.training_share", p.get("training_share"), "must be between 0 and 1")
        phases.append(Phase(str(p.get("name", f"phase {i}")), month, tuple(builds), share))
    demand_raw = raw.get("demand")
    if not isinstance(demand_raw, dict):
        raise PlanError("demand", demand_raw, "needs a [demand] table with month and videos_per_day lists")
    months, videos = demand_raw.get("month"), demand_raw.get("videos_per_day")
    if not isinstance(months, list) or not isinstance(videos, list) or not months or len(months) != len(videos):
        raise PlanError("demand.videos_per_day", videos, "must be a list as long as demand.month")
    ms = [_number(f"demand.month[{i}]", m) for i, m in enumerate(months)]
    if any(b <= a for a, b in itertools.pairwise(ms)):
        raise PlanError("demand.month", months, "must be strictly increasing")
    vs = [_number(f"demand.videos_per_day[{i}]", v) for i, v in enumerate(videos)]
    mix_ref = head.get("mix")
    if mix_ref is None:
        mix = mix_mod.load()
    elif isinstance(mix_ref, dict):
        mix = mix_mod.from_dict(mix_ref, "scenario", "scenario.mix")
    else:
        path = Path(str(mix_ref))
        mix = mix_mod.load(path if path.is_absolute() or base is None else base / path, "scenario.mix")
    overrides_raw = raw.get("assumptions", {})
    if not isinstance(overrides_raw, dict):
        raise PlanError("assumptions", overrides_raw, "must be a table of key = value")
    overrides = {k: assumptions_mod.check_value(k, v, f"assumptions.{k}") for k, v in overrides_raw.items()}
    return Scenario(str(head.get("name", "growth")), tuple(phases), Demand(tuple(ms), tuple(vs)), mix, overrides,
                    source)


def load_scenario(path: Path, field_name: str = "scenario") -> Scenario:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(field_name, str(path), "no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise PlanError(field_name, str(path), f"not valid TOML ({err})") from None
    return scenario_from_dict(raw, Path(path).parent, str(path))


def plan_growth(scenario: Scenario, a: Assumptions, mix: Mix | None = None) -> GrowthPlan:
    """Each phase's builds planned as sites; capacity summed over what is built and not yet retired
    (a build's chips serve for life.accelerator_years from its phase's month; its power stays)."""
    mix = mix or scenario.mix
    life_months = a.num("life.accelerator_years") * 12
    results: list[PhaseResult] = []
    everything: list[tuple[float, Build, SitePlan]] = []  # (month built, build, plan)

    def alive(month: float) -> list[tuple[Build, SitePlan]]:
        return [(b, s) for m, b, s in everything if m <= month < m + life_months]

    def serving(month: float) -> float:
        """The share of the fleet serving at `month`: what the latest phase by then does not train with."""
        latest = [p for p in scenario.phases if p.month <= month]
        return 1.0 - (latest[-1].training_share if latest else 0.0)

    for phase in scenario.phases:
        # 1. plan what this phase adds
        new = []
        for j, b in enumerate(phase.builds):
            try:
                new.append((b, plan_site(b.power_mw, b.chip, mix, a, b.cooling)))
            except PlanError as err:
                where = f"phase[{scenario.phases.index(phase)}].build[{j}]"
                raise PlanError(f"{where}.{err.field}", err.value, err.message) from err
        everything.extend((phase.month, b, s) for b, s in new)
        built = alive(phase.month)
        # 2. the whole fleet in service
        chips: dict[str, int] = {}
        for b, s in built:
            chips[b.chip] = chips.get(b.chip, 0) + s.hardware.chips
        share = phase.training_share
        training = {c: round(n * share) for c, n in chips.items()}
        fleet_cost = sum(s.cost.total_per_day_usd for _, s in built)
        results.append(PhaseResult(
            phase=phase,
            plans=new,
            power_mw=sum(b.power_mw for _month, b, _plan in everything),  # power and buildings stay
            chips=chips,
            capacity_videos_per_day=sum(s.videos_per_day for _, s in built) * (1 - share),
            demand_videos_per_day=scenario.demand.at(phase.month),
            capex_usd=sum(s.cost.capex_usd for _, s in new),
            cost_per_day_usd=fleet_cost,
            video_cost_per_day_usd=sum(s.cost.total_per_day_usd * s.fraction(True) for _, s in built) * (1 - share),
            training_chips=training,
            training_peak_pflops=sum(n * (catalog.chip(c).bf16_tflops or 0.0) for c, n in training.items()) / 1e3,
            training_cost_per_day_usd=fleet_cost * share,
        ))
    # 3. month by month to the horizon: capacity steps up at each phase, demand follows the forecast
    horizon = int(max(scenario.demand.months[-1], scenario.phases[-1].month))
    timeline = [
        {"month": float(month),
         "capacity_videos_per_day": sum(s.videos_per_day for _, s in alive(month)) * serving(month),
         "demand_videos_per_day": scenario.demand.at(month)}
        for month in range(int(scenario.phases[0].month), horizon + 1)
    ]
    retirements = [
        {"site": b.site, "chip": b.chip, "chips": s.hardware.chips, "month": m + life_months}
        for m, b, s in everything if m + life_months <= horizon
    ]
    return GrowthPlan(scenario, a, results, timeline, retirements)

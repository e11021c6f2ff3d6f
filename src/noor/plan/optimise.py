"""The chip mix and split across sites that maximises videos/day, or minimises the daily cost of a
demand (so its $/video), within each site's power, a capex budget and chip supply, under the mix's SLOs.

A mixed-integer program solved by HiGHS (scipy.optimize.milp): one integer variable per (site, chip)
= servers of that chip at that site. Coefficients are linear per server, taken from a site plan of
that chip at that site (noor.plan.site), so a chip that cannot hold a model or meet an SLO is left out
with why. The LP relaxation (scipy.optimize.linprog, HiGHS) gives the dual values that say what one
more MW or one more dollar is worth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from noor.plan.assumptions import Assumptions
from noor.plan.capacity import CannotServe
from noor.plan.errors import PlanError
from noor.plan.mix import Mix
from noor.plan.site import check_chip, check_cooling, check_power, plan_site

Objective = Literal["max-output", "min-cost"]
OBJECTIVES = ("max-output", "min-cost")
BINDING_REL = 1e-6


def _num(x: float) -> str:
    x += 0.0  # no "-0"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


@dataclass(frozen=True)
class SiteLimit:
    name: str
    power_mw: float
    cooling: str = "liquid"


@dataclass(frozen=True)
class Candidate:
    """One chip at one site, per server (node)."""

    site: str
    chip: str
    chips_per_node: int
    videos_per_day: float
    facility_mw: float
    capex_usd: float
    cost_per_day_usd: float
    images_per_day: float = 0.0
    video_share: float = 1.0  # of the cost: the chips serving videos (an image is not a video)


@dataclass
class Constraint:
    name: str
    kind: str  # power | budget | supply | demand
    limit: float
    used: float
    shadow: float  # objective change per unit of limit (LP relaxation)
    unit: str

    @property
    def slack(self) -> float:
        return self.limit - self.used if self.kind != "demand" else self.used - self.limit

    @property
    def binding(self) -> bool:
        return abs(self.slack) <= BINDING_REL * max(abs(self.limit), 1.0) or (
            self.shadow != 0 and abs(self.slack) <= self.unit_step
        )

    unit_step: float = 0.0  # one server's worth of this resource: integer solutions cannot fill the last bit

    def explain(self, objective: Objective) -> str:
        what = "videos/day" if objective == "max-output" else "USD/day of cost"
        verb = "adds" if objective == "max-output" else "changes the cost by"
        per = {"power": "+1 MW", "budget": "+$1M", "supply": "+1 chip", "demand": "+1 video/day"}[self.kind]
        scale = 1e6 if self.kind == "budget" else 1.0
        if self.binding:
            return f"{self.name} is binding: {per} {verb} {_num(self.shadow * scale)} {what}"
        return f"{self.name} is not binding: {_num(self.slack)} {self.unit} to spare"

    def to_dict(self, objective: Objective) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "limit": self.limit, "used": self.used, "slack": self.slack,
                "binding": self.binding, "shadow_price": self.shadow, "unit": self.unit,
                "explanation": self.explain(objective)}


@dataclass
class Solution:
    objective: Objective
    candidates: list[Candidate]
    nodes: list[int]
    constraints: list[Constraint]
    excluded: dict[str, str] = field(default_factory=dict)  # chip (at site) -> why

    @property
    def videos_per_day(self) -> float:
        return sum(c.videos_per_day * n for c, n in zip(self.candidates, self.nodes, strict=True))

    @property
    def cost_per_day_usd(self) -> float:
        return sum(c.cost_per_day_usd * n for c, n in zip(self.candidates, self.nodes, strict=True))

    @property
    def images_per_day(self) -> float:
        return sum(c.images_per_day * n for c, n in zip(self.candidates, self.nodes, strict=True))

    @property
    def video_cost_per_day_usd(self) -> float:
        return sum(c.cost_per_day_usd * c.video_share * n for c, n in zip(self.candidates, self.nodes, strict=True))

    @property
    def capex_usd(self) -> float:
        return sum(c.capex_usd * n for c, n in zip(self.candidates, self.nodes, strict=True))


def solve(candidates: list[Candidate], sites: list[SiteLimit], budget_usd: float | None = None,
          objective: Objective = "max-output", demand_per_day: float | None = None,
          supply: dict[str, int] | None = None) -> Solution:
    """The integer optimum over `candidates` (servers per site and chip) and the LP duals of each limit."""
    if objective not in OBJECTIVES:
        raise PlanError("objective", objective, f"must be one of {', '.join(OBJECTIVES)}")
    if objective == "min-cost" and (demand_per_day is None or demand_per_day <= 0):
        raise PlanError("demand_per_day", demand_per_day, "min-cost needs a demand > 0 videos/day")
    if not candidates:
        raise PlanError("chips", [], "no chip can serve the mix at these sites")
    n = len(candidates)
    v = np.array([c.videos_per_day for c in candidates])
    cost = np.array([c.cost_per_day_usd for c in candidates])
    rows: list[np.ndarray] = []
    limits: list[float] = []
    meta: list[tuple[str, str, str, float]] = []  # name, kind, unit, one server's worth
    for s in sites:
        row = np.array([c.facility_mw if c.site == s.name else 0.0 for c in candidates])
        rows.append(row)
        limits.append(s.power_mw)
        meta.append((f"power at site {s.name}", "power", "MW", float(row.max(initial=0.0))))
    if budget_usd is not None:
        row = np.array([c.capex_usd for c in candidates])
        rows.append(row)
        limits.append(budget_usd)
        meta.append(("capex budget", "budget", "USD", float(row.max(initial=0.0))))
    for chip_id, cap in (supply or {}).items():
        row = np.array([float(c.chips_per_node) if c.chip == chip_id else 0.0 for c in candidates])
        rows.append(row)
        limits.append(float(cap))
        meta.append((f"supply of {chip_id}", "supply", "chips", float(row.max(initial=0.0))))
    a_ub = np.array(rows)
    b_ub = np.array(limits)
    if objective == "max-output":
        c_vec = -v
        a_all, lower = a_ub, np.full(len(limits), -np.inf)
    else:
        c_vec = cost
        a_all = np.vstack([a_ub, v])
        lower = np.append(np.full(len(limits), -np.inf), float(demand_per_day or 0.0))
    upper_all = np.append(b_ub, np.inf) if objective == "min-cost" else b_ub
    # 1. the integer plan
    res = milp(c_vec, constraints=LinearConstraint(a_all, lower, upper_all), integrality=np.ones(n),
               bounds=Bounds(0, np.inf))
    if res.status != 0 or res.x is None:
        raise PlanError("objective", objective, f"no plan meets the limits ({res.message})")
    nodes = [round(x) for x in res.x]
    # 2. the LP relaxation's duals: what one more unit of each limit is worth
    if objective == "max-output":
        lp = linprog(c_vec, A_ub=a_ub, b_ub=b_ub, bounds=(0, None), method="highs")
        # HiGHS marginals are d(objective)/d(limit) <= 0 for a minimisation of -videos: flip to videos per unit
        duals = list(-lp.ineqlin.marginals) if lp.status == 0 else [0.0] * len(limits)
    else:
        a_lp = np.vstack([a_ub, -v])
        b_lp = np.append(b_ub, -float(demand_per_day or 0))
        lp = linprog(c_vec, A_ub=a_lp, b_ub=b_lp, bounds=(0, None), method="highs")
        duals = list(lp.ineqlin.marginals + 0.0) if lp.status == 0 else [0.0] * (len(limits) + 1)
        duals[-1] = -duals[-1]  # per video/day of demand (the row was negated)
    x = np.array(nodes, dtype=float)
    constraints = [
        Constraint(name, kind, limit, float(row @ x), float(duals[i]), unit, step)
        for i, ((name, kind, unit, step), row, limit) in enumerate(zip(meta, rows, limits, strict=True))
    ]
    if objective == "min-cost":
        constraints.append(Constraint("demand", "demand", float(demand_per_day or 0), float(v @ x), float(duals[-1]),
                                      "videos/day", float(v.max(initial=0.0))))
    return Solution(objective, candidates, nodes, constraints)


def candidates_for(sites: list[SiteLimit], chips: list[str], mix: Mix, a: Assumptions) -> tuple[list[Candidate],
                                                                                              dict[str, str]]:
    """Per-server coefficients of each chip at each site, from a site plan at the site's full power."""
    out, excluded = [], {}
    for s in sites:
        for chip_id in chips:
            try:
                plan = plan_site(s.power_mw, chip_id, mix, a, s.cooling)
            except (CannotServe, PlanError) as err:
                if isinstance(err, CannotServe) or err.field in ("power_mw", "chip") or err.field.startswith("rack"):
                    excluded[f"{chip_id} at {s.name}"] = err.message
                    continue
                raise
            nodes = plan.hardware.nodes
            out.append(Candidate(
                site=s.name,
                chip=chip_id,
                chips_per_node=plan.hardware.chips_per_node,
                videos_per_day=plan.videos_per_day / nodes,
                facility_mw=plan.power.used_facility_mw / nodes,
                capex_usd=(plan.cost.servers_usd + plan.cost.network_storage_usd
                           + plan.power.used_facility_mw * a.num("capex.facility_usd_per_mw")) / nodes,
                cost_per_day_usd=plan.cost.total_per_day_usd / nodes,
                images_per_day=plan.images_per_day / nodes,
                video_share=plan.fraction(True),
            ))
    return out, excluded


@dataclass
class OptimisePlan:
    sites: list[SiteLimit]
    chips: list[str]
    budget_usd: float | None
    demand_per_day: float | None
    supply: dict[str, int]
    mix: Mix
    assumptions: Assumptions
    solution: Solution

    def to_dict(self) -> dict[str, Any]:
        sol = self.solution
        rows = [
            {"site": c.site, "chip": c.chip, "servers": n, "chips": n * c.chips_per_node,
             "videos_per_day": n * c.videos_per_day, "facility_mw": n * c.facility_mw, "capex_usd": n * c.capex_usd,
             "cost_per_day_usd": n * c.cost_per_day_usd}
            for c, n in zip(sol.candidates, sol.nodes, strict=True) if n > 0
        ]
        videos = sol.videos_per_day
        return {
            "kind": "optimise",
            "inputs": {
                "objective": sol.objective,
                "sites": [vars(s) for s in self.sites],
                "chips": self.chips,
                "budget_usd": self.budget_usd,
                "demand_per_day": self.demand_per_day,
                "supply": self.supply,
                "mix": self.mix.to_dict(),
                "overrides": self.assumptions.overrides(),
                "assumptions": [e.to_dict() for e in self.assumptions.listed(self.chips)],
            },
            "allocation": rows,
            "output": {
                "videos_per_day": videos,
                "capex_usd": sol.capex_usd,
                "cost_per_day_usd": sol.cost_per_day_usd,
                "usd_per_video": sol.video_cost_per_day_usd / videos if videos > 0 else None,
                "images_per_day": sol.images_per_day,
                "usd_per_image": (sol.cost_per_day_usd - sol.video_cost_per_day_usd) / sol.images_per_day
                if sol.images_per_day > 0 else None,
            },
            "constraints": [c.to_dict(sol.objective) for c in sol.constraints],
            "excluded": sol.excluded,
        }


def parse_site(text: str, field_name: str = "site") -> SiteLimit:
    """NAME=MW or NAME=MW:COOLING, e.g. hall-1=150:liquid."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        raise PlanError(field_name, text, "must be NAME=MW or NAME=MW:COOLING")
    mw, _, cooling = rest.partition(":")
    try:
        power = float(mw)
    except ValueError:
        raise PlanError(field_name, text, "MW must be a number") from None
    return SiteLimit(name.strip(), check_power(power, field_name), check_cooling(cooling or "liquid", field_name))


def optimise(sites: list[SiteLimit], chips: list[str] | None, mix: Mix, a: Assumptions,
             budget_usd: float | None = None, objective: Objective = "max-output",
             demand_per_day: float | None = None, supply: dict[str, int] | None = None) -> OptimisePlan:
    if not sites:
        raise PlanError("site", [], "give at least one site (NAME=MW)")
    if len({s.name for s in sites}) != len(sites):
        raise PlanError("site", [s.name for s in sites], "site names must be unique")
    if budget_usd is not None and (not math.isfinite(budget_usd) or budget_usd < 0):
        raise PlanError("budget_usd", budget_usd, "must be >= 0")
    from noor import catalog

    ids = [check_chip(c, "chips") for c in chips] if chips else sorted(catalog.chips())
    for chip_id, cap in (supply or {}).items():
        check_chip(chip_id, "supply")
        if cap < 0:
            raise PlanError(f"supply.{chip_id}", cap, "must be >= 0 chips")
    cands, excluded = candidates_for(sites, ids, mix, a)
    sol = solve(cands, sites, budget_usd, objective, demand_per_day, supply)
    sol.excluded = excluded
    return OptimisePlan(sites, ids, budget_usd, demand_per_day, dict(supply or {}), mix, a, sol)

"""`rank_chips`: every catalog chip on the same site power and mix, ranked by videos/day per MW.

Chips that cannot be planned are kept and marked with why: the model does not fit on up to a node of
them, no plan meets a class's SLO, or their power or price is not published (set it with --set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from noor import catalog
from noor.plan.assumptions import Assumptions
from noor.plan.capacity import CannotServe
from noor.plan.errors import PlanError
from noor.plan.mix import Mix
from noor.plan.site import SitePlan, check_chip, check_cooling, check_power, plan_site

SORT_KEYS = {
    # name -> (row field, higher is better?)
    "videos_per_mw": ("videos_per_day_per_mw", True),
    "usd_per_video": ("usd_per_video", False),
    "time_to_video": ("video_e2e_p95_s", False),
}


@dataclass
class ChipRow:
    chip: str
    name: str
    site: SitePlan | None
    why_not: str | None  # set when the chip cannot be planned
    ranks: dict[str, int] | None = None  # rank by each of SORT_KEYS (1 = best)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"chip": self.chip, "name": self.name, "ok": self.site is not None,
                               "why_not": self.why_not, "ranks": self.ranks}
        if self.site is not None:
            out = self.site.to_dict()["output"]
            row.update(
                chips=self.site.hardware.chips,
                racks=self.site.hardware.racks,
                videos_per_day=out["videos_per_day"],
                images_per_day=out["images_per_day"],
                videos_per_day_per_mw=out["videos_per_day_per_mw"],
                usd_per_video=out["usd_per_video"],
                kwh_per_video=out["kwh_per_video"],
                video_e2e_p95_s=out["video_e2e_p95_s"],
                capex_usd=self.site.cost.capex_usd,
            )
        return row


@dataclass
class ChipRanking:
    power_mw: float
    cooling: str
    mix: Mix
    assumptions: Assumptions
    rows: list[ChipRow]
    sort_by: str = "videos_per_mw"

    def to_dict(self) -> dict[str, Any]:
        chips = [r.chip for r in self.rows]
        return {
            "kind": "chips",
            "inputs": {
                "power_mw": self.power_mw,
                "cooling": self.cooling,
                "sort_by": self.sort_by,
                "mix": self.mix.to_dict(),
                "overrides": self.assumptions.overrides(),
                "assumptions": [e.to_dict() for e in self.assumptions.listed(chips)],
            },
            "ranking": [r.to_dict() for r in self.rows],
        }


def rank_chips(power_mw: float, mix: Mix, a: Assumptions, cooling: str = "liquid",
               chips: list[str] | None = None, sort_by: str = "videos_per_mw") -> ChipRanking:
    """Rank by `sort_by` (videos_per_mw, usd_per_video or time_to_video); every row also carries its rank by each."""
    if sort_by not in SORT_KEYS:
        raise PlanError("sort_by", sort_by, f"must be one of {', '.join(SORT_KEYS)}")
    power_mw = check_power(power_mw)
    cooling = check_cooling(cooling)
    ids = [check_chip(c, "chips") for c in chips] if chips else sorted(catalog.chips())
    rows = []
    for chip_id in ids:
        name = catalog.chip(chip_id).name
        try:
            rows.append(ChipRow(chip_id, name, plan_site(power_mw, chip_id, mix, a, cooling), None))
        except CannotServe as err:
            rows.append(ChipRow(chip_id, name, None, err.message))
        except PlanError as err:
            if err.field in ("power_mw", "chip") or err.field.startswith("rack_kw"):
                rows.append(ChipRow(chip_id, name, None, err.message))
            else:
                raise
    ok = [r for r in rows if r.site is not None]
    values = {r.chip: r.to_dict() for r in ok}

    def order(key: str) -> list[ChipRow]:
        field, higher = SORT_KEYS[key]
        worst = -math.inf if higher else math.inf
        score = {c: worst if v[field] is None else v[field] for c, v in values.items()}
        return sorted(ok, key=lambda r: -score[r.chip] if higher else score[r.chip])

    for key in SORT_KEYS:
        for i, r in enumerate(order(key)):
            r.ranks = {**(r.ranks or {}), key: i + 1}
    return ChipRanking(power_mw, cooling, mix, a, order(sort_by) + [r for r in rows if r.site is None], sort_by)

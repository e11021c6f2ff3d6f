"""`rank_chips`: every catalog chip on the same site power and mix, ranked by videos/day per MW.

Chips that cannot be planned are kept and marked with why: the model does not fit on up to a node of
them, no plan meets a class's SLO, or their power or price is not published (set it with --set).

Each row says what decides its figure (`driver`): the part of a request where the chips spend most of
their time (summed over the mix, weighted by requests/day x chips per request), what bounds that part
(compute: dense peak x the efficiency noor.perf applies; memory: HBM TB/s; the scale-up link), where
that efficiency comes from (fitted on this chip family's measurements, or borrowed from another family
when there are none: noor/perf/calibration.toml `[like]`), and the chip's power, which sets chips per MW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from noor import catalog
from noor.perf import efficiency, workload
from noor.plan.assumptions import Assumptions
from noor.plan.capacity import CannotServe, estimate
from noor.plan.errors import PlanError
from noor.plan.mix import Mix
from noor.plan.site import SitePlan, check_chip, check_cooling, check_power, plan_site

SORT_KEYS = {
    # name -> (row field, higher is better?)
    "videos_per_mw": ("videos_per_day_per_mw", True),
    "usd_per_video": ("usd_per_video", False),
    "time_to_video": ("video_e2e_p95_s", False),
}


# a request's time by part: (part, kernel class whose efficiency applies, bound) for the denoiser's step detail
STEP_PARTS = {
    "linear_s": ("matmuls", "linear", "compute"),
    "self_attention_s": ("attention", "attention", "compute"),
    "cross_attention_s": ("attention", "attention", "compute"),
    "conv_s": ("convolutions", "linear", "compute"),  # a denoiser's convs run as implicit GEMMs (perf.estimate)
    "elementwise_s": ("elementwise", None, "memory"),
    "launch_s": ("kernel launches", None, "launch"),
    "ulysses_comm_s": ("communication", None, "link"),
    "ring_comm_exposed_s": ("communication", None, "link"),
    "fsdp_comm_exposed_s": ("communication", None, "link"),
    "cfg_comm_s": ("communication", None, "link"),
}
STAGE_PARTS = {
    "text_encoder": ("text encoder", "linear", "compute"),
    "vae_decode": ("VAE decode", "conv", "compute"),
    "offload": ("host link", None, "host link"),
}


def driver(site: SitePlan) -> dict[str, Any]:
    """What decides a site's output: the part of a request where its chips spend most time, and its bound."""
    chip = site.hardware.chip
    spec = catalog.chip(chip)
    eff = efficiency.load()
    # 1. chip-seconds per day by part, over the mix's classes
    seconds: dict[str, float] = {}
    kernel_of: dict[str, tuple[str | None, str]] = {}
    peak_gb, linear_memory_bound, precisions = 0.0, False, set()
    for c in site.classes:
        est = estimate(c.request, chip, c.gpus, c.shard_weights)
        weight = c.per_day * c.gpus
        peak_gb = max(peak_gb, est.peak_memory_gb)
        for stage in est.stages:
            if stage.name in ("denoise", "first_frame"):
                steps = stage.latency_s / stage.detail["step_s"] if stage.detail.get("step_s") else 0.0
                for key, (part, kernel, bound) in STEP_PARTS.items():
                    seconds[part] = seconds.get(part, 0.0) + weight * steps * stage.detail.get(key, 0.0)
                    kernel_of[part] = (kernel, bound)
                model = catalog.model(c.request.model)
                precisions.add(est.plan.precision or model.precision)
                weights_s = (
                    model.params_b
                    * 1e9
                    * model.experts_active
                    / model.experts_total
                    * workload.BYTES[est.plan.precision or model.precision]
                    / ((spec.hbm_tbps or math.inf) * 1e12 * eff["memory_efficiency"])
                )
                linear_memory_bound |= stage.detail.get("linear_s", 0.0) <= weights_s * (1 + 1e-9)
            elif stage.name in STAGE_PARTS:
                part, kernel, bound = STAGE_PARTS[stage.name]
                seconds[part] = seconds.get(part, 0.0) + weight * stage.latency_s
                kernel_of[part] = (kernel, bound)
    total = sum(seconds.values())
    part = max(seconds, key=lambda k: seconds[k])
    kernel, bound = kernel_of[part]
    if part == "matmuls" and linear_memory_bound:
        kernel, bound = None, "memory"
    # 2. the bound's figure, and where its efficiency comes from
    family = spec.family
    while family not in eff.families and family in eff.like:
        family = eff.like[family]
    fitted = family == spec.family
    origin = (
        f"fitted on {family} measurements"
        if fitted
        else f"{family}'s, assumed: no {spec.family} measurements (calibration.toml [like])"
    )
    if bound == "compute" and kernel is not None:
        precision = "fp8" if kernel == "linear" and precisions == {"fp8"} else "bf16"  # attention, conv: bf16
        peak = spec.peak_tflops(precision, kernel)  # type: ignore[arg-type]
        factor = eff.factor(spec.family, kernel)
        per_w = peak * factor / site.hardware.chip_tdp_w
        figure = f"{precision.upper()} {peak:,.0f} TFLOPS x {factor:.2f} efficiency ({origin}) = {per_w:.2f} TFLOPS/W"
    elif bound == "memory":
        factor = eff["memory_efficiency"]
        figure = f"HBM {spec.hbm_tbps:g} TB/s x {factor:.2f}"
    elif bound == "link":
        factor = eff["link_efficiency"]
        figure = f"scale-up link {spec.scaleup_gbps:,.0f} GB/s x {factor:.2f}"
    else:
        factor, figure = 1.0, bound
    share = seconds[part] / total if total else 0.0
    text = (
        f"{part} {share:.0%} of chip time, {bound}-bound: {figure}; {site.hardware.chip_tdp_w:,.0f} W/chip; "
        f"needs {peak_gb:.0f} of {spec.hbm_gb or 0:.0f} GB"
    )
    return {
        "part": part,
        "share": share,
        "bound": bound,
        "figure": figure,
        "efficiency": factor,
        "efficiency_from": family,
        "efficiency_fitted": fitted,
        "tdp_w": site.hardware.chip_tdp_w,
        "peak_memory_gb": peak_gb,
        "text": text,
    }


# the catalog figures noor.perf prices a request with, and power (chips per MW)
OUTPUT_FIGURES = ("family", "bf16_tflops", "fp8_tflops", "hbm_tbps", "scaleup_gbps", "scaleup_domain", "tdp_w")
OTHER_FIGURES = ("hbm_gb", "usd_per_hour")


def _twins(rows: list[ChipRow]) -> None:
    """A chip with the same output figures as one ranked above it says so, and what differs (B300 and B200)."""
    for i, r in enumerate(rows):
        mine = catalog.chip(r.chip)
        for other in rows[:i]:
            theirs = catalog.chip(other.chip)
            if all(getattr(mine, f) == getattr(theirs, f) for f in OUTPUT_FIGURES):
                differs = ", ".join(
                    f"{f} {getattr(mine, f):g} vs {getattr(theirs, f):g}"
                    for f in OTHER_FIGURES
                    if getattr(mine, f) != getattr(theirs, f)
                )
                r.same_as = (
                    f"same compute, HBM bandwidth, link and power as {other.chip}, so the same videos/day "
                    f"per MW" + (f"; differs in {differs}" if differs else "")
                )
                break


@dataclass
class ChipRow:
    chip: str
    name: str
    site: SitePlan | None
    why_not: str | None  # set when the chip cannot be planned
    ranks: dict[str, int] | None = None  # rank by each of SORT_KEYS (1 = best)
    same_as: str | None = None  # another chip with the same output figures, and what differs

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "chip": self.chip,
            "name": self.name,
            "ok": self.site is not None,
            "status": catalog.chip(self.chip).status,
            "why_not": self.why_not,
            "ranks": self.ranks,
        }
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
                usd_per_image=out["usd_per_image"],
                capex_usd=self.site.cost.capex_usd,
                driver=driver(self.site) | ({"same_as": self.same_as} if self.same_as else {}),
                figures=catalog.chip(self.chip).model_dump(
                    include={
                        "family",
                        "bf16_tflops",
                        "fp8_tflops",
                        "hbm_gb",
                        "hbm_tbps",
                        "scaleup_gbps",
                        "tdp_w",
                        "usd_per_hour",
                    }
                )
                | {"chip_price_usd": self.site.cost.chip_price_usd},
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


def rank_chips(
    power_mw: float,
    mix: Mix,
    a: Assumptions,
    cooling: str = "liquid",
    chips: list[str] | None = None,
    sort_by: str = "videos_per_mw",
) -> ChipRanking:
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
    _twins(ok)
    return ChipRanking(power_mw, cooling, mix, a, order(sort_by) + [r for r in rows if r.site is None], sort_by)

"""`plan_site`: facility megawatts -> IT power -> accelerators, hosts, network, storage -> racks ->
requests per day per class -> kWh and dollars per video and per image.

Every step reads its numbers from the resolved assumptions (noor/plan/assumptions.toml + overrides)
and the catalog (chip power), and the report lists them with their sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from noor import catalog
from noor.plan.assumptions import Assumptions
from noor.plan.capacity import SECONDS_PER_DAY, ClassPlan, TooSmall, fleet
from noor.plan.errors import PlanError
from noor.plan.mix import Mix

Cooling = Literal["air", "liquid"]
COOLINGS = ("air", "liquid")
DAYS_PER_YEAR = 365.0
MAX_POWER_MW = 100_000.0  # 100 GW: past any campus; keeps the arithmetic finite
MAX_CHIPS = 100_000_000


@dataclass
class Power:
    facility_mw: float  # the budget
    pue: float
    it_mw: float
    accelerators_mw: float
    hosts_mw: float
    network_mw: float
    storage_mw: float
    cooling_and_losses_mw: float
    used_facility_mw: float  # what the whole servers bought draw at TDP, with their share of IT and overhead


@dataclass
class Hardware:
    chip: str
    chip_tdp_w: float
    chips: int
    chips_per_node: int
    nodes: int
    node_kw: float
    nodes_per_rack: int
    rack_kw: float
    racks: int
    network_storage_racks: int


@dataclass
class Cost:
    chip_price_usd: float
    accelerators_usd: float
    servers_usd: float  # accelerators included
    network_storage_usd: float
    facility_usd: float
    capex_usd: float
    capex_per_day_usd: float
    energy_kwh_per_day: float
    energy_per_day_usd: float
    opex_per_day_usd: float
    total_per_day_usd: float


@dataclass
class SitePlan:
    power_mw: float
    cooling: str
    mix: Mix
    assumptions: Assumptions
    power: Power
    hardware: Hardware
    classes: list[ClassPlan]
    cost: Cost
    notes: list[str] = field(default_factory=list)

    @property
    def videos_per_day(self) -> float:
        return sum(c.per_day for c in self.classes if c.request.is_video)

    @property
    def images_per_day(self) -> float:
        return sum(c.per_day for c in self.classes if not c.request.is_video)

    def fraction(self, video: bool) -> float:
        """Share of the chips (and so of the power and the money) that serve videos (or images)."""
        total = sum(c.chips for c in self.classes)
        return sum(c.chips for c in self.classes if c.request.is_video == video) / total if total else 0.0

    def per_item(self, video: bool) -> tuple[float | None, float | None]:
        """(kWh, USD) per video or per image: the chips serving them, with their power and money."""
        count = self.videos_per_day if video else self.images_per_day
        if count <= 0:
            return None, None
        f = self.fraction(video)
        return self.cost.energy_kwh_per_day * f / count, self.cost.total_per_day_usd * f / count

    def _resolved(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The derived PUE shows the value used and how it was made."""
        if entry["key"] == "pue" and entry["value"] is None:
            adder = self.assumptions["pue.climate_adder"]
            base = self.assumptions[f"pue.{self.cooling}"]
            entry = {**entry, "value": self.power.pue,
                     "source": f"derived: pue.{self.cooling} ({base:g}) + pue.climate_adder ({adder:g})"}
        return entry

    def to_dict(self) -> dict[str, Any]:
        kwh_v, usd_v = self.per_item(True)
        kwh_i, usd_i = self.per_item(False)
        videos = [c for c in self.classes if c.request.is_video]
        return {
            "kind": "site",
            "inputs": {
                "power_mw": self.power_mw,
                "chip": self.hardware.chip,
                "cooling": self.cooling,
                "mix": self.mix.to_dict(),
                "overrides": self.assumptions.overrides(),
                "assumptions": [self._resolved(e.to_dict()) for e in self.assumptions.listed([self.hardware.chip])],
            },
            "power": vars(self.power),
            "hardware": vars(self.hardware),
            "classes": [c.to_dict() for c in self.classes],
            "output": {
                "videos_per_day": self.videos_per_day,
                "images_per_day": self.images_per_day,
                "videos_per_day_per_mw": self.videos_per_day / self.power_mw,
                "kwh_per_video": kwh_v,
                "usd_per_video": usd_v,
                "kwh_per_image": kwh_i,
                "usd_per_image": usd_i,
                "video_e2e_p95_s": _weighted_e2e(videos),
            },
            "cost": vars(self.cost),
            "notes": self.notes,
        }


def _weighted_e2e(classes: list[ClassPlan]) -> float | None:
    """Time to a finished video: the share-weighted p95 (wait + generation) of the video classes."""
    total = sum(c.request.share for c in classes)
    return sum(c.e2e_p95_s * c.request.share for c in classes) / total if total else None


def check_power(power_mw: object, field_name: str = "power_mw") -> float:
    if isinstance(power_mw, bool) or not isinstance(power_mw, int | float) or not math.isfinite(power_mw):
        raise PlanError(field_name, power_mw, "must be a number of megawatts")
    if power_mw <= 0:
        raise PlanError(field_name, power_mw, "must be > 0 MW")
    if power_mw > MAX_POWER_MW:
        raise PlanError(field_name, power_mw, f"must be <= {MAX_POWER_MW:g} MW")
    return float(power_mw)


def check_chip(chip_id: str, field_name: str = "chip") -> str:
    if chip_id not in catalog.chips():
        raise PlanError(field_name, chip_id, f"unknown chip; valid: {', '.join(sorted(catalog.chips()))}")
    return chip_id


def check_cooling(cooling: str, field_name: str = "cooling") -> str:
    if cooling not in COOLINGS:
        raise PlanError(field_name, cooling, f"must be one of {', '.join(COOLINGS)}")
    return cooling


def site_pue(a: Assumptions, cooling: str) -> float:
    explicit = a["pue"]
    if explicit is not None:
        return explicit
    pue = a.num(f"pue.{cooling}") + a.num("pue.climate_adder")
    if pue < 1:
        raise PlanError("pue.climate_adder", a["pue.climate_adder"], f"makes the {cooling} PUE {pue:g} < 1")
    return pue


def split_power(power_mw: float, a: Assumptions, cooling: str) -> Power:
    """Steps 1-2: facility -> IT (PUE) -> accelerators, hosts, network, storage (Epoch AI ratios)."""
    pue = site_pue(a, cooling)
    it_mw = power_mw / pue
    server_per_acc, it_per_server = a.num("it.server_per_accelerator"), a.num("it.it_per_server")
    acc_mw = it_mw / (server_per_acc * it_per_server)
    network_storage_mw = it_mw - acc_mw * server_per_acc
    storage_mw = network_storage_mw * a.num("it.storage_of_network_storage")
    return Power(
        facility_mw=power_mw,
        pue=pue,
        it_mw=it_mw,
        accelerators_mw=acc_mw,
        hosts_mw=acc_mw * (server_per_acc - 1),
        network_mw=network_storage_mw - storage_mw,
        storage_mw=storage_mw,
        cooling_and_losses_mw=power_mw - it_mw,
        used_facility_mw=0.0,
    )


def chip_tdp_w(a: Assumptions, chip_id: str) -> float:
    tdp = a[f"chip_tdp_w.{chip_id}"]
    if tdp is None:
        raise PlanError("chip", chip_id, f"has no published power (tdp_w); set chip_tdp_w.{chip_id}=WATTS")
    return tdp


def chip_price_usd(a: Assumptions, chip_id: str) -> float:
    price = a[f"chip_price_usd.{chip_id}"]
    if price is None:
        raise PlanError("chip", chip_id, f"has no purchase price; set chip_price_usd.{chip_id}=USD")
    return price


def build_hardware(power: Power, a: Assumptions, chip_id: str, cooling: str) -> Hardware:
    """Steps 3-4: whole servers of accelerators within the accelerator power, then racks at the kW limit."""
    tdp_w = chip_tdp_w(a, chip_id)
    per_node = int(a.num("node.chips"))
    node_kw = per_node * tdp_w * a.num("it.server_per_accelerator") / 1e3
    nodes = math.floor(power.accelerators_mw * 1e6 / tdp_w / per_node)
    if nodes < 1:
        need_mw = node_kw * a.num("it.it_per_server") * power.pue / 1e3
        why = f"too small for one {per_node}-chip {chip_id} server (needs {need_mw:.3f} MW at PUE {power.pue:g})"
        raise PlanError("power_mw", power.facility_mw, why)
    if nodes * per_node > MAX_CHIPS:
        why = f"gives more than {MAX_CHIPS:g} {chip_id} chips (check chip_tdp_w)"
        raise PlanError("power_mw", power.facility_mw, why)
    rack_kw = a.num(f"rack_kw.{cooling}")
    per_rack = math.floor(rack_kw / node_kw)
    if per_rack < 1:
        why = f"is below one {per_node}-chip {chip_id} server ({node_kw:.1f} kW)"
        raise PlanError(f"rack_kw.{cooling}", rack_kw, why)
    network_storage_kw = (power.network_mw + power.storage_mw) * 1e3
    return Hardware(
        chip=chip_id,
        chip_tdp_w=tdp_w,
        chips=nodes * per_node,
        chips_per_node=per_node,
        nodes=nodes,
        node_kw=node_kw,
        nodes_per_rack=per_rack,
        rack_kw=rack_kw,
        racks=math.ceil(nodes / per_rack),
        network_storage_racks=math.ceil(network_storage_kw / rack_kw),
    )


def price(power: Power, hw: Hardware, a: Assumptions) -> Cost:
    """Step 6: capex amortised per day (straight line), energy at the power price, opex as a share of capex."""
    chip_usd = chip_price_usd(a, hw.chip)
    accelerators = hw.chips * chip_usd
    servers = accelerators * a.num("capex.server_per_accelerator_price")
    network_storage = servers * a.num("capex.network_storage_of_servers")
    facility = power.facility_mw * a.num("capex.facility_usd_per_mw")
    capex = servers + network_storage + facility
    capex_per_day = (servers + network_storage) / (a.num("life.accelerator_years") * DAYS_PER_YEAR) + facility / (
        a.num("life.facility_years") * DAYS_PER_YEAR
    )
    kwh_per_day = power.used_facility_mw * 1e3 * a.num("it.average_draw") * SECONDS_PER_DAY / 3600
    energy_usd = kwh_per_day * a.num("power.usd_per_kwh")
    opex = capex * a.num("opex.of_capex_per_year") / DAYS_PER_YEAR
    return Cost(chip_usd, accelerators, servers, network_storage, facility, capex, capex_per_day, kwh_per_day,
                energy_usd, opex, capex_per_day + energy_usd + opex)


def plan_site(power_mw: float, chip_id: str, mix: Mix, a: Assumptions, cooling: str = "liquid") -> SitePlan:
    """The whole chain for one site of one chip type."""
    # 1. validate
    power_mw = check_power(power_mw)
    chip_id = check_chip(chip_id)
    cooling = check_cooling(cooling)
    # 2. facility -> IT -> accelerators, hosts, network, storage
    power = split_power(power_mw, a, cooling)
    # 3. whole servers and racks
    hw = build_hardware(power, a, chip_id, cooling)
    power.used_facility_mw = (
        hw.chips * hw.chip_tdp_w * a.num("it.server_per_accelerator") * a.num("it.it_per_server") * power.pue / 1e6
    )
    # 4. requests per day per class at the utilisation cap and SLOs
    try:
        classes = fleet(mix, chip_id, hw.chips, a)
    except TooSmall as err:
        why = f"too small for the mix: {hw.chips} {chip_id} chips; {err.message}"
        raise PlanError("power_mw", power_mw, why) from err
    # 5. money and energy
    cost = price(power, hw, a)
    notes = []
    if hw.chips_per_node > catalog.chip(chip_id).scaleup_domain:
        notes.append(f"{chip_id}'s scale-up domain is {catalog.chip(chip_id).scaleup_domain} chips; "
                     f"a request runs on at most that many")
    idle = hw.chips - sum(c.chips for c in classes)
    if idle:
        notes.append(f"{idle} chips spare: too few to raise every class's rate at its share (they stay idle)")
    return SitePlan(power_mw, cooling, mix, a, power, hw, classes, cost, notes)

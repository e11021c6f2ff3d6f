"""`plan_players`: how many concurrent players a site holds for an interactive world model on a chip.

1. validate; 2. facility MW -> IT -> whole servers and racks (the site planner's steps, `plan/site.py`);
3. sessions per chip: 1 (a session holds its chip, as the simulator places them and as published frame
   rates are measured) or, with `sessions_per_chip="auto"`, the most sessions one chip batches while each
   still gets a frame within 1 / fps (`noor.perf.world.sessions_per_chip`); none if one session cannot;
4. players = slots = chips x sessions per chip, every one playing at once;
5. Erlang B (`plan/queueing.py`): sessions are a loss system, refused when every slot is busy, and its
   blocking depends only on the offered load (sessions/h x mean length), not on how lengths spread. So the
   site carries at most the load whose blocking meets the target; with a demand given, the slots and chips
   it needs, and the blocking it would see here;
6. money and energy as for a site; a player-hour's cost at full use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from noor import catalog
from noor.perf import PerfError
from noor.perf.world import MAX_SESSIONS_PER_CHIP, WorldEstimate, estimate_world, sessions_per_chip
from noor.plan.assumptions import Assumptions
from noor.plan.errors import PlanError
from noor.plan.queueing import erlang_b, max_offered_erlangs, servers_for_blocking
from noor.plan.site import Cost, Hardware, Power, build_hardware, check_chip, check_cooling, check_power, price
from noor.plan.site import split_power as _split_power


@dataclass
class Demand:
    sessions_per_h: float
    mean_session_s: float
    offered_erlangs: float  # players wanting to play at once, on average
    slots_needed: int  # for the blocking target
    chips_needed: int
    blocking_here: float  # Erlang B blocking with this site's slots
    fits: bool


@dataclass
class PlayersPlan:
    power_mw: float
    cooling: str
    world: str
    fps: float
    blocking: float
    assumptions: Assumptions
    power: Power
    hardware: Hardware
    cost: Cost
    sessions_per_chip: int
    estimate: WorldEstimate  # at sessions_per_chip sessions on one chip
    players: int  # concurrent sessions the site holds
    max_offered_erlangs: float  # the load it carries at the blocking target
    demand: Demand | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        per_day = self.cost.total_per_day_usd
        return {
            "kind": "players",
            "inputs": {
                "power_mw": self.power_mw,
                "chip": self.hardware.chip,
                "world_model": self.world,
                "fps": self.fps,
                "blocking": self.blocking,
                "cooling": self.cooling,
                "overrides": self.assumptions.overrides(),
                "assumptions": [e.to_dict() for e in self.assumptions.listed([self.hardware.chip])],
            },
            "power": vars(self.power),
            "hardware": vars(self.hardware),
            "session": {
                "sessions_per_chip": self.sessions_per_chip,
                "frame_latency_ms": 1e3 * (self.estimate.frame_latency_s or math.nan),
                "fps_per_session": self.estimate.fps,
                "gflop_per_frame": self.estimate.flops_per_frame / 1e9,
                "peak_memory_gb": self.estimate.peak_memory_gb,
            },
            "output": {
                "concurrent_players": self.players,
                "players_per_mw": self.players / self.power_mw,
                "max_offered_erlangs": self.max_offered_erlangs,
                "usd_per_player_hour_at_full_use": per_day / (self.players * 24) if self.players else None,
            },
            "demand": vars(self.demand) if self.demand else None,
            "cost": vars(self.cost),
            "notes": self.notes,
        }


def plan_players(
    power_mw: float,
    world_id: str,
    chip_id: str,
    a: Assumptions,
    fps: float = 24.0,
    cooling: str = "liquid",
    per_chip: int | Literal["auto"] = 1,
    sessions_per_h: float | None = None,
    mean_session_s: float | None = None,
    blocking: float = 0.01,
) -> PlayersPlan:
    """The whole chain for one site of one chip type serving one world model (see the module's steps)."""
    # 1. validate
    power_mw = check_power(power_mw)
    chip_id = check_chip(chip_id)
    cooling = check_cooling(cooling)
    if world_id not in catalog.world_ids():
        raise PlanError("model", world_id, f"unknown world model; valid: {', '.join(catalog.world_ids())}")
    world, chip = catalog.world(world_id), catalog.chip(chip_id)
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise PlanError("fps", fps, "must be a number of frames per second above 0")
    if isinstance(blocking, bool) or not isinstance(blocking, int | float) or not 0 < blocking < 1:
        raise PlanError("blocking", blocking, "must be a probability between 0 and 1 (exclusive)")
    if per_chip != "auto" and (isinstance(per_chip, bool) or not isinstance(per_chip, int) or per_chip < 1):
        raise PlanError("sessions_per_chip", per_chip, "must be a positive integer or 'auto'")
    if (sessions_per_h is None) != (mean_session_s is None):
        missing = "mean_session_s" if mean_session_s is None else "sessions_per_h"
        raise PlanError(missing, None, "a demand needs both sessions_per_h and mean_session_s")
    for name, value in (("sessions_per_h", sessions_per_h), ("mean_session_s", mean_session_s)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0
        ):
            raise PlanError(name, value, "must be a number above 0")

    # 2. facility -> IT -> whole servers and racks
    power = _split_power(power_mw, a, cooling)
    hw = build_hardware(power, a, chip_id, cooling)
    power.used_facility_mw = (
        hw.chips * hw.chip_tdp_w * a.num("it.server_per_accelerator") * a.num("it.it_per_server") * power.pue / 1e6
    )

    # 3. sessions per chip at the frame budget
    try:
        if per_chip == "auto":
            per, est = sessions_per_chip(world, chip, fps)
        else:
            per, est = per_chip, estimate_world(world, chip, per_chip)
            if est.frame_latency_s is None or est.frame_latency_s > 1 / fps:
                per = 0
    except PerfError as err:
        raise PlanError(err.field, err.value, str(err).split(": ", 1)[1].rsplit(", got", 1)[0]) from err
    if per == 0:
        one = estimate_world(world, chip, 1)
        got = f"{one.fps:.1f} frames/s" if one.fps else f"does not fit ({one.why_not})"
        at = "" if per_chip == "auto" or per_chip == 1 else f" at {per_chip} sessions a chip"
        raise PlanError("fps", fps, f"{world_id} on {chip_id}{at} cannot keep up: one session gets {got}")

    # 4. players: every slot busy
    players = hw.chips * per

    # 5. Erlang B: the load the slots carry at the blocking target, and a demand's needs
    carried = max_offered_erlangs(players, blocking)
    demand = None
    if sessions_per_h is not None and mean_session_s is not None:
        offered = sessions_per_h * mean_session_s / 3600
        slots = servers_for_blocking(offered, blocking)
        chips_needed = math.ceil(slots / per)
        demand = Demand(
            sessions_per_h,
            mean_session_s,
            offered,
            slots,
            chips_needed,
            erlang_b(players, offered),
            chips_needed <= hw.chips,
        )

    # 6. money and energy
    cost = price(power, hw, a)
    notes = [
        f"{world.name}: {world.frames_per_chunk} frame(s) a chunk, {world.steps} steps"
        f"{' + a cache pass' if world.cache_pass else ''}; frame time {1e3 * (est.frame_latency_s or 0):.1f} ms "
        f"with {per} session(s) a chip, budget {1e3 / fps:.1f} ms at {fps:g} frames/s",
        "blocking is Erlang B (Poisson arrivals, sessions refused when every slot is busy); the simulator's "
        "max_queue = 0 is the same loss system",
    ]
    if per == MAX_SESSIONS_PER_CHIP:
        notes.append(f"sessions per chip capped at {MAX_SESSIONS_PER_CHIP} (the search's limit; a chip may hold more)")
    if per_chip == 1:
        extra, _ = sessions_per_chip(world, chip, fps)
        if extra > 1:
            notes.append(
                f"batching sessions: one {chip_id} could hold {extra} at {fps:g} frames/s "
                f"(--sessions-per-chip auto): {hw.chips * extra:,} players"
            )
    if demand is not None and not demand.fits:
        notes.append(
            f"the demand needs {demand.chips_needed:,} chips for {blocking:.1%} blocking; "
            f"this site has {hw.chips:,} (blocking here {demand.blocking_here:.1%})"
        )
    return PlayersPlan(
        power_mw,
        cooling,
        world_id,
        float(fps),
        float(blocking),
        a,
        power,
        hw,
        cost,
        per,
        est,
        players,
        carried,
        demand,
        notes,
    )


def markdown(doc: dict[str, Any]) -> str:
    i, hw, o, s, c = doc["inputs"], doc["hardware"], doc["output"], doc["session"], doc["cost"]
    lines = [
        f"# Players: {i['world_model']} on {i['chip']} in {i['power_mw']:g} MW",
        "",
        f"- **{o['concurrent_players']:,} concurrent players** ({o['players_per_mw']:,.1f} per MW) at "
        f"{i['fps']:g} frames/s: {hw['chips']:,} chips x {s['sessions_per_chip']} session(s) each",
        f"- a frame takes {s['frame_latency_ms']:.1f} ms ({s['fps_per_session']:.1f} frames/s a session), "
        f"{s['gflop_per_frame']:,.1f} GFLOP, {s['peak_memory_gb']:.1f} GB a chip",
        f"- {hw['nodes']:,} servers of {hw['chips_per_node']} in {hw['racks']:,} racks ({hw['rack_kw']:g} kW each)",
        f"- power: {doc['power']['facility_mw']:g} MW facility at PUE {doc['power']['pue']:.2f} -> "
        f"{doc['power']['it_mw']:,.1f} MW IT, {doc['power']['accelerators_mw']:,.1f} MW of accelerators; the servers "
        f"bought draw {doc['power']['used_facility_mw']:,.1f} MW of facility power at TDP",
        f"- at {i['blocking']:.1%} blocking it carries {o['max_offered_erlangs']:,.0f} Erlangs of offered load "
        f"(sessions/h x mean hours)",
        f"- capex ${c['capex_usd']:,.0f}; ${c['total_per_day_usd']:,.0f} a day all-in; "
        + (
            f"${o['usd_per_player_hour_at_full_use']:.3f} a player-hour at full use"
            if o["usd_per_player_hour_at_full_use"] is not None
            else ""
        ),
    ]
    d = doc["demand"]
    if d:
        lines.append(
            f"- demand {d['sessions_per_h']:,.0f} sessions/h x {d['mean_session_s'] / 60:,.1f} min = "
            f"{d['offered_erlangs']:,.0f} Erlangs: needs {d['slots_needed']:,} slots = {d['chips_needed']:,} chips "
            f"for {i['blocking']:.1%} blocking ({'fits' if d['fits'] else 'does not fit'}; "
            f"blocking here {d['blocking_here']:.2%})"
        )
    lines += ["", *(f"note: {n}" for n in doc["notes"]), ""]
    return "\n".join(lines)

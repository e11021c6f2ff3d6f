"""Throughput of a fleet of one chip type under a request mix: the analytic model of `noor simulate`.

Each request class gets its own pool of servers (a server = the chips one request runs on, chosen
from 1, 2, 4... up to the node size). Chips are split between classes in proportion to the work they
bring (share x chips per request x seconds / achieved utilisation); each class then takes the
parallel plan that serves the most requests on its chips within the utilisation cap and its p95 SLO
(queue waits from noor.sim.analytic, Allen-Cunneen). The fleet's rate is the highest total arrival
rate at which every class keeps its SLO: min over classes of (class rate / class share).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from noor import catalog, perf
from noor.plan.assumptions import Assumptions
from noor.plan.errors import PlanError
from noor.plan.mix import Mix, RequestClass
from noor.plan.queueing import max_arrival_per_s, wait_p95_s

SECONDS_PER_DAY = 86_400.0
ALLOCATION_ROUNDS = 3


class CannotServe(PlanError):
    """This chip cannot run a class of the mix at all (does not fit in memory) or not within its SLO."""


@dataclass(frozen=True)
class Option:
    gpus: int
    latency_s: float
    plan_label: str
    shard_weights: bool = False


@dataclass
class ClassPlan:
    request: RequestClass
    gpus: int  # chips per request
    plan_label: str
    latency_s: float  # one request, from noor.perf
    chips: int
    servers: int
    arrival_per_s: float  # at the fleet's capacity
    utilisation: float
    wait_p95_s: float
    e2e_p95_s: float
    shard_weights: bool = False

    @property
    def per_day(self) -> float:
        return self.arrival_per_s * SECONDS_PER_DAY

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.request.name,
            "model": self.request.model,
            "kind": "video" if self.request.is_video else "image",
            "share": self.request.share,
            "chips_per_request": self.gpus,
            "plan": self.plan_label,
            "latency_s": self.latency_s,
            "chips": self.chips,
            "servers": self.servers,
            "per_day": self.per_day,
            "utilisation": self.utilisation,
            "wait_p95_s": self.wait_p95_s,
            "e2e_p95_s": self.e2e_p95_s,
            "slo_wait_p95_s": self.request.slo_wait_p95_s,
            "slo_e2e_p95_s": self.request.slo_e2e_p95_s,
        }


def estimate(rc: RequestClass, chip_id: str, gpus: int, shard_weights: bool) -> perf.Estimate:
    """noor.perf's estimate of one request of a class on `gpus` chips: its latency and where the time goes."""
    return _perf(rc.model, chip_id, rc.width, rc.height, rc.frames, rc.steps, gpus, shard_weights)


@lru_cache(maxsize=8192)
def _perf(model_id: str, chip_id: str, w: int, h: int, frames: int, steps: int | None, gpus: int,
          shard: bool) -> perf.Estimate:
    return perf.estimate(catalog.model(model_id), perf.Shape(w, h, frames, steps), catalog.chip(chip_id),
                         perf.ParallelPlan(gpus=gpus, shard_weights=shard))


@lru_cache(maxsize=8192)
def _estimate(model_id: str, chip_id: str, w: int, h: int, frames: int, steps: int | None, gpus: int) -> Option | str:
    """The fastest fitting split on `gpus` chips (weights whole on each chip, or sharded), or why none fits."""
    fitting, why = [], "does not fit"
    for shard in (False, True) if gpus > 1 else (False,):
        try:
            est = _perf(model_id, chip_id, w, h, frames, steps, gpus, shard)
        except perf.PerfError as err:
            return str(err)
        if est.fits and est.latency_s is not None and math.isfinite(est.latency_s) and est.latency_s > 0:
            label = est.plan.label() + (", weights sharded" if shard else "")
            fitting.append(Option(gpus, est.latency_s, label, shard))
        elif not shard:
            why = est.why_not or why
    return min(fitting, key=lambda o: o.latency_s) if fitting else why


def max_chips_per_request(chip_id: str, a: Assumptions) -> int:
    chip = catalog.chip(chip_id)
    return max(1, min(int(a.num("serve.max_chips_per_request")), int(a.num("node.chips")), chip.scaleup_domain))


def options(rc: RequestClass, chip_id: str, a: Assumptions) -> list[Option]:
    """Plans (1, 2, 4... chips) that fit and can meet an e2e SLO; CannotServe says why there are none."""
    top = max_chips_per_request(chip_id, a)
    sizes = [g for g in (1, 2, 4, 8, 16, 32, 64) if g <= top]
    results = {g: _estimate(rc.model, chip_id, rc.width, rc.height, rc.frames, rc.steps, g) for g in sizes}
    fitting = [r for r in results.values() if isinstance(r, Option)]
    if not fitting:
        why = results[sizes[-1]]
        raise CannotServe("chip", chip_id, f"cannot hold {rc.model} for {rc.name!r} on up to {top} chips: {why}")
    if rc.slo_e2e_p95_s is not None:
        fast = [o for o in fitting if o.latency_s <= rc.slo_e2e_p95_s]
        if not fast:
            best = min(fitting, key=lambda o: o.latency_s)
            raise CannotServe(
                "chip", chip_id,
                f"cannot meet {rc.name!r} slo_e2e_p95_s={rc.slo_e2e_p95_s:g}: fastest plan ({best.plan_label}) takes "
                f"{best.latency_s:.1f} s",
            )
        return fast
    return fitting


def _wait_budget_s(rc: RequestClass, o: Option) -> float | None:
    if rc.slo_wait_p95_s is not None:
        return rc.slo_wait_p95_s
    if rc.slo_e2e_p95_s is not None:
        return rc.slo_e2e_p95_s - o.latency_s
    return None


class TooSmall(PlanError):
    """Too few chips to give every class of the mix one server."""


def _one_server_each(chips: dict[str, int], gpus: dict[str, int], chips_total: int) -> None:
    """Rounding can leave a small class no server: give it one, from the rounding leftover, then the biggest pool."""
    need = sum(gpus.values())
    if chips_total < need:
        raise TooSmall("power_mw", chips_total, f"one server per class of the mix needs {need} chips")
    spare = chips_total - sum(chips.values())
    for name, g in gpus.items():
        while chips[name] < g:
            if spare > 0:
                take = min(spare, g - chips[name])
                spare -= take
            else:
                donor = max(chips, key=lambda n: chips[n] - gpus[n])
                take = min(chips[donor] - gpus[donor], g - chips[name])
                chips[donor] -= take
            chips[name] += take


def _servers_needed(rate_of: Callable[[int], float], wanted_per_s: float, low: int) -> int:
    """Fewest servers whose rate reaches `wanted_per_s`, searching up from a lower bound."""
    servers, step = max(low, 1), 1
    while rate_of(servers) < wanted_per_s:  # grow fast, then bisect back
        servers += step
        step *= 2
    lo, hi = max(low, 1, servers - step // 2), servers
    while lo < hi:
        mid = (lo + hi) // 2
        if rate_of(mid) >= wanted_per_s:
            hi = mid
        else:
            lo = mid + 1
    return hi


def _balance(mix: Mix, choice: dict[str, Option], chips: dict[str, int], chips_total: int, total_per_s: float,
             rate: Callable[[RequestClass, Option, int], float], u: float) -> tuple[float, dict[str, int]]:
    """Bisect the total rate between what the proportional split gives and all chips 100% busy, giving each
    class the fewest servers that carry its share."""
    u_bound = chips_total / sum(rc.share * choice[rc.name].gpus * choice[rc.name].latency_s for rc in mix.classes)

    def need(total: float) -> dict[str, int] | None:
        out = {}
        for rc in mix.classes:
            o = choice[rc.name]
            wanted = total * rc.share
            low = math.ceil(wanted * o.latency_s / u * (1 - 1e-12))  # at the utilisation cap: a lower bound
            servers = _servers_needed(lambda s, rc=rc, o=o: rate(rc, o, s * o.gpus), wanted, low)  # type: ignore[misc]
            out[rc.name] = servers * o.gpus
            if sum(out.values()) > chips_total:
                return None
        return out

    best_rate, best_chips = total_per_s, chips
    lo, hi = total_per_s, max(total_per_s, u_bound)
    for _ in range(40):
        if hi - lo <= 1e-6 * hi:
            break
        mid = (lo + hi) / 2
        fit = need(mid)
        if fit is None:
            hi = mid
        else:
            lo, best_rate, best_chips = mid, mid, fit
    return best_rate, best_chips


def fleet(mix: Mix, chip_id: str, chips_total: int, a: Assumptions) -> list[ClassPlan]:
    """Each class's pool and rate when `chips_total` chips of one type serve the mix at its SLOs."""
    u = a.num("serve.utilisation")
    cs2, ca2 = a.num("serve.service_cv2"), a.num("serve.arrival_cv2")
    opts = {rc.name: options(rc, chip_id, a) for rc in mix.classes}

    def rate(rc: RequestClass, o: Option, chips: int) -> float:
        return max_arrival_per_s(chips // o.gpus, o.latency_s, u, _wait_budget_s(rc, o), cs2, ca2)

    # 1. start from the plan with the fewest chip-seconds per request, at the utilisation cap
    choice = {rc.name: min(opts[rc.name], key=lambda o: (o.gpus * o.latency_s, o.latency_s)) for rc in mix.classes}
    achieved = {rc.name: u for rc in mix.classes}
    chips: dict[str, int] = {}
    for _ in range(ALLOCATION_ROUNDS):
        # 2. split the chips by the work each class brings
        work = {rc.name: rc.share * choice[rc.name].gpus * choice[rc.name].latency_s / max(achieved[rc.name], 1e-9)
                for rc in mix.classes}
        total_work = sum(work.values())
        chips = {name: math.floor(chips_total * w / total_work) for name, w in work.items()}
        _one_server_each(chips, {name: o.gpus for name, o in choice.items()}, chips_total)
        # 3. each class takes the plan that serves the most requests on its chips
        for rc in mix.classes:
            best = max(opts[rc.name], key=lambda o, rc=rc: (rate(rc, o, chips[rc.name]), -o.gpus))  # type: ignore[misc]
            choice[rc.name] = best
            servers = chips[rc.name] // best.gpus
            lam = rate(rc, best, chips[rc.name])
            achieved[rc.name] = lam * best.latency_s / servers if servers else u

    # 4. the fleet's rate: every class at its share of one arrival stream
    total_per_s = min(rate(rc, choice[rc.name], chips[rc.name]) / rc.share for rc in mix.classes)
    # 5. rebalance: the highest rate whose pools, each as small as its share allows, fit in the chips
    total_per_s, chips = _balance(mix, choice, chips, chips_total, total_per_s, rate, u)
    plans = []
    for rc in mix.classes:
        o = choice[rc.name]
        servers = chips[rc.name] // o.gpus
        lam = total_per_s * rc.share
        wait = wait_p95_s(lam, o.latency_s, servers, cs2, ca2) if servers else math.inf
        plans.append(ClassPlan(rc, o.gpus, o.plan_label, o.latency_s, chips[rc.name], servers, lam,
                               lam * o.latency_s / servers if servers else 0.0, wait, wait + o.latency_s,
                               o.shard_weights))
    return plans

"""`noor plan players`: concurrent players of a world model in a power budget, Erlang B sizing, and the
simulator's sessions agreeing with it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest

from noor import catalog, sim
from noor.perf.world import estimate_world, sessions_per_chip
from noor.plan import PlanError
from noor.plan.assumptions import resolve
from noor.plan.players import plan_players
from noor.plan.queueing import erlang_b, max_offered_erlangs, servers_for_blocking
from noor.plan.site import build_hardware, split_power

from .conftest import Run


def test_players_are_the_sites_chips_times_sessions_per_chip_and_the_money_adds_up() -> None:
    a = resolve()
    p = plan_players(150, "matrix-game-2", "h100-sxm", a, fps=24)
    hw = build_hardware(split_power(150, a, "liquid"), a, "h100-sxm", "liquid")
    assert p.hardware.chips == hw.chips > 50_000  # the same servers as `noor plan site` builds
    assert p.sessions_per_chip == 1 and p.players == hw.chips
    assert p.estimate.frame_latency_s is not None and p.estimate.frame_latency_s <= 1 / 24
    doc = p.to_dict()
    assert doc["output"]["usd_per_player_hour_at_full_use"] == pytest.approx(
        p.cost.total_per_day_usd / (p.players * 24)
    )
    assert doc["output"]["players_per_mw"] == pytest.approx(p.players / 150)
    # batching sessions on a chip: as many as perf says fit in the frame budget, never more players than that
    auto = plan_players(150, "matrix-game-2", "h100-sxm", a, fps=12, per_chip="auto")
    most, at = sessions_per_chip(catalog.world("matrix-game-2"), catalog.chip("h100-sxm"), 12)
    assert auto.sessions_per_chip == most >= 1 and auto.players == hw.chips * most
    assert at.frame_latency_s is not None and at.frame_latency_s <= 1 / 12


def test_erlang_b_sizing_meets_the_blocking_target_with_the_fewest_slots() -> None:
    assert erlang_b(8, 8.0) == pytest.approx(0.2356, abs=1e-4)  # the textbook table
    assert erlang_b(3000, 2900) == pytest.approx(erlang_b(3000, 2900.0))  # the Poisson form, above 2000 slots
    for slots, target in ((10, 0.01), (117, 0.01), (5000, 0.02)):
        carried = max_offered_erlangs(slots, target)
        assert erlang_b(slots, carried) <= target < erlang_b(slots, carried * 1.001)
    need = servers_for_blocking(100.0, 0.01)
    assert erlang_b(need, 100.0) <= 0.01 < erlang_b(need - 1, 100.0)
    a = resolve()
    p = plan_players(150, "matrix-game-2", "h100-sxm", a, sessions_per_h=200_000, mean_session_s=900, blocking=0.01)
    assert p.demand is not None
    assert p.demand.offered_erlangs == pytest.approx(200_000 * 900 / 3600)
    assert p.demand.slots_needed == servers_for_blocking(50_000, 0.01) and p.demand.fits
    assert p.demand.chips_needed == p.demand.slots_needed  # one session a chip
    too_much = plan_players(150, "matrix-game-2", "h100-sxm", a, sessions_per_h=2e6, mean_session_s=900)
    assert too_much.demand is not None and not too_much.demand.fits
    assert any("needs" in n and "chips" in n for n in too_much.notes)


def test_the_plan_and_the_simulator_agree_on_refusals() -> None:
    """A small site planned for 5% blocking, simulated with no queue (a loss system) at the load the plan
    says it carries: the simulated refused share is the plan's 5%."""
    a = resolve()
    p = plan_players(0.05, "matrix-game-2", "h100-sxm", a, blocking=0.05)
    chips = p.hardware.chips
    assert 8 <= chips <= 64
    mean_s = 120.0
    rate_per_h = p.max_offered_erlangs / mean_s * 3600
    scenario = sim.parse({
        "seed": 11, "horizon_h": 6.0, "warmup_h": 0.5,
        "regions": {"r": {"diurnal": "flat"}},
        "sites": [{"name": "s", "region": "r", "chip": "h100-sxm", "gpus": chips}],
        "classes": [{"name": "play", "kind": "interactive", "model": "matrix-game-2", "fps": 24,
                     "session_mean_s": mean_s, "max_queue": 0}],
        "tenants": [{"name": "t", "regions": ["r"], "requests_per_h": rate_per_h}],
    })  # fmt: skip
    (x,) = sim.run(scenario)["sessions"]
    assert x["refused_share"] == pytest.approx(0.05, abs=0.02)
    # and the chips are as busy as the carried load says: offered x (1 - blocking) / chips
    assert x["session_utilisation"] == pytest.approx(p.max_offered_erlangs * 0.95 / chips, rel=0.08)


def test_a_chip_that_cannot_keep_up_is_refused_with_its_frame_rate() -> None:
    a = resolve()
    one = estimate_world(catalog.world("self-forcing-chunk"), catalog.chip("h100-sxm"))
    assert one.fps is not None and one.fps < 24
    with pytest.raises(PlanError, match=rf"cannot keep up: one session gets {one.fps:.1f} frames/s"):
        plan_players(150, "self-forcing-chunk", "h100-sxm", a, fps=24)
    slower = plan_players(150, "self-forcing-chunk", "h100-sxm", a, fps=math.floor(one.fps))
    assert slower.players == slower.hardware.chips


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "genie-3"), "--model: unknown world model; valid: matrix-game-2"),
        (("--chip", "h900"), "--chip:"),
        (("--fps", "0"), "--fps: must be a number of frames per second above 0, got 0.0"),
        (("--blocking", "1.5"), "--blocking: must be a probability between 0 and 1 (exclusive), got 1.5"),
        (("--sessions-per-chip", "two"), "--sessions-per-chip: must be a positive integer or auto, got 'two'"),
        (("--sessions-per-chip", "0"), "--sessions-per-chip: must be a positive integer or 'auto', got 0"),
        (("--sessions-per-h", "100"), "--mean-session-s: a demand needs both sessions_per_h and mean_session_s"),
        (("--sessions-per-h", "-1", "--mean-session-s", "60"), "--sessions-per-h: must be a number above 0, got -1.0"),
        (("--power-mw", "-3"), "--power-mw: must be > 0 MW, got -3.0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(noor_plan: Callable[..., Run], args: tuple[str, ...], message: str) -> None:
    base = {"--power-mw": "150", "--model": "matrix-game-2", "--chip": "h100-sxm"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [x for k, v in {**base, **given}.items() for x in (k, v)]
    r = noor_plan("players", *argv)
    assert r.code == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_cli_prints_players_and_json(noor_plan: Callable[..., Run]) -> None:
    r = noor_plan(
        "players",
        "--power-mw",
        "150",
        "--model",
        "matrix-game-2",
        "--chip",
        "h100-sxm",
        "--sessions-per-h",
        "100000",
        "--mean-session-s",
        "600",
    )
    assert r.code == 0 and "concurrent players" in r.stdout and "Erlangs" in r.stdout and "racks" in r.stdout
    assert "MW IT" in r.stdout
    r = noor_plan("players", "--power-mw", "150", "--model", "matrix-game-2", "--chip", "h100-sxm", "--json")
    doc = json.loads(r.stdout)
    assert doc["kind"] == "players" and doc["output"]["concurrent_players"] == doc["hardware"]["chips"]

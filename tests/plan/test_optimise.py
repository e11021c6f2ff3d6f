"""The optimiser keeps within power, budget and supply, and finds optima worked out by hand."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from noor.plan import assumptions, mix
from noor.plan.errors import PlanError
from noor.plan.optimise import Candidate, SiteLimit, optimise, solve
from noor.plan.site import plan_site

# Per server: A = 10 videos/day, 1 MW, $1 capex, $1/day; B = 15 videos/day, 1 MW, $3 capex, $2/day.
A = Candidate("s", "A", 8, videos_per_day=10, facility_mw=1, capex_usd=1, cost_per_day_usd=1)
B = Candidate("s", "B", 8, videos_per_day=15, facility_mw=1, capex_usd=3, cost_per_day_usd=2)
SITE = [SiteLimit("s", 10)]


def test_power_and_budget_both_bind_at_the_hand_optimum() -> None:
    # max 10a + 15b  s.t.  a + b <= 10 (MW),  a + 3b <= 20 ($)  ->  a = b = 5, 125 videos/day;
    # in the LP, videos = 7.5 x MW + 2.5 x $: +1 MW is worth 7.5, +$1M is worth 2.5M
    sol = solve([A, B], SITE, budget_usd=20)
    assert sol.nodes == [5, 5] and sol.videos_per_day == 125
    power, budget = sol.constraints
    assert power.binding and budget.binding
    assert power.shadow == pytest.approx(7.5) and budget.shadow == pytest.approx(2.5)
    assert power.explain("max-output") == "power at site s is binding: +1 MW adds 7.5 videos/day"
    assert "+$1M adds 2,500,000 videos/day" in budget.explain("max-output")


def test_without_a_budget_the_better_chip_fills_the_power() -> None:
    sol = solve([A, B], SITE)
    assert sol.nodes == [0, 10] and sol.videos_per_day == 150


def test_a_loose_budget_is_not_binding() -> None:
    sol = solve([A, B], SITE, budget_usd=100)
    assert sol.nodes == [0, 10]
    budget = sol.constraints[1]
    assert not budget.binding and budget.slack == 70 and "70 USD to spare" in budget.explain("max-output")


def test_integer_servers_under_a_fractional_optimum() -> None:
    # a + 3b <= 20.5 -> LP b = 5.25; whole servers: (5, 5) uses 20, (4, 5) wastes; best integer is 125 again
    sol = solve([A, B], SITE, budget_usd=20.5)
    assert all(isinstance(n, int) for n in sol.nodes) and sol.videos_per_day == 125
    assert sol.capex_usd <= 20.5


def test_supply_caps_a_chip() -> None:
    sol = solve([A, B], SITE, supply={"B": 16})  # 16 chips = 2 servers of 8
    assert sol.nodes == [8, 2] and sol.videos_per_day == 8 * 10 + 2 * 15


def test_min_cost_meets_demand_at_the_lowest_cost() -> None:
    # A: $0.100 per video, B: $0.133: 100 videos/day -> 10 servers of A, $10/day
    sol = solve([A, B], SITE, objective="min-cost", demand_per_day=100)
    assert sol.nodes == [10, 0] and sol.cost_per_day_usd == 10
    demand = sol.constraints[-1]
    assert demand.kind == "demand" and demand.shadow == pytest.approx(0.1)
    # demand beyond what the power allows has no plan
    with pytest.raises(PlanError, match="no plan meets the limits"):
        solve([A, B], SITE, objective="min-cost", demand_per_day=1000)


def test_real_sites_stay_within_power_and_budget() -> None:
    a = assumptions.resolve()
    sites = [SiteLimit("hall", 40, "air"), SiteLimit("campus", 300, "liquid")]
    budget = 4e9
    plan = optimise(sites, ["h100-sxm", "b200", "mi300x"], mix.load(), a, budget_usd=budget)
    doc = plan.to_dict()
    for s in sites:
        used = sum(r["facility_mw"] for r in doc["allocation"] if r["site"] == s.name)
        assert used <= s.power_mw + 1e-9
    assert doc["output"]["capex_usd"] <= budget
    assert any(c["binding"] for c in doc["constraints"])
    assert doc["output"]["videos_per_day"] == pytest.approx(sum(r["videos_per_day"] for r in doc["allocation"]))


def test_cli_optimise_json(noor_plan: Callable[..., Any]) -> None:
    run = noor_plan("optimise", "--site", "a=20", "--site", "b=10:air", "--chips", "h100-sxm,b200",
                    "--budget-usd", "3e8", "--supply", "b200=800", "--json")
    assert run.code == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["output"]["capex_usd"] <= 3e8
    assert sum(r["chips"] for r in doc["allocation"] if r["chip"] == "b200") <= 800
    assert {c["kind"] for c in doc["constraints"]} == {"power", "budget", "supply"}
    assert all(c["explanation"] for c in doc["constraints"])


def test_dollars_per_video_are_over_videos_and_dollars_per_image_over_images() -> None:
    """Issue #26: the whole fleet's cost over the videos charged the images' chips to the videos."""
    a = assumptions.resolve()
    out = optimise([SiteLimit("hall", 20, "liquid")], ["h100-sxm"], mix.load(), a).to_dict()["output"]
    site = plan_site(20, "h100-sxm", mix.load(), a)  # the optimiser fills the hall with whole servers of it
    assert out["images_per_day"] == pytest.approx(site.images_per_day, rel=1e-6) and out["images_per_day"] > 0
    assert out["usd_per_video"] == pytest.approx(site.per_item(True)[1], rel=1e-6)
    assert out["usd_per_image"] == pytest.approx(site.per_item(False)[1], rel=1e-6)
    assert out["usd_per_video"] * out["videos_per_day"] + out["usd_per_image"] * out["images_per_day"] \
        == pytest.approx(out["cost_per_day_usd"])

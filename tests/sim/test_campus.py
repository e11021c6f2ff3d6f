"""A campus of halls: traffic split over the halls, one run per site of identical halls, merged (scaled down)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from noor import sim
from noor.sim import campus
from noor.sim.scenario import ScenarioError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"


def campus_scenario(**over: Any) -> dict[str, Any]:
    """Six 16-GPU H100 halls: three serve, two are half training (pre-emptible), one trains."""
    hall = {"region": "c", "chip": "h100-sxm", "gpus": 16, "gpus_per_node": 8}
    base: dict[str, Any] = {
        "seed": 2, "horizon_h": 4.0, "sample_s": 600.0,
        "campus": {"power_mw": 6.0, "halls": 6},
        "regions": {"c": {"timezone": "UTC", "diurnal": "flat"}, "us": {"timezone": "America/New_York"}},
        "sites": [{**hall, "name": "serve", "halls": [1, 3]}, {**hall, "name": "mixed", "halls": [4, 5]},
                  {**hall, "name": "train", "halls": [6, 6]}],
        "classes": [{"name": "img", "model": "flux.1-dev", "weight": 3, "slo_s": 30.0},
                    {"name": "clip", "model": "wan2.1-t2v-1.3b", "steps": 10, "slo_s": 600.0}],
        "tenants": [{"name": "app", "regions": ["c"], "home": "us", "requests_per_h": 1500}],
        "training": [{"name": "ft", "site": "mixed", "share": 0.5, "work_h": 48.0},
                     {"name": "pre", "site": "train", "share": 1.0, "work_h": 200.0}],
        "scheduling": {"policy": "priority", "preemption": "priority"},
    }  # fmt: skip
    base.update(over)
    return base


def test_traffic_goes_to_each_hall_by_the_gpus_it_serves_with() -> None:
    parts = campus.split(sim.parse(campus_scenario()))
    # serving GPUs: 3 x 16 + 2 x 8 (+ 0 in the training hall) = 64: a serving hall gets 16/64, a mixed one 8/64
    rates = [p["tenants"][0]["requests_per_h"] for p in parts]
    assert rates == pytest.approx([1500 * 16 / 64, 1500 * 8 / 64, 0.0])
    assert [len(p["sites"]) for p in parts] == [1, 1, 1] and parts[0]["sites"][0]["gpus"] == 16
    assert [[t["gpus"] for t in p["training"]] for p in parts] == [[], [8], [16]]
    assert len({p["seed"] for p in parts}) == 3  # each site's hall draws its own arrivals


def test_a_campus_day_merges_its_halls() -> None:
    s = sim.parse(campus_scenario())
    event = sim.run(s, jobs=1)
    parts = [campus.run_hall(p, analytic=False) for p in campus.split(s)]
    f = event["fleet"]
    assert f["gpus"] == 96 and f["halls"] == 6
    assert f["jobs"] == 3 * parts[0]["fleet"]["jobs"] + 2 * parts[1]["fleet"]["jobs"]  # the same seeds
    busy_h = 3 * parts[0]["sites"][0]["busy_gpu_h"] + 2 * parts[1]["sites"][0]["busy_gpu_h"] + 16 * 4.0
    assert f["utilisation"] == pytest.approx(busy_h / (96 * 4.0), rel=1e-9)
    assert f["training_gpu_h"] == pytest.approx(2 * 8 * 4.0 + 16 * 4.0)
    assert [x["halls"] for x in event["sites"]] == [3, 2, 1]
    assert event["sites"][2]["utilisation"] == pytest.approx(1.0)  # the training hall: its partition all day
    assert event["core"]["events_represented"] > event["core"]["events"] > 0
    from noor.sim.report import html_report

    page = html_report(event)
    assert "<h2>Training</h2>" in page and "ft (x2 halls)" in page and "pre (x1 halls)" in page
    assert [x["site"] for x in event["core"]["halls"]] == ["serve", "mixed", "train"]
    # latency: the mixture of the halls' distributions (one site's p95 lies between theirs)
    p95 = [p["fleet"]["wait_s"]["p95"] for p in parts[:2]]
    assert min(p95) - 1e-6 <= f["wait_s"]["p95"] <= max(p95) + 1e-6
    assert 0 < f["slo_attainment"] <= 1
    analytic = sim.run(s, analytic=True, jobs=1)
    assert analytic["fleet"]["utilisation"] == pytest.approx(f["utilisation"], rel=0.05)
    assert analytic["fleet"]["jobs"] == pytest.approx(f["jobs"], rel=0.05)


def test_two_processes_give_the_one_process_result() -> None:
    s = sim.parse(campus_scenario(horizon_h=1.0))
    one, two = sim.run(s, jobs=1), sim.run(s, jobs=2)
    assert two["core"]["processes"] == 2
    assert one["fleet"]["jobs"] == two["fleet"]["jobs"] and one["fleet"]["wait_s"] == two["fleet"]["wait_s"]


def test_the_mixture_of_quantiles_is_the_pooled_distribution() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.exponential(10.0, 40_000), rng.exponential(50.0, 20_000)
    # weights are jobs: a site of 4 halls of 40,000 and one of 1 hall of 20,000
    got = campus._mixture_pcts([(4 * 40_000, np.quantile(a, campus.GRID)), (20_000, np.quantile(b, campus.GRID))])
    pooled = np.concatenate([np.repeat(a, 4), b])
    for q in (50, 95, 99):
        assert got[f"p{q}"] == pytest.approx(np.percentile(pooled, q), rel=0.01)
    assert got["mean"] == pytest.approx(pooled.mean(), rel=0.01)
    assert campus._mixture_pcts([(1.0, None)]) == {"mean": None, "p50": None, "p95": None, "p99": None}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sites[1].halls": [3, 5]}, "sites[1].halls: halls 3-3 are also in sites[0] ('serve'), got [3, 5]"),
        ({"sites[2].halls": [6, 7]}, "sites[2].halls: must be [first, last] with 1 <= first <= last <= 6, got [6, 7]"),
        ({"sites[0].halls": [2, 1]}, "sites[0].halls: must be [first, last] with 1 <= first <= last <= 6, got [2, 1]"),
        ({"sites[0].halls": None}, "sites[0].halls: missing: a campus's sites are ranges [first, last] of its 6 halls"),
        ({"training[0].share": 1.5}, "training[0].share: input should be less than or equal to 1, got 1.5"),
        ({"campus.halls": 0}, "campus.halls: input should be greater than or equal to 1, got 0"),
    ],
)
def test_bad_campus_input_names_the_key(change: dict[str, Any], message: str) -> None:
    data = sim.apply_overrides(campus_scenario(), change)
    with pytest.raises(ScenarioError) as err:
        sim.parse(data)
    assert str(err.value) == message


def test_halls_need_a_campus_and_a_campus_its_power() -> None:
    data = campus_scenario()
    del data["campus"]
    with pytest.raises(ScenarioError, match=r"^sites\[0\].halls: only on a \[campus\] \(power_mw, halls\), got"):
        sim.parse(data)
    hot = campus_scenario()
    hot["sites"] = [{k: v for k, v in x.items() if k != "gpus"} | {"power_mw": 1.5, "kw_per_gpu": 2.0}
                    for x in hot["sites"]]  # fmt: skip
    with pytest.raises(ScenarioError, match=r"^sites: their halls draw 9.0 MW, more than the campus's power_mw, got 6"):
        sim.parse(hot)
    by_power = campus_scenario()
    by_power["sites"] = [{k: v for k, v in x.items() if k != "gpus"} | {"kw_per_gpu": 2.0} for x in by_power["sites"]]
    s = sim.parse(by_power)  # 1 MW a hall (6 MW / 6) at 2 kW a GPU: 500 -> 496 GPUs in whole nodes
    assert [x.gpu_count for x in s.sites] == [496, 496, 496]


def test_the_cli_runs_a_campus_and_refuses_bad_input(noor: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    text = (EXAMPLES / "halo-2gw.toml").read_text()
    path = tmp_path / "halo.toml"
    path.write_text(text)
    code, out, err = noor("simulate", "run", str(path), "--analytic", "--set", "horizon_h=2")
    assert code == 0, err
    assert "32 halls" in out and "955,392" in out and "training" in out
    path.write_text(text.replace("halls = [25, 28]", "halls = [20, 28]"))
    code, _, err = noor("simulate", "run", str(path))
    assert code == 2
    assert err.strip().endswith("sites[1].halls: halls 20-24 are also in sites[0] ('serve'), got [20, 28]")
    assert len(err.strip().splitlines()) == 1
    path.write_text(text.replace("share = 0.5", "share = 1.2"))
    code, _, err = noor("simulate", "run", str(path))
    assert code == 2 and "training[0].share: input should be less than or equal to 1, got 1.2" in err


def test_the_cli_compares_the_event_simulation_with_the_analytic_mode(
    noor: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    """`noor simulate compare`: both modes of one scenario in one run, each figure side by side with the analytic
    mode's error; a bad scenario is one line and exit 2."""
    out_json = tmp_path / "compare.json"
    path = EXAMPLES / "site-35mw.toml"
    code, out, err = noor("simulate", "compare", str(path), "--set", "horizon_h=2", "--json", str(out_json))
    assert code == 0, err
    assert "event simulation vs analytic mode" in out and "analytic vs event" in out
    rows = {(r["name"], r["figure"]): r for r in json.loads(out_json.read_text())["rows"]}
    fleet = rows[("fleet", "utilisation")]
    assert 0 < fleet["event"] < 1 and 0 < fleet["analytic"] < 1 and fleet["diff"].endswith("%")
    code, _, err = noor("simulate", "compare", str(path), "--set", "horizon_h=-1")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "horizon_h" in err

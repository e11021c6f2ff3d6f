"""A run's figures: videos and images counted apart, and every site's host power sourced (issue #26 item 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from noor import sim
from noor.plan import assumptions
from noor.sim.fleet import HOST_SHARE_OF_TDP
from tests.sim.conftest import scenario_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"


def test_videos_and_images_are_counted_apart() -> None:
    """An image request is no video: videos/hour and $/video are over the video jobs only."""
    r = sim.run(sim.parse(scenario_dict()), keep=True)
    rec, fleet, f = r["_record"], r["_world"], r["fleet"]
    finished = rec.end_s <= 2.0 * 3600
    video = np.array([c.name == "t2v" for c in fleet.classes])[rec.cls]  # img is flux.1-dev, one frame
    videos, images = int((finished & video).sum()), int((finished & ~video).sum())
    assert videos > 0 and images > 2 * videos  # the mix asks for 3 images per video
    assert f["videos_per_hour"] == pytest.approx(videos / 2.0)
    assert f["images_per_hour"] == pytest.approx(images / 2.0)
    # the cost is split, not counted twice: what the videos and the images cost adds up to the whole
    assert f["usd_per_video"] * videos + f["usd_per_image"] * images == pytest.approx(f["cost_usd"])
    assert f["usd_per_video"] > 10 * f["usd_per_image"]  # 81 frames at 832x480 against one 1024x1024 image


def test_analytic_mode_counts_them_apart_too() -> None:
    r = sim.run(sim.parse(scenario_dict(horizon_h=4.0)), analytic=True)
    f, jobs = r["fleet"], {c["name"]: c["jobs"] for c in r["classes"]}
    assert f["videos_per_hour"] * 4.0 == pytest.approx(jobs["t2v"], abs=1)
    assert f["images_per_hour"] * 4.0 == pytest.approx(jobs["img"], abs=1)
    videos, images = f["videos_per_hour"] * 4.0, f["images_per_hour"] * 4.0
    assert f["usd_per_video"] * videos + f["usd_per_image"] * images == pytest.approx(f["cost_usd"])


def test_a_run_of_images_only_has_no_video_figures() -> None:
    data = scenario_dict(classes=[{"name": "img", "model": "flux.1-dev", "slo_s": 30.0}])
    f = sim.run(sim.parse(data))["fleet"]
    assert f["videos_per_hour"] == 0 and f["usd_per_video"] is None
    assert f["usd_per_image"] == pytest.approx(f["cost_usd"] / (f["images_per_hour"] * 2.0))


def test_a_site_without_host_power_takes_the_sourced_default_never_zero() -> None:
    sites = scenario_dict()["sites"]
    given = [{**sites[0], "host_w_per_gpu": 0}, sites[1]]  # us1 says 0 W on purpose; eu1 says nothing
    r = sim.run(sim.parse(scenario_dict(sites=given)))
    us1, eu1 = r["sites"]
    assert (us1["host_w_per_gpu"], us1["host_w_source"]) == (0.0, "scenario")
    assert eu1["host_w_per_gpu"] == pytest.approx(0.53 * 700)  # H100 SXM's 700 W TDP
    assert "Epoch AI" in eu1["host_w_source"]
    # the planner's figure from the same source: a server draws 1.53 x its accelerators' power
    assert pytest.approx(assumptions.resolve({}).num("it.server_per_accelerator")) == 1 + HOST_SHARE_OF_TDP
    # eu1's 8 GPUs draw their host power for the whole run (no failures): 8 x 371 W x 2 h x PUE 1.3, at least
    assert eu1["energy_kwh"] >= 8 * 0.53 * 700 * 2.0 * 1.3 / 1000


def test_every_site_of_three_regions_has_the_same_sourced_host_power() -> None:
    s = sim.load(EXAMPLES / "three-regions.toml")
    assert all(site.host_w_per_gpu == 575 for site in s.sites)
    r = sim.run(s, analytic=True)
    by_name = {x["name"]: x for x in r["sites"]}
    riyadh, london = by_name["me-riyadh-1"], by_name["eu-london-1"]  # 256 GPUs each
    assert riyadh["host_w_source"] == "scenario" and riyadh["host_w_per_gpu"] == 575
    # up GPUs draw at least their host power (availability 50000 / 50008 h)
    assert riyadh["energy_kwh"] >= 256 * 575 * 24 * 1.3 / 1000 * 0.999
    assert riyadh["energy_kwh"] > 0.6 * london["energy_kwh"]  # not a third of a same-size site

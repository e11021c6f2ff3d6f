"""A 10 MW site worked by hand: every step of the arithmetic, with the assumptions stated here."""

from __future__ import annotations

import math

import pytest

from noor import perf
from noor.plan import assumptions, mix
from noor.plan.errors import PlanError
from noor.plan.site import plan_site
from noor.sim import analytic

# The stated assumptions of the hand-worked case (overrides of the packaged ones).
STATED = {
    "pue.liquid": 1.25,
    "it.server_per_accelerator": 1.5,
    "it.it_per_server": 1.2,
    "it.storage_of_network_storage": 0.5,
    "it.average_draw": 1.0,
    "node.chips": 8,
    "rack_kw.liquid": 100,
    "serve.utilisation": 0.8,
    "serve.max_chips_per_request": 1,
    "chip_price_usd.b200": 40_000,
    "capex.server_per_accelerator_price": 1.25,
    "capex.network_storage_of_servers": 0.2,
    "capex.facility_usd_per_mw": 10_000_000,
    "life.accelerator_years": 4,
    "life.facility_years": 20,
    "opex.of_capex_per_year": 0.05,
    "power.usd_per_kwh": 0.10,
}
ONE_CLASS = mix.from_dict({"classes": [{"name": "clip", "model": "wan2.1-t2v-1.3b", "width": 832, "height": 480,
                                        "frames": 81, "share": 1.0}]})


def test_ten_mw_by_hand() -> None:
    a = assumptions.resolve(STATED)
    site = plan_site(10, "b200", ONE_CLASS, a, "liquid")
    approx = pytest.approx

    # 1. facility -> IT: 10 MW / PUE 1.25
    it_mw = 10 / 1.25  # 8 MW
    assert site.power.it_mw == approx(it_mw)
    assert site.power.cooling_and_losses_mw == approx(10 - 8)
    # 2. IT -> accelerators: IT = accelerators x 1.5 (servers) x 1.2 (switches, storage)
    acc_mw = 8 / (1.5 * 1.2)  # 4.444 MW
    assert site.power.accelerators_mw == approx(acc_mw)
    assert site.power.hosts_mw == approx(acc_mw * 0.5)
    assert site.power.network_mw + site.power.storage_mw == approx(8 - acc_mw * 1.5)
    assert site.power.storage_mw == approx((8 - acc_mw * 1.5) / 2)
    # 3. chips: 4,444,444 W / 1000 W (B200 TDP from the catalog) = 4444 chips -> 555 whole 8-chip servers
    assert site.hardware.chip_tdp_w == 1000
    assert site.hardware.nodes == math.floor(4444 / 8) == 555
    assert site.hardware.chips == 555 * 8 == 4440
    # 4. racks: a server is 8 x 1 kW x 1.5 = 12 kW; floor(100 / 12) = 8 per rack; ceil(555 / 8) = 70
    assert site.hardware.node_kw == approx(12)
    assert site.hardware.nodes_per_rack == 8
    assert site.hardware.racks == 70
    assert site.hardware.network_storage_racks == math.ceil(1333.33 / 100)  # 14
    used_mw = 4440 * 1000 * 1.5 * 1.2 * 1.25 / 1e6  # 9.99 MW drawn by what was bought
    assert site.power.used_facility_mw == approx(used_mw)
    # 5. videos/day: 4440 one-chip servers busy 80% of the time, each video takes the perf model's latency
    latency_s = perf.predict("wan2.1-t2v-1.3b", "b200", perf.Shape(832, 480, 81), perf.ParallelPlan(gpus=1)).latency_s
    assert latency_s is not None
    videos_per_day = 0.8 * 4440 / latency_s * 86_400
    assert site.videos_per_day == approx(videos_per_day, rel=1e-9)
    assert site.images_per_day == 0
    # 6. energy: 9.99 MW all day = 239,760 kWh
    kwh_per_day = used_mw * 1000 * 24
    assert site.cost.energy_kwh_per_day == approx(kwh_per_day)
    # 7. money: servers (chips x $40k x 1.25) + 20% network/storage over 4 years; $10M/MW facility over 20 years;
    #    energy at $0.10/kWh; opex 5% of capex a year
    servers = 4440 * 40_000 * 1.25
    network_storage = servers * 0.2
    facility = 10 * 10_000_000
    capex = servers + network_storage + facility
    per_day = (servers + network_storage) / (4 * 365) + facility / (20 * 365) + kwh_per_day * 0.10 + capex * 0.05 / 365
    assert site.cost.capex_usd == approx(capex)
    assert site.cost.total_per_day_usd == approx(per_day)
    kwh_per_video, usd_per_video = site.per_item(video=True)
    assert kwh_per_video == approx(kwh_per_day / videos_per_day)
    assert usd_per_video == approx(per_day / videos_per_day)
    doc = site.to_dict()
    assert doc["output"]["usd_per_video"] == approx(per_day / videos_per_day)


def test_each_class_keeps_its_slo_and_is_at_its_limit() -> None:
    """Small pools where the p95 wait binds: noor.sim.analytic agrees the SLO holds, and 5% more traffic breaks it."""
    a = assumptions.resolve()
    site = plan_site(0.5, "h100-sxm", mix.load(), a, "air")
    cap = a.num("serve.utilisation")
    limited = []
    for c in site.classes:
        stats = analytic.pool_stats(c.arrival_per_s, c.latency_s, c.servers, a.num("serve.service_cv2"),
                                    a.num("serve.arrival_cv2"))
        budget = c.request.slo_wait_p95_s if c.request.slo_wait_p95_s is not None else \
            (c.request.slo_e2e_p95_s or math.inf) - c.latency_s
        assert stats.utilisation <= cap + 1e-9 and stats.wait_p95_s <= budget + 1e-6, c.request.name
        busier = analytic.pool_stats(c.arrival_per_s * 1.05, c.latency_s, c.servers, a.num("serve.service_cv2"),
                                     a.num("serve.arrival_cv2"))
        limited.append(busier.utilisation > cap or busier.wait_p95_s > budget)
    assert any(limited)  # the fleet's rate is set by its tightest class


def test_mix_classes_split_chips_and_count_images_apart() -> None:
    site = plan_site(20, "b200", mix.load(), assumptions.resolve(), "liquid")
    assert sum(c.chips for c in site.classes) <= site.hardware.chips
    kinds = {c.request.name: c.request.is_video for c in site.classes}
    assert site.videos_per_day == pytest.approx(sum(c.per_day for c in site.classes if kinds[c.request.name]))
    assert site.images_per_day == pytest.approx(sum(c.per_day for c in site.classes if not kinds[c.request.name]))
    total = 86_400 * sum(c.arrival_per_s for c in site.classes)
    for c in site.classes:  # one arrival stream split by share
        assert c.per_day == pytest.approx(total * c.request.share)


def test_air_cooling_uses_its_own_pue_and_rack_limit() -> None:
    a = assumptions.resolve()
    air = plan_site(10, "h100-sxm", ONE_CLASS, a, "air")
    liquid = plan_site(10, "h100-sxm", ONE_CLASS, a, "liquid")
    assert air.power.pue == a["pue.air"] and liquid.power.pue == a["pue.liquid"]
    assert air.hardware.rack_kw == a["rack_kw.air"] and air.hardware.chips < liquid.hardware.chips
    assert air.hardware.nodes_per_rack == math.floor(a.num("rack_kw.air") / air.hardware.node_kw)


def test_too_little_power_names_the_field() -> None:
    with pytest.raises(PlanError) as err:
        plan_site(0.005, "b200", ONE_CLASS, assumptions.resolve())
    assert err.value.field == "power_mw" and "too small for one 8-chip b200 server" in str(err.value)


def test_derived_pue_is_listed_with_its_value() -> None:
    doc = plan_site(10, "b200", ONE_CLASS, assumptions.resolve({"pue.climate_adder": 0.05}), "air").to_dict()
    pue = next(e for e in doc["inputs"]["assumptions"] if e["key"] == "pue")
    assert pue["value"] == pytest.approx(1.45 + 0.05) == doc["power"]["pue"]
    assert pue["source"] == "derived: pue.air (1.45) + pue.climate_adder (0.05)"


def test_every_class_gets_a_server_or_the_site_is_too_small() -> None:
    two = mix.from_dict({"classes": [{"model": "flux.1-dev", "frames": 1, "share": 0.9},
                                     {"model": "wan2.1-t2v-1.3b", "share": 0.1}]})
    a = assumptions.resolve({"node.chips": 1})
    small = plan_site(0.006, "b200", two, a)  # 2 chips: one each, even though flux brings little work
    assert [c.servers for c in small.classes] == [1, 1] and small.videos_per_day > 0
    with pytest.raises(PlanError) as err:
        plan_site(0.0025, "b200", two, a)  # 1 chip for 2 classes
    assert err.value.field == "power_mw" and "too small for the mix" in str(err.value)

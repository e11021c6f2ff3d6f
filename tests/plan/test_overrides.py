"""Overrides flow through: named flags, --set, an assumptions file; each shows as "override" in every report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from noor.plan import assumptions

BASE = ["site", "--power-mw", "10", "--chip", "b200", "--json"]


def _doc(noor_plan: Callable[..., Any], *extra: str) -> dict[str, Any]:
    run = noor_plan(*BASE, *extra)
    assert run.code == 0, run.stderr
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def _sources(doc: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["source"] for a in doc["inputs"]["assumptions"]}


def test_every_listed_assumption_has_a_source_and_a_unit() -> None:
    for entry in assumptions.resolve().listed(["b200"]):
        assert entry.source and entry.unit, entry.key
    listed = {e.key for e in assumptions.resolve().listed(["b200"])}
    assert {"pue.air", "pue.liquid", "it.server_per_accelerator", "rack_kw.liquid", "chip_tdp_w.b200",
            "chip_price_usd.b200", "power.usd_per_kwh"} <= listed
    assert "chip_tdp_w.h100-sxm" not in listed  # only the chips in the plan
    assert "chips.toml" in assumptions.resolve().entry("chip_tdp_w.b200").source


def test_named_flags_change_the_numbers_and_say_override(noor_plan: Callable[..., Any]) -> None:
    base = _doc(noor_plan)
    doc = _doc(noor_plan, "--pue", "1.5", "--power-price", "0.2", "--life-years", "3", "--utilisation", "0.5")
    src = _sources(doc)
    assert src["pue"] == src["power.usd_per_kwh"] == src["life.accelerator_years"] == "override"
    assert src["serve.utilisation"] == "override" and _sources(base)["serve.utilisation"] != "override"
    assert doc["inputs"]["overrides"] == {"pue": 1.5, "power.usd_per_kwh": 0.2, "life.accelerator_years": 3.0,
                                          "serve.utilisation": 0.5}
    assert doc["power"]["it_mw"] == pytest.approx(10 / 1.5)
    assert doc["cost"]["energy_per_day_usd"] == pytest.approx(doc["cost"]["energy_kwh_per_day"] * 0.2)
    servers = doc["cost"]["servers_usd"] + doc["cost"]["network_storage_usd"]
    facility = doc["cost"]["facility_usd"]
    life_fac = next(a["value"] for a in doc["inputs"]["assumptions"] if a["key"] == "life.facility_years")
    assert doc["cost"]["capex_per_day_usd"] == pytest.approx(servers / (3 * 365) + facility / (life_fac * 365))
    assert max(c["utilisation"] for c in doc["classes"]) <= 0.5 + 1e-9


def test_set_and_file_overrides(noor_plan: Callable[..., Any], tmp_path: Path) -> None:
    doc = _doc(noor_plan, "--set", "pue.liquid=1.1", "--set", "chip_price_usd.b200=50000")
    assert doc["power"]["pue"] == pytest.approx(1.1) and doc["cost"]["chip_price_usd"] == 50_000
    assert _sources(doc)["pue.liquid"] == "override"
    entry = next(a for a in doc["inputs"]["assumptions"] if a["key"] == "pue.liquid")
    assert entry["default"] == assumptions.resolve().entry("pue.liquid").default
    f = tmp_path / "mine.toml"
    f.write_text('[assumptions]\n"rack_kw.liquid" = 60\nit.server_per_accelerator = 1.8\n')
    doc = _doc(noor_plan, "--assumptions", str(f))
    assert doc["hardware"]["rack_kw"] == 60 and doc["hardware"]["node_kw"] == pytest.approx(8 * 1.0 * 1.8)
    assert doc["hardware"]["nodes_per_rack"] == 60 // 14  # 14.4 kW servers
    # a flag beats the file for the same key
    f.write_text('[assumptions]\n"pue" = 1.4\n')
    assert _doc(noor_plan, "--assumptions", str(f), "--pue", "1.3")["power"]["pue"] == pytest.approx(1.3)


def test_climate_adder_moves_the_derived_pue(noor_plan: Callable[..., Any]) -> None:
    doc = _doc(noor_plan, "--set", "pue.climate_adder=0.1")
    assert doc["power"]["pue"] == pytest.approx(assumptions.resolve().num("pue.liquid") + 0.1)


def test_reports_carry_the_resolved_inputs(noor_plan: Callable[..., Any], tmp_path: Path) -> None:
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    run = noor_plan("site", "--power-mw", "10", "--chip", "b200", "--set", "rack_kw.liquid=77", "--html", str(html),
                    "--markdown", str(md))
    assert run.code == 0, run.stderr
    text, page = md.read_text(), html.read_text()
    assert text == run.stdout
    for report in (text, page):
        assert "rack_kw.liquid" in report and "override" in report and "77" in report
        assert "epoch-website.web.app/data-insights/gpus-power-usage-in-ai-data-centers" in report
        assert "wan2.1-t2v-1.3b" in report  # the mix
    assert page.count("<svg") >= 2 and "<script" not in page and "http://www.w3.org/2000/svg" in page

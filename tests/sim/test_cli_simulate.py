from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"


def noor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "noor.cli", "simulate", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_run_prints_tables_and_writes_json_with_the_resolved_scenario(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    run = noor("run", str(EXAMPLES / "three-regions.toml"), "--json", str(out), "--set", "horizon_h=3",
               "--set", "sites[0].gpus=256")
    assert run.returncode == 0, run.stderr
    for word in ("per class", "image-1k", "wan-720p", "me-riyadh", "ksa-sovereign", "utilisation", "SLO met"):
        assert word in run.stdout
    data = json.loads(out.read_text())
    assert data["mode"] == "event" and data["scenario"]["horizon_h"] == 3
    assert data["scenario"]["sites"][0]["gpus"] == 256 and data["resolved_sites"][0]["gpus"] == 256
    assert data["fleet"]["completed"] == data["fleet"]["jobs"] > 0
    assert {c["name"] for c in data["classes"]} == {"image-1k", "wan-480p", "wan-720p"}
    assert "simulating" in run.stderr  # the progress bar


@pytest.mark.slow
def test_seed_changes_the_draws_and_json_to_stdout() -> None:
    base = ["run", str(EXAMPLES / "three-regions.toml"), "--json", "-", "--set", "horizon_h=1"]
    a, b, c = noor(*base, "--seed", "1"), noor(*base, "--seed", "1"), noor(*base, "--seed", "2")
    ja, jb, jc = (json.loads(x.stdout) for x in (a, b, c))
    assert ja["fleet"] == jb["fleet"] and ja["fleet"]["jobs"] != jc["fleet"]["jobs"]


def test_analytic_mode(tmp_path: Path) -> None:
    run = noor("run", str(EXAMPLES / "site-150mw.toml"), "--analytic", "--json", str(tmp_path / "a.json"))
    assert run.returncode == 0, run.stderr
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["mode"] == "analytic" and data["fleet"]["gpus"] == 67_144
    assert 0.3 < data["fleet"]["utilisation"] < 0.9


@pytest.mark.slow
def test_bad_scenarios_are_one_line_naming_the_key_and_value(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    text = (EXAMPLES / "three-regions.toml").read_text()
    bad.write_text(text.replace("requests_per_h = 1000", "requests_per_h = -1000"))
    run = noor("run", str(bad))
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "tenants[1].requests_per_h" in run.stderr and "-1000" in run.stderr
    bad.write_text(text.replace('timezone = "Asia/Riyadh"', 'timezone = "Asia/Riyadh"\ncolour = "green"'))
    run = noor("run", str(bad))
    assert run.returncode == 2 and "regions.me-riyadh.colour: unknown key (value 'green')" in run.stderr
    bad.write_text(text.replace('regions = ["me-riyadh"]', 'regions = ["mars"]'))
    run = noor("run", str(bad))
    assert run.returncode == 2 and "tenants[2].regions: unknown region 'mars'" in run.stderr
    run = noor("run", str(EXAMPLES / "three-regions.toml"), "--set", "sites[0].chip=h900")
    assert run.returncode == 2 and "sites[0].chip: unknown chip 'h900'" in run.stderr
    run = noor("run", str(EXAMPLES / "three-regions.toml"), "--set", "gpus")
    assert run.returncode == 2 and "--set" in run.stderr
    run = noor("run", str(tmp_path / "none.toml"))
    assert run.returncode == 2 and "no such file" in run.stderr

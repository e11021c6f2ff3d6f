from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from noor.sim import sweep as sweeps
from tests.sim.conftest import scenario_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"


def test_split_and_grid() -> None:
    assert sweeps.split_values('fifo, sjf') == ["fifo", "sjf"]
    assert sweeps.split_values('["us-west", "eu-london"],["us-west"]') == ['["us-west", "eu-london"]', '["us-west"]']
    assert sweeps.grid({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


def test_sweep_runs_points_in_processes_in_grid_order() -> None:
    data = scenario_dict(horizon_h=1.0)
    rows = sweeps.sweep(data, {"sites[0].gpus": [4, 16], "scheduling.policy": ["fifo", "sjf"]}, jobs=2)
    assert [(r["sites[0].gpus"], r["scheduling.policy"]) for r in rows] == [
        (4, "fifo"), (4, "sjf"), (16, "fifo"), (16, "sjf")]
    assert [r["gpus"] for r in rows] == [12, 12, 24, 24]
    # fewer GPUs, same traffic: busier, and waits no shorter
    assert rows[0]["utilisation"] > rows[2]["utilisation"] and rows[0]["wait_p95_s"] >= rows[2]["wait_p95_s"]
    # same point alone in this process: the same numbers
    alone = sweeps.run_point(data, {"sites[0].gpus": 4, "scheduling.policy": "sjf"}, False)
    assert alone == rows[1]


def test_a_bad_point_is_named_before_anything_runs() -> None:
    with pytest.raises(sweeps.SweepError, match=r"--set sites\[0\]\.gpus=-1: sites\[0\]\.gpus"):
        sweeps.sweep(scenario_dict(), {"sites[0].gpus": [4, -1]})


@pytest.mark.slow
def test_cli_sweep_table_json_and_ray_missing(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    cmd = [sys.executable, "-m", "noor.cli", "simulate", "sweep", str(EXAMPLES / "three-regions.toml")]
    run = subprocess.run([*cmd, "--set", "scheduling.policy=fifo,fair-share", "--set", "horizon_h=1", "--analytic",
                          "--jobs", "2", "--json", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert "fair-share" in run.stdout and "2 points" in run.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["scheduling.policy"] for r in rows] == ["fifo", "fair-share"]
    run = subprocess.run([*cmd, "--set", "seed"], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2 and "--set" in run.stderr


def test_ray_missing_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray is an extra: without it, --ray says how to get it (the run on a real cluster is in tests/runtime)."""
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(sweeps.SweepError) as err:
        sweeps.sweep(scenario_dict(horizon_h=1.0), {"seed": [1, 2]}, ray=True)
    assert str(err.value) == "--ray: Ray is not installed (pip install 'noor[ray]'); without --ray, local processes"

"""Bad input: one line, exit 2, naming the field and the value. Never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize(
    ("args", "starts", "contains"),
    [
        (["site", "--power-mw", "-5", "--chip", "b200"], "--power-mw: must be > 0 MW", "-5"),
        (["site", "--power-mw", "10", "--chip", "b2000"], "--chip: unknown chip; valid: a100-80gb, b200", "'b2000'"),
        (["site", "--power-mw", "10", "--chip", "b200", "--pue", "0.9"], "--pue: a PUE must be >= 1", "0.9"),
        (["site", "--power-mw", "10", "--chip", "b200", "--set", "pue.air=0.7"], "--set pue.air: a PUE must be >= 1",
         "0.7"),
        (["site", "--power-mw", "10", "--chip", "b200", "--cooling", "oil"], "--cooling: must be one of air, liquid",
         "'oil'"),
        (["site", "--power-mw", "10", "--chip", "b200", "--utilisation", "1.5"], "--utilisation: must be in (0, 1]",
         "1.5"),
        (["site", "--power-mw", "10", "--chip", "b200", "--set", "warp=9"], "--set warp: unknown assumption", "warp"),
        (["site", "--power-mw", "10", "--chip", "b200", "--set", "pue.air"], "--set: must be key=value", "pue.air"),
        (["chips", "--power-mw", "0"], "--power-mw: must be > 0 MW", "0"),
        (["chips", "--power-mw", "10", "--chips", "b200,x9"], "--chips: unknown chip", "'x9'"),
        (["optimise", "--site", "a=-3"], "--site: must be > 0 MW", "-3"),
        (["optimise", "--site", "a=10", "--objective", "min-cost"], "--demand: min-cost needs a demand", "None"),
        (["growth", "nope.toml"], "SCENARIO: no such file", "nope.toml"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(noor_plan: Callable[..., Any], args: list[str], starts: str,
                                                contains: str) -> None:
    run = noor_plan(*args)
    assert run.code == 2, (run.stdout, run.stderr)
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith(f"noor: error: {starts}"), run.stderr
    assert contains in run.stderr


def test_mix_shares_must_sum_to_one(noor_plan: Callable[..., Any], tmp_path: Path) -> None:
    mix = tmp_path / "mix.toml"
    mix.write_text('[[classes]]\nmodel = "flux.1-dev"\nframes = 1\nshare = 0.5\n\n'
                   '[[classes]]\nmodel = "wan2.1-t2v-1.3b"\nshare = 0.3\n')
    run = noor_plan("site", "--power-mw", "10", "--chip", "b200", "--mix", str(mix))
    assert run.code == 2 and run.stderr.count("\n") == 1
    assert "mix.classes[*].share: shares must sum to 1, got '0.5 + 0.3 = 0.8'" in run.stderr


def test_mix_unknown_model_and_bad_field(noor_plan: Callable[..., Any], tmp_path: Path) -> None:
    mix = tmp_path / "mix.toml"
    mix.write_text('[[classes]]\nmodel = "sora"\nshare = 1.0\n')
    run = noor_plan("site", "--power-mw", "10", "--chip", "b200", "--mix", str(mix))
    assert run.code == 2 and "mix.classes[0].model: unknown model; valid:" in run.stderr and "'sora'" in run.stderr
    mix.write_text('[[classes]]\nmodel = "flux.1-dev"\nshare = 1.0\nwidth = -4\n')
    run = noor_plan("site", "--power-mw", "10", "--chip", "b200", "--mix", str(mix))
    assert run.code == 2 and "mix.classes[0].width: must be a positive integer, got -4" in run.stderr


def test_scenario_errors_name_the_phase_field(noor_plan: Callable[..., Any], tmp_path: Path) -> None:
    sc = tmp_path / "s.toml"
    sc.write_text('[[phase]]\nmonth = 0\n[[phase.build]]\npower_mw = -1\nchip = "b200"\n'
                  "[demand]\nmonth = [0]\nvideos_per_day = [1]\n")
    run = noor_plan("growth", str(sc))
    assert run.code == 2 and "phase[0].build[0].power_mw: must be > 0 MW, got -1" in run.stderr
    sc.write_text('[[phase]]\nmonth = 0\n[[phase.build]]\npower_mw = 5\nchip = "b200"\n'
                  "[demand]\nmonth = [0, 0]\nvideos_per_day = [1, 2]\n")
    run = noor_plan("growth", str(sc))
    assert run.code == 2 and "demand.month: must be strictly increasing" in run.stderr

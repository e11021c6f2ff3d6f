from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from noor.config import PUBLISHED_DIR

SHARED = PUBLISHED_DIR


def noor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noor.cli", "perf", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_predict_json_has_the_fields_and_a_stage_breakdown() -> None:
    args = "--model wan2.1-t2v-14b --chip h100-sxm --gpus 8 --strategy ulysses --width 1280 --height 720"
    run = noor("predict", *args.split(), "--frames", "81", "--steps", "50", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    for key in ("latency_s", "peak_memory_gb", "energy_j", "flops", "fits"):
        assert key in data
    assert data["fits"] is True and data["degrees"]["ulysses"] == 8
    assert set(data["stages"]) == {"text_encoder", "denoise", "vae_decode"}


def test_unknown_model_is_one_line_naming_the_option_and_the_valid_ids() -> None:
    run = noor("predict", "--model", "sora", "--chip", "h100-sxm")
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert run.stderr.startswith("noor: error: --model: unknown model") and "wan2.1-t2v-14b" in run.stderr


def test_bad_values_name_their_option() -> None:
    run = noor("predict", "--model", "flux.1-dev", "--chip", "h100-sxm", "--width", "0")
    assert run.returncode == 2 and "--width" in run.stderr and "0" in run.stderr
    run = noor("predict", "--model", "flux.1-dev", "--chip", "h100-sxm", "--gpus", "2", "--strategy", "sideways")
    assert run.returncode == 2 and "--strategy" in run.stderr and "sideways" in run.stderr
    run = noor("predict", "--model", "flux.1-dev", "--chip", "nope")
    assert run.returncode == 2 and "--chip" in run.stderr


def test_compare_prints_a_table_of_chips() -> None:
    run = noor("compare", "--model", "flux.1-dev", "--chips", "h100-sxm,a100-80gb,mi300x")
    assert run.returncode == 0, run.stderr
    assert all(c in run.stdout for c in ("h100-sxm", "a100-80gb", "mi300x"))


def test_check_prints_every_row_and_the_error_summary() -> None:
    run = noor("check", str(SHARED / "mlperf_sdxl.csv"))
    assert run.returncode == 0, run.stderr
    assert "h100-sxm" in run.stdout and "median absolute error" in run.stdout and "p90" in run.stdout
    missing = noor("check", "no-such.csv")
    assert missing.returncode == 2 and "CSV" in missing.stderr


@pytest.mark.slow
def test_measure_writes_the_cpu_local_cache(tmp_path: Path) -> None:
    env = {**os.environ, "NOOR_DATA_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "noor.cli", "perf", "measure", "--threads", "1"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "perf" / "cpu-local.json").read_text())
    assert record["threads"] == 1 and record["linear_tflops"] > 0 and "1 threads" in run.stdout
    bad = noor("measure", "--threads", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("noor: error: --threads")

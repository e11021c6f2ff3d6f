from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from noor.config import PUBLISHED_DIR

SHARED = PUBLISHED_DIR


Noor = Callable[..., tuple[int, str, str]]  # conftest's `noor`: `noor ARGS` in this process


def noor_process(*args: str) -> subprocess.CompletedProcess[str]:
    """`noor perf ARGS` as its own process, as the shell runs it."""
    return subprocess.run(
        [sys.executable, "-m", "noor.cli", "perf", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_predict_json_has_the_fields_and_a_stage_breakdown(noor: Noor) -> None:
    args = "--model wan2.1-t2v-14b --chip h100-sxm --gpus 8 --strategy ulysses --width 1280 --height 720"
    code, out, err = noor("perf", "predict", *args.split(), "--frames", "81", "--steps", "50", "--json")
    assert code == 0, err
    data = json.loads(out)
    for key in ("latency_s", "peak_memory_gb", "energy_j", "flops", "fits"):
        assert key in data
    assert data["fits"] is True and data["degrees"]["ulysses"] == 8
    assert set(data["stages"]) == {"text_encoder", "denoise", "vae_decode"}


def test_unknown_model_is_one_line_naming_the_option_and_the_valid_ids() -> None:
    run = noor_process("predict", "--model", "sora", "--chip", "h100-sxm")
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert run.stderr.startswith("noor: error: --model: unknown model") and "wan2.1-t2v-14b" in run.stderr


def test_bad_values_name_their_option(noor: Noor) -> None:
    code, _, err = noor("perf", "predict", "--model", "flux.1-dev", "--chip", "h100-sxm", "--width", "0")
    assert code == 2 and "--width" in err and "0" in err
    args = ["--model", "flux.1-dev", "--chip", "h100-sxm", "--gpus", "2", "--strategy", "sideways"]
    code, _, err = noor("perf", "predict", *args)
    assert code == 2 and "--strategy" in err and "sideways" in err
    code, _, err = noor("perf", "predict", "--model", "flux.1-dev", "--chip", "nope")
    assert code == 2 and "--chip" in err


def test_compare_prints_a_table_of_chips(noor: Noor) -> None:
    code, out, err = noor("perf", "compare", "--model", "flux.1-dev", "--chips", "h100-sxm,a100-80gb,mi300x")
    assert code == 0, err
    assert all(c in out for c in ("h100-sxm", "a100-80gb", "mi300x"))


def test_check_prints_every_row_and_the_error_summary(noor: Noor) -> None:
    code, out, err = noor("perf", "check", str(SHARED / "mlperf_sdxl.csv"))
    assert code == 0, err
    assert "h100-sxm" in out and "median absolute error" in out and "p90" in out
    code, _, err = noor("perf", "check", "no-such.csv")
    assert code == 2 and "CSV" in err


@pytest.mark.slow
def test_measure_writes_the_cpu_local_cache(tmp_path: Path) -> None:
    env = {**os.environ, "NOOR_DATA_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "noor.cli", "perf", "measure", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "perf" / "cpu-local.json").read_text())
    assert record["threads"] == 1 and record["linear_tflops"] > 0 and "1 threads" in run.stdout
    bad = noor_process("measure", "--threads", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("noor: error: --threads")


@pytest.fixture
def cached_cpu_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[float], None]]:
    """`cache(load)`: `noor`'s data dir holds a cpu-local record measured under that 1-min load; the machine reads
    busy now, so nothing is measured again (and nothing measures this machine)."""
    from noor.catalog import local
    from tests.perf.conftest import RECORD

    def cache(load: float) -> None:
        limit = local.load_limit(os.cpu_count(), local._key()["threads"])
        record = {**local._key(), **RECORD, "measured_at": 0.0, "load_1m": load, "load_limit": limit}
        path = tmp_path / "data" / "perf" / "cpu-local.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**record, "contended": load > limit}))

    monkeypatch.setattr(local, "load_1m", lambda: 99.0)
    monkeypatch.setattr(local, "measure", lambda: pytest.fail("measured this machine"))
    local._record.cache_clear()
    yield cache
    local._record.cache_clear()


def test_predictions_from_a_record_measured_under_load_say_so_in_one_line(
    noor: Noor, cached_cpu_local: Callable[[float], None]
) -> None:
    cached_cpu_local(62.0)
    warning = f"warning: cpu-local measured under load (1-min load 62.0 on {os.cpu_count()} cores,"
    code, out, err = noor("perf", "world", "noor-world-tiny", "--chip", "cpu-local")
    assert code == 0, err
    assert err.startswith(warning) and err.count("\n") == 1 and "frames/s" in out
    code, out, err = noor("perf", "predict", "--model", "tiny", "--chip", "cpu-local", "--json")
    assert code == 0 and err.startswith(warning) and err.count("\n") == 1
    assert json.loads(out)["chip"] == "cpu-local"  # stdout stays JSON: the line goes to stderr


def test_predictions_from_a_quiet_record_carry_no_warning(
    noor: Noor, cached_cpu_local: Callable[[float], None]
) -> None:
    cached_cpu_local(0.0)
    code, out, err = noor("perf", "world", "noor-world-tiny", "--chip", "cpu-local")
    assert code == 0 and "frames/s" in out and err == ""


def test_calibrate_with_an_unknown_holdout_is_one_line_and_exit_2(tmp_path: Path) -> None:
    run = noor_process("calibrate", "--holdout", "vendor", "--out", str(tmp_path / "c.toml"))
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("noor: error: --holdout: must be one of model, chip") and "vendor" in run.stderr
    assert not (tmp_path / "c.toml").exists()


def test_calibrate_docs_needs_the_section_markers(tmp_path: Path) -> None:
    doc = tmp_path / "perf.md"
    doc.write_text("# no markers\n", encoding="utf-8")
    run = noor_process("calibrate", "--docs", str(doc), "--out", str(tmp_path / "c.toml"))
    assert run.returncode == 2 and "--docs" in run.stderr and run.stderr.count("\n") == 1

from __future__ import annotations

import json
from pathlib import Path

import pytest

from noor import catalog
from noor.catalog import local
from noor.config import PUBLISHED_DIR
from tests.perf.conftest import RECORD

REQUIRED = [
    "h100-sxm", "h200-sxm", "h20", "l20", "l40", "l40s", "l4", "a100-80gb", "rtx-4090", "b200", "gb200", "b300",
    "mi300x", "mi325x", "mi355x", "tpu-v5p", "tpu-v6e", "tpu7x", "trainium2", "gaudi3", "cpu-local",
]  # fmt: skip
SHARED = PUBLISHED_DIR / "chips.csv"


def test_every_required_chip_is_in_the_catalog_and_cites_a_source() -> None:
    assert set(REQUIRED) <= set(catalog.chip_ids())
    for chip in catalog.chips().values():
        assert chip.source and chip.bf16_tflops and chip.hbm_gb, chip.id


def test_datasheet_figures_match_the_shared_chips_csv() -> None:
    import csv

    with SHARED.open(newline="") as f:
        rows = {r["chip"]: r for r in csv.DictReader(f)}
    h100, mi300x = rows["H100 SXM"], rows["MI300X"]
    assert catalog.chip("h100-sxm").bf16_tflops == float(h100["bf16_dense_tflops"])
    assert catalog.chip("h100-sxm").hbm_tbps == float(h100["hbm_tbps"])
    assert catalog.chip("mi300x").hbm_gb == float(mi300x["hbm_gb"])
    assert catalog.chip("mi300x").scaleup_gbps == float(mi300x["scaleup_gbps"])


def test_unknown_chip_lists_the_valid_ids() -> None:
    with pytest.raises(catalog.UnknownId) as err:
        catalog.chip("h100x")
    assert "unknown chip 'h100x'" in str(err.value) and "h100-sxm" in str(err.value)


def test_fp8_falls_back_to_bf16_where_a_chip_has_none() -> None:
    assert catalog.chip("a100-80gb").peak_tflops("fp8") == 312
    assert catalog.chip("h100-sxm").peak_tflops("fp8") == 1978.9


def test_cpu_local_is_read_from_the_cache_without_measuring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cpu-local.json"
    record = {**local._key(), "measured_at": 0.0, **RECORD}
    path.write_text(json.dumps(record))
    monkeypatch.setattr(local, "cache_path", lambda: path)
    monkeypatch.setattr(local, "measure", lambda: pytest.fail("measured although a cached value exists"))
    local._record.cache_clear()
    try:
        chip = catalog.chip("cpu-local")
    finally:
        local._record.cache_clear()
    assert chip.measured and chip.class_tflops == {"linear": 0.05, "attention": 0.04, "conv": 0.03}
    assert chip.peak_tflops("bf16", "conv") == 0.03 and chip.op_overhead_s == 3e-6


@pytest.mark.slow
def test_cpu_local_is_measured_once_and_cached_when_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "perf" / "cpu-local.json"
    monkeypatch.setattr(local, "cache_path", lambda: path)
    real_measure = local.measure
    calls = []
    monkeypatch.setattr(local, "measure", lambda: calls.append(1) or real_measure(seconds_per_kernel=0.02))
    first = local.load_or_measure()
    second = local.load_or_measure()
    assert calls == [1] and first == second and path.exists()
    kinds = ("linear_tflops", "attention_tflops", "conv_tflops", "memory_tbps", "activation_tbps", "attention_call_s")
    assert all(first[k] > 0 for k in kinds)
    assert first["attention_half_tokens"] >= 0 and first["conv_half_channels"] >= 0


def test_cpu_local_is_measured_again_after_a_reboot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache measured before this boot (another load, another VM under the same name) is not trusted."""
    path = tmp_path / "perf" / "cpu-local.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**local._key(), "booted_at": 1, **RECORD}))
    monkeypatch.setattr(local, "cache_path", lambda: path)
    monkeypatch.setattr(local, "_boot_time", lambda: 2)
    monkeypatch.setattr(local, "measure", lambda: {**local._key(), **RECORD, "linear_tflops": 0.5})
    assert local.load_or_measure()["linear_tflops"] == 0.5
    assert json.loads(path.read_text())["booted_at"] == 2


@pytest.mark.parametrize("h", [0.0, 12.0, 50.0, 400.0])
def test_saturation_half_recovers_the_curve_through_two_points(h: float) -> None:
    def rate(n: float) -> float:
        return 100.0 * n / (n + h)

    assert local.saturation_half(16, rate(16), 1024, rate(1024)) == pytest.approx(h, abs=1e-6)


def test_saturation_half_edges() -> None:
    assert local.saturation_half(16, 50.0, 1024, 40.0) == 0.0  # no faster when longer
    assert local.saturation_half(16, 1.0, 1024, 64.0) == float("inf")  # still linear at 1024


def test_local_chip_is_not_listed_unless_asked() -> None:
    assert "cpu-local" not in catalog.chips()

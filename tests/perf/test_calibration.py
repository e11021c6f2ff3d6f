from __future__ import annotations

from noor.config import PUBLISHED_DIR
from noor.perf import calibrate, efficiency, published

DATA = PUBLISHED_DIR


def _all() -> published.Published:
    out = published.Published()
    for name in ("measurements.csv", "mlperf_sdxl.csv"):
        part = published.read_any(DATA / name)
        out.cases += part.cases
        out.skipped += part.skipped
    return out


def test_committed_constants_meet_the_error_target_on_the_published_set() -> None:
    rows = calibrate.check(_all(), efficiency.load())
    stats = calibrate.summary(rows)
    assert stats["rows"] >= 140
    assert stats["median_ape"] <= 0.15
    assert stats["p90_ape"] <= 0.40


def test_constants_file_records_its_provenance() -> None:
    eff = efficiency.load()
    assert eff.provenance["command"] == "noor perf calibrate"
    assert any("measurements.csv" in d for d in eff.provenance["data"])
    assert eff.provenance["median_ape"] <= 0.15


def test_few_parameters_per_chip_family_not_per_row() -> None:
    eff = efficiency.load()
    fitted = sum(len(v) for v in eff.families.values()) + len(calibrate.FITTED_CONSTANTS)
    assert fitted <= 25 < len(_all().cases) / 5
    for table in eff.families.values():
        assert all(0 < v <= 1 for v in table.values())


def test_rows_without_a_stated_shape_are_set_aside_with_a_reason() -> None:
    data = _all()
    reasons = {s.reason for s in data.skipped}
    assert "resolution, frames or steps not stated in the source" in reasons


def test_parallel_degrees_are_read_from_the_descriptions() -> None:
    assert published._degrees("xDiT Ulysses-2 x CFG-2", 4) == (2, 1, 2)
    assert published._degrees("cfg=2 ulysses=1 ring=2 pipefusion=2", 8) == (1, 4, 2)
    assert published._degrees("ulysses_size=8 + dit_fsdp + t5_fsdp", 8) == (8, 1, 1)
    assert isinstance(published._degrees("TP4", 4), str)


def test_per_step_rows_compare_one_step() -> None:
    case = next(c for c in _all().cases if c.per_step)
    one_step = calibrate.predict_case(case, efficiency.load())
    assert one_step < 10  # seconds: one CogVideoX step, not fifty

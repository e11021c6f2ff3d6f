from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


class Machine:
    """What `os.getloadavg` reads and what `measure()` finds, set by the test: no test measures this machine."""

    def __init__(self, load: float) -> None:
        self.load = load
        self.linear_tflops = 0.05
        self.measured = 0

    def measure(self) -> dict[str, Any]:
        self.measured += 1
        # measured long enough ago that only the load decides whether a contended record is measured again
        measured_at = time.time() - 2 * local.RETRY_AFTER_S
        return {**local._key(), **RECORD, "linear_tflops": self.linear_tflops, "measured_at": measured_at}


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Machine]:
    """A 2-core machine measured with 2 threads (a load limit of 0.5), its cpu-local cache in tmp_path."""
    fake = Machine(load=0.0)
    key = {**local._key(), "cpus": 2, "threads": 2}
    monkeypatch.setattr(local, "cache_path", lambda: tmp_path / "perf" / "cpu-local.json")
    monkeypatch.setattr(local, "_key", lambda: key)
    monkeypatch.setattr(local, "load_1m", lambda: fake.load)
    monkeypatch.setattr(local, "measure", fake.measure)
    local._record.cache_clear()
    yield fake
    local._record.cache_clear()


def test_a_measurement_under_load_is_marked_and_measured_again_once_quiet(machine: Machine) -> None:
    machine.load = 6.2
    first = local.load_or_measure()
    assert first["contended"] is True and first["load_1m"] == 6.2 and first["load_limit"] == 0.5
    assert json.loads(local.cache_path().read_text())["contended"] is True  # cached, marked
    assert local.load_or_measure() == first and machine.measured == 1  # still busy: kept, not measured again

    machine.load, machine.linear_tflops = 0.1, 0.35
    quiet = local.load_or_measure()
    assert machine.measured == 2 and quiet["contended"] is False and quiet["linear_tflops"] == 0.35
    assert json.loads(local.cache_path().read_text()) == quiet


def test_a_quiet_measurement_is_cached_as_before(machine: Machine) -> None:
    machine.load = 0.3
    record = local.load_or_measure()
    assert record["contended"] is False and record["load_1m"] == 0.3 and record["threads"] == 2
    machine.load = 6.2  # a quiet record is not measured again because the machine is busy now
    assert local.load_or_measure() == record and machine.measured == 1
    assert local.contention_note(record) is None


def test_this_process_measures_its_contended_record_again_on_a_quiet_use(
    machine: Machine, caplog: pytest.LogCaptureFixture
) -> None:
    machine.load = 6.2
    with caplog.at_level(logging.WARNING, logger="noor.catalog"):
        busy = catalog.chip("cpu-local")
        assert catalog.chip("cpu-local") == busy and machine.measured == 1
    assert [r.getMessage() for r in caplog.records] == [local.contention_note()]  # logged once, for servers
    machine.load, machine.linear_tflops = 0.1, 0.35
    quiet = catalog.chip("cpu-local")
    assert machine.measured == 2 and quiet.class_tflops["linear"] == 0.35 and local.contention_note() is None


def test_the_note_names_the_load_the_cores_and_the_threads(machine: Machine) -> None:
    machine.load = 6.2
    note = local.contention_note(local.load_or_measure())
    assert note is not None and "\n" not in note
    assert note.startswith("cpu-local measured under load (1-min load 6.2 on 2 cores, 2 measuring threads)")


def test_a_contended_record_waits_a_minute_before_it_is_measured_again(machine: Machine) -> None:
    record = {**local._key(), "measured_at": 1000.0, "contended": True}
    machine.load = 0.1
    assert not local.retry_due(record, now=1000.0 + local.RETRY_AFTER_S - 1)
    assert local.retry_due(record, now=1000.0 + local.RETRY_AFTER_S)
    machine.load = 0.6
    assert not local.retry_due(record, now=1000.0 + 10 * local.RETRY_AFTER_S)
    assert not local.retry_due({**record, "contended": False}, now=1e9)


@pytest.mark.parametrize(
    ("cores", "threads", "load", "busy"),
    [
        (2, 2, 0.5, False),  # as many threads as cores: half a core of others' work is tolerated
        (2, 2, 0.51, True),
        (8, 2, 6.5, False),  # six cores free for the others
        (8, 2, 6.6, True),
        (2, 4, 0.6, True),  # more threads than cores: no core is free for anyone else
        (None, 2, 0.4, False),  # os.cpu_count() unknown: taken as the thread count
    ],
)
def test_busy_is_a_load_beyond_the_cores_the_measuring_threads_leave_free(
    cores: int | None, threads: int, load: float, busy: bool
) -> None:
    assert local.is_busy(load, cores, threads) is busy


def test_chips_being_bought_are_in_the_catalog_marked_announced_or_measured() -> None:
    import csv

    chips = catalog.chips()
    assert {"gb300", "mi450"} <= set(chips)
    assert all(c.status in ("measured", "announced") for c in chips.values())
    assert chips["mi450"].status == "announced" and chips["gb300"].status == "measured"
    with SHARED.open(newline="") as f:
        rows = {r["chip"]: r for r in csv.DictReader(f)}
    gb300 = rows["GB300 (per Blackwell Ultra GPU in NVL72)"]
    mi450 = rows["MI450 (MI455X)"]
    assert chips["gb300"].bf16_tflops == float(gb300["bf16_dense_tflops"])
    assert chips["gb300"].hbm_gb == float(gb300["hbm_gb"]) and chips["gb300"].tdp_w == float(gb300["tdp_w"])
    assert chips["mi450"].fp8_tflops == float(mi450["fp8_dense_tflops"])
    assert chips["mi450"].hbm_tbps == float(mi450["hbm_tbps"]) and chips["mi450"].tdp_w is None  # not published
    for chip_id in ("gb300", "mi450"):
        assert all(
            url.split()[0] in chips[chip_id].source
            for url in rows[{"gb300": gb300["chip"], "mi450": mi450["chip"]}[chip_id]]["source_url"].split(" ; ")[:1]
        )
    assert "DERIVED" in chips["mi450"].source  # its BF16 is FP8/2, not a published figure


def test_trainium3_is_a_shipping_part_with_the_neuron_docs_figures() -> None:
    import csv

    with SHARED.open(newline="") as f:
        row = {r["chip"]: r for r in csv.DictReader(f)}["Trainium3"]
    chip = catalog.chip("trainium3")
    assert chip.status == "measured" and chip.family == "trainium"
    assert (chip.bf16_tflops, chip.fp8_tflops) == (float(row["bf16_dense_tflops"]), float(row["fp8_dense_tflops"]))
    assert (chip.hbm_gb, chip.hbm_tbps) == (float(row["hbm_gb"]), float(row["hbm_tbps"]))
    assert chip.tdp_w is None and row["tdp_w"] == ""  # not published
    assert row["source_url"].split(" ; ")[0] in chip.source


def test_scale_out_tiers_are_named_and_cited_or_absent() -> None:
    """A chip's scale-out network (between scale-up domains) is a cited figure with a name, or not there at all."""
    chips = catalog.chips()
    tiered = {c.id for c in chips.values() if c.scaleout_gbps is not None}
    assert {"h100-sxm", "l40", "l40s", "a100-80gb", "gb300", "mi450"} <= tiered
    for chip_id in tiered:
        assert chips[chip_id].scaleout and "scale-out:" in chips[chip_id].source, chip_id
    assert chips["h100-sxm"].scaleout_gbps == 2 * 400 / 8  # 400 Gb/s each way, in GB/s both ways
    assert chips["rtx-4090"].scaleout_gbps is None and chips["rtx-4090"].scaleout is None
    base = chips["h100-sxm"].model_dump(exclude={"scaleout"})
    with pytest.raises(ValueError, match="give scaleout_gbps and scaleout"):
        catalog.Chip(**base)


def test_vera_rubin_is_announced_with_what_nvidia_published_and_without_what_it_did_not() -> None:
    vr = catalog.chip("vr200")
    assert vr.status == "announced" and vr.scaleup_domain == 72 and vr.hbm_gb == 288
    assert vr.tdp_w is None and vr.scaleout_gbps == 400  # power not published; ConnectX-9: 1.6 Tb/s a GPU (announced)
    assert vr.bf16_tflops == pytest.approx(vr.fp8_tflops / 2, abs=1) and "DERIVED" in vr.source  # type: ignore[operator]
    assert "22 TB/s" in vr.source and "13 TB/s" in vr.source  # the sources disagree: both named, the later used

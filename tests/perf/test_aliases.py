"""Published names -> catalog ids (perf/aliases.toml): no row of a catalog chip is skipped for its name."""

from __future__ import annotations

import csv

from noor import catalog
from noor.config import PUBLISHED_DIR
from noor.perf import published


def _all() -> published.Published:
    parts = [published.read_any(PUBLISHED_DIR / n) for n in ("measurements.csv", "mlperf_sdxl.csv")]
    return published.Published([c for p in parts for c in p.cases], [s for p in parts for s in p.skipped])


def test_no_published_row_is_skipped_for_an_unknown_name() -> None:
    skipped = _all().skipped
    assert [s for s in skipped if s.kind == "unknown name"] == []
    # what is skipped for its chip is a chip the catalog does not have, each with the reason
    not_in_catalog = [s for s in skipped if s.kind == "not in catalog"]
    assert len(not_in_catalog) == 11 and all("not in the catalog" in s.reason for s in not_in_catalog)


def test_every_alias_names_a_catalog_id_or_says_why_not() -> None:
    table = published.aliases()
    for name, entry in table["chips"].items():
        assert entry["source"], name
        assert entry["chip"] in catalog.chip_ids() or (entry["chip"] == "" and entry["why"]), name
    models = set(catalog.model_ids())
    for name, entry in table["models"].items():
        assert entry["model"] in models or (entry["model"] == "" and entry["why"]), name


def test_every_name_the_published_tables_use_is_listed() -> None:
    table = published.aliases()
    with (PUBLISHED_DIR / "measurements.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with (PUBLISHED_DIR / "mlperf_sdxl.csv").open(newline="", encoding="utf-8") as f:
        accelerators = {r["accelerator"] for r in csv.DictReader(f)}
    assert {r["gpu"].strip().lower() for r in rows} | {a.strip().lower() for a in accelerators} <= set(table["chips"])
    assert {r["model"].strip().lower() for r in rows} <= set(table["models"])


def test_an_unknown_name_is_set_aside_as_such() -> None:
    chip, skip = published.resolve("chips", "NVIDIA H900-SXM")
    assert chip is None and skip is not None and skip.kind == "unknown name" and "H900" in skip.reason
    assert published.resolve("chips", "  NVIDIA H100-SXM-80GB ") == ("h100-sxm", None)


def test_mlperf_rows_carry_their_round_as_the_software_release() -> None:
    mlperf = [c for c in _all().cases if c.model == "sdxl"]
    assert {c.software for c in mlperf} == {"mlperf-v4.0", "mlperf-v4.1"}
    assert all(c.software is None for c in _all().cases if c.model != "sdxl")

"""`noor plan chips`: every chip ranked by videos/day per MW; chips that cannot serve are marked with why."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from noor import catalog
from noor.plan import assumptions, mix
from noor.plan.chips import rank_chips
from noor.plan.site import plan_site

WAN14 = mix.from_dict({"classes": [{"model": "wan2.1-t2v-14b", "width": 1280, "height": 720, "frames": 81,
                                    "share": 1.0}]})


def test_every_catalog_chip_is_ranked_or_marked(noor_plan: Callable[..., Any]) -> None:
    run = noor_plan("chips", "--power-mw", "20", "--json")
    assert run.code == 0, run.stderr
    rows = json.loads(run.stdout)["ranking"]
    assert sorted(r["chip"] for r in rows) == sorted(catalog.chips())
    ok = [r for r in rows if r["ok"]]
    assert rows[: len(ok)] == ok  # ranked rows first
    per_mw = [r["videos_per_day_per_mw"] for r in ok]
    assert per_mw == sorted(per_mw, reverse=True) and per_mw[0] > 0
    for r in ok:
        assert r["videos_per_day_per_mw"] == r["videos_per_day"] / 20 and r["usd_per_video"] > 0
        assert r["video_e2e_p95_s"] > 0
    marked = {r["chip"]: r["why_not"] for r in rows if not r["ok"]}
    assert "no published power" in marked["tpu-v5p"] and "chip_tdp_w.tpu-v5p" in marked["tpu-v5p"]


def test_a_row_is_the_site_plan_of_that_chip() -> None:
    a = assumptions.resolve()
    ranking = rank_chips(20, WAN14, a, chips=["h100-sxm", "b200"])
    by_chip = {r.chip: r.to_dict() for r in ranking.rows}
    for chip_id in ("h100-sxm", "b200"):
        site = plan_site(20, chip_id, WAN14, a)
        assert by_chip[chip_id]["videos_per_day"] == site.videos_per_day
        assert by_chip[chip_id]["usd_per_video"] == site.per_item(True)[1]


def test_chip_that_cannot_hold_the_model_is_marked_with_why() -> None:
    # one chip per request: Wan 14B at 720p needs ~44 GB; a 24 GB card cannot hold it, an 80 GB one can
    a = assumptions.resolve({"serve.max_chips_per_request": 1})
    ranking = rank_chips(5, WAN14, a, chips=["rtx-4090", "h100-sxm"])
    rows = {r.chip: r for r in ranking.rows}
    assert rows["h100-sxm"].site is not None
    why = rows["rtx-4090"].why_not or ""
    assert rows["rtx-4090"].site is None and "cannot hold wan2.1-t2v-14b" in why and "24 GB" in why
    assert ranking.rows[-1].chip == "rtx-4090"


def test_unpublished_power_can_be_supplied() -> None:
    a = assumptions.resolve({"chip_tdp_w.tpu-v5p": 500, "chip_price_usd.tpu-v5p": 20_000})
    row = rank_chips(5, WAN14, a, chips=["tpu-v5p"]).rows[0]
    assert row.site is not None and row.site.hardware.chip_tdp_w == 500
    assert row.to_dict()["chips"] == row.site.hardware.chips


def test_rank_by_dollars_or_time(noor_plan: Callable[..., Any]) -> None:
    for by, field, higher in (("usd_per_video", "usd_per_video", False), ("time_to_video", "video_e2e_p95_s", False),
                              ("videos_per_mw", "videos_per_day_per_mw", True)):
        run = noor_plan("chips", "--power-mw", "10", "--chips", "h100-sxm,b200,mi300x,l40s", "--by", by, "--json")
        assert run.code == 0, run.stderr
        rows = [r for r in json.loads(run.stdout)["ranking"] if r["ok"]]
        values = [r[field] for r in rows]
        assert values == sorted(values, reverse=higher)
        assert [r["ranks"][by] for r in rows] == [1, 2, 3, 4]
    run = noor_plan("chips", "--power-mw", "10", "--by", "fame")
    assert run.code == 2 and "--by: must be one of videos_per_mw, usd_per_video, time_to_video" in run.stderr

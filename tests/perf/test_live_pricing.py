"""Installed diffusers models priced live: the API gives their generations an ETA and a price from noor.perf,
for the shape the model will draw and its default steps, through the catalog architecture it was added as."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from noor.api.pricing import output_s
from noor.engine.diffusers.installed import InstalledModel
from noor.perf import estimate_task
from tests.api.toy_server import toy_server
from tests.engine.diffusers.toys import toy_dir


@pytest.fixture
def server(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    wan = str(toy_dir(tmp_path_factory, "wan2.1-t2v"))
    # the same toy weights twice: priced as Wan 2.1 1.3B (as `noor models add --perf-id` does), and unpriced;
    # 1 fps keeps a 5 s clip at 5 frames (4k+1)
    common = {"family": "wan2.1-t2v", "path": wan, "dtype": "float32", "fps": 1, "steps": 2}
    entries = [
        InstalledModel(id="wan", perf_id="wan2.1-t2v-1.3b", **common),  # type: ignore[arg-type]
        InstalledModel(id="wan-free", **common),  # type: ignore[arg-type]
    ]
    # workers on L4s (NOOR_WORKER_CHIP=l4): a real 1.3B at 540p needs ~17 GB, more than this CPU's RAM allows
    # next to its text encoder in fp32 (noor.perf says it does not fit cpu-local, and such jobs go unpriced)
    with toy_server(tmp_path, entries, chip="l4") as s:
        yield s


def _create(s: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = s["client"].post("/generations/video", json={"prompt": "a red circle", **body}, headers=s["auth"])
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_an_installed_model_is_priced_for_the_shape_it_draws(server: dict[str, Any]) -> None:
    c, auth = server["client"], server["auth"]
    g = _create(server, model="wan", aspect_ratio="16:9", resolution="540p", duration="5s")
    # the worker draws 960x544 (multiples of 16), 5 frames and the entry's 2 steps: that is what is priced
    task = c.get(f"/generations/{g['id']}", headers=auth).json()
    expected = estimate_task("wan2.1-t2v-1.3b", 960, 544, 5, 2, "l4")
    assert expected.fits and expected.latency_s and expected.cost_usd
    eta_s = expected.latency_s + output_s(960, 544, 5)  # the model's work, then writing the file it drew
    assert g["eta_s"] == pytest.approx(eta_s, rel=1e-3)
    assert g["price_cents"] == pytest.approx(eta_s * expected.usd_per_hour / 36, rel=1e-3) and g["price_cents"] > 0
    assert c.get("/credits", headers=auth).json()["credit_balance"] == pytest.approx(1000.0 - g["price_cents"])
    assert task["eta_s"] == g["eta_s"]
    # more steps cost more: the request's own steps are priced when it gives them (none here: the entry's 2)
    assert estimate_task("wan2.1-t2v-1.3b", 960, 544, 5, 4, "l4").latency_s > expected.latency_s
    assert estimate_task("wan2.1-t2v-1.3b", 960, 540, 5, 2, "l4").latency_s != expected.latency_s  # not the 540


def test_a_model_without_a_catalog_architecture_is_queued_unpriced(server: dict[str, Any]) -> None:
    g = _create(server, model="wan-free", aspect_ratio="1:1", resolution="540p")
    assert g["eta_s"] is None and g["price_cents"] == 0.0 and g["state"] == "queued"

"""POST /v1/plan/site and /v1/plan/chips: tenant-authenticated, the CLI's --json document, 422 naming the field."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from noor.api.app import ApiConfig, create_app
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store

MIX = {"classes": [{"name": "clip", "model": "wan2.1-t2v-1.3b", "width": 832, "height": 480, "frames": 81,
                    "share": 1.0, "slo_wait_p95_s": 60}]}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("plan-api")
    store = Store(f"sqlite:///{tmp / 'noor.db'}")
    tenants.create_tenant(store, "acme")
    app = create_app(store, AssetStore(str(tmp / "assets")), ApiConfig(secret=b"test-secret"))
    with TestClient(app) as client:
        yield {"client": client, "auth": {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}}
    store.close()


def test_site_needs_a_tenant_key(api: dict[str, Any]) -> None:
    r = api["client"].post("/v1/plan/site", json={"power_mw": 10, "chip": "b200"})
    assert r.status_code == 401
    r = api["client"].post("/v1/plan/site", json={"power_mw": 10, "chip": "b200"},
                           headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_site_answers_exactly_the_cli_json(api: dict[str, Any], tmp_path: Path) -> None:
    body = {"power_mw": 10, "chip": "b200", "cooling": "air", "pue": 1.3, "power_price": 0.1,
            "set": {"rack_kw.air": 40}, "mix": MIX}
    r = api["client"].post("/v1/plan/site", json=body, headers=api["auth"])
    assert r.status_code == 200, r.text
    mix = tmp_path / "mix.toml"
    mix.write_text('[[classes]]\nname = "clip"\nmodel = "wan2.1-t2v-1.3b"\nwidth = 832\nheight = 480\nframes = 81\n'
                   "share = 1.0\nslo_wait_p95_s = 60\n")
    run = subprocess.run(
        [sys.executable, "-m", "noor.cli", "plan", "site", "--power-mw", "10", "--chip", "b200", "--cooling", "air",
         "--pue", "1.3", "--power-price", "0.1", "--set", "rack_kw.air=40", "--mix", str(mix), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert run.returncode == 0, run.stderr
    cli = json.loads(run.stdout)
    api_doc = r.json()
    # the mix's source differs (a file vs the request); everything else is the same document
    assert cli["inputs"]["mix"].pop("source") == str(mix)
    assert api_doc["inputs"]["mix"].pop("source") == "request"
    assert api_doc == cli
    overridden = {a["key"]: a for a in api_doc["inputs"]["assumptions"] if a["source"] == "override"}
    assert set(overridden) == {"pue", "power.usd_per_kwh", "rack_kw.air"}
    assert api_doc["power"]["pue"] == 1.3 and api_doc["hardware"]["rack_kw"] == 40


def test_chips_ranks_and_marks(api: dict[str, Any]) -> None:
    body = {"power_mw": 5, "chips": ["b200", "rtx-4090", "tpu-v5p"],
            "mix": {"classes": [{"model": "wan2.1-t2v-14b", "width": 1280, "height": 720, "frames": 81,
                                 "share": 1, "slo_e2e_p95_s": 600}]}}
    r = api["client"].post("/v1/plan/chips", json=body, headers=api["auth"])
    assert r.status_code == 200, r.text
    rows = {row["chip"]: row for row in r.json()["ranking"]}
    assert rows["b200"]["ok"] and rows["b200"]["videos_per_day"] > 0
    assert not rows["tpu-v5p"]["ok"] and "power" in rows["tpu-v5p"]["why_not"]
    # 24 GB holds Wan 14B at 720p only with weights sharded over 8 chips, and that is slower than the SLO
    assert not rows["rtx-4090"]["ok"] and "cannot meet" in rows["rtx-4090"]["why_not"]
    assert r.json()["ranking"][0]["chip"] == "b200"


@pytest.mark.parametrize(
    ("body", "field", "value"),
    [
        ({"power_mw": -5, "chip": "b200"}, "power_mw", "-5"),
        ({"power_mw": 10, "chip": "b2000"}, "chip", "b2000"),
        ({"power_mw": 10, "chip": "b200", "pue": 0.8}, "pue", "0.8"),
        ({"power_mw": 10, "chip": "b200", "set": {"pue.liquid": 0.5}}, "set.pue.liquid", "0.5"),
        ({"power_mw": 10, "chip": "b200", "set": {"nonsense": 1}}, "set.nonsense", "nonsense"),
        ({"power_mw": 10, "chip": "b200", "cooling": "oil"}, "cooling", "oil"),
        ({"power_mw": 10, "chip": "b200", "mix": {"classes": [{**MIX["classes"][0], "share": 0.6}]}},
         "mix.classes[*].share", "0.6 = 0.6"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_value(api: dict[str, Any], body: dict[str, Any], field: str,
                                                     value: str) -> None:
    r = api["client"].post("/v1/plan/site", json=body, headers=api["auth"])
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(f"{field}: ") and value in detail

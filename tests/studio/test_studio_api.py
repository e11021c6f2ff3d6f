"""The studio's server side: its page and files, its JSON routes (options, quote, filtered gallery), its strings."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from noor.api.app import ApiConfig, create_app
from noor.engine.tiny.backend import TinyBackend
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.worker import Worker, WorkerConfig
from noor.studio import STUDIO_DIR

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path, toy_weights: Path) -> Iterator[dict[str, Any]]:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(store, "acme", credits_cents=1000)
    assets = AssetStore(str(tmp_path / "assets"))
    app = create_app(store, assets, ApiConfig(secret=b"test-secret"))
    backend = TinyBackend(toy_weights)
    worker = Worker(store, assets, WorkerConfig(name="w1"), load_backend=lambda model: backend)
    with TestClient(app) as client:
        yield {
            "client": client,
            "store": store,
            "worker": worker,
            "auth": {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"},
        }
    store.close()


def test_page_and_files_are_served_without_shadowing_the_api(server: dict[str, Any]) -> None:
    c = server["client"]
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/studio/js/main.js">' in page.text
    js = c.get("/studio/js/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert c.get("/studio/i18n/ar.json").json()["nav.gallery"] == "المعرض"
    # API paths answer as before: JSON errors, not the studio's files
    missing = c.get("/no/such/route")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert c.get("/studio/nope.js").status_code == 404
    assert c.get("/generations", headers=server["auth"]).json()["count"] == 0
    assert c.get("/dream-machine/v1/generations").status_code == 401
    assert "/" not in c.get("/openapi.json").json()["paths"]


def test_options_list_the_models_sizes_and_chips(server: dict[str, Any]) -> None:
    c = server["client"]
    assert c.get("/v1/studio/options").status_code == 401
    opts = c.get("/v1/studio/options", headers=server["auth"]).json()
    names = {m["name"]: m["model"] for m in opts["models"]}
    assert names["ray-2"] == "tiny" and names["tiny"] == "tiny" and opts["default_model"] == "ray-2"
    assert opts["resolutions"] == ["540p", "720p", "1080p", "4k"] and opts["durations"] == ["5s", "9s"]
    assert "16:9" in opts["aspect_ratios"] and opts["concepts"] == [] and opts["concept_models"] == {}
    assert {"id": "b200", "name": "NVIDIA B200 (HGX)"} in opts["chips"]


@pytest.mark.slow
def test_quote_is_what_create_then_charges_and_stores_nothing(server: dict[str, Any]) -> None:
    c, auth = server["client"], server["auth"]
    body = {"model": "ray-2", "prompt": "دائرة حمراء تتحرك إلى اليسار", "resolution": "720p", "aspect_ratio": "1:1"}
    q = c.post("/v1/studio/quote", json=body, headers=auth)
    assert q.status_code == 200, q.text
    quote = q.json()
    assert (quote["width"], quote["height"], quote["num_frames"], quote["fps"]) == (720, 720, 40, 8)
    assert quote["model"] == "tiny" and quote["eta_s"] > 0 and quote["price_cents"] > 0
    assert c.get("/generations", headers=auth).json()["count"] == 0
    assert c.get("/credits", headers=auth).json()["credit_balance"] == 1000.0
    created = c.post("/generations/video", json=body, headers=auth).json()
    assert (created["eta_s"], created["price_cents"]) == (quote["eta_s"], quote["price_cents"])
    assert c.get("/credits", headers=auth).json()["credit_balance"] == pytest.approx(1000.0 - quote["price_cents"])


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"model": "nope"}, 400, "Unknown model 'nope'; available:"),
        ({"keyframes": {"frame0": {"type": "generation", "id": "gone"}}}, 404, "Generation not found"),
        ({"resolution": "8k"}, 400, "resolution"),
        ({"negative_prompt": "x" * 5001}, 400, "negative_prompt is too long"),
        ({"prompt": ""}, 400, "Prompt is required"),
    ],
)
def test_quote_refuses_what_create_refuses(
    server: dict[str, Any], body: dict[str, Any], status: int, detail: str
) -> None:
    c, auth = server["client"], server["auth"]
    full = {"prompt": "a red circle moves to the left", **body}
    quoted = c.post("/v1/studio/quote", json=full, headers=auth)
    created = c.post("/generations/video", json=full, headers=auth)
    assert quoted.status_code == created.status_code == status
    assert detail in quoted.json()["detail"] and quoted.json() == created.json()


@pytest.mark.slow
def test_negative_prompt_reaches_the_engine_task(server: dict[str, Any]) -> None:
    c, auth = server["client"], server["auth"]
    body = {"prompt": "a red circle moves to the left", "negative_prompt": "  blue squares  "}
    created = c.post("/generations/video", json=body, headers=auth).json()
    assert created["request"]["negative_prompt"] == "  blue squares  "
    job = server["store"].get("acme", created["id"])
    assert job.task["negative_prompt"] == "blue squares"
    assert server["worker"].run_once()
    assert c.get(f"/generations/{created['id']}", headers=auth).json()["state"] == "completed"


@pytest.mark.slow
def test_gallery_filters_by_state_and_prompt_and_pages(server: dict[str, Any]) -> None:
    c, auth = server["client"], server["auth"]
    prompts = ["a red circle moves left", "دائرة حمراء تتحرك", "A RED square grows"]
    ids = [c.post("/generations/video", json={"prompt": p}, headers=auth).json()["id"] for p in prompts]
    assert server["worker"].run_once()  # the oldest first
    got = c.get("/v1/studio/generations", headers=auth).json()
    assert [g["id"] for g in got["generations"]] == ids[::-1] and got["total"] == 3 and got["scanned_all"]
    done = c.get("/v1/studio/generations?state=completed", headers=auth).json()
    assert [g["id"] for g in done["generations"]] == [ids[0]] and done["total"] == 1
    red = c.get("/v1/studio/generations", params={"q": "red"}, headers=auth).json()
    assert [g["id"] for g in red["generations"]] == [ids[2], ids[0]]
    arabic = c.get("/v1/studio/generations", params={"q": "حمراء", "state": "queued"}, headers=auth).json()
    assert [g["id"] for g in arabic["generations"]] == [ids[1]]
    page2 = c.get("/v1/studio/generations?limit=1&offset=1", headers=auth).json()
    assert [g["id"] for g in page2["generations"]] == [ids[1]] and page2["has_more"] and page2["total"] == 3
    bad = c.get("/v1/studio/generations?state=sleeping", headers=auth)
    assert bad.status_code == 422 and "state" in json.dumps(bad.json()["detail"])


def _strings() -> dict[str, dict[str, str]]:
    return {lang: json.loads((STUDIO_DIR / "i18n" / f"{lang}.json").read_text()) for lang in ("en", "ar")}


def test_english_and_arabic_strings_match_and_cover_the_code() -> None:
    strings = _strings()
    en, ar = strings["en"], strings["ar"]
    assert set(en) == set(ar), set(en) ^ set(ar)
    for key in en:
        assert en[key].strip() and ar[key].strip(), key
        assert sorted(re.findall(r"\{\w+\}", en[key])) == sorted(re.findall(r"\{\w+\}", ar[key])), key
    arabic = re.compile(r"[\u0600-\u06FF]")
    untranslated = [k for k in ar if not arabic.search(ar[k]) and k not in ("lang.switch", "planner.usd")]
    assert not untranslated, untranslated
    code = "\n".join(p.read_text() for p in sorted((STUDIO_DIR / "js").glob("*.js")))
    html = (STUDIO_DIR / "index.html").read_text()
    used = set(re.findall(r'\bt\("([\w.]+)"', code)) | set(re.findall(r'data-i18n(?:-label)?="([\w.]+)"', html))
    prefixes = re.findall(r"\bt\(`([\w.]+)\$\{", code)
    assert used - set(en) == set(), "strings used in the code but missing from en.json"
    unused = [k for k in en if k not in used and not any(k.startswith(p) for p in prefixes)]
    assert not unused, f"strings no code uses: {unused}"


def test_every_studio_file_is_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["noor.studio"]
    files = [p.relative_to(STUDIO_DIR).as_posix() for p in STUDIO_DIR.rglob("*") if p.is_file()]
    missing = [f for f in files if not f.endswith((".py", ".pyc")) and not any(fnmatch(f, g) for g in globs)]
    assert not missing and "index.html" in files

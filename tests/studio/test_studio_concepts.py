"""The studio's concept picker in a real browser (#29): on a server with the toy Wan and a toy LoRA registered as a
concept, the picker lists it (EN and AR), offers it only with its model, and a video made with it carries the
concept; once it is removed (none installed) the picker says how to register one."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from noor.config import settings
from noor.engine import concepts
from noor.engine.diffusers import installed
from noor.engine.diffusers.installed import InstalledModel
from tests.conftest import Served
from tests.engine.diffusers.toy_lora import FAMILY, toy_lora
from tests.engine.diffusers.toys import toy_dir
from tests.studio.conftest import DESKTOP, open_page, shoot, sign_in
from tests.studio.test_studio_browser import DONE_MS, wait_completed

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def taught(tmp_path_factory: pytest.TempPathFactory, serve_on: Callable[[Path], Served]) -> Served:
    """`noor serve` whose data dir has the toy Wan (`wan`, 1 fps, 2 steps) and the toy LoRA registered as
    `red_square` (with the words it teaches, as noor-tiny's adapters name them)."""
    data = tmp_path_factory.mktemp("studio-concepts")
    adapter = tmp_path_factory.mktemp("adapter") / "red"
    source = toy_lora(tmp_path_factory)
    adapter.mkdir()
    for name in (concepts.WEIGHT_NAME, concepts.CONFIG_NAME):
        (adapter / name).write_bytes((source / name).read_bytes())
    record = json.loads((adapter / concepts.CONFIG_NAME).read_text())
    (adapter / concepts.CONFIG_NAME).write_text(json.dumps(record | {"words": {"en": ["redsq"], "ar": ["مربع"]}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOOR_DATA_DIR", str(data))
        settings.cache_clear()
        path = str(toy_dir(tmp_path_factory, FAMILY))
        installed.add(InstalledModel(id="wan", family=FAMILY, path=path, dtype="float32", fps=1, steps=2))
        concepts.add("red_square", adapter, description="a red square sliding right")
    settings.cache_clear()
    return serve_on(data)


@pytest.fixture
def taught_page(browser: Any, taught: Served) -> Iterator[Any]:
    yield from open_page(browser, taught, viewport=DESKTOP)


def test_the_picker_lists_the_concept_and_a_video_made_with_it_carries_it(taught_page: Any, taught: Served) -> None:
    page = taught_page
    sign_in(page, taught.key)
    picker = page.get_by_test_id("concepts")
    box = picker.get_by_role("checkbox", name="red square")
    assert box.count() == 1
    text = picker.inner_text()
    assert "on wan" in text and "a red square sliding right" in text and "(teaches en: redsq; ar: مربع)" in text
    # the form's default model (ray-2) runs on noor-tiny: the concept is offered only with its own model
    assert box.is_disabled() and "needs model wan" in text
    page.get_by_label("Model", exact=True).fill("wan")
    box.wait_for(state="visible")
    assert box.is_enabled()
    box.check()
    page.get_by_label("Prompt", exact=True).fill("a red square moves right")
    page.get_by_label("Aspect ratio", exact=True).select_option("1:1")
    page.wait_for_function("() => document.querySelector('[data-testid=quote]').dataset.priceCents !== undefined")
    assert "refused" not in (page.get_by_test_id("quote").get_attribute("class") or "")
    shoot(page, "create-concepts")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/generations/video")) as posted:
        page.get_by_role("button", name="Create video").click()
    assert posted.value.post_data_json["concepts"] == [{"key": "red_square"}]
    gid = wait_completed(page)
    assert json.loads(page.get_by_test_id("request").inner_text())["concepts"] == [{"key": "red_square"}]
    auth = {"Authorization": f"Bearer {taught.key}"}
    made = httpx.get(f"{taught.base}/generations/{gid}", headers=auth, timeout=DONE_MS / 1000).json()
    assert made["state"] == "completed" and made["request"]["concepts"] == [{"key": "red_square"}]
    assert made["model"] == "wan"
    # in Arabic
    page.goto("/")
    page.get_by_role("button", name="العربية").click()
    picker = page.get_by_test_id("concepts")
    assert picker.locator("legend").inner_text() == "المفاهيم"
    assert "على wan" in picker.inner_text()
    shoot(page, "create-concepts-ar")
    page.get_by_role("button", name="English").click()


def test_without_concepts_the_picker_says_how_to_register_one(taught_page: Any, taught: Served) -> None:
    """(Runs after the test above: `noor concepts remove` on the server's data dir, seen at the next page load.)"""
    removed = subprocess.run(
        [sys.executable, "-m", "noor.cli", "concepts", "remove", "red_square"], env=taught.env, capture_output=True
    )
    assert removed.returncode == 0, removed.stderr
    page = taught_page
    sign_in(page, taught.key)
    picker = page.get_by_test_id("concepts")
    assert picker.get_by_role("checkbox").count() == 0
    note = picker.get_by_test_id("concepts-none")
    assert note.inner_text().startswith("No concepts are installed on this server: noor concepts add registers")
    assert note.locator("code").inner_text() == "noor concepts add"

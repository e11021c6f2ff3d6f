"""The studio's Add sound action in a real browser (#29): on a server with the toy Stable Audio Open installed a
clip gets a sound track (a new generation whose video has an AAC stream); on one without an audio model the
refusal says how to add one."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from noor.engine.diffusers import audio
from tests.api.edit_reframe_server import clip
from tests.conftest import Served
from tests.engine.diffusers.toys import toy_dir
from tests.studio.conftest import DESKTOP, open_page, shoot, sign_in
from tests.studio.test_studio_browser import completed_by_id, completed_via_api, made_by, wait_completed

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def sounding(tmp_path_factory: pytest.TempPathFactory, serve_on: Callable[[Path], Served]) -> Served:
    """`noor serve` whose data dir has the toy audio model (2 steps) in its models.toml."""
    data = tmp_path_factory.mktemp("studio-sound")
    toy = toy_dir(tmp_path_factory, "stable-audio-open")
    audio.add(audio.InstalledAudio("sao-toy", "stable-audio-open", str(toy), steps=2), data / "models.toml")
    return serve_on(data)


@pytest.fixture
def sound_page(browser: Any, sounding: Served) -> Iterator[Any]:
    yield from open_page(browser, sounding, viewport=DESKTOP)


def streams(url: str) -> list[str]:
    with av.open(io.BytesIO(httpx.get(url).content)) as container:
        return sorted(s.codec_context.name for s in container.streams)


def short_clip(served: Served, tmp: Path) -> dict[str, Any]:
    """A completed 1 s clip (the toy audio model makes at most 2 s; a created clip is 5 s): an uploaded MP4,
    modified."""
    auth = {"Authorization": f"Bearer {served.key}"}
    data = clip(tmp, frames=8)
    up = httpx.post(f"{served.base}/v1/uploads", headers=auth, files={"file": ("c.mp4", data)})
    assert up.status_code == 201, up.text
    body = {"generation_type": "modify_video", "media": {"url": up.json()["url"]}, "mode": "flex_1",
            "model": "ray-2", "prompt": "a red circle moves to the left"}  # fmt: skip
    made = httpx.post(f"{served.base}/generations/video/modify", json=body, headers=auth)
    assert made.status_code == 201, made.text
    return completed_by_id(served, made.json()["id"])


def test_add_sound_makes_a_clip_with_a_sound_track(sound_page: Any, sounding: Served, tmp_path: Path) -> None:
    source = short_clip(sounding, tmp_path)
    sign_in(sound_page, sounding.key)
    sound_page.goto(f"/#/g/{source['id']}")
    wait_completed(sound_page)
    form = sound_page.get_by_role("form", name="Add sound")
    assert form.get_by_label("Sound of").get_attribute("placeholder") == "a red circle moves to the left"
    form.get_by_label("Sound of").fill("rain on a tin roof")
    _, request = made_by(sound_page, form.get_by_role("button", name="Add sound"), "Sound queued as")
    assert '"generation_type": "add_audio"' in request and '"prompt": "rain on a tin roof"' in request
    video = sound_page.get_by_role("link", name="Download").get_attribute("href")
    assert streams(video) == ["aac", "h264"]
    shoot(sound_page, "sound")


def test_add_sound_without_an_audio_model_says_how_to_add_one(page: Any, served: Served) -> None:
    source = completed_via_api(served, {"prompt": "a blue square falls", "aspect_ratio": "1:1"})
    sign_in(page, served.key)
    page.goto(f"/#/g/{source['id']}")
    wait_completed(page)
    page.get_by_role("form", name="Add sound").get_by_role("button", name="Add sound").click()
    error = page.locator("main .error")
    error.wait_for()
    assert "noor models add" in error.inner_text() and "stable-audio-open" in error.inner_text()
    assert page.url.endswith(source["id"])  # nothing was made

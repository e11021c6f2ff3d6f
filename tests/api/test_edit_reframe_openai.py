"""OpenAI Videos' remix on noor-tiny (#29): an edit of a completed video under the new prompt, through the official
openai SDK against a live server; its refusals OpenAI-shaped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from noor.engine import media
from tests.api.edit_reframe_server import Live, fixtures

# the SDK marks the Sora endpoints deprecated
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")]


live, client = fixtures(
    "openai-remix", lambda live: openai.OpenAI(api_key=live.keys["acme"], base_url=f"{live.base}/v1")
)


def _done(client: openai.OpenAI, video: Any) -> Any:
    deadline = time.monotonic() + 120
    while video.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.3)
        video = client.videos.retrieve(video.id)
    return video


def test_remix_edits_a_completed_video_under_the_new_prompt(client: openai.OpenAI, tmp_path: Path) -> None:
    source = _done(client, client.videos.create(prompt="a red circle moves to the left", seconds="4", size="64x64"))
    assert source.status == "completed" and source.remixed_from_video_id is None
    remix = client.videos.remix(source.id, prompt="a blue circle moves to the left")
    assert remix.status == "queued" and remix.remixed_from_video_id == source.id and remix.id != source.id
    assert (remix.seconds, remix.size, remix.prompt) == ("4", "64x64", "a blue circle moves to the left")
    done = _done(client, remix)
    assert done.status == "completed" and done.remixed_from_video_id == source.id, done.error
    path = tmp_path / "remix.mp4"
    path.write_bytes(client.videos.download_content(done.id).read())
    assert media.video_info(path)[:3] == (32, 64, 64)  # the source's frames and size


def test_remix_refusals_are_openai_shaped(client: openai.OpenAI, live: Live) -> None:
    with pytest.raises(openai.NotFoundError):
        client.videos.remix("no-such-video", prompt="a blue circle")
    queued = live.store.create(  # a model no worker runs: it stays queued
        tenant="acme", model="unserved", request={"model": "sora-2"}, task={"prompt": "x"}, generation_type="video"
    )
    with pytest.raises(openai.BadRequestError) as err:
        client.videos.remix(queued.id, prompt="a blue circle")
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "video_id" and "queued" in body["message"], body
    theirs = live.store.create(tenant="globex", model="unserved", request={}, task={"prompt": "x"})
    with pytest.raises(openai.NotFoundError):
        client.videos.remix(theirs.id, prompt="a blue circle")
    r = httpx.post(f"{live.base}/v1/videos/{queued.id}/remix", json={"prompt": " "}, headers=live.auth())
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text

"""OpenAI Videos' remix, edit and extend on noor-tiny (#29): a remix or an edit (of an upload) is an edit of the
video under the new prompt, an extension continues it from its last frame; through the official openai SDK against a
live server, its refusals OpenAI-shaped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from noor.engine import media
from tests.api.edit_reframe_server import Live, clip, fixtures, png

# the SDK marks the Sora endpoints deprecated
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")]


live, client = fixtures(
    "openai-remix", lambda live: openai.OpenAI(api_key=live.keys["acme"], base_url=f"{live.base}/v1")
)


def _done(client: openai.OpenAI, video: Any) -> Any:
    deadline = time.monotonic() + 120
    while video.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.1)
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


def test_edit_of_an_uploaded_mp4_is_a_remix_of_it(client: openai.OpenAI, live: Live, tmp_path: Path) -> None:
    """`videos.edit` with an MP4 upload: an edit at REMIX_MODE's level, of the upload's size and length."""
    edited = client.videos.edit(prompt="a blue square moves right", video=("clip.mp4", clip(tmp_path), "video/mp4"))
    assert (edited.status, edited.size, edited.seconds, edited.model) == ("queued", "64x48", "1", "sora-2")
    task = live.store.get("acme", edited.id).task
    assert (task["kind"], task["edit_mode"]) == ("edit", "adhere_3")
    assert live.assets.get(task["source"]) == clip(tmp_path)  # the upload, stored as sent
    done = _done(client, edited)
    assert done.status == "completed", done.error
    path = tmp_path / "edited.mp4"
    path.write_bytes(client.videos.download_content(done.id).read())
    assert media.video_info(path)[:3] == (8, 64, 48)


def test_extend_continues_a_video_from_its_last_frame(client: openai.OpenAI, live: Live, tmp_path: Path) -> None:
    """`videos.extend` with an MP4 upload, and by id (JSON): a new segment of `seconds` at the source's size, started
    from the source's last frame as Dream Machine's extend is."""
    extended = client.videos.extend(prompt="it keeps moving", seconds="4", video=("clip.mp4", clip(tmp_path)))
    assert (extended.status, extended.size, extended.seconds) == ("queued", "64x48", "4")
    start = live.store.get("acme", extended.id).task["start"]
    assert start["frame"] == "last" and live.assets.get(start["asset"]) == clip(tmp_path)
    done = _done(client, extended)
    assert done.status == "completed", done.error
    path = tmp_path / "extended.mp4"
    path.write_bytes(client.videos.download_content(done.id).read())
    assert media.video_info(path)[:3] == (32, 64, 48)
    # the SDK's multipart cannot carry `video: {"id": ...}`; a JSON body can
    r = httpx.post(f"{live.base}/v1/videos/extensions", headers=live.auth(),
                   json={"prompt": "and further", "seconds": "8", "video": {"id": done.id}})  # fmt: skip
    assert r.status_code == 200 and r.json()["seconds"] == "8", r.text
    again = live.store.get("acme", r.json()["id"])
    assert again.task["start"] == {"asset": live.store.get("acme", done.id).assets["video"], "frame": "last"}
    assert _done(client, client.videos.retrieve(again.id)).status == "completed"


def test_edit_and_extend_refusals_are_openai_shaped(client: openai.OpenAI, live: Live, tmp_path: Path) -> None:
    queued = live.store.create(  # a model no worker runs: it stays queued
        tenant="acme", model="unserved", request={"model": "sora-2"}, task={"prompt": "x"}, generation_type="video"
    )
    mp4 = ("clip.mp4", clip(tmp_path))
    bad: list[tuple[Any, str, str]] = [
        (lambda: client.videos.edit(prompt="blue", video=("a.png", png())), "video", "is an image"),
        (lambda: client.videos.edit(prompt="blue", video=("a.mp4", b"\0" * 64)), "video", "must be a PNG"),
        (lambda: client.videos.edit(prompt=" ", video=mp4), "prompt", "prompt is required"),
        (lambda: client.videos.extend(prompt="more", seconds="5", video=mp4), "seconds", "one of 4, 8, 12"),  # type: ignore[arg-type]
        (lambda: client.videos.extend(prompt="more", seconds="4", video=("a.png", png())), "video", "is an image"),
    ]
    before, count = live.credits(), len(live.store.page("acme", 100)[0])
    for call, param, said in bad:
        with pytest.raises(openai.BadRequestError) as err:
            call()
        body = err.value.body
        assert isinstance(body, dict) and body["param"] == param and said in body["message"], body
    for route, extra in (("edits", {}), ("extensions", {"seconds": "4"})):
        url = f"{live.base}/v1/videos/{route}"
        r = httpx.post(url, headers=live.auth(), json={"prompt": "x", **extra, "video": {"id": queued.id}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "video" and "queued" in r.text, r.text
        r = httpx.post(url, headers=live.auth(), json={"prompt": "x", **extra, "video": {"id": "video_nope"}})
        assert r.status_code == 404 and r.json()["error"]["code"] == "video_not_found", r.text
        r = httpx.post(url, headers=live.auth(), json={"prompt": "x", **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == "video", r.text
    assert live.credits() == before and len(live.store.page("acme", 100)[0]) == count  # nothing charged or queued

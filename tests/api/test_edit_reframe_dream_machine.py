"""Dream Machine's Modify Video and Reframe (video, image) on noor-tiny (#29): the official lumaai SDK (strict
response validation) end to end against a live server, and the bad inputs as direct calls (400 naming the field
and value, nothing queued, no credits taken)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import httpx
import lumaai
import numpy as np
import pytest
from PIL import Image

from noor.engine import media
from noor.jobs.assets import asset_key
from tests.api.edit_reframe_server import Live, clip, fixtures, png, strict
from tests.api.test_serve_sdks import _wait

pytestmark = pytest.mark.slow


live, client = fixtures("dm-edits", strict(lumaai.LumaAI, "/dream-machine/v1"))


def test_modify_then_reframe_a_video_and_reframe_an_image(client: lumaai.LumaAI, live: Live, tmp_path: Path) -> None:
    # 1. modify an uploaded clip: a new video, its frames and size the source's
    source = live.upload(clip(tmp_path), "clip.mp4")
    g = client.generations.video.modify(
        generation_type="modify_video", media={"url": source}, mode="flex_1", model="ray-2", prompt="a blue square"
    )
    assert g.state == "queued" and g.generation_type == "video" and g.request.generation_type == "modify_video"
    edited = _wait(client, g.id)
    assert edited.state == "completed", edited.failure_reason
    path = tmp_path / "edited.mp4"
    path.write_bytes(httpx.get(edited.assets.video).content)
    assert media.video_info(path)[:3] == (8, 64, 48)
    # an uploaded source has no prompt; a generation's is its prompt, which an adhere or flex edit keeps to (FlowEdit)
    assert live.store.get("acme", edited.id).task["source_prompt"] is None
    again = client.generations.video.modify(
        generation_type="modify_video", media={"url": edited.assets.video}, mode="adhere_1", model="ray-2",
        prompt="a red square",
    )  # fmt: skip
    assert _wait(client, again.id).state == "completed"
    assert live.store.get("acme", again.id).task["source_prompt"] == "a blue square"
    # 2. reframe that completed generation (its own asset URL) to 16:9, at the left edge of the canvas
    g = client.generations.video.reframe(
        generation_type="reframe_video", media={"url": edited.assets.video}, aspect_ratio="16:9",
        model="ray-flash-2", grid_position_x=0,
    )  # fmt: skip
    assert g.request.generation_type == "reframe_video"
    wide = _wait(client, g.id)
    assert wide.state == "completed" and wide.generation_type == "video", wide.failure_reason
    source_frames = media.read_video(path).astype(float)
    path.write_bytes(httpx.get(wide.assets.video).content)
    assert media.video_info(path)[:3] == (8, 86, 48)  # the smallest 16:9 canvas holding 64x48 (even sides)
    error = ((media.read_video(path)[:, :, :64].astype(float) - source_frames) ** 2).mean()
    assert 10 * np.log10(255**2 / error) > 28  # the source's own pixels at x=0 (up to H.264)
    # 3. reframe an image to 9:16, the source resized to half the docs' 1152-wide canvas
    g = client.generations.image.reframe(
        generation_type="reframe_image", media={"url": live.upload(png(), "red.png")}, aspect_ratio="9:16",
        model="photon-1", format="png", resized_width=576, resized_height=576, prompt="a grey background",
    )  # fmt: skip
    tall = _wait(client, g.id)
    assert tall.state == "completed" and tall.generation_type == "image", tall.failure_reason
    assert tall.request.generation_type == "reframe_image"
    with Image.open(io.BytesIO(httpx.get(tall.assets.image).content)) as image:
        assert (image.format, image.size) == ("PNG", (40, 72))
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert np.abs(pixels[26:46, 10:30] - (255, 0, 0)).mean() < 8  # 20x20 of red, centred: (40-20)/2, (72-20)/2


def _refused(live: Live, path: str, body: Mapping[str, object], field: str, value: str) -> None:
    before, count = live.credits(), live.store.list("acme", 1, 0)[1]
    r = httpx.post(f"{live.base}/dream-machine/v1{path}", json=body, headers=live.auth())
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert set(r.json()) == {"detail"} and field in detail and value in detail, detail
    assert live.credits() == before and live.store.list("acme", 1, 0)[1] == count  # nothing queued or charged


def test_bad_sources_modes_and_positions_are_400s_naming_them(live: Live, tmp_path: Path) -> None:
    video = live.upload(clip(tmp_path), "clip.mp4")
    modify = {"generation_type": "modify_video", "media": {"url": video}, "mode": "flex_1", "model": "ray-2",
              "prompt": "a blue square"}  # fmt: skip
    reframe = {"generation_type": "reframe_video", "media": {"url": video}, "aspect_ratio": "16:9", "model": "ray-2"}
    _refused(live, "/generations/video/modify", modify | {"mode": "wild"}, "mode", "'wild'")
    # another tenant's upload, and a generation of ours that is not completed (its file there all the same)
    theirs = live.upload(clip(tmp_path), "theirs.mp4", tenant="globex")
    _refused(live, "/generations/video/modify", modify | {"media": {"url": theirs}}, "media.url", theirs)
    queued = live.store.create(tenant="acme", model="unserved", request={}, task={"prompt": "x"})  # no worker claims it
    key = live.assets.put(asset_key("acme", queued.id, "video.mp4"), clip(tmp_path))
    unfinished = f"{live.base}/assets/{key}"
    _refused(live, "/generations/video/modify", modify | {"media": {"url": unfinished}}, "media.url", "queued")
    # over ray-2's 10 s (ray-flash-2 reframes up to 30 s: that one is taken)
    long = live.upload(clip(tmp_path, frames=88), "long.mp4")
    _refused(live, "/generations/video/modify", modify | {"media": {"url": long}}, "media.url", "11.0 s")
    _refused(live, "/generations/video/reframe", reframe | {"media": {"url": long}}, "media.url", "11.0 s")
    # a position outside the canvas (grid pixels of the docs' 2048x1152), crop bounds, a first frame, an image
    _refused(live, "/generations/video/reframe", reframe | {"grid_position_x": 2000}, "grid_position_x", "2000")
    _refused(live, "/generations/video/reframe", reframe | {"grid_position_y": -1}, "grid_position_y", "-1")
    _refused(live, "/generations/video/reframe", reframe | {"x_start": 10}, "x_start", "10")
    _refused(
        live,
        "/generations/video/reframe",
        reframe | {"resized_width": 100},
        "resized_height",
        "required with resized_width",
    )
    still = live.upload(png(), "still.png")
    _refused(live, "/generations/video/modify", modify | {"first_frame": {"url": still}}, "first_frame", still)
    _refused(live, "/generations/video/modify", modify | {"media": {"url": still}}, "media.url", "is an image")
    image = {"generation_type": "reframe_image", "media": {"url": video}, "aspect_ratio": "1:1", "model": "photon-1"}
    _refused(live, "/generations/image/reframe", image, "media.url", "is a video")
    # an external URL goes through the SSRF guard: a private address is refused before anything is fetched
    _refused(live, "/generations/video/modify", modify | {"media": {"url": "http://10.0.0.1/a.mp4"}}, "media.url", "")
    assert httpx.post(f"{live.base}/dream-machine/v1/generations/video/modify", json=modify | {"prompt": ""},
                      headers=live.auth()).json() == {"detail": "Prompt is required"}  # fmt: skip


def test_an_installed_open_model_modifies_a_video_and_reframes_an_image(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The same routes reach a diffusers model whose family declares edit and reframe (toy LTX-Video and FLUX.1,
    noor.engine.diffusers.edits); a family that does not is refused by name, nothing queued."""
    from noor.engine.diffusers.installed import InstalledModel
    from tests.api.toy_server import toy_server
    from tests.engine.diffusers.toys import toy_dir

    tmp = tmp_path_factory.mktemp("dm-open-edits")
    entries = [
        InstalledModel(id=f"toy-{f}", family=f, path=str(toy_dir(tmp_path_factory, f)), dtype="float32", steps=2)
        for f in ("ltx-video", "flux.1-dev", "wan2.2-t2v-a14b")
    ]
    with toy_server(tmp, entries, credits_cents=10_000) as s:
        client, auth = s["client"], s["auth"]

        def upload(data: bytes, name: str) -> str:
            r = client.post("/v1/uploads", files={"file": (name, data)}, headers=auth)
            assert r.status_code == 201, r.text
            return str(r.json()["url"])

        def done(r: httpx.Response) -> dict[str, object]:
            assert r.status_code == 201, r.text
            assert s["worker"].run_once(), "the worker found no job"
            g = client.get(f"/dream-machine/v1/generations/{r.json()['id']}", headers=auth).json()
            assert g["state"] == "completed", g
            return dict(g["assets"])

        video = upload(clip(tmp), "clip.mp4")
        modify = {"generation_type": "modify_video", "media": {"url": video}, "mode": "adhere_2",
                  "model": "toy-ltx-video", "prompt": "a blue square"}  # fmt: skip
        assets = done(client.post("/dream-machine/v1/generations/video/modify", json=modify, headers=auth))
        path = tmp / "edited.mp4"
        path.write_bytes(client.get(str(assets["video"])).content)
        assert media.video_info(path)[:3] == (8, 64, 48)  # the source's frames and size (drawn at 64x64, 9 frames)
        reframe = {"generation_type": "reframe_image", "media": {"url": upload(png(), "red.png")},
                   "aspect_ratio": "16:9", "model": "toy-flux.1-dev", "format": "png"}  # fmt: skip
        assets = done(client.post("/dream-machine/v1/generations/image/reframe", json=reframe, headers=auth))
        with Image.open(io.BytesIO(client.get(str(assets["image"])).content)) as image:
            assert image.size == (72, 40)  # the smallest 16:9 canvas holding 40x40
            pixels = np.asarray(image.convert("RGB")).astype(int)
        assert np.abs(pixels[:, 16:56] - (255, 0, 0)).mean() < 4  # the source, centred
        r = client.post("/dream-machine/v1/generations/video/modify", json=modify | {"model": "toy-wan2.2-t2v-a14b"},
                        headers=auth)  # fmt: skip
        assert r.status_code == 400 and "edit" in r.json()["detail"] and "toy-wan2.2-t2v-a14b" in r.json()["detail"]
        assert not s["worker"].run_once()

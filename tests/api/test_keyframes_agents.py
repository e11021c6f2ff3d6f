"""Keyframes at indexes through the Agents API (#29): luma-agents 0.5.0 in strict response mode against a live server
whose worker runs the shipped noor-tiny weights (a toy's random autoencoder cannot redraw a pinned image). A frame
pinned in the middle of a 5 s clip comes back at its index; the bad inputs are 400s naming the keyframe, nothing
charged."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import luma_agents
import numpy as np
import pytest
from PIL import Image

from noor.engine import media
from noor.engine.tiny.backend import weights_dir
from noor.engine.tiny.captions import caption
from noor.engine.tiny.detector import psnr
from noor.engine.tiny.scene import render, sample_scene
from tests.api.edit_reframe_server import Live, live_server, png, strict
from tests.api.test_edit_reframe_agents import _ready_file
from tests.api.test_serve_sdks import _wait

pytestmark = pytest.mark.slow

MIDDLE = 60  # of the 5 s grid 0..120: frame 20 of the 40 noor-tiny's 8 fps clip has, its own drawn frame 8 of 16


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_server(tmp_path_factory.mktemp("agents-keyframes"), weights_dir()) as server:
        yield server


@pytest.fixture(scope="module")
def client(live: Live) -> luma_agents.Luma:
    return strict(luma_agents.Luma, "/agents/v1")(live)  # type: ignore[no-any-return]


def _frames(url: str, tmp_path: Path, name: str) -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(httpx.get(url).content)
    return media.read_video(path)


def test_a_middle_keyframe_comes_back_at_its_index(client: luma_agents.Luma, tmp_path: Path) -> None:
    """A held-out scene's middle frame pinned at grid index 60: the output's frame 20 is that image (28 dB or more
    and 8 dB above the same prompt unpinned, after H.264 and the resize to 360x360)."""
    rng = np.random.default_rng(21)
    scene = sample_scene(rng, two_objects_p=0.0, motion="right")
    prompt = caption(scene, "en", rng)
    pin = (render(scene, 40)[20] * 255).round().astype(np.uint8)  # 64x64, noor-tiny's own size
    out = io.BytesIO()
    Image.fromarray(pin).save(out, format="PNG")
    file_id = _ready_file(client, out.getvalue(), "image/png")
    options = {"duration": "5s", "resolution": "360p"}
    pinned = client.generations.create(
        model="ray-3.2", type="video", prompt=prompt, aspect_ratio="1:1",
        video=options | {"keyframes": [{"file_id": file_id}], "keyframe_indexes": [MIDDLE]},
    )  # fmt: skip
    free = client.generations.create(model="ray-3.2", type="video", prompt=prompt, aspect_ratio="1:1", video=options)
    assert "frame 20 at 8" in str(pinned.to_dict()["warnings"]), pinned.to_dict()  # where noor-tiny pins it
    pinned, free = _wait(client, pinned.id), _wait(client, free.id)
    assert pinned.state == free.state == "completed", (pinned, free)
    assert pinned.output is not None and free.output is not None
    kept_clip = _frames(pinned.output[0].url, tmp_path, "pinned.mp4")
    free_clip = _frames(free.output[0].url, tmp_path, "free.mp4")
    assert kept_clip.shape == free_clip.shape == (40, 360, 360, 3)
    image = np.asarray(Image.fromarray(pin).resize((360, 360), Image.Resampling.LANCZOS)) / 255.0
    kept, unpinned = psnr(kept_clip[20] / 255.0, image), psnr(free_clip[20] / 255.0, image)
    assert kept >= 28.0 and kept >= unpinned + 8.0, (kept, unpinned)


def test_bad_keyframes_are_400s_naming_the_keyframe(client: luma_agents.Luma, live: Live) -> None:
    file_id = _ready_file(client, png(), "image/png")
    ref = {"file_id": file_id}
    data = {"data": base64.b64encode(png()).decode(), "media_type": "image/png"}  # stored only once checked

    def pins(*indexes: int, **more: Any) -> dict[str, Any]:
        return {"keyframes": [ref] * len(indexes), "keyframe_indexes": list(indexes), **more}

    cases: list[tuple[dict[str, Any], str, str]] = [
        (pins(*range(0, 130, 2)), "video.keyframes", "at most 64"),
        (pins(60, 90, 60), "video.keyframe_indexes[2]", "index 60 is given twice"),
        (pins(121), "video.keyframe_indexes[0]", "within 0..120 for 5s, got 121"),
        (pins(241, duration="10s"), "video.keyframe_indexes[0]", "within 0..240 for 10s, got 241"),
        (pins(60, 120, loop=True), "video.loop", "cannot be combined with video.keyframes"),
        (pins(60, start_frame=ref), "video.keyframes", "start_frame/end_frame"),
        (pins(0, 1), "video.keyframe_indexes[1]", "index 1 lands on frame 0 of the 40-frame clip, as index 0 does"),
        (
            pins(30, 0, 3),
            "video.keyframe_indexes[2]",
            "index 3 and index 0 fall in one frame of the 16 frames tiny draws",
        ),
        (pins(0, 3) | {"keyframes": [data, data]}, "video.keyframe_indexes[1]", "keep keyframes at least 10 apart"),
        ({"keyframes": [ref, ref], "keyframe_indexes": [0]}, "video.keyframe_indexes", "one index per keyframe"),
    ]
    uploads = live.tmp / "assets" / "acme" / "uploads"
    before, stored = live.credits(), sorted(uploads.iterdir())
    for video, field, said in cases:
        with pytest.raises(luma_agents.BadRequestError) as err:
            client.generations.create(type="video", prompt="a red circle", video=video)
        body = err.value.body
        assert isinstance(body, dict) and body["detail"].startswith(field) and said in body["detail"], (video, body)
    assert live.credits() == before and sorted(uploads.iterdir()) == stored


def test_keyframes_on_a_toy_ltx_video_model_complete(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same request shape on an open family (a toy LTX-Video, random weights: the pins are not checked in its
    pixels, see tests/engine/diffusers/test_keyframes.py): 5 s at the toy's 1 fps is 5 frames, grid indexes 0 and
    60 pin frames 0 and 2 (latent frames 0 and 1 of its 4-frame latents), and the clip completes at that length."""
    from noor.engine.diffusers.installed import InstalledModel
    from tests.api.toy_server import toy_server
    from tests.engine.diffusers.toys import toy_dir

    entry = InstalledModel(id="ltx", family="ltx-video", path=str(toy_dir(tmp_path_factory, "ltx-video")),
                           dtype="float32", width=32, height=32, frames=9, fps=1, steps=2)  # fmt: skip
    with toy_server(tmp_path_factory.mktemp("agents-keyframes-ltx"), [entry], credits_cents=10_000) as s:
        client, auth = s["client"], s["auth"]
        client.app.state.ctx.config.aliases["ray-3.2"] = "ltx"  # the Agents API names Luma's models only
        pins = [{"data": base64.b64encode(png(64, 64, colour)).decode(), "media_type": "image/png"}
                for colour in ("red", "blue")]  # fmt: skip
        video = {"duration": "5s", "resolution": "360p", "keyframes": pins, "keyframe_indexes": [0, 60]}
        body = {"model": "ray-3.2", "type": "video", "prompt": "a red circle", "aspect_ratio": "1:1", "video": video}
        created = client.post("/agents/v1/generations", json=body, headers=auth)
        assert created.status_code == 201, created.text
        assert s["worker"].run_once()
        done = client.get(f"/agents/v1/generations/{created.json()['id']}", headers=auth).json()
        assert done["state"] == "completed", done
        path = s["tmp"] / "pinned.mp4"
        path.write_bytes(client.get(done["output"][0]["url"]).content)
        assert media.video_info(path)[:3] == (5, 352, 352)  # LTX draws sides in multiples of 32
        # grid 60 and 90 pin frames 2 and 3, both in latent frame 1 (frames 1..4): refused with the grid spacing that
        # keeps pins apart on this model (grid 15..120 all land in latent frame 1: a run of 106)
        video |= {"keyframe_indexes": [60, 90]}
        refused = client.post("/agents/v1/generations", json=body | {"video": video}, headers=auth)
        detail = refused.json()["detail"]
        assert refused.status_code == 400 and detail.startswith("video.keyframe_indexes[1]"), refused.text
        assert "fall in one latent frame of the 5 frames ltx draws" in detail and "at least 106 apart" in detail

"""The Agents API's image_edit, video_edit and video_reframe on noor-tiny (#29), through the official luma-agents SDK
in strict response mode against a live server; the bad inputs a 400 naming the field, nothing charged."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import luma_agents
import pytest
from PIL import Image

from noor.engine import media
from tests.api.edit_reframe_server import Live, clip, fixtures, png, strict
from tests.api.test_agents_api import _upload
from tests.api.test_serve_sdks import _wait

pytestmark = pytest.mark.slow

live, client = fixtures("agents-edits", strict(luma_agents.Luma, "/agents/v1"))


def _ready_file(client: luma_agents.Luma, data: bytes, mime_type: str) -> str:
    created, put = _upload(client, data, mime_type)
    assert put.status_code == 200, put.text
    return str(client.files.complete(created.id).id)


def test_video_edit_then_reframe_and_an_image_edit(client: luma_agents.Luma, tmp_path: Path) -> None:
    source = _ready_file(client, clip(tmp_path), "video/mp4")
    g = client.generations.create(
        model="ray-3.2", type="video_edit", prompt="a blue square moves right", source={"file_id": source},
        video={"edit": {"strength": "flex_1"}}, user_id="u-edit",
    )  # fmt: skip
    assert (g.state, g.model, g.type) == ("queued", "ray-3.2", "video_edit")
    edited = _wait(client, g.id)
    assert edited.state == "completed" and edited.output is not None and edited.output[0].type == "video", edited
    path = tmp_path / "edited.mp4"
    path.write_bytes(httpx.get(edited.output[0].url).content)
    assert media.video_info(path)[:3] == (8, 64, 48)  # the source's length and size
    # the edit's result reframed to 9:16 at 360p: the top of the canvas, its full width, a quarter of its height
    g = client.generations.create(
        model="ray-3.2", type="video_reframe", prompt="a grey room", aspect_ratio="9:16",
        source={"generation_id": edited.id},
        video={"resolution": "360p", "source_position": {"x_norm": 0, "y_norm": 0, "w_norm": 1, "h_norm": 0.25}},
    )  # fmt: skip
    tall = _wait(client, g.id)
    assert tall.state == "completed" and tall.type == "video_reframe", tall
    assert tall.output is not None
    path.write_bytes(httpx.get(tall.output[0].url).content)
    assert media.video_info(path)[:3] == (8, 360, 640)
    # an image edit of base64 data, and an auto_controls video edit at a resolution
    g = client.generations.create(
        model="uni-1", type="image_edit", prompt="a blue square",
        source={"data": base64.b64encode(png()).decode(), "media_type": "image/png"},
    )  # fmt: skip
    image = _wait(client, g.id)
    assert image.state == "completed" and image.output is not None and image.output[0].type == "image", image
    with Image.open(io.BytesIO(httpx.get(image.output[0].url).content)) as out:
        assert out.size == (40, 40)
    g = client.generations.create(
        type="video_edit", prompt="a red square", source={"generation_id": edited.id},
        video={"resolution": "360p", "edit": {"auto_controls": True}},
    )  # fmt: skip
    assert g.model == "ray-3.2" and "480x360" in str(g.to_dict().get("warnings")), g.to_dict()


OUTSIDE = {"x_norm": 0.9, "y_norm": 0, "w_norm": 0.5, "h_norm": 0.5}  # its right half off the canvas
BAD: list[tuple[dict[str, Any], str]] = [
    ({"type": "video_edit", "video": {"edit": {"strength": "wild"}}}, "video.edit.strength must be one of"),
    ({"type": "video_edit", "video": {"edit": {"controls": {"depth": {"enabled": True}}}}}, "video.edit.controls"),
    ({"type": "video_edit", "video": {"edit": {"speed": 2}}}, "video.edit.speed"),
    ({"type": "video_edit", "video": {"duration": "10s"}}, "video.duration"),
    ({"type": "video_edit", "aspect_ratio": "1:1"}, "aspect_ratio is not for type 'video_edit'"),
    ({"type": "video_reframe"}, "aspect_ratio is required"),
    ({"type": "video_reframe", "aspect_ratio": "1:1", "video": {"hdr": True}}, "video.hdr is not offered"),
    ({"type": "video_reframe", "aspect_ratio": "16:9", "video": {"source_position": OUTSIDE}}, "video.source_position"),
    ({"type": "video_reframe", "aspect_ratio": "16:9", "video": {"edit": {"strength": "flex_1"}}}, "video.edit"),
]


def test_bad_edits_and_reframes_are_400s_naming_the_field(client: luma_agents.Luma, live: Live, tmp_path: Path) -> None:
    video = _ready_file(client, clip(tmp_path), "video/mp4")
    long = _ready_file(client, clip(tmp_path, frames=8 * 19), "video/mp4")  # 19 s, over the 18 s the docs allow
    theirs = live.store.create(tenant="globex", model="unserved", request={}, task={"prompt": "x"})
    cases = [
        *((extra | {"source": {"file_id": video}}, said) for extra, said in BAD),
        ({"type": "video_edit", "source": {"file_id": long}}, "19.0 s"),
        ({"type": "video_edit"}, "source is required"),
        ({"type": "video_edit", "source": {"generation_id": theirs.id}}, f"no generation {theirs.id!r}"),
        ({"type": "video_edit", "source": {"url": "https://example.com/a.mp4"}}, "source.media_type"),
        ({"type": "image_edit", "source": {"file_id": video}}, "is a video"),
        ({"type": "image_edit", "source": {"data": "QUJD", "media_type": "video/mp4"}}, "source.media_type"),
    ]
    before = live.credits()
    for extra, said in cases:
        with pytest.raises(luma_agents.BadRequestError) as err:
            client.generations.create(**({"prompt": "a red circle"} | extra))
        body = err.value.body
        assert isinstance(body, dict) and said in body["detail"], (extra, body)
    assert live.credits() == before

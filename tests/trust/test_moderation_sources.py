"""The text an edit's or a reframe's source image and a clip's keyframes at indexes carry in their metadata is
moderated as a start frame's is (#29): screened before the job is queued, a refusal a 400 with nothing charged."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, PngImagePlugin

from noor.trust import moderation
from noor.trust.moderation import Decision
from tests.api.test_hardening import api as api  # a TestClient on SQLite, tenant acme with 1000 credits
from tests.trust.test_moderation import BUILTIN, _png_with_text

FILES = {
    "acme/uploads/flag.png": _png_with_text(Description="راية داعش فوق جبل"),
    "acme/uploads/lake.png": _png_with_text(Description="a calm lake at dawn"),
    "acme/g1/video.mp4": b"\0\0\0\x18ftypisom",  # a video: no image metadata to read
}


def _source_png(description: str) -> bytes:
    """A 64x48 PNG (a size a reframe takes) with `description` in an iTXt chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt("Description", description)
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 60, 90)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _screen(task: dict[str, Any]) -> Decision:
    return moderation.screen_task(task, "acme", FILES.__getitem__, moderation.Policies(BUILTIN))


def test_a_source_images_and_keyframes_metadata_is_screened() -> None:
    for kind in ("edit", "reframe"):
        task = {"kind": kind, "prompt": "a blue square", "edit_mode": "adhere_1"}
        assert _screen(task | {"source": "acme/uploads/flag.png"}).category == "terrorism"
        assert _screen(task | {"source": "acme/uploads/lake.png"}).allowed
        assert _screen(task | {"source": "acme/g1/video.mp4"}).allowed
    pins = [{"index": 10, "asset": "acme/uploads/lake.png"}, {"index": 20, "asset": "acme/uploads/flag.png"}]
    assert _screen({"prompt": "the camera pans", "keyframes": pins}).category == "terrorism"
    assert _screen({"prompt": "the camera pans", "keyframes": pins[:1]}).allowed
    assert moderation.task_texts({"prompt": "x", "source": "acme/uploads/lake.png"}, FILES.__getitem__) == [
        "x", "a calm lake at dawn",
    ]  # fmt: skip


def test_a_reframe_of_an_image_whose_metadata_is_refused_is_a_400_before_any_charge(api: dict[str, Any]) -> None:
    c, auth = api["client"], api["auth"]
    before = c.get("/credits", headers=auth).json()["credit_balance"]
    for text, status in (("راية داعش فوق جبل", 400), ("a calm lake at dawn", 201)):
        up = c.post("/v1/uploads", files={"file": ("a.png", _source_png(text))}, headers=auth)
        assert up.status_code == 201, up.text
        body = {"generation_type": "reframe_image", "media": {"url": up.json()["url"]}, "aspect_ratio": "16:9"}
        r = c.post("/dream-machine/v1/generations/image/reframe", json=body, headers=auth)
        assert r.status_code == status, r.text
        if status == 400:
            assert r.json()["detail"] == moderation.REFUSAL_MESSAGE
            assert c.get("/credits", headers=auth).json()["credit_balance"] == before

"""Installed diffusers models through the Dream Machine API: created, run by a worker, refused up front."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from noor.engine import media
from noor.engine.diffusers.installed import InstalledModel
from tests.api.toy_server import toy_server
from tests.engine.diffusers.toys import toy_dir

# (family, model id); fps 1 keeps a 5 s clip at 5 frames (4k+1) or 9 frames (LTX toy: 4k+1 too)
MODELS = [("wan2.1-t2v", "wan"), ("ltx-video", "ltx"), ("flux.1-schnell", "flux"), ("cogvideox-i2v", "cog")]


@pytest.fixture
def server(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    entries = [
        InstalledModel(id=model_id, family=family, path=str(toy_dir(tmp_path_factory, family)), dtype="float32",
                       fps=1, steps=2)
        for family, model_id in MODELS
    ]  # fmt: skip
    with toy_server(tmp_path, entries) as s:
        yield s


def _post(s: dict[str, Any], path: str, **body: Any) -> Any:
    return s["client"].post(path, json={"prompt": "a red circle moves to the left", **body}, headers=s["auth"])


def _finished(s: dict[str, Any], created: Any) -> dict[str, Any]:
    assert created.status_code == 201, created.text
    assert s["worker"].run_once()
    done = s["client"].get(f"/dream-machine/v1/generations/{created.json()['id']}", headers=s["auth"]).json()
    assert done["state"] == "completed", done
    return done


def _upload(s: dict[str, Any], color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    up = s["client"].post("/v1/uploads", files={"file": ("k.png", buf.getvalue(), "image/png")}, headers=s["auth"])
    assert up.status_code == 201, up.text
    return str(up.json()["url"])


@pytest.mark.slow
def test_video_rounded_to_the_model_multiples(server: dict[str, Any], tmp_path: Path) -> None:
    done = _finished(server, _post(server, "/generations/video", model="ltx", aspect_ratio="1:1", resolution="540p"))
    (tmp_path / "v.mp4").write_bytes(server["client"].get(done["assets"]["video"]).content)
    assert media.video_info(tmp_path / "v.mp4")[:3] == (5, 544, 544)  # 540 -> 544 (multiples of 32)


@pytest.mark.slow
def test_ltx_keyframes_and_loop(server: dict[str, Any], tmp_path: Path) -> None:
    start, end = _upload(server, (200, 0, 0)), _upload(server, (0, 0, 200))
    keyframes = {"frame0": {"type": "image", "url": start}, "frame1": {"type": "image", "url": end}}
    both = _post(server, "/generations/video", model="ltx", aspect_ratio="16:9", resolution="540p", keyframes=keyframes)
    done = _finished(server, both)
    (tmp_path / "v.mp4").write_bytes(server["client"].get(done["assets"]["video"]).content)
    assert media.video_info(tmp_path / "v.mp4")[:3] == (5, 960, 544)
    looped = _post(server, "/generations/video", model="ltx", loop=True, keyframes={"frame0": keyframes["frame0"]})
    _finished(server, looped)


@pytest.mark.slow
def test_flux_image(server: dict[str, Any]) -> None:
    done = _finished(server, _post(server, "/generations/image", model="flux", aspect_ratio="16:9", format="png"))
    with Image.open(io.BytesIO(server["client"].get(done["assets"]["image"]).content)) as image:
        assert image.size == (960, 544)  # 540 -> 544 (multiples of 16)


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("/generations/video", {"model": "cog"}, "model 'cog' cannot do t2v"),
        ("/generations/video", {"model": "ltx", "loop": True}, "model 'ltx' loops back to a start frame"),
        ("/generations/video", {"model": "flux"}, "model 'flux' cannot do t2v"),
        ("/generations/image", {"model": "wan", "aspect_ratio": "1:1"}, None),  # Wan draws one frame too
        ("/generations/video", {"model": "nope"}, "Unknown model 'nope'; available: "),
    ],
)
def test_what_a_model_cannot_do_is_refused_before_queueing(
    server: dict[str, Any], path: str, body: dict[str, Any], detail: str | None
) -> None:
    created = _post(server, path, **body)
    if detail is None:
        assert created.status_code == 201, created.text
        return
    assert created.status_code == 400 and detail in created.json()["detail"], created.text
    assert server["worker"].run_once() is False  # nothing was queued

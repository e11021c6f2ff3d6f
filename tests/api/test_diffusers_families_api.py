"""Every diffusers family through the API at toy size: registered, created, run by a worker, downloaded.

Video families go through the OpenAI Videos route (it takes any WIDTHxHEIGHT, so the toys run at their own
small sizes); image-to-video families send an `input_reference`, Wan FLF2V its two keyframes through the
Dream Machine route, and image families through `POST /generations/image`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from noor.engine import media
from noor.engine.diffusers import families
from noor.engine.diffusers.installed import InstalledModel
from tests.api.toy_server import toy_server
from tests.engine.diffusers.toys import TOYS, toy_dir

PROMPT = "a red circle moves to the left"


def model_id(family: str) -> str:
    return family.replace(".", "-")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    entries = [
        InstalledModel(id=model_id(family), family=family, path=str(toy_dir(tmp_path_factory, family)),
                       dtype="float32", fps=1, steps=2)
        for family in TOYS
    ]  # fmt: skip
    with toy_server(tmp_path_factory.mktemp("api-families"), entries, credits_cents=10_000) as s:
        yield s


def _png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def _run(s: dict[str, Any]) -> None:
    assert s["worker"].run_once(), "the worker found no job"


@pytest.mark.slow
@pytest.mark.parametrize("family", list(TOYS))
def test_every_family_through_the_api(server: dict[str, Any], family: str) -> None:
    client, auth, tmp = server["client"], server["auth"], server["tmp"]
    _, width, height, _ = TOYS[family]
    family_spec = families.get(family)
    caps = family_spec.capabilities
    name = model_id(family)

    if family_spec.kind == "image":  # the Dream Machine image route, 1:1 at its smallest resolution
        created = client.post(
            "/generations/image", json={"prompt": PROMPT, "model": name, "aspect_ratio": "1:1"}, headers=auth
        )
        assert created.status_code == 201, created.text
        _run(server)
        done = client.get(f"/generations/{created.json()['id']}", headers=auth).json()
        assert done["state"] == "completed", done
        with Image.open(io.BytesIO(client.get(done["assets"]["image"]).content)) as image:
            assert image.size[0] == image.size[1] >= 512
        return

    if family == "wan2.1-flf2v":  # first and last frame: both keyframes, through the Dream Machine route
        urls = []
        for colour in ((200, 0, 0), (0, 0, 200)):
            up = client.post("/v1/uploads", files={"file": ("k.png", _png(64, 64, colour), "image/png")}, headers=auth)
            assert up.status_code == 201, up.text
            urls.append(up.json()["url"])
        keyframes = {f"frame{i}": {"type": "image", "url": url} for i, url in enumerate(urls)}
        body = {"prompt": PROMPT, "model": name, "aspect_ratio": "1:1", "keyframes": keyframes}
        created = client.post("/generations/video", json=body, headers=auth)
        assert created.status_code == 201, created.text
        _run(server)
        done = client.get(f"/generations/{created.json()['id']}", headers=auth).json()
        assert done["state"] == "completed", done
        (tmp / f"{name}.mp4").write_bytes(client.get(done["assets"]["video"]).content)
        assert media.video_info(tmp / f"{name}.mp4")[0] >= 5
        return

    fields = {"model": name, "prompt": PROMPT, "seconds": "4", "size": f"{width}x{height}"}
    if "t2v" in caps:
        created = client.post("/v1/videos", json=fields, headers=auth)
    else:  # image to video: the start frame as the OpenAI SDK sends it
        files = {"input_reference": ("start.png", _png(width, height, (200, 0, 0)), "image/png")}
        created = client.post("/v1/videos", data=fields, files=files, headers=auth)
    assert created.status_code == 200, created.text
    video = created.json()
    _run(server)
    done = client.get(f"/v1/videos/{video['id']}", headers=auth).json()
    assert done["status"] == "completed", done
    content = client.get(f"/v1/videos/{video['id']}/content", headers=auth)
    assert content.status_code == 200, content.text
    (tmp / f"{name}.mp4").write_bytes(content.content)
    frames, w, h, _ = media.video_info(tmp / f"{name}.mp4")
    assert frames >= 4  # 4 s at 1 fps, rounded up to the family's frame grid
    if family != "hunyuanvideo-1.5-i2v":  # that pipeline picks its own size from the start frame's aspect
        assert (w, h) == (width, height)

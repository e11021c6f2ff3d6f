"""The official luma-agents SDK (strict response validation) against a live `noor serve` subprocess: the Agents API
at /agents/v1 (docs/api.md), its files, its usage read, and its refusals."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import luma_agents
import pytest
from PIL import Image

from noor.api.app import ApiConfig, create_app
from noor.engine import media
from noor.engine.tiny.backend import TinyBackend
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.worker import Worker, WorkerConfig
from tests.api.test_serve_sdks import _wait
from tests.api.toy_server import on_loopback

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, toy_weights: Path) -> Iterator[dict[str, Any]]:
    """What `noor serve` runs, in this process: the app under uvicorn on a loopback port (the SDK talks real HTTP to
    it) and a worker thread with the built-in toy model. Two metered tenants, so a refusal's credits can be read."""
    tmp = tmp_path_factory.mktemp("serve-agents")
    store = Store(f"sqlite:///{tmp / 'noor.db'}")
    assets = AssetStore(str(tmp / "assets"))
    keys = {}
    for name in ("acme", "globex"):
        tenants.create_tenant(store, name, credits_cents=10_000, max_concurrent=50, max_per_minute=600)
        keys[name] = tenants.create_key(store, name)
    backend = TinyBackend(toy_weights)
    worker = Worker(store, assets, WorkerConfig(name="w1"), load_backend=lambda model, parallel=None: backend)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        with on_loopback(create_app(store, assets, ApiConfig(secret=b"test-secret"))) as port:
            yield {"base": f"http://127.0.0.1:{port}", "key": keys["acme"], "other": keys["globex"]}
    finally:
        stop.set()
        thread.join(60)
        store.close()


@pytest.fixture(scope="module")
def client(served: dict[str, Any]) -> Iterator[luma_agents.Luma]:
    with luma_agents.Luma(
        auth_token=served["key"], base_url=f"{served['base']}/agents/v1", _strict_response_validation=True
    ) as c:
        yield c


def _png(color: str = "red", size: tuple[int, int] = (64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def _credits(served: dict[str, Any]) -> float:
    auth = {"Authorization": f"Bearer {served['key']}"}
    return float(httpx.get(f"{served['base']}/dream-machine/v1/credits", headers=auth).json()["credit_balance"])


def _upload(client: luma_agents.Luma, data: bytes, mime_type: str = "image/png", **kw: Any) -> Any:
    created = client.files.create(mime_type=mime_type, size_bytes=len(data), purpose="input", **kw)
    assert created.upload is not None and created.upload.method == "PUT" and created.state == "pending"
    return created, httpx.put(created.upload.url, content=data, headers=created.upload.headers or {})


def test_image_and_video_end_to_end(client: luma_agents.Luma, tmp_path: Path) -> None:
    image = client.generations.create(prompt="a blue square", type="image", aspect_ratio="1:1", user_id="u-img")
    assert (image.state, image.model, image.type) == ("queued", "uni-1", "image")  # the SDK's defaults
    video = client.generations.create(
        model="ray-3.2", type="video", prompt="a red circle moves to the left", aspect_ratio="16:9",
        video={"resolution": "360p", "duration": "5s"}, user_id="u-vid",
    )  # fmt: skip
    assert (video.state, video.model, video.type) == ("queued", "ray-3.2", "video")
    done = _wait(client, image.id)
    assert done.state == "completed" and done.output is not None and done.output[0].type == "image", done
    png = httpx.get(done.output[0].url).content
    assert Image.open(io.BytesIO(png)).size == (540, 540) and png.startswith(b"\x89PNG")
    done = _wait(client, video.id)
    assert done.state == "completed" and done.output is not None and done.output[0].type == "video", done
    path = tmp_path / "v.mp4"
    path.write_bytes(httpx.get(done.output[0].url).content)
    assert media.video_info(path)[:3] == (40, 640, 360)  # 5 s at the model's 8 fps, 360p 16:9
    jpeg = client.generations.create(prompt="a green star", output_format="jpeg", aspect_ratio="3:1")
    out = _wait(client, jpeg.id).output
    assert Image.open(io.BytesIO(httpx.get(out[0].url).content)).format == "JPEG"


def test_files_upload_complete_and_use(client: luma_agents.Luma, served: dict[str, Any]) -> None:
    png = _png()
    created, put = _upload(client, png, filename="red.png")
    assert put.status_code == 200, put.text
    ready = client.files.complete(created.id)
    assert (ready.state, ready.size_bytes, ready.mime_type, ready.filename) == (
        "ready",
        len(png),
        "image/png",
        "red.png",
    )
    assert client.files.get(created.id).state == "ready"
    g = client.generations.create(
        model="ray-3.2", type="video", prompt="the scene comes alive",
        video={"resolution": "360p", "keyframes": [{"file_id": created.id}], "keyframe_indexes": [0]},
    )  # fmt: skip
    assert _wait(client, g.id).state == "completed"
    # a generation's last frame starts the next one (extends it), and base64 data ends it
    extended = client.generations.create(
        type="video", prompt="it keeps moving", video={
            "resolution": "360p", "start_frame": {"generation_id": g.id},
            "end_frame": {"data": base64.b64encode(_png("blue")).decode(), "media_type": "image/png"},
        },
    )  # fmt: skip
    assert extended.model == "ray-3.2" and _wait(client, extended.id).state == "completed"
    # listing: newest first, keyset pages
    second, _ = _upload(client, _png("green"))
    page = client.files.list(limit=1)
    assert [f.id for f in page.data] == [second.id] and page.has_more and page.next_cursor == second.id
    rest = client.files.list(limit=100, cursor=second.id)
    assert created.id in [f.id for f in rest.data] and not rest.has_more
    assert [f.id for f in client.files.list(state="ready").data] == [created.id]
    client.files.delete(second.id)
    gone = client.files.get(second.id)
    assert gone.state == "deleted" and gone.deleted_at is not None


def test_upload_refusals(client: luma_agents.Luma) -> None:
    # bytes that are not the declared type
    created, put = _upload(client, b"GIF89a" + b"\0" * 100)
    assert put.status_code == 400 and "image/png" in put.json()["detail"], put.text
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    created, put = _upload(client, jpeg.getvalue())  # a whole JPEG, declared PNG
    assert put.status_code == 400 and "its bytes are image/jpeg" in put.json()["detail"]
    with pytest.raises(luma_agents.BadRequestError, match="no bytes yet"):
        client.files.complete(created.id)  # nothing was kept
    # an expired upload URL (it ends with the file's own expiry), and a forged one
    created = client.files.create(
        mime_type="image/png",
        size_bytes=len(_png()),
        expires_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3)),
    )
    assert created.upload is not None
    time.sleep(3.2)
    put = httpx.put(created.upload.url, content=_png(), headers=created.upload.headers or {})
    assert put.status_code == 403 and "expired" in put.json()["detail"]
    put = httpx.put(created.upload.url.replace("sig=", "sig=0"), content=_png())
    assert put.status_code == 403 and "signature" in put.json()["detail"]
    with pytest.raises(luma_agents.BadRequestError, match="mime_type must be one of"):
        client.files.create(mime_type="text/plain", size_bytes=10)


def test_user_usage(client: luma_agents.Luma, served: dict[str, Any]) -> None:
    for prompt in ("a red circle", "a blue circle"):
        client.generations.create(prompt=prompt, user_id="alice")
    client.generations.create(prompt="a green circle", user_id="bob")
    usage = client.get("/usage", cast_to=object, options={"params": {"user_id": "alice"}})
    assert isinstance(usage, dict)
    assert usage["user_id"] == "alice" and usage["generations"] == 2 and usage["by_type"] == {"image": 2}
    bob = client.get("/usage", cast_to=object, options={"params": {"user_id": "bob"}})
    assert isinstance(bob, dict) and bob["generations"] == 1


BAD: list[tuple[dict[str, Any], str]] = [
    ({"type": "sketch"}, "type: Input should be"),
    ({"model": "ray-9"}, "model: Input should be"),
    ({"type": "video", "aspect_ratio": "3:1"}, "aspect_ratio must be one of 9:16"),
    ({"aspect_ratio": "5:4"}, "'5:4'"),
    ({"prompt": None}, "prompt is required"),
    ({"prompt": "   "}, "prompt is required"),
    ({"type": "video", "model": "uni-1"}, "model 'uni-1' does not do type 'video'"),
    ({"type": "video", "video": {"keyframes": [{"file_id": "file_nope"}], "keyframe_indexes": [0]}}, "'file_nope'"),
    ({"type": "video", "video": {"start_frame": {"generation_id": "nope"}}}, "'nope'"),
    ({"type": "video", "video": {"loop": True, "duration": "10s"}}, "video.loop"),
    ({"type": "video", "video": {"hdr": True}}, "video.hdr"),
    ({"type": "video", "video": {"keyframes": [{"url": "x"}], "keyframe_indexes": [121]}}, "0..120 for 5s, got 121"),
    ({"type": "image_edit", "source": {"file_id": "f"}}, "source.file_id: no file"),
    ({"type": "video_edit", "model": "ray-3.2"}, "source is required"),
    ({"type": "video_reframe"}, "aspect_ratio is required"),
    ({"type": "layering"}, "type 'layering' is not available yet"),
]


@pytest.mark.parametrize(("extra", "said"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_a_400_naming_it(
    client: luma_agents.Luma,
    served: dict[str, Any],
    extra: dict[str, Any],
    said: str,
) -> None:
    before = _credits(served)
    with pytest.raises(luma_agents.BadRequestError) as err:
        client.generations.create(**({"prompt": "a red circle"} | extra))
    body = err.value.body
    assert isinstance(body, dict) and said in body["detail"], body
    assert _credits(served) == before


def test_another_tenants_file_is_unknown(client: luma_agents.Luma, served: dict[str, Any]) -> None:
    created, put = _upload(client, _png())
    assert put.status_code == 200
    client.files.complete(created.id)
    other = luma_agents.Luma(auth_token=served["other"], base_url=f"{served['base']}/agents/v1")
    with pytest.raises(luma_agents.BadRequestError, match=created.id):
        other.generations.create(type="video", prompt="a red circle", video={"start_frame": {"file_id": created.id}})
    with pytest.raises(luma_agents.NotFoundError):
        other.files.get(created.id)


def test_moderation_and_auth(client: luma_agents.Luma, served: dict[str, Any]) -> None:
    with pytest.raises(luma_agents.BadRequestError) as err:
        client.generations.create(prompt="a nsfw scene")
    assert err.value.body == {"detail": "Contains blacklisted words (failure_code content_moderated)"}
    with pytest.raises(luma_agents.AuthenticationError):
        luma_agents.Luma(auth_token="wrong", base_url=f"{served['base']}/agents/v1").generations.get("x")
    with pytest.raises(luma_agents.NotFoundError):
        client.generations.get("no-such-generation")

"""The official lumaai SDK (strict response validation) against a live `noor serve` subprocess."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import lumaai
import pytest

from noor.engine import media
from tests.conftest import start_serve


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, toy_weights: Path) -> Iterator[dict[str, Any]]:
    """One server for both SDKs (each reads only what it created, whatever else the tenant has)."""
    server = start_serve(tmp_path_factory.mktemp("serve-sdks") / "data", toy_weights)
    assert server.key, "noor serve printed no admin key"
    yield {"base": server.base, "key": server.key}
    server.stop()


def _wait(client: Any, gid: str, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        g = client.generations.get(gid)
        if g.state in ("completed", "failed"):
            return g
        time.sleep(0.1)
    raise AssertionError(f"generation {gid} did not finish")


@pytest.mark.slow
def test_lumaai_sdk_end_to_end(served: dict[str, Any], tmp_path: Path) -> None:
    client = lumaai.LumaAI(
        auth_token=served["key"], base_url=f"{served['base']}/dream-machine/v1", _strict_response_validation=True
    )
    for prompt in ("a red circle moves to the left", "دائرة حمراء تتحرك إلى اليسار"):
        g = client.generations.create(
            prompt=prompt, model="ray-2", aspect_ratio="16:9", resolution="540p", duration="5s"
        )
        assert g.state == "queued"
        done = _wait(client, g.id)
        assert done.state == "completed", done.failure_reason
        path = tmp_path / f"{g.id}.mp4"
        path.write_bytes(httpx.get(done.assets.video).content)
        assert media.video_info(path)[:3] == (40, 960, 540)
    extended = client.generations.create(
        prompt="a red circle moves to the left",
        model="ray-2",
        keyframes={"frame0": {"type": "generation", "id": g.id}},
    )
    assert _wait(client, extended.id).state == "completed"
    image = client.generations.image.create(prompt="a blue square", model="photon-1")
    assert _wait(client, image.id).assets.image
    page = client.generations.list(limit=2, offset=0)
    assert page.count == 2 and page.has_more
    client.generations.delete(image.id)
    with pytest.raises(lumaai.NotFoundError):
        client.generations.get(image.id)
    assert client.generations.concepts.list() == []  # no installed model acts on concepts
    credits = client.credits.get()  # noor serve's own tenant is unmetered (docs/serve.md): never charged
    assert credits.credit_balance == 0.0 and credits.metered is False  # type: ignore[attr-defined]
    with pytest.raises(lumaai.AuthenticationError):
        lumaai.LumaAI(auth_token="wrong", base_url=f"{served['base']}/dream-machine/v1").generations.list()
    with pytest.raises(lumaai.BadRequestError):
        client.generations.create(prompt="a red circle", model="ray-2", resolution="8k")


@pytest.mark.slow
def test_openai_sdk_videos_end_to_end(served: dict[str, Any], tmp_path: Path) -> None:
    import warnings

    import openai

    client = openai.OpenAI(api_key=served["key"], base_url=f"{served['base']}/v1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the Sora endpoints deprecated
        video = client.videos.create(prompt="a green triangle falls", model="sora-2", seconds="4", size="1280x720")
        assert video.status == "queued" and video.size == "1280x720"
        deadline = time.monotonic() + 120
        while video.status in ("queued", "in_progress") and time.monotonic() < deadline:
            time.sleep(0.1)
            video = client.videos.retrieve(video.id)
        assert video.status == "completed" and video.progress == 100, video
        content = client.videos.download_content(video.id)
        path = tmp_path / "sora.mp4"
        path.write_bytes(content.read())
        assert media.video_info(path)[:3] == (32, 1280, 720)
        second = client.videos.create(prompt="a pink ball bounces", seconds="4", size="720x1280")
        page = client.videos.list(limit=1)
        assert [v.id for v in page.data] == [second.id] and page.has_more
        deleted = client.videos.delete(video.id)
        assert deleted.deleted
        with pytest.raises(openai.NotFoundError):
            client.videos.retrieve(video.id)
        with pytest.raises(openai.BadRequestError):
            client.videos.create(prompt="x", seconds="5")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="wrong", base_url=f"{served['base']}/v1").videos.list()

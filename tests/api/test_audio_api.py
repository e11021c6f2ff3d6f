"""Dream Machine's `POST /generations/{id}/audio` (#29) on the toy Stable Audio Open: the official lumaai SDK (strict
response validation) adds sound to a completed clip against a live server (a new video generation: the source's
H.264 packets as they were and an AAC track of the clip's length), and the refusals as direct calls (404 or 400
naming the reason, nothing queued, no credits taken)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import lumaai
import numpy as np
import pytest

from noor.config import settings
from noor.engine.diffusers import audio
from tests.api.edit_reframe_server import Live, clip, live_server, png, strict
from tests.api.test_serve_sdks import _wait
from tests.engine.diffusers.toys import toy_dir

pytestmark = pytest.mark.slow

DM = "/dream-machine/v1"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, toy_weights: Path) -> Iterator[Live]:
    """The live server with the toy audio model installed in its data dir (2 steps)."""
    tmp = tmp_path_factory.mktemp("dm-audio")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOOR_DATA_DIR", str(tmp / "data"))
        settings.cache_clear()
        toy = toy_dir(tmp_path_factory, "stable-audio-open")
        audio.add(audio.InstalledAudio("sao-toy", "stable-audio-open", str(toy), steps=2))
        with live_server(tmp, toy_weights) as server:
            yield server
    settings.cache_clear()


def _streams(path: Path) -> tuple[list[tuple[str, str]], list[bytes], np.ndarray]:
    """(kind, codec) of each stream, the video stream's packet bytes, the sound decoded as (channels, samples)."""
    with av.open(str(path)) as container:
        kinds = [(s.type, s.codec_context.name) for s in container.streams]
        packets = [bytes(p) for p in container.demux(video=0) if p.size]
    with av.open(str(path)) as container:
        chunks = [frame.to_ndarray() for frame in container.decode(audio=0)] if container.streams.audio else []
    return kinds, packets, np.concatenate(chunks, axis=1) if chunks else np.zeros((0, 0))


def _completed_clip(client: lumaai.LumaAI, live: Live, tmp: Path, frames: int = 8) -> lumaai.types.Generation:
    """A completed video generation of acme's of `frames` at 8 fps: an uploaded clip, modified."""
    g = client.generations.video.modify(
        generation_type="modify_video", media={"url": live.upload(clip(tmp, frames), "clip.mp4")}, mode="flex_1",
        model="ray-2", prompt="a white square slides right",
    )  # fmt: skip
    done = _wait(client, g.id)
    assert done.state == "completed", done.failure_reason
    return done


def test_sdk_adds_sound_to_a_clip_its_frames_untouched(live: Live, tmp_path: Path) -> None:
    client = strict(lumaai.LumaAI, DM)(live)
    source = _completed_clip(client, live, tmp_path)
    before = live.credits()
    g = client.generations.audio(source.id, prompt="rain on a tin roof", negative_prompt="speech",
                                 generation_type="add_audio")  # fmt: skip
    assert g.id != source.id and g.state == "queued" and g.generation_type == "video"
    assert g.request.generation_type == "add_audio" and g.request.prompt == "rain on a tin roof"
    record = live.store.get("acme", g.id)
    assert record.model == "sao-toy" and record.price_microcents > 0
    assert live.credits() < before  # the quoted price, taken when queued
    done = _wait(client, g.id)
    assert done.state == "completed", done.failure_reason
    assert done.assets.video and done.assets.image and done.assets.video != source.assets.video
    (tmp_path / "source.mp4").write_bytes(httpx.get(source.assets.video).content)
    (tmp_path / "sound.mp4").write_bytes(httpx.get(done.assets.video).content)
    kinds, packets, sound = _streams(tmp_path / "sound.mp4")
    assert sorted(kinds) == [("audio", "aac"), ("video", "h264")]
    source_kinds, source_packets, _ = _streams(tmp_path / "source.mp4")
    assert source_kinds == [("video", "h264")]
    assert packets == source_packets  # the video stream copied packet for packet: the source's frames
    assert sound.shape[0] == 2 and abs(sound.shape[1] / 8000 - len(packets) / 8) < 0.15  # stereo, the clip's length
    assert np.sqrt((sound**2).mean()) > 1e-3  # sound, not silence
    assert live.store.get("acme", g.id).task["source"] == live.store.get("acme", source.id).assets["video"]


def _refused(live: Live, generation_id: str, status: int, *words: str) -> None:
    before, count = live.credits(), live.store.list("acme", 1, 0)[1]
    r = httpx.post(f"{live.base}{DM}/generations/{generation_id}/audio", json={"prompt": "rain"}, headers=live.auth())
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert set(r.json()) == {"detail"} and all(w in detail for w in words), detail
    assert live.credits() == before and live.store.list("acme", 1, 0)[1] == count  # nothing queued or charged


def test_refusals_name_the_reason_and_charge_nothing(
    live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refused(live, "no-such-generation", 404, "Generation not found")
    # a video not completed (of a model no worker here claims: it stays queued)
    queued = live.store.create(
        tenant="acme", model="not-served", request={}, task={"prompt": "x"}, generation_type="video"
    )
    _refused(live, queued.id, 400, "generation_id", queued.id, "not a completed video")
    # an image generation
    image = httpx.post(
        f"{live.base}{DM}/generations/image/reframe", headers=live.auth(),
        json={"generation_type": "reframe_image", "media": {"url": live.upload(png(), "red.png")},
              "aspect_ratio": "1:1", "model": "photon-1", "prompt": "grey"},
    )  # fmt: skip
    assert image.status_code == 201, image.text
    _refused(live, image.json()["id"], 400, "generation_id", "is an image")
    # another tenant's clip is not found
    other = live.store.create(
        tenant="globex", model="not-served", request={}, task={"prompt": "x"}, generation_type="video"
    )
    _refused(live, other.id, 404, "Generation not found")
    # a clip longer than the toy makes (2.048 s): 24 frames at 8 fps
    long = _completed_clip(strict(lumaai.LumaAI, DM)(live), live, tmp_path, frames=24)
    _refused(live, long.id, 400, "generation_id", "3 s long", "'sao-toy' makes at most 2.048 s")
    # no audio model installed here: the message names the `noor models add` line
    source = _completed_clip(strict(lumaai.LumaAI, DM)(live), live, tmp_path)
    monkeypatch.setenv("NOOR_DATA_DIR", str(tmp_path / "empty"))
    settings.cache_clear()
    try:
        _refused(live, source.id, 400, "no audio model is installed", "noor models add")
    finally:
        monkeypatch.undo()
        settings.cache_clear()


class _Files(dict[str, bytes]):
    def put(self, key: str, data: bytes) -> str:
        self[key] = data
        return key


def test_the_manifest_names_the_source_clip_as_its_parent(tmp_path: Path) -> None:
    from noor.runtime.worker import ACTIONS, ingredients

    files = _Files({"acme/g1/video.mp4": clip(tmp_path)})
    (parent,) = ingredients({"kind": "audio", "source": "acme/g1/video.mp4"}, files)
    assert (parent.relationship, parent.mime, parent.data) == ("parentOf", "video/mp4", files["acme/g1/video.mp4"])
    assert "acme/g1/video.mp4" in parent.title and ACTIONS["audio"] == "edited"

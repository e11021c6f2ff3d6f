"""`media.mux_audio`: an AAC track beside a copied H.264 stream, as long as the clip."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from noor.engine import media

RATE = 44100


def clip(tmp_path: Path, frames: int = 12, fps: int = 8) -> Path:
    pixels = (np.random.default_rng(0).random((frames, 32, 48, 3)) * 255).astype(np.uint8)
    return media.write_video(tmp_path / "clip.mp4", pixels, fps)


def tone(seconds: float, channels: int = 2, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return np.stack([0.5 * np.sin(2 * np.pi * hz * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def sound(path: Path) -> tuple[str, int, float, np.ndarray]:
    """(codec, channels, stream duration in seconds, decoded samples (channels, n)) of the one audio stream."""
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        stream = container.streams.audio[0]
        duration_s = float(stream.duration * stream.time_base)
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
        return stream.codec_context.name, stream.channels, duration_s, decoded


@pytest.mark.parametrize("seconds", [3.0, 0.5])  # longer than the clip (cut), shorter (padded with silence)
def test_video_copied_and_aac_as_long_as_the_clip(tmp_path: Path, seconds: float) -> None:
    source = clip(tmp_path)  # 12 frames at 8 fps: 1.5 s
    out = media.mux_audio(source, tone(seconds), RATE, tmp_path / "with_sound.mp4")
    assert video_packets(out) == video_packets(source)  # the same H.264 bytes: copied, not re-encoded
    assert media.video_info(out) == media.video_info(source)
    codec, channels, duration_s, decoded = sound(out)
    assert (codec, channels) == ("aac", 2)
    assert abs(duration_s - 1.5) <= 1 / 8
    loud = np.abs(decoded).max(axis=0) > 0.05
    if seconds < 1.5:  # the tone stops at 0.5 s and silence runs to the clip's end
        assert loud[: int(0.4 * RATE)].mean() > 0.9 and not loud[int(0.6 * RATE) :].any()
    else:
        assert loud[int(0.1 * RATE) : int(1.4 * RATE)].mean() > 0.9


def test_mono_in_place(tmp_path: Path) -> None:
    source = clip(tmp_path, frames=24, fps=24)
    before = video_packets(source)
    media.mux_audio(source, tone(2.0, channels=1), RATE, source)
    assert video_packets(source) == before
    codec, channels, duration_s, _ = sound(source)
    assert (codec, channels) == ("aac", 1) and abs(duration_s - 1.0) <= 1 / 24


def test_bad_waveforms_and_rates_are_media_errors(tmp_path: Path) -> None:
    source = clip(tmp_path)
    cases = {
        "1 or 2 channels, got shape (3, 44100)": (tone(1.0, channels=3), RATE),
        "got shape (44100,)": (tone(1.0)[0], RATE),
        "sample_rate must be between 8000 and 96000 Hz, got 100": (tone(1.0), 100),
        "NaN or infinite": (np.full((1, 100), np.nan, dtype=np.float32), RATE),
    }
    for message, (wave, rate) in cases.items():
        with pytest.raises(media.MediaError, match=message.replace("(", r"\(").replace(")", r"\)")):
            media.mux_audio(source, wave, rate, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    (tmp_path / "not.mp4").write_bytes(b"not a video")
    with pytest.raises(media.MediaError, match="not a readable video"):
        media.mux_audio(tmp_path / "not.mp4", tone(1.0), RATE, tmp_path / "out.mp4")

"""The invisible watermark (noor.trust.watermark): it survives Noor's own encoders and a re-encode at their
settings at the API's default size, it is invisible-watermark's dwtDctSvd mark bit for bit, and a picture
without one, or too small for one, says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from imwatermark import WatermarkDecoder, WatermarkEncoder

from noor.engine import media
from noor.engine.task import Task, size_from_aspect
from noor.engine.tiny.backend import TinyBackend
from noor.trust import watermark
from noor.trust.watermark import Mark

MARK = Mark.of("a1b2c3", "generation-0001")


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """A noor-tiny clip at the API's default size (16:9 at 540p: 960x540); 16 frames (two marked) keep the test
    quick (the mark is per frame; a default clip's 40 only add votes)."""
    width, height = size_from_aspect("16:9", "540p")
    task = Task(prompt="a red circle moves to the left over a blue sea", width=width, height=height, num_frames=16)
    return TinyBackend().generate([task])[0].frames  # (16, 540, 960, 3)


def test_the_clip_is_the_default_size(clip: np.ndarray) -> None:
    assert clip.shape == (16, 540, 960, 3)


def test_a_mark_survives_noor_h264_and_a_reencode_at_the_same_settings(clip: np.ndarray, tmp_path: Path) -> None:
    marked = watermark.watermark_frames(clip, MARK)  # frames 0 and 8 of 16 (every 8th)
    assert [np.array_equal(m, c) for m, c in zip(marked, clip, strict=True)] == [False, *[True] * 7] * 2
    first = media.read_video(media.write_video(tmp_path / "a.mp4", marked, 8))  # crf 18, yuv420p, as the worker
    again = media.read_video(media.write_video(tmp_path / "b.mp4", first, 8))
    for frames in (first, again):
        reading = watermark.read(frames)
        assert (reading.status, reading.mark) == ("found", MARK)
        assert reading.frames == 2 and reading.agreement > 0.9
    assert watermark.read(again[8]).mark == MARK  # a marked frame alone carries all of it
    assert watermark.read(again[9]).mark is None
    assert watermark.read(again[3:]).mark == MARK  # trimmed at the start: another of the interleaved sets


def test_a_mark_survives_jpeg_at_noor_quality_twice_and_png(clip: np.ndarray, tmp_path: Path) -> None:
    marked = watermark.watermark_frames(clip[0], MARK)
    jpeg = media.read_image(media.write_image(tmp_path / "a.jpg", marked))  # quality 95, as the worker
    jpeg_again = media.read_image(media.write_image(tmp_path / "b.jpg", jpeg))
    png = media.read_image(media.write_image(tmp_path / "a.png", marked))
    assert [watermark.read(f).mark for f in (jpeg, jpeg_again, png)] == [MARK] * 3


def test_the_mark_is_invisible(clip: np.ndarray) -> None:
    marked = watermark.watermark_frames(clip[:1], MARK)
    mse = np.mean((marked.astype(np.float64) - clip[:1]) ** 2)
    assert 10 * np.log10(255**2 / mse) > 40  # dB; imwatermark's own mark measures 44 here
    assert np.array_equal(marked[..., 0], clip[:1, ..., 0])  # only U moves, so red stays


def test_it_is_invisible_watermarks_mark_bit_for_bit(clip: np.ndarray) -> None:
    """imwatermark's decoder reads our mark, and ours reads the mark its encoder writes (BGR in OpenCV)."""
    frame = np.ascontiguousarray(clip[0, :256, :320])
    ours = watermark.watermark_frames(frame, MARK)
    assert WatermarkDecoder("bytes", 64).decode(ours[..., ::-1].copy(), "dwtDctSvd") == MARK.payload()
    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", MARK.payload())
    theirs = encoder.encode(frame[..., ::-1].copy(), "dwtDctSvd")[..., ::-1]
    assert watermark.read(np.ascontiguousarray(theirs)).mark == MARK


def test_power_iteration_finds_the_largest_singular_value(clip: np.ndarray) -> None:
    blocks, _ = watermark._ll_blocks(clip[:2])
    s0, u0, v0 = watermark._top_singular(blocks)
    exact = np.linalg.svd(blocks.astype(np.float64), compute_uv=False)[..., 0]
    assert np.abs(s0 - exact).max() < 0.05  # the lattice step is 36; the margin a bit has is 9
    rebuilt = s0[..., None, None] * u0[..., :, None] * v0[..., None, :]
    top = np.linalg.svd(blocks.astype(np.float64))
    expected = top.S[..., 0, None, None] * top.U[..., :, :1] * top.Vh[..., :1, :]
    assert np.abs(rebuilt - expected).max() < 0.05


@pytest.mark.parametrize("kind", ["clip", "black", "white", "noise"])
def test_a_picture_without_a_mark_reads_none(clip: np.ndarray, kind: str) -> None:
    frames = {
        "clip": clip,
        "black": np.zeros((2, 256, 256, 3), np.uint8),
        "white": np.full((2, 256, 256, 3), 255, np.uint8),
        "noise": np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8),
    }[kind]
    reading = watermark.read(frames)
    assert (reading.status, reading.mark) == ("none", None)
    assert reading.describe().startswith("none found")


def test_a_picture_too_small_is_left_unmarked_and_said_so(clip: np.ndarray) -> None:
    small = np.ascontiguousarray(clip[:, :144, :256])  # a 16:9 thumbnail's size: 36,864 pixels
    assert np.array_equal(watermark.watermark_frames(small, MARK), small)
    reading = watermark.read(small)
    assert reading.status == "too-small" and reading.mark is None
    assert "too small" in reading.describe() and "not a sign of tampering" in reading.describe()
    assert watermark.large_enough(256, 256) and not watermark.large_enough(255, 256)


def test_a_payload_with_a_flipped_bit_is_no_mark() -> None:
    payload = bytearray(MARK.payload())
    assert Mark.from_payload(bytes(payload)) == MARK
    payload[2] ^= 0x10
    assert Mark.from_payload(bytes(payload)) is None
    assert Mark.from_payload(bytes(8)) is None and Mark.from_payload(b"\xff" * 8) is None


def test_bad_frames_and_payloads_are_refused() -> None:
    with pytest.raises(watermark.WatermarkError, match="uint8"):
        watermark.embed(np.zeros((256, 256, 3), np.float32), MARK.payload())
    with pytest.raises(watermark.WatermarkError, match="payload must be 8 bytes, got 3"):
        watermark.embed(np.zeros((256, 256, 3), np.uint8), b"abc")


def test_marking_in_threads_is_marking_in_turn(clip: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watermark, "THREADS", 1)
    one = watermark.watermark_frames(clip, MARK, every=1)
    monkeypatch.setattr(watermark, "THREADS", 3)
    assert np.array_equal(watermark.watermark_frames(clip, MARK, every=1), one)

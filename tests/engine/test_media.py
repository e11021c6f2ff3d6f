from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from noor.engine import media
from noor.engine.task import Media
from noor.engine.tiny.detector import psnr


def _clip(t: int = 12, h: int = 48, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(1, h // 16, w // 16, 3), dtype=np.uint8)
    blocks = np.repeat(np.repeat(base, 16, axis=1), 16, axis=2)
    # even shifts keep block edges on the 2x2 grid that yuv420 subsamples chroma on
    return np.concatenate([np.roll(blocks, 2 * i, axis=2) for i in range(t)])


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return psnr(a / 255.0, b / 255.0) > 30.0


def test_mp4_decodes_back_with_frame_count_size_and_fps(tmp_path: Path) -> None:
    frames = _clip()
    path = media.save(Media(frames, fps=12), tmp_path / "clip.mp4")
    count, width, height, fps = media.video_info(path)
    assert (count, width, height, fps) == (12, 80, 48, 12.0)
    decoded = media.read_video(path)
    assert all(_close(d, f) for d, f in zip(decoded, frames, strict=True))


def test_codec_is_h264(tmp_path: Path) -> None:
    import av

    path = media.write_video(tmp_path / "c.mp4", _clip(), fps=8)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_one_frame_is_an_image(tmp_path: Path, suffix: str) -> None:
    frame = _clip(1)
    path = media.save(Media(frame, fps=8), tmp_path / f"still{suffix}")
    back = media.read_image(path)
    assert back.shape == (48, 80, 3)
    if suffix == ".png":
        assert np.array_equal(back, frame[0])


def test_many_frames_refuse_an_image_path_and_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(media.MediaError, match="need a video path"):
        media.save(Media(_clip(), fps=8), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_odd_sides_refused_without_partial_file(tmp_path: Path) -> None:
    with pytest.raises(media.MediaError, match="even"):
        media.write_video(tmp_path / "odd.mp4", np.zeros((2, 9, 10, 3), np.uint8), fps=8)
    assert list(tmp_path.iterdir()) == []


def test_thumbnail_is_middle_frame_scaled_down() -> None:
    frames = np.zeros((5, 400, 800, 3), np.uint8)
    frames[2] = 200
    thumb = media.thumbnail(frames, max_side=256)
    assert thumb.shape == (128, 256, 3)
    assert thumb.mean() == pytest.approx(200, abs=1)


def test_read_image_of_a_video_is_its_last_frame(tmp_path: Path) -> None:
    frames = _clip()
    path = media.write_video(tmp_path / "c.mp4", frames, fps=8)
    assert _close(media.read_image(path), frames[-1])


def test_unreadable_images_are_media_errors(tmp_path: Path) -> None:
    bogus = tmp_path / "not-an-image.png"
    bogus.write_text("hello")
    with pytest.raises(media.MediaError, match="not a readable image"):
        media.read_image(bogus)
    with pytest.raises(media.MediaError, match="no such file"):
        media.read_image(tmp_path / "missing.png")


def test_a_written_file_gets_the_usual_mode_and_no_folder_is_made(tmp_path: Path) -> None:
    import os
    import stat


    frames = np.zeros((2, 16, 16, 3), np.uint8)
    old = os.umask(0o022)
    try:
        video = media.write_video(tmp_path / "a.mp4", frames, 8)
        image = media.write_image(tmp_path / "a.png", frames[0])
    finally:
        os.umask(old)
    assert stat.S_IMODE(video.stat().st_mode) == stat.S_IMODE(image.stat().st_mode) == 0o644
    with pytest.raises(media.MediaError, match="no such folder"):
        media.write_video(tmp_path / "missing" / "b.mp4", frames, 8)
    assert not (tmp_path / "missing").exists()

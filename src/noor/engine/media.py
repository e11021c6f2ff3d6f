"""Media in and out: H.264 MP4 through PyAV, PNG/JPEG/WebP through Pillow, thumbnails, keyframe reading.

Writers go to a temporary file beside the target and rename it into place, so a failed write never
leaves a partial file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from noor.engine.task import Media

VIDEO_SUFFIXES = (".mp4",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class MediaError(ValueError):
    """A file that cannot be read or written as the media asked for."""


def _umask() -> int:
    """The process's umask, read without setting it where Linux allows (setting it, even back, races with other
    threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary file beside `path`, renamed into place when the block ends without an error. The folder must
    exist (a mistyped folder is an error, not a new folder); the file gets the mode any new file gets (mkstemp's
    0600 would hide it from the user's group and others, unlike every other file they write)."""
    if not path.parent.is_dir():
        raise MediaError(f"no such folder: {str(path.parent)!r}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_video(path: str | Path, frames: np.ndarray, fps: int, crf: int = 18) -> Path:
    """Encode (T, H, W, 3) uint8 frames as H.264 (yuv420p, so sides must be even) in an MP4."""
    path = Path(path)
    H, W = frames.shape[1:3]
    if H % 2 or W % 2:
        raise MediaError(f"H.264 needs even sides, got {W}x{H}")
    with _atomic(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path: str | Path, frame: np.ndarray, quality: int = 95) -> Path:
    """Write one (H, W, 3) uint8 frame; the format follows the suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise MediaError(f"image path must end in {', '.join(IMAGE_SUFFIXES)}, got {path.name!r}")
    with _atomic(path) as tmp:
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[suffix]
        Image.fromarray(frame).save(tmp, format=fmt, quality=quality)
    return path


def thumbnail(frames: np.ndarray, max_side: int = 256) -> np.ndarray:
    """The middle frame, scaled so its longer side is at most `max_side` (never enlarged)."""
    frame = frames[len(frames) // 2]
    image = Image.fromarray(frame)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(image)


def save(media: Media, path: str | Path) -> Path:
    """Write media to `path`: an MP4 for a clip, an image file for one frame."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return write_video(path, media.frames, media.fps)
    if suffix in IMAGE_SUFFIXES:
        if not media.is_image:
            raise MediaError(f"{len(media.frames)} frames need a video path (.mp4), got {path.name!r}")
        return write_image(path, media.frames[0])
    raise MediaError(f"output must end in .mp4 or {', '.join(IMAGE_SUFFIXES)}, got {path.name!r}")


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8; the last frame if it is a video."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"no such file: {str(path)!r}")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return read_video(path)[-1]
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise MediaError(f"not a readable image: {str(path)!r}") from err


def read_clip(path: str | Path) -> tuple[np.ndarray, float]:
    """Every frame of a video as (T, H, W, 3) uint8, and its frame rate, in one decode."""
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError, IndexError) as err:
        raise MediaError(f"not a readable video: {str(path)!r}") from err
    if not frames:
        raise MediaError(f"video has no frames: {str(path)!r}")
    return np.stack(frames), float(rate or 0)


def read_video(path: str | Path) -> np.ndarray:
    """Decode every frame of a video as (T, H, W, 3) uint8."""
    return read_clip(path)[0]


def video_info(path: str | Path) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of a video, by decoding it."""
    frames, fps = read_clip(path)
    return len(frames), frames.shape[2], frames.shape[1], fps

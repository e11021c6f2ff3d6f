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


AUDIO_LAYOUTS = {1: "mono", 2: "stereo"}
AAC_RATES = (8000, 96000)  # the sample rates (Hz) the AAC track takes, lowest and highest


def fit_length(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """(channels, samples) cut to `num_samples`, or padded with silence at the end up to it."""
    if waveform.shape[1] >= num_samples:
        return waveform[:, :num_samples]
    return np.pad(waveform, ((0, 0), (0, num_samples - waveform.shape[1])))


def mux_audio(
    video_path: str | Path, waveform: np.ndarray, sample_rate: int, out_path: str | Path, bitrate: int = 192_000
) -> Path:
    """An MP4 with `video_path`'s video stream copied (not re-encoded) and `waveform` as an AAC track.

    `waveform` is (channels, samples) float32 in [-1, 1], mono or stereo; it is cut to the clip's length, or padded
    with silence up to it, so the sound ends with the picture. `out_path` may be `video_path` (written beside it
    and renamed into place)."""
    out_path = Path(out_path)
    # 1. validate
    if waveform.ndim != 2 or waveform.shape[0] not in AUDIO_LAYOUTS:
        raise MediaError(f"waveform must be (channels, samples) with 1 or 2 channels, got shape {waveform.shape}")
    if not AAC_RATES[0] <= sample_rate <= AAC_RATES[1]:
        raise MediaError(f"sample_rate must be between {AAC_RATES[0]} and {AAC_RATES[1]} Hz, got {sample_rate}")
    if not np.isfinite(waveform).all():
        raise MediaError("waveform has NaN or infinite samples")
    try:
        source = av.open(str(video_path))
    except (av.error.FFmpegError, OSError) as err:
        raise MediaError(f"not a readable video: {str(video_path)!r}") from err
    with source:
        if not source.streams.video:
            raise MediaError(f"not a readable video: {str(video_path)!r}")
        video = source.streams.video[0]
        # 2. the clip's length: its frame count over its frame rate (every packet is one frame in an H.264 MP4)
        packets = [p for p in source.demux(video) if p.dts is not None]
        rate = video.average_rate or video.guessed_rate
        if not packets or not rate:
            raise MediaError(f"video has no frames: {str(video_path)!r}")
        duration_s = len(packets) / float(rate)
        # (channels, samples), planar float as AAC takes it
        samples = np.ascontiguousarray(
            fit_length(np.clip(waveform.astype(np.float32), -1.0, 1.0), round(duration_s * sample_rate))
        )
        with _atomic(out_path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
            # 3. the video packets as they are
            copied = container.add_stream_from_template(video)
            # 4. the sound, encoded to AAC in the encoder's own frame size (PyAV buffers and splits)
            audio = container.add_stream("aac", rate=sample_rate)
            audio.layout = AUDIO_LAYOUTS[samples.shape[0]]
            audio.bit_rate = bitrate
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=audio.layout.name)
            frame.sample_rate, frame.pts = sample_rate, 0
            for packet in packets:
                packet.stream = copied
                container.mux(packet)
            for packet in [*audio.encode(frame), *audio.encode(None)]:
                container.mux(packet)
    return out_path

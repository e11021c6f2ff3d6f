"""What an uploaded or fetched file must be: an image (PNG, JPEG, WebP) or an MP4 video that decodes.

Magic bytes only say what a file claims to be; a truncated PNG or an `ftyp` header on junk passed them
and failed later, in a worker, after the job was charged. So each file is decoded here, once: an image
by Pillow (`verify()` for the checksums, then `load()` for the pixels, after its size is checked against
MAX_IMAGE_PIXELS so a decompression bomb is refused from its header), a video by PyAV (the first frame
decoded, every packet demuxed).
"""

from __future__ import annotations

import io
import warnings

import av
from PIL import Image, UnidentifiedImageError

from noor.api.requests import RequestError

IMAGE_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
# 4096x4096: the models' largest side (registry.Limits.max_side); a 16.8-megapixel RGB image decodes to 50 MB.
MAX_IMAGE_PIXELS = 4096 * 4096


def image_suffix(data: bytes, what: str, expected: str = "a PNG, JPEG or WebP image") -> str:
    """The file suffix of a PNG, JPEG or WebP image that decodes; RequestError(400) naming `what` otherwise."""
    kind: str | None = None
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, on huge images; both are a 400 here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind, (width, height) = image.format, image.size
                if kind not in IMAGE_SUFFIXES:
                    raise RequestError(400, f"{what} must be {expected}, got {kind}")
                if width * height > MAX_IMAGE_PIXELS:
                    raise RequestError(
                        400,
                        f"{what} is {width}x{height}; images may have at most {MAX_IMAGE_PIXELS} pixels (4096x4096)",
                    )
                image.verify()
            with Image.open(io.BytesIO(data)) as image:  # verify() leaves the image unusable: load a fresh one
                image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:  # its header asks for more
        raise RequestError(
            400, f"{what}: images may have at most {MAX_IMAGE_PIXELS} pixels (4096x4096); {err}"
        ) from None
    except UnidentifiedImageError:
        raise RequestError(400, f"{what} must be {expected}") from None
    except (OSError, SyntaxError, ValueError) as err:  # Pillow's words for truncated or corrupt data
        raise RequestError(400, f"{what} is not a whole image ({kind}): {err}") from None
    return IMAGE_SUFFIXES[str(kind)]


def check_video(data: bytes, what: str) -> None:
    """An MP4 with a video stream whose first frame decodes and whose packets are all there."""
    try:
        with av.open(io.BytesIO(data), format="mp4") as container:
            if not container.streams.video:
                raise RequestError(400, f"{what} is not a playable MP4 video: it has no video stream")
            stream = container.streams.video[0]
            if stream.codec_context.width * stream.codec_context.height > MAX_IMAGE_PIXELS:
                raise RequestError(400, f"{what}'s frames may have at most {MAX_IMAGE_PIXELS} pixels (4096x4096)")
            next(container.decode(stream))
            container.seek(0)
            packets = sum(1 for p in container.demux(stream) if p.size)
    except (av.FFmpegError, StopIteration) as err:
        raise RequestError(400, f"{what} is not a playable MP4 video: {err or 'no frames'}") from None
    if stream.frames and packets != stream.frames:
        raise RequestError(400, f"{what} is cut short: {packets} of its {stream.frames} frames are there")


def file_suffix(data: bytes, what: str) -> str:
    """`.png`, `.jpg`, `.webp` or `.mp4` for a file that decodes as one; RequestError(400) otherwise."""
    if data[4:8] == b"ftyp":
        check_video(data, what)
        return ".mp4"
    return image_suffix(data, what, "a PNG, JPEG, WebP image or an MP4 video")

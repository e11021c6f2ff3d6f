"""The invisible watermark: a 64-bit mark in the pixels that says which deployment made a file and for which
generation, and that survives Noor's own encoders (H.264 at crf 18 in yuv420p, JPEG and PNG) and a re-encode
at the same settings.

The scheme is invisible-watermark's `dwtDctSvd` (module `imwatermark`, the method its README recommends for
robustness), with its defaults: the U plane of OpenCV's YUV, the LL band of a one-level Haar DWT, 4x4 blocks
of it, and in each block the largest singular value of the block's DCT set to `(s // 36 + 0.25 + 0.5 * bit) * 36`;
block k carries bit k mod 64 (row-major), so each bit is written many times and read back by a vote. It is
the same mark bit for bit (tests/trust/test_watermark.py reads ours with imwatermark's decoder and theirs
with ours), computed here with numpy over every block and frame at once, because imwatermark loops over the
blocks in Python: 30-180 ms a frame at 256x256-960x540 on this machine, several times the generation time of
a default clip (Noor's budget for signing and the mark is 10% of it).

Two identities make it cheap: the DCT is orthonormal, so a block and its DCT have the same singular values,
and moving the largest singular value of the DCT by d moves the block by `d * u v^T` (its own top singular
vectors); the top singular triplet of a 4x4 block of the LL band (all values > 0, one value far above the
rest) takes a few power iterations. Only U changes, so only G and B move (Y and V are kept exactly).

A clip is marked in every 8th frame (`VIDEO_EVERY`, for the time budget) and read by a vote over the decoded
frames of each of the 8 interleaved sets (the mean of each bit's votes), so a clip trimmed at the start is read
too.
An image below 256x256 pixels (its area, as in imwatermark: `MIN_PIXELS`) has too few blocks for a mark
that survives; it is left unmarked, and `read` says so instead of "no mark".

The payload: a 3-byte deployment id (from the signing CA's key, `signing.deployment_id`), a 3-byte tag of
the generation id, and a CRC-16 of those six bytes, so a picture that carries no mark reads as none rather
than as random bits (a false mark: 1 in 65,536).
"""

from __future__ import annotations

import binascii
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

SCALE = 36.0  # imwatermark's default strength for dwtDctSvd (its `scales=[0, 36, 0]`: the U plane)
BLOCK = 4  # imwatermark's default block side, in LL coefficients (8x8 pixels)
PAYLOAD_BITS = 64
MIN_PIXELS = 256 * 256  # imwatermark refuses smaller images ("image too small, should be larger than 256x256")
# A clip is marked in every 8th frame (0, 8, 16, ...): marking costs 10-15 ms of one core per 960x540 frame; in
# every 4th it measured 11.4% of a default clip's generation (budget: 10%), in every frame 20-40%. Each marked
# frame carries the whole mark, and 5 of a default clip's 40 (one a second at 8 fps) are plenty to vote. A still
# taken from a clip carries it if it is one of the marked frames.
VIDEO_EVERY = 8
CHUNK_FRAMES = 2  # frames worked on at once: their float planes stay in cache (measured 1.2x faster than 4)
THREADS = min(4, os.cpu_count() or 1)  # chunks marked at once: a worker's cores are idle between generate and encode
POWER_STEPS = 3  # each step shrinks v's error by (s1 / s0)^2, and s0's error is the square of v's (a test holds it)

# OpenCV's RGB <-> YUV (COLOR_BGR2YUV), which imwatermark uses: U = 0.492 (B - Y) + 128; G = Y - 0.395 (U - 128)
# - 0.581 (V - 128), B = Y + 2.032 (U - 128)
_U_FROM_RGB = np.array([-0.299 * 0.492, -0.587 * 0.492, (1 - 0.114) * 0.492], dtype=np.float32)
_G_PER_U, _B_PER_U = -0.395, 2.032


class WatermarkError(ValueError):
    """A payload or frames the watermark cannot take."""


@dataclass(frozen=True)
class Mark:
    """What a payload says: which deployment (its id) and which generation (a tag of its id)."""

    deployment: str  # 6 hex digits
    generation: str  # 6 hex digits

    @classmethod
    def of(cls, deployment_id: str, generation_id: str) -> Mark:
        return cls(deployment_id, generation_tag(generation_id))

    def payload(self) -> bytes:
        body = bytes.fromhex(self.deployment) + bytes.fromhex(self.generation)
        return body + _check(body)

    @classmethod
    def from_payload(cls, payload: bytes) -> Mark | None:
        """The mark in 8 read bytes, or None when their CRC does not match (no mark, or a broken one)."""
        body, crc = payload[:6], payload[6:8]
        if len(payload) != 8 or _check(body) != crc:
            return None
        return cls(body[:3].hex(), body[3:].hex())


def _check(body: bytes) -> bytes:
    """CRC-16/CCITT of the six bytes, xor "NR": an all-0 or all-1 read (a flat picture's) never checks out."""
    return (binascii.crc_hqx(body, 0xFFFF) ^ 0x4E52).to_bytes(2, "big")


def generation_tag(generation_id: str) -> str:
    """The 3-byte tag of a generation id the mark carries (6 hex digits)."""
    return hashlib.sha256(generation_id.encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Reading:
    """What `read` found: a mark, none, or a picture too small to carry one."""

    status: Literal["found", "none", "too-small"]
    mark: Mark | None = None
    frames: int = 0  # frames read
    agreement: float = 0.0  # mean share of a bit's block votes that agree with the bit read (0.5: noise, 1: clean)
    size: tuple[int, int] = (0, 0)  # (width, height)

    def describe(self) -> str:
        w, h = self.size
        if self.status == "too-small":
            return f"absent: {w}x{h} is too small to carry one (under {MIN_PIXELS:,} pixels), not a sign of tampering"
        if self.mark is None:
            return f"none found ({self.frames} frame(s) of {w}x{h} read)"
        return (
            f"deployment {self.mark.deployment}, generation tag {self.mark.generation} "
            f"({self.frames} frame(s) read, {self.agreement:.0%} of votes agree)"
        )


def large_enough(width: int, height: int) -> bool:
    return width * height >= MIN_PIXELS


def _frames(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 from one frame or a clip."""
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise WatermarkError(f"frames must be uint8 (H, W, 3) or (T, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames[None] if frames.ndim == 3 else frames


def _ll_blocks(frames: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The U plane's Haar LL band in 4x4 blocks: (T, bh, bw, 4, 4) float32, and their grid (T, bh, bw, 4)."""
    T, H, W, _ = frames.shape
    bh, bw = H // 4 * 4 // 2 // BLOCK, W // 4 * 4 // 2 // BLOCK  # imwatermark's crop: whole blocks of 8x8 pixels
    pixels = frames[:, : bh * 2 * BLOCK, : bw * 2 * BLOCK].astype(np.float32)  # (T, h, w, 3)
    rows = pixels[:, 0::2] + pixels[:, 1::2]
    sums = rows[:, :, 0::2] + rows[:, :, 1::2]  # (T, h/2, w/2, 3): each 2x2 of pixels summed
    ll = (sums @ _U_FROM_RGB + 4 * 128.0) / 2.0  # (T, h/2, w/2): the haar LL of U, (a + b + c + d) / 2
    return ll.reshape(T, bh, BLOCK, bw, BLOCK).transpose(0, 1, 3, 2, 4), (T, bh, bw, BLOCK)


def _top_singular(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s0, u0, v0) of each 4x4 block by power iteration on B^T B: (...,), (..., 4), (..., 4)."""
    gram = np.swapaxes(blocks, -1, -2) @ blocks  # (..., 4, 4)
    v = np.full((*blocks.shape[:-2], BLOCK), 0.5, dtype=blocks.dtype)  # the Perron vector of a constant block
    for _ in range(POWER_STEPS):
        v = np.einsum("...jk,...k->...j", gram, v)
        v /= np.sqrt(np.einsum("...j,...j->...", v, v))[..., None] + 1e-12
    bv = np.einsum("...ij,...j->...i", blocks, v)  # (..., 4) = s0 u0
    s0 = np.sqrt(np.einsum("...i,...i->...", bv, bv))
    return s0, bv / (s0[..., None] + 1e-12), v


def _bit_of_block(bh: int, bw: int) -> np.ndarray:
    """(bh, bw): which payload bit each block carries (imwatermark's order: row-major, wrapping)."""
    return np.arange(bh * bw).reshape(bh, bw) % PAYLOAD_BITS


def embed(frames: np.ndarray, payload: bytes, every: int = 1) -> np.ndarray:
    """The frames with the 8-byte payload in frames 0, every, 2 every, ...; frames under MIN_PIXELS come back
    unchanged (check `large_enough` first to say so)."""
    if len(payload) * 8 != PAYLOAD_BITS:
        raise WatermarkError(f"payload must be {PAYLOAD_BITS // 8} bytes, got {len(payload)}")
    clip = _frames(frames)
    H, W = clip.shape[1:3]
    if not large_enough(W, H):
        return frames
    marked = clip.copy()
    bits = np.unpackbits(np.frombuffer(payload, np.uint8)).astype(np.float32)
    chosen = marked[::every]  # a view: marking it marks `marked`
    chunks = [chosen[start : start + CHUNK_FRAMES] for start in range(0, len(chosen), CHUNK_FRAMES)]
    with ThreadPoolExecutor(min(THREADS, len(chunks))) as pool:  # numpy lets go of the GIL in its loops
        list(pool.map(lambda chunk: _embed_chunk(chunk, bits), chunks))
    return marked if frames.ndim == 4 else marked[0]


def _embed_chunk(chunk: np.ndarray, bits: np.ndarray) -> None:
    """Mark a few frames in place ((t, H, W, 3) uint8; the 64 bits as float32)."""
    t = len(chunk)
    # 1. the blocks and their largest singular values
    blocks, (_, bh, bw, _) = _ll_blocks(chunk)  # (t, bh, bw, 4, 4)
    s0, u0, v0 = _top_singular(blocks)  # (t, bh, bw), (t, bh, bw, 4) x2
    # 2. each s0 moved to its bit's lattice point: (s0 // scale + 0.25 + 0.5 bit) * scale
    delta = (np.floor(s0 / SCALE) + 0.25 + 0.5 * bits[_bit_of_block(bh, bw)]) * SCALE - s0  # (t, bh, bw)
    # 3. the change to the LL band (d u v^T); each LL coefficient is 2x2 pixels' sum / 2, so each of those pixels
    # moves by its change / 2 in U, and (Y and V kept) by -0.395 of that in G and 2.032 in B
    d_ll = delta[..., None, None] * u0[..., :, None] * v0[..., None, :]  # (t, bh, bw, 4, 4)
    d_u = d_ll.transpose(0, 1, 3, 2, 4).reshape(t, bh * BLOCK, bw * BLOCK) / 2.0  # (t, h/2, w/2)
    # 4. added to the integer pixels, rounded (rint(x + d) = x + rint(d) for an integer x: round at a quarter of
    # the pixels), and clipped
    h, w = bh * BLOCK * 2, bw * BLOCK * 2
    for channel, per_u in ((1, _G_PER_U), (2, _B_PER_U)):
        step = np.rint(per_u * d_u).astype(np.int16)[:, :, None, :, None]  # (t, h/2, 1, w/2, 1)
        plane = chunk[:, :h, :w, channel].reshape(t, h // 2, 2, w // 2, 2)  # a view: 2x2 pixels per LL value
        plane[...] = np.clip(plane.astype(np.int16) + step, 0, 255)


def watermark_frames(frames: np.ndarray, mark: Mark, every: int = VIDEO_EVERY) -> np.ndarray:
    """`embed` with a Mark in every `every`-th frame (an image: its one frame): what a worker calls on a result's
    frames before it encodes them."""
    return embed(frames, mark.payload(), every)


def read(frames: np.ndarray, every: int = VIDEO_EVERY) -> Reading:
    """The mark in one frame or a clip, none, or too small to carry one. A clip is read as `every` interleaved
    sets of frames (a vote in each): the marked frames are one of them, whichever frame the clip now starts at
    (a trimmed clip), and all frames together last (a clip marked in every frame)."""
    clip = _frames(frames)
    T, H, W, _ = clip.shape
    if not large_enough(W, H):
        return Reading("too-small", frames=T, size=(W, H))
    sets = [clip[phase::every] for phase in range(min(every, T))] if every > 1 else []
    for subset in sets:
        reading = _read(subset)
        if reading.mark is not None:
            return reading
    return _read(clip)


def _read(clip: np.ndarray) -> Reading:
    """The mark voted by all of these frames ((T, H, W, 3), large enough), or none."""
    T, H, W, _ = clip.shape
    ones = np.zeros(0)
    for start in range(0, T, CHUNK_FRAMES):
        blocks, (_, bh, bw, _) = _ll_blocks(clip[start : start + CHUNK_FRAMES])
        s0, _, _ = _top_singular(blocks)  # (t, bh, bw)
        votes = (np.mod(s0, SCALE) > SCALE / 2).sum(axis=0).reshape(-1)  # (bh * bw,): frames voting 1 per block
        ones = votes if start == 0 else ones + votes
    which = _bit_of_block(bh, bw).reshape(-1)
    share = np.bincount(which, ones, PAYLOAD_BITS) / (T * np.bincount(which, minlength=PAYLOAD_BITS))  # (64,)
    bits = share > 0.5
    agreement = float(np.where(bits, share, 1 - share).mean())
    mark = Mark.from_payload(np.packbits(bits).tobytes())
    return Reading("found" if mark else "none", mark=mark, frames=T, agreement=agreement, size=(W, H))

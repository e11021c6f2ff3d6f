"""Training examples: the folder of captioned clips or images that `noor train lora` reads for any model (an open
family's LoRA, noor-tiny's concepts), and the file names of the adapter it writes.

    DATA/captions.jsonl    one example a line: {"file": "clip1.mp4", "caption": "a red crescent moves left"}
    DATA/clip1.mp4 ...     (paths relative to DATA)

or, without captions.jsonl, every .mp4/.png/.jpg/.jpeg/.webp in DATA with its caption in a sidecar text file of
the same name (`clip1.mp4` + `clip1.txt`). The adapter: OUT/pytorch_lora_weights.safetensors (diffusers' LoRA
format) and OUT/lora_config.json (what it was trained for and how).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from noor.engine.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, MediaError, read_clip, read_image

MANIFEST = "captions.jsonl"
WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default: what load_lora_weights(dir) looks for
CONFIG_NAME = "lora_config.json"


class DataError(ValueError):
    """A training folder that cannot be used; the message names the file (and line) at fault."""


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str


def read_examples(data_dir: Path) -> list[Example]:
    """The captioned examples in a training folder (see the module's docstring); DataError names what is wrong."""
    if not data_dir.is_dir():
        raise DataError(f"no such folder, got {str(data_dir)!r}")
    manifest = data_dir / MANIFEST
    examples = _read_manifest(data_dir, manifest) if manifest.is_file() else _read_sidecars(data_dir)
    if not examples:
        raise DataError(f"{data_dir} holds no examples (a {MANIFEST}, or media files each with a .txt caption)")
    return examples


def _read_manifest(data_dir: Path, manifest: Path) -> list[Example]:
    examples = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{manifest} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("file"), str) or "caption" not in row:
            raise DataError(f'{where}: needs {{"file": ..., "caption": ...}}, got {line.strip()[:80]!r}')
        path = data_dir / row["file"]
        if not path.is_file():
            raise DataError(f"{where}: no such file {str(path)!r}")
        caption = row["caption"]
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{where}: empty caption for {row['file']!r}")
        examples.append(Example(path, caption.strip()))
    return examples


def _read_sidecars(data_dir: Path) -> list[Example]:
    examples = []
    for path in sorted(data_dir.iterdir()):
        if path.suffix.lower() not in (*VIDEO_SUFFIXES, *IMAGE_SUFFIXES) or not path.is_file():
            continue
        sidecar = path.with_suffix(".txt")
        if not sidecar.is_file():
            raise DataError(f"{path.name} has no caption file {str(sidecar)!r} (or write a {MANIFEST})")
        caption = sidecar.read_text(encoding="utf-8").strip()
        if not caption:
            raise DataError(f"empty caption in {str(sidecar)!r}")
        examples.append(Example(path, caption))
    return examples


def load_pixels(examples: list[Example], width: int, height: int, frames: int, video: bool) -> torch.Tensor:
    """Every example as (N, 3, T, H, W) floats in [-1, 1] (an image family: (N, 3, H, W)): its first `frames`
    frames, centre-cropped to the training aspect ratio and resized to the training size."""
    clips = []
    for example in examples:
        try:
            if example.path.suffix.lower() in VIDEO_SUFFIXES:
                array, _ = read_clip(example.path)  # (T, H, W, 3) uint8
                if not video:
                    raise DataError(f"{example.path.name} is a clip; an image model trains on images")
            else:
                array = read_image(example.path)[None]
        except MediaError as err:
            raise DataError(str(err)) from None
        if len(array) < frames:
            kind = "an image" if len(array) == 1 else f"{len(array)} frames"
            raise DataError(f"{example.path.name} is {kind}; training takes clips of {frames} frames")
        clips.append(_fit(array[:frames], width, height))
    pixels = torch.stack(clips)  # (N, 3, T, H, W)
    return pixels if video else pixels[:, :, 0]


def _fit(array: np.ndarray, width: int, height: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, height, width) in [-1, 1]: centre crop to the aspect ratio, then resize."""
    _, h, w, _ = array.shape
    if w * height > h * width:  # too wide
        keep = round(h * width / height)
        array = array[:, :, (w - keep) // 2 : (w - keep) // 2 + keep]
    elif w * height < h * width:  # too tall
        keep = round(w * height / width)
        array = array[:, (h - keep) // 2 : (h - keep) // 2 + keep]
    x = torch.from_numpy(array.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (T, 3, h, w)
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1, 1).permute(1, 0, 2, 3)  # (3, T, H, W)

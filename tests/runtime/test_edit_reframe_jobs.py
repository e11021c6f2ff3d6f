"""The worker's edit and reframe jobs (#29): the stored task read back with its source (a video, or an image as one
frame), run on the toy noor-tiny, the output at the asked size with its source named as parent in the manifest;
and an edit priced as a generation of its output size."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noor.api.pricing import quote
from noor.engine import media
from noor.engine.tiny.backend import TinyBackend
from noor.jobs.assets import AssetStore, asset_key
from noor.jobs.store import Store
from noor.runtime.worker import Worker, WorkerConfig, ingredients, task_from_json


def _clip(tmp: Path, frames: int = 6, width: int = 64, height: int = 48) -> bytes:
    rng = np.random.default_rng(0)
    path = media.write_video(tmp / "source.mp4", rng.integers(0, 255, (frames, height, width, 3), np.uint8), 8)
    return path.read_bytes()


def _png(width: int = 32, height: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def sources(parts: tuple[Store, AssetStore], tmp_path: Path) -> dict[str, str]:
    _, assets = parts
    return {
        "video": assets.put(asset_key("acme", "uploads", "clip.mp4"), _clip(tmp_path)),
        "image": assets.put(asset_key("acme", "uploads", "still.png"), _png()),
    }


def test_an_edit_job_reads_its_source_video_and_keeps_its_timing(
    parts: tuple[Store, AssetStore], sources: dict[str, str]
) -> None:
    _, assets = parts
    data = {"kind": "edit", "source": sources["video"], "prompt": "a blue square", "edit_mode": "flex_2",
            "width": 64, "height": 48, "num_frames": 6, "fps": 8, "seed": 3}  # fmt: skip
    task = task_from_json(data, assets)
    assert task.operation == "edit" and task.edit_level == 0.9 and task.prompt == "a blue square"
    assert task.source is not None and task.source.frames.shape == (6, 48, 64, 3)
    assert (task.width, task.height, task.num_frames, task.fps) == (64, 48, 6, 8)
    (parent,) = ingredients(data, assets)
    assert (parent.relationship, parent.mime, parent.data) == ("parentOf", "video/mp4", assets.get(sources["video"]))


def test_a_reframe_job_places_an_image_source_at_its_position_and_size(
    parts: tuple[Store, AssetStore], sources: dict[str, str]
) -> None:
    _, assets = parts
    data = {"kind": "reframe", "source": sources["image"], "prompt": "", "width": 96, "height": 48, "num_frames": 1,
            "fps": 8, "seed": 1, "source_position": [10, 4], "source_size": [40, 40]}  # fmt: skip
    task = task_from_json(data, assets)
    assert task.operation == "reframe" and task.is_image and task.source is not None
    assert task.source.frames.shape == (1, 40, 40, 3)  # resized to `source_size` before it is placed
    assert task.reframe_box() == (10, 4, 40, 40)
    (parent,) = ingredients(data, assets)
    assert (parent.relationship, parent.mime) == ("parentOf", "image/png")
    centred = task_from_json(data | {"source_position": None, "source_size": None}, assets)
    assert centred.reframe_box() == (32, 8, 32, 32)


def test_edit_and_reframe_jobs_run_to_completed_outputs(
    parts: tuple[Store, AssetStore], sources: dict[str, str], toy_weights: Path, tmp_path: Path
) -> None:
    store, assets = parts
    backend = TinyBackend(toy_weights, threads=1)
    config = WorkerConfig(name="w", preview_s=None)
    worker = Worker(store, assets, config, load_backend=lambda m, parallel=None: backend)
    edit = store.create(
        tenant="acme", model="tiny", request={"generation_type": "modify_video"}, generation_type="video",
        task={"kind": "edit", "source": sources["video"], "prompt": "a blue square", "edit_mode": "adhere_1",
              "width": 64, "height": 48, "num_frames": 6, "fps": 8, "seed": 3},
    )  # fmt: skip
    reframe = store.create(
        tenant="acme", model="tiny", request={"generation_type": "reframe_image", "format": "png"},
        generation_type="image",
        task={"kind": "reframe", "source": sources["image"], "prompt": "", "width": 64, "height": 32,
              "num_frames": 1, "fps": 8, "seed": 1, "source_position": None},
    )  # fmt: skip
    while worker.run_once():
        pass
    done = store.get("acme", edit.id)
    assert done.state == "completed", done.failure_reason
    path = tmp_path / "edit.mp4"
    path.write_bytes(assets.get(done.assets["video"]))
    assert media.video_info(path)[:3] == (6, 64, 48)
    image = store.get("acme", reframe.id)
    assert image.state == "completed", image.failure_reason
    with Image.open(io.BytesIO(assets.get(image.assets["image"]))) as out:
        assert out.size == (64, 32)
        pixels = np.asarray(out.convert("RGB"))
    # the source's own pixels in the middle of the canvas (up to the watermark, where one is configured)
    assert np.abs(pixels[:, 16:48].astype(int) - (255, 0, 0)).mean() < 4


def test_an_edit_is_priced_as_a_generation_of_its_output_size() -> None:
    shape = {"width": 960, "height": 540, "num_frames": 40, "fps": 8, "seed": 0}
    generation = quote("tiny", {"prompt": "a red circle", **shape})
    edit = quote("tiny", {"kind": "edit", "source": "acme/g/video.mp4", "prompt": "x", "edit_mode": "flex_1", **shape})
    reframe = quote("tiny", {"kind": "reframe", "source": "acme/g/video.mp4", "prompt": "", **shape})
    assert generation.price_microcents > 0
    assert edit == generation and reframe == generation

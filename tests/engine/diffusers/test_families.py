"""Every family's toy through the backend: previews while dreaming, and caching on, off and off again (A/B/A)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from noor.engine.diffusers import installed
from noor.engine.diffusers.backend import DiffusersBackend
from noor.engine.diffusers.installed import InstalledModel
from noor.engine.diffusers.options import Options
from noor.engine.diffusers.preview import PREVIEW_LATENT_FRAMES, preview_steps
from noor.engine.task import Task
from tests.engine.diffusers.toys import TOYS

Toy = Callable[[str], Path]
# families whose transformer diffusers' First Block Cache cannot hook (the message names why)
NO_FIRST_BLOCK = {
    "sd3.5": "SD3Transformer2DModel has no diffusers cache support",
    "hunyuanvideo-1.5": "HunyuanVideo15TransformerBlock'> not registered",
    "hunyuanvideo-1.5-i2v": "HunyuanVideo15TransformerBlock'> not registered",
}
KEYFRAMED = {"wan2.1-i2v", "wan2.1-flf2v", "wan2.2-i2v-a14b", "cogvideox-i2v", "hunyuanvideo-1.5-i2v"}


def _backend(toy: Toy, family: str) -> DiffusersBackend:
    _, width, height, frames = TOYS[family]
    entry = InstalledModel(
        id="toy", family=family, path=str(toy(family)), dtype="float32", width=width, height=height, frames=frames
    )
    return DiffusersBackend(installed.add(entry))


def _task(family: str, steps: int) -> Task:
    _, width, height, frames = TOYS[family]
    start = np.zeros((height, width, 3), np.uint8)
    start[..., 0] = 200
    return Task(
        prompt="a red circle moves to the left",
        width=width,
        height=height,
        num_frames=frames,
        steps=steps,
        seed=3,
        start_frame=start if family in KEYFRAMED else None,
        end_frame=start if family == "wan2.1-flf2v" else None,
    )


@pytest.mark.slow
@pytest.mark.parametrize("family", list(TOYS))
def test_previews_and_cache_a_b_a(toy: Toy, data_dir: Path, family: str) -> None:
    backend = _backend(toy, family)
    task = _task(family, steps=3)
    # A, with a preview drawn each time one is offered
    previews: list[np.ndarray] = []
    a = backend.generate([task], preview=lambda render: previews.append(render()))[0].frames
    assert len(previews) == len(preview_steps(3)) == 3
    temporal = backend.spec.geometry.temporal
    latent_frames = (len(a) - 1) // temporal + 1 if temporal else 1
    for p in previews:
        assert p.dtype == np.uint8 and p.shape[1:] == a.shape[1:]
        assert len(p) == (1 + temporal * (min(latent_frames, PREVIEW_LATENT_FRAMES) - 1) if temporal else 1)
    # the last step's preview is the clip's beginning as the pipeline itself decodes it (toys: all of it or most)
    last = previews[-1].astype(int)
    assert np.abs(last - a[: len(last)].astype(int)).max() <= 1
    # B: caching on. A First Block Cache threshold this high reuses the cached residual on every step after the
    # first; where diffusers cannot attach that cache it is refused at `noor models add` and on the loaded model
    if family in NO_FIRST_BLOCK:
        message = NO_FIRST_BLOCK[family]
        with pytest.raises(ValueError, match=f"--cache: .*{message}"):
            backend.configure(Options(cache="first-block"))
        backend.configure(Options())
        with pytest.raises(ValueError, match=f"--cache: .*{message}"):
            _, width, height, frames = TOYS[family]
            installed.add(
                InstalledModel(
                    id="cached", family=family, path=str(toy(family)), dtype="float32", width=width, height=height,
                    frames=frames, options=Options(cache="first-block"),
                )
            )  # fmt: skip
        if family == "sd3.5":
            return
        # TaylorSeer: full steps up to the 4th, then predicted ones (its cache_interval 5)
        task = replace(task, steps=6)
        a = backend.generate([task])[0].frames
        backend.configure(Options(cache="taylorseer"))
    else:
        backend.configure(Options(cache="first-block", cache_threshold=10.0))
    b = backend.generate([task])[0].frames
    assert np.array_equal(b, backend.generate([task])[0].frames)  # cache state is reset between generations
    # A again: the hooks are gone and the output is A's, bit for bit (drawing previews changed nothing either)
    backend.configure(Options())
    assert np.array_equal(backend.generate([task])[0].frames, a)
    assert not np.array_equal(a, b)
    pipes = list(backend.pipes.values())
    assert not any(getattr(m, "is_cache_enabled", False) for p in pipes for m in (p.transformer,))


def test_previews_are_offered_evenly_and_always_at_the_end() -> None:
    assert preview_steps(2) == {1, 2}
    assert preview_steps(50) == {6, 12, 18, 24, 30, 36, 42, 48, 50}
    assert preview_steps(1) == {1}


def test_a_worker_shows_a_diffusers_models_preview_while_it_dreams(toy: Toy, data_dir: Path, tmp_path: Path) -> None:
    """The same path as noor-tiny's: the worker's throttled preview -> progress.mp4 -> the job's progress_video."""
    from noor.engine import media
    from noor.jobs.assets import AssetStore
    from noor.jobs.store import Store
    from noor.runtime.worker import Worker, WorkerConfig

    backend = _backend(toy, "ltx-video")
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    assets = AssetStore(str(tmp_path / "assets"))
    seen: list[object] = []  # progress_video after each heartbeat that brought a preview
    original = store.heartbeat

    def watching(*args, **kwargs):
        ok = original(*args, **kwargs)
        if kwargs.get("preview"):
            seen.append((store.get("acme", args[0]).assets or {}).get("progress_video"))
        return ok

    store.heartbeat = watching  # type: ignore[method-assign]
    worker = Worker(
        store, assets, WorkerConfig(name="w", models=["toy"], heartbeat_s=0.0, preview_s=0.0), lambda m: backend
    )
    task = {"prompt": "a red circle", "width": 32, "height": 32, "num_frames": 9, "fps": 8, "seed": 1, "steps": 3}
    gid = store.create(tenant="acme", model="toy", request={}, task=task).id
    assert worker.run_once()
    assert seen == [f"acme/{gid}/progress.mp4"] * 3  # one per offered step when the worker asks for every one
    (tmp_path / "p.mp4").write_bytes(assets.get(f"acme/{gid}/progress.mp4"))
    assert media.video_info(tmp_path / "p.mp4")[:3] == (9, 32, 32)  # LTX toy: 3 latent frames -> 9 frames
    done = store.get("acme", gid)
    assert done.state == "completed" and done.assets and "progress_video" not in done.assets
    store.close()

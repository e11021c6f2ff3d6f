"""The resampler (`upscale`) as a registry model: its backend, its declared capabilities, every worker has it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from noor.api.app import ApiConfig, create_app
from noor.engine import media, registry
from noor.engine.backend import Cancelled
from noor.engine.diffusers.installed import RESERVED_IDS
from noor.engine.resample import ResampleBackend, resize
from noor.engine.task import Media, Task, TaskError
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.worker import Worker, WorkerConfig


def _clip(num_frames: int = 5, width: int = 32, height: int = 18) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)  # (T, H, W, 3)


def _upscale(frames: np.ndarray, width: int, height: int, fps: int = 12) -> Task:
    return Task(prompt="", width=width, height=height, num_frames=len(frames), fps=fps, source=Media(frames, fps))


def test_the_resampler_resizes_every_frame_with_lanczos_and_reports_each() -> None:
    frames = _clip()
    steps: list[tuple[int, int]] = []
    [out] = ResampleBackend(threads=2).generate([_upscale(frames, 64, 36)], lambda d, t: steps.append((d, t)))
    assert out.frames.shape == (5, 36, 64, 3) and out.frames.dtype == np.uint8 and out.fps == 12
    pillow = np.asarray(Image.fromarray(frames[3]).resize((64, 36), Image.Resampling.LANCZOS))
    assert np.array_equal(out.frames[3], pillow)
    assert np.array_equal(out.frames, resize(frames, 64, 36))  # threads change nothing but the speed
    assert steps == [(i, 5) for i in range(1, 6)]


def test_a_cancelled_upscale_stops_between_frames() -> None:
    seen: list[int] = []

    def cancel_at_two(done: int, total: int) -> None:
        seen.append(done)
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        ResampleBackend().generate([_upscale(_clip(8), 64, 36)], cancel_at_two)
    assert seen == [1, 2]


def test_the_resampler_refuses_a_task_without_a_source_and_bad_threads() -> None:
    with pytest.raises(TaskError, match="source"):
        ResampleBackend().generate([Task(prompt="a red circle")])
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        ResampleBackend(threads=0)


def test_resample_is_a_registry_model_that_only_upscales() -> None:
    spec = registry.get("resample")
    assert spec.capabilities == {"upscale"} and spec.on_every_worker
    assert isinstance(spec.load(), ResampleBackend)
    assert spec.check(_upscale(_clip(), 3840, 2160)) == []  # nothing drawn: nothing adapted
    refusals = {
        "t2v": Task(prompt="a red circle"),
        "image": Task(prompt="a red circle", num_frames=1),
        "i2v": Task(prompt="a red circle", start_frame=_clip(1)[0]),
    }
    for capability, task in refusals.items():
        with pytest.raises(TaskError, match=f"^{capability}: model 'resample' cannot do {capability}"):
            spec.check(task)
    with pytest.raises(TaskError, match=r"^upscale: model 'tiny' cannot do upscale"):
        registry.get("tiny").check(_upscale(_clip(), 128, 72))


def test_every_worker_runs_resample_but_requests_do_not_list_it() -> None:
    assert "resample" not in [s.id for s in registry.available()]  # not a model a generation names
    assert registry.worker_models(["tiny"]) == ["tiny", "resample"]
    assert registry.worker_models(["tiny", "resample"]) == ["tiny", "resample"]
    assert Worker(None, None, WorkerConfig(name="w"), lambda m: ResampleBackend()).models == ["tiny", "resample"]  # type: ignore[arg-type]
    assert set(RESERVED_IDS) == {"tiny", "resample"} == set(registry.built_in())


def test_a_worker_upscales_with_the_registry_resampler_whatever_its_loader(tmp_path: Path) -> None:
    """The deployment's loader knows only its own models; the upscale job still runs, and nothing else is loaded."""
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    assets = AssetStore(str(tmp_path / "assets"))
    video = media.write_video(tmp_path / "source.mp4", _clip(6, 64, 36), fps=12)
    source = assets.put("acme/src/video.mp4", video.read_bytes())
    task = {"kind": "upscale", "source": source, "width": 128, "height": 72}
    gid = store.create(tenant="acme", model="resample", request={}, task=task).id
    loaded: list[str] = []

    def no_model(model: str) -> ResampleBackend:
        loaded.append(model)
        raise AssertionError(f"the deployment's loader was asked for {model}")

    assert Worker(store, assets, WorkerConfig(name="w", models=["tiny"]), no_model).run_once()
    done = store.get("acme", gid)
    assert done.state == "completed", done.failure_reason
    assert loaded == []
    (tmp_path / "up.mp4").write_bytes(assets.get(done.assets["video"]))
    assert media.video_info(tmp_path / "up.mp4") == (6, 128, 72, 12.0)
    store.close()


def test_a_video_request_naming_resample_is_refused_before_it_is_queued(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(store, "acme", credits_cents=1000)
    app = create_app(store, AssetStore(str(tmp_path / "assets")), ApiConfig(secret=b"s"))
    auth = {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}
    with TestClient(app) as client:
        r = client.post("/generations/video", json={"model": "resample", "prompt": "a red circle"}, headers=auth)
        assert r.status_code == 400 and r.json() == {"detail": "t2v: model 'resample' cannot do t2v, got True"}
        r = client.post("/generations/image", json={"model": "resample", "prompt": "a red circle"}, headers=auth)
        assert r.status_code == 400 and "model 'resample' cannot do image" in r.json()["detail"]
    assert store.list("acme", 10, 0)[1] == 0  # nothing stored
    store.close()

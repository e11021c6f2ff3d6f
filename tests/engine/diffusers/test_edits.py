"""Edit and reframe on the open families (#29), on toy LTX-Video, Wan 2.1 (T2V and VACE), FLUX.1 and SD3.5 (random
weights): an edit keeps its source's size and length and strays further at a higher level; a reframe draws the canvas
around the source, its region re-injected at every step (LTX: `edits.Reinject`); progress counts the steps the
pipelines run; a family without the capability is refused by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noor.engine import registry
from noor.engine.diffusers import installed
from noor.engine.diffusers.backend import DiffusersBackend
from noor.engine.diffusers.edits import Reinject
from noor.engine.diffusers.installed import InstalledModel
from noor.engine.task import Media, Task, TaskError

Toy = Callable[[str], Path]


@pytest.fixture(scope="module")
def sd3_16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SD3.5 at toy size with the real model's 16 latent channels (StableDiffusion3InpaintPipeline takes no other)."""
    from tests.engine.diffusers.toys import sd3

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("sd3-16")
    sd3(channels=16).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def vace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wan 2.1 VACE at toy size (toys.wan_vace)."""
    from tests.engine.diffusers.toys import wan_vace

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("wan-vace")
    wan_vace().save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture
def toys(toy: Toy, sd3_16: Path, vace: Path) -> Toy:
    return lambda family: {"sd3.5": sd3_16, "wan2.1-vace": vace}.get(family) or toy(family)


def _backend(toy: Toy, family: str) -> DiffusersBackend:
    from tests.engine.diffusers.toys import TOYS

    _, width, height, frames = TOYS.get(family, (None, 32, 32, 5))
    entry = InstalledModel(
        id=f"toy-{family}", family=family, path=str(toy(family)), dtype="float32",
        width=width, height=height, frames=frames, fps=8, steps=8,
    )  # fmt: skip
    return DiffusersBackend(installed.add(entry), threads=1)


def _source(frames: int, width: int, height: int) -> Media:
    """A smooth clip (a gradient that drifts right), which the toy VAEs carry better than noise."""
    x = np.linspace(0, 255, width)[None, None, :, None]
    y = np.linspace(0, 255, height)[None, :, None, None]
    t = np.arange(frames)[:, None, None, None] * 12
    rgb = np.concatenate([np.broadcast_to((x + t) % 256, (frames, height, width, 1)),
                          np.broadcast_to(y, (frames, height, width, 1)),
                          np.full((frames, height, width, 1), 96.0)], axis=-1)  # fmt: skip
    return Media(frames=rgb.round().astype(np.uint8), fps=8)


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def _timesteps(pipe: object, mp: pytest.MonkeyPatch) -> list[float]:
    """The timestep of each call of the pipeline's transformer from now on (a step makes one call or more:
    guidance, FlowEdit's two prompts; its pipelines share it)."""
    transformer = pipe.transformer  # type: ignore[attr-defined]
    forward, seen = transformer.forward, list[float]()

    def spy(*args: object, timestep: torch.Tensor, **kw: object) -> object:
        seen.append(float(timestep.max()))
        return forward(*args, timestep=timestep, **kw)

    mp.setattr(transformer, "forward", spy)
    return seen


def _drawn_latents(backend: DiffusersBackend, task: Task) -> tuple[Media, np.ndarray, int]:
    """The task's output, the latents its pipeline decoded (the VAE's own latent space), and the steps its pipeline
    ran (the timesteps its transformer was called at). Its progress counts those steps, one report each, and ends at
    their number."""
    pipe = backend.pipe(task.operation)
    seen, reports = [], []
    decode = pipe.vae.decode

    def spy(z: torch.Tensor, *args: object, **kw: object) -> object:
        seen.append(z.detach().numpy().copy())
        return decode(z, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipe.vae, "decode", spy)
        timesteps = _timesteps(pipe, mp)
        (media,) = backend.generate([task], progress=lambda done, total: reports.append((done, total)))
    ran = len(set(timesteps))  # one each step
    assert reports == [(k, ran) for k in range(1, ran + 1)], (ran, reports)
    return media, seen[-1], ran


def _encoded(backend: DiffusersBackend, source: Media, mode: str) -> np.ndarray:
    """The source in the VAE's latent space (the mean of its encoding), as a pipeline preprocesses it."""
    pipe = backend.pipe(mode)
    frames = [Image.fromarray(f) for f in source.frames]
    if backend.family.kind == "video":
        pixels = pipe.video_processor.preprocess_video(frames, source.height, source.width)
    else:
        pixels = pipe.image_processor.preprocess(frames[0], source.height, source.width)
    with torch.no_grad():
        return pipe.vae.encode(pixels).latent_dist.mode().numpy()


@pytest.mark.parametrize("family", ["ltx-video", "wan2.1-vace", "wan2.1-t2v", "flux.1-dev", "sd3.5"])
def test_an_edit_keeps_the_sources_shape_and_strays_further_at_a_higher_level(
    toys: Toy, data_dir: Path, family: str
) -> None:
    backend = _backend(toys, family)
    spec = registry.get(f"toy-{family}")
    assert "edit" in spec.capabilities and ("reframe" in spec.capabilities) == (family != "wan2.1-t2v")
    frames = {"ltx-video": 9, "wan2.1-vace": 5, "wan2.1-t2v": 5}.get(family, 1)
    source = _source(frames, 32, 32)  # the toy's own size and length
    # measured in the VAE's latent space: the toys' random decoders draw nearly the same pixels from any latents
    # (LTX: 0.4 of 255 apart between adhere_1 and reimagine_3), so pixels cannot show how far an edit strayed
    wanted = _encoded(backend, source, "edit")
    away = {}
    for mode in ("adhere_1", "reimagine_3"):
        task = Task(prompt="a red ball", width=32, height=32, num_frames=frames, source=source, edit_mode=mode,
                    seed=1)  # fmt: skip
        spec.check(task)
        media, drawn, ran = _drawn_latents(backend, task)
        (note,) = [n for n in media.notes if n.startswith(mode)]  # "adhere_1 (noise level 0.75): steps 6..8 of 8"
        first, last = note.split("steps ")[1].split(" of")[0].split("..")
        assert ran == int(last) - int(first) + 1, note  # the steps the note names ran, no more
        assert 0 < ran < 8 if mode == "adhere_1" else ran == 8, note
        assert media.frames.shape == source.frames.shape and media.frames.dtype == np.uint8
        assert _diff(media.frames, source.frames) > 1  # redrawn, not copied
        away[mode] = _diff(drawn, wanted)
    # adhere_1 denoises the source's latents from the first step at or below noise level 0.75; reimagine_3 (1.0)
    # starts from pure noise and never sees them. Measured (seed 1, 8 steps): LTX 0.81 vs 1.13 (0.71x), Wan VACE
    # 1.51 vs 2.17 (0.69x), FLUX 0.47 vs 0.71 (0.67x), SD3.5 0.50 vs 0.65 (0.78x); with the
    # level read as a fraction of the steps (diffusers' strength: LTX's schedule is still at 0.99 after a quarter of
    # its steps) LTX was 1.26 vs 1.28, which this bound refuses
    assert away["adhere_1"] < 0.85 * away["reimagine_3"], away
    if family == "ltx-video":  # another size and length: drawn as 9 frames of 64x32, brought back to 6 of 48x32
        other = _source(6, 48, 32)
        (media,) = backend.generate([Task(prompt="a red ball", width=48, height=32, num_frames=6, source=other,
                                          edit_mode="flex_1")])  # fmt: skip
        assert media.frames.shape == other.frames.shape
        assert any("brought to the source's 6 of 48x32" in n for n in media.notes), media.notes


@pytest.mark.parametrize("family", ["ltx-video", "wan2.1-vace"])
def test_a_video_reframe_draws_the_canvas_with_the_source_reinjected(toys: Toy, data_dir: Path, family: str) -> None:
    backend = _backend(toys, family)
    frames = 9 if family == "ltx-video" else 5
    source = _source(frames, 32, 32)
    task = Task(prompt="a beach", width=64, height=32, num_frames=frames, source=source, reframe=True,
                source_position=(0, 0), seed=2)  # fmt: skip
    registry.get(f"toy-{family}").check(task)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    call = Reinject.__call__

    def spy(self: Reinject, latents: object) -> object:
        out = call(self, latents)
        seen.append((np.asarray(out[self.known.expand_as(out)]), np.asarray(self.x0[self.known.expand_as(out)])))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Reinject, "__call__", spy)
        (media,) = backend.generate([task])
    assert media.frames.shape == (frames, 32, 64, 3)
    # the source's pixels exactly where it was placed (left half); the right half drawn, not the edge-padded canvas
    assert np.array_equal(media.frames[:, :, :32], source.frames)
    padded = np.repeat(source.frames[:, :, -1:], 32, axis=2)
    assert _diff(media.frames[:, :, 32:], padded) > 5
    # the known latents (LTX: tokens of the toy's 16-pixel latents; Wan: 8-pixel latents; under the source: half of
    # them) were re-injected at each step, and after the last (level 0) are the source's own latents, bit for bit
    assert len(seen) == 8
    last, x0 = seen[-1]
    assert last.size == x0.size > 0 and np.array_equal(last, x0)
    assert _diff(seen[0][0], seen[0][1]) > 0  # noised to the level of the step before


def test_progress_counts_the_steps_the_pipelines_run_in_a_batch(toys: Toy, data_dir: Path) -> None:
    """An edit (from its level), a reframe and a generation in one call: the total is the steps the pipelines run,
    each reported once, so the count ends at the total (it counted the edit's skipped steps as well, and reported
    them as done when it started)."""
    backend = _backend(toys, "ltx-video")
    source = _source(9, 32, 32)
    tasks = [
        Task(prompt="a red ball", width=32, height=32, num_frames=9, source=source, edit_mode="adhere_1", seed=1),
        Task(prompt="a beach", width=64, height=32, num_frames=9, source=source, reframe=True, seed=2),
        Task(prompt="a beach", width=32, height=32, num_frames=9, steps=3, seed=3),
    ]
    reports: list[tuple[int, int]] = []
    with pytest.MonkeyPatch.context() as mp:
        calls = _timesteps(backend.pipe("t2v"), mp)  # LTX guides in one batched call: one call a step
        edited, _, _ = backend.generate(tasks, progress=lambda done, total: reports.append((done, total)))
    (note,) = [n for n in edited.notes if n.startswith("adhere_1")]
    first = int(note.split("steps ")[1].split("..")[0])
    assert first > 1 and len(calls) == (8 - first + 1) + 8 + 3, (note, len(calls))  # the reframe: all 8 steps
    assert reports == [(k, len(calls)) for k in range(1, len(calls) + 1)], reports


@pytest.mark.parametrize("family", ["flux.1-dev", "sd3.5"])
def test_an_image_reframe_outpaints_around_the_source(toys: Toy, data_dir: Path, family: str) -> None:
    backend = _backend(toys, family)
    source = _source(1, 32, 32)
    task = Task(prompt="a beach", width=64, height=32, num_frames=1, source=source, reframe=True, seed=2)
    (media,) = backend.generate([task])  # centred: x 16..48
    assert media.frames.shape == (1, 32, 64, 3)
    assert np.array_equal(media.frames[:, :, 16:48], source.frames)
    assert _diff(media.frames[:, :, :16], np.repeat(source.frames[:, :, :1], 16, axis=2)) > 5


def test_families_without_the_capability_or_a_video_for_an_image_model_are_refused(toy: Toy, data_dir: Path) -> None:
    from tests.engine.diffusers.test_backend import _add

    _add(toy, "wan2.2-t2v-a14b", "a14b")  # two experts: no edit (families.py says why)
    video = _source(5, 32, 32)
    with pytest.raises(TaskError, match="edit: model 'a14b' cannot do edit"):
        registry.get("a14b").check(Task(prompt="a cat", width=32, height=32, num_frames=5, source=video,
                                        edit_mode="flex_1"))  # fmt: skip
    _add(toy, "wan2.1-t2v", "wan")  # edits, but has no masked-denoising pipeline to reframe with
    with pytest.raises(TaskError, match="reframe: model 'wan' cannot do reframe"):
        registry.get("wan").check(Task(prompt="", width=64, height=32, num_frames=5, source=video, reframe=True))
    _add(toy, "flux.1-schnell", "flux")
    with pytest.raises(TaskError, match="num_frames: model 'flux' draws images: it can edit an image only, got 5"):
        registry.get("flux").check(Task(prompt="a cat", width=32, height=32, num_frames=5, source=video,
                                        edit_mode="flex_1"))  # fmt: skip

"""Edit (SDEdit from a Modify Video mode's noise level) and reframe (masked denoising on a new canvas) on
noor-tiny: toy weights for behaviour, the shipped weights for one small figure check."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from noor.engine import registry
from noor.engine.task import EDIT_LEVELS, Media, Task, TaskError
from noor.engine.tiny.backend import TinyBackend
from noor.engine.tiny.detector import psnr
from noor.engine.tiny.eval_edits import region_psnr
from noor.engine.tiny.scene import render, sample_scene


def clip(seed: int = 0, size: int = 64, frames: int = 16) -> Media:
    scene = sample_scene(np.random.default_rng(seed), two_objects_p=0.0, motion="right")
    return Media(frames=(render(scene, size=size)[:frames] * 255).round().astype(np.uint8), fps=8)


@pytest.fixture(scope="module")
def backend(toy_weights: Path) -> TinyBackend:
    return TinyBackend(toy_weights, threads=1)


def change(media: Media, source: Media) -> float:
    return float(np.abs(media.frames.astype(np.float32) - source.frames.astype(np.float32)).mean())


def test_levels_are_ordered_adhere_to_reimagine() -> None:
    levels = list(EDIT_LEVELS.values())
    assert levels == sorted(levels) and len(set(levels)) == 9 and levels[0] > 0 and levels[-1] == 1.0


def test_a_higher_level_changes_the_source_more(backend: TinyBackend) -> None:
    source = clip(1)
    modes = ["adhere_1", "flex_2", "reimagine_3"]
    tasks = [Task("a blue square moves left", seed=3, source=source, edit_mode=m) for m in modes]
    changes = [change(m, source) for m in backend.generate(tasks)]
    assert changes == sorted(changes) and changes[0] < changes[-1], changes


def test_an_edit_at_level_zero_is_its_source_through_the_vae(backend: TinyBackend) -> None:
    pipe, source = backend.pipe, clip(2)
    frames = source.frames.astype(np.float32) / 255.0
    out = pipe("a red circle", source=[frames], strength=0.0, generator=torch.Generator().manual_seed(0)).frames[0]
    with torch.no_grad():  # no step runs: the source's latents decoded
        x0 = pipe.encode_frames(torch.from_numpy(frames).permute(0, 3, 1, 2) * 2 - 1).transpose(0, 1)[None]
        roundtrip = ((pipe.decode_latents(x0).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)[0].numpy()
    np.testing.assert_allclose(out, roundtrip, atol=0.01)  # the same up to the layout of the frames it encodes


def test_reframe_draws_the_asked_canvas_with_the_source_where_asked(backend: TinyBackend) -> None:
    wide = Task("a red circle", width=256, height=144, seed=1, source=clip(3, size=144), reframe=True)
    tall = Task("a red circle", width=144, height=256, seed=1, source=wide.source, reframe=True, source_position=(0, 0))
    image = Task("a red circle", width=96, height=64, num_frames=1, seed=1, source=clip(3, frames=1), reframe=True)
    out = backend.generate([wide, tall, image])
    assert [m.frames.shape for m in out] == [(16, 144, 256, 3), (16, 256, 144, 3), (1, 64, 96, 3)]
    assert wide.reframe_box() == (56, 0, 144, 144) and tall.reframe_box() == (0, 0, 144, 144)
    assert any("placed at x=56, y=0" in n for n in out[0].notes)
    assert [region_psnr(t, m.frames) for t, m in zip([wide, tall, image], out, strict=True)]  # defined for each


def test_a_source_larger_than_the_canvas_is_scaled_to_fit_and_noted(backend: TinyBackend) -> None:
    task = Task("a red circle", width=144, height=256, source=clip(4, size=256), reframe=True)
    assert task.reframe_box() == (0, 56, 144, 144)
    (media,) = backend.generate([replace(task, num_frames=1, source=clip(4, size=256, frames=1))])
    assert media.frames.shape == (1, 256, 144, 3) and "scaled from 256x256 to 144x144" in media.notes[0]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"edit_mode": "adhere_4"}, "edit_mode"),
        ({"edit_mode": "reimagine"}, "edit_mode"),
        ({"reframe": True, "width": 256, "height": 144, "source_position": (200, 0)}, "source_position"),
        ({"reframe": True, "width": 256, "height": 144, "source_position": (-1, 0)}, "source_position"),
        ({"reframe": True, "width": 256, "height": 144, "source_position": (0.5, 0)}, "source_position"),
        ({"source_position": (0, 0)}, "source_position"),
        ({"edit_mode": "flex_1", "reframe": True}, "reframe"),
        ({"edit_mode": "flex_1", "loop": True}, "loop"),
    ],
)
def test_bad_edits_and_reframes_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(TaskError) as err:
        Task("a red circle", source=clip(0, frames=1), **options)  # type: ignore[arg-type]
    assert err.value.field == field and str(err.value).startswith(f"{field}:")
    with pytest.raises(TaskError, match=r"^source:"):
        Task("a red circle", edit_mode="adhere_1")


def test_the_registry_refuses_edits_to_a_model_without_them() -> None:
    tiny = registry.get("tiny")
    edit = Task("a red circle", source=clip(0), edit_mode="adhere_2")
    reframe = Task("", width=256, height=128, source=clip(0), reframe=True)
    assert {"edit", "reframe"} <= tiny.capabilities
    tiny.check(edit)
    assert any("short side of 64" in n for n in tiny.check(reframe))  # a reframe may have no prompt
    plain = replace(tiny, id="plain", capabilities=frozenset(registry.CAPABILITIES))
    for task, capability in ((edit, "edit"), (reframe, "reframe")):
        with pytest.raises(TaskError, match=rf"^{capability}: model 'plain' cannot do {capability}"):
            plain.check(task)
    with pytest.raises(TaskError, match=r"^prompt:"):
        tiny.check(replace(edit, prompt=" "))


def test_an_edit_or_reframe_is_the_same_bytes_alone_or_batched(backend: TinyBackend) -> None:
    plain = Task("a green square moves up", seed=5)
    edits = [Task("a blue triangle", seed=s, source=clip(s), edit_mode="flex_1") for s in (6, 7)]
    reframe = Task("a red circle", width=112, height=64, seed=8, source=clip(8), reframe=True)
    together = backend.generate([edits[0], plain, reframe, edits[1]])
    alone = [backend.generate([t])[0] for t in (edits[0], plain, reframe, edits[1])]
    for a, b in zip(together, alone, strict=True):
        assert a.frames.tobytes() == b.frames.tobytes()


@pytest.mark.slow
def test_shipped_weights_keep_a_reframed_source_and_recolour_an_adhere_edit() -> None:
    """The figures `noor eval tiny --edits` reads, on two clips: the source's region >= 28 dB, a colour edit."""
    from noor.engine.tiny.detector import detect
    from noor.engine.tiny.eval import eval_prompts
    from noor.engine.tiny.eval_edits import REFRAME_PSNR_DB, edit_tasks

    tasks, wants = edit_tasks(eval_prompts(1), reframe_prompts=1)
    picked = [0, 4, 5]  # an adhere edit (English) and the two reframes
    backend = TinyBackend(threads=2)
    out = backend.generate([tasks[i] for i in picked])
    source = tasks[0].source.frames / 255.0  # type: ignore[union-attr]
    generator = torch.Generator().manual_seed(0)
    nearly = backend.pipe(tasks[0].prompt, source=[source], strength=0.2, generator=generator).frames[0]
    assert psnr(nearly, source) >= 25.0  # a level near 0 (one step, at 0.17) gives back about the source
    assert detect(out[0].frames / 255.0).colour == wants[0]["item"].colour
    for i, media in zip(picked[1:], out[1:], strict=True):
        assert (media.width, media.height) == (tasks[i].width, tasks[i].height)
        assert region_psnr(tasks[i], media.frames) >= REFRAME_PSNR_DB

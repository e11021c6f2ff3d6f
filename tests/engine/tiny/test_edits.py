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
from noor.engine.tiny.backend import DEFAULT_GUIDANCE, TinyBackend
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


def test_a_higher_level_redraws_more_of_the_schedule(backend: TinyBackend) -> None:
    """An edit runs only the steps at or below its level (the shipped weights' change grows with it: the slow test)."""
    source = clip(1, frames=1)  # an image edit: the same path as a video's, a sixteenth of the work
    runs = []
    for mode in ("adhere_1", "flex_2", "reimagine_3"):
        steps: list[int] = []
        task = Task("a blue square", num_frames=1, seed=3, source=source, edit_mode=mode)
        backend.generate([task], progress=lambda done, total: steps.append(total))  # noqa: B023 (used at once)
        runs.append((len(steps), steps[-1]))
    assert [n for n, _ in runs] == [total for _, total in runs]  # the progress total is what runs
    assert runs[0][0] < runs[1][0] < runs[2][0] == 16, runs


def test_a_tasks_guidance_steers_the_whole_clip(backend: TinyBackend) -> None:
    """A clip's guidance is the pipeline's clip guidance unless the task gives one; then the task's, over every
    frame (an edit has no image-first stage, so before this only the first frame of a plain clip took it)."""
    task = Task("a green triangle moves left", seed=5, source=clip(4), edit_mode="reimagine_1")
    pipe = backend.pipe
    saved = pipe.config.clip_guidance_scale
    pipe.register_to_config(clip_guidance_scale=DEFAULT_GUIDANCE - 1.0)  # as the shipped weights save one (3)
    try:
        own = replace(task, guidance=pipe.config.clip_guidance_scale)
        unset, same, other = backend.generate([task, own, replace(task, guidance=DEFAULT_GUIDANCE + 3.0)])
    finally:
        pipe.register_to_config(clip_guidance_scale=saved)
    np.testing.assert_array_equal(unset.frames, same.frames)
    assert change(other, unset) > 1.0, change(other, unset)


def test_an_edit_at_level_zero_is_its_source_through_the_vae(backend: TinyBackend) -> None:
    pipe, source = backend.pipe, clip(2)
    frames = source.frames.astype(np.float32) / 255.0
    out = pipe("a red circle", source=[frames], strength=0.0, generator=torch.Generator().manual_seed(0)).frames[0]
    with torch.no_grad():  # no step runs: the source's latents decoded
        x0 = pipe.encode_frames(torch.from_numpy(frames).permute(0, 3, 1, 2) * 2 - 1).transpose(0, 1)[None]
        roundtrip = ((pipe.decode_latents(x0).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)[0].numpy()
    np.testing.assert_allclose(out, roundtrip, atol=0.01)  # the same up to the layout of the frames it encodes


def test_a_flow_edit_under_the_sources_own_prompt_gives_back_the_source(backend: TinyBackend) -> None:
    """FlowEdit moves the source by the difference of two predictions: unguided, under its own prompt, that
    difference is 0 at every step (batch-invariant rows), so the source comes back exactly as through the VAE.
    Guided (the target only), it moves under its own prompt too (the guidance's push), and under another prompt
    less than SDEdit from the same level redraws it."""
    pipe, source = backend.pipe, clip(9)
    frames = source.frames.astype(np.float32) / 255.0
    described = "a red circle moves right"

    def edit(strength: float = 0.84, **options: object) -> np.ndarray:
        generator = torch.Generator().manual_seed(0)
        return np.asarray(pipe(described, source=[frames], strength=strength, generator=generator, **options).frames[0])

    roundtrip = edit(strength=0.0)  # no step runs: the source's latents decoded
    assert edit(source_prompt=described, guidance_scale=1.0).tobytes() == roundtrip.tobytes()

    def moved(frames: np.ndarray) -> float:
        return float(np.abs(frames - roundtrip).mean())

    kept, recoloured, redrawn = edit(source_prompt=described), edit(source_prompt="a blue square moves up"), edit()
    assert moved(kept) > 0.0 and 0.0 < moved(recoloured) < moved(redrawn), (moved(recoloured), moved(redrawn))
    with pytest.raises(ValueError, match="source_prompt"):  # FlowEdit edits a whole source: no reframe's mask
        pipe(described, source=[frames], source_mask=[np.ones((64, 64), bool)], source_prompt=described)


def test_the_backend_flow_edits_keep_modes_with_a_source_prompt(backend: TinyBackend) -> None:
    """adhere and flex edits whose source's prompt is known go by FlowEdit (the progress counts the same steps);
    reimagine, and any edit without it, by SDEdit."""
    from noor.engine.flowedit import flow_edit

    source = clip(10, frames=1)
    plain = Task("a blue circle", num_frames=1, seed=4, source=source, edit_mode="adhere_2")
    known = replace(plain, source_prompt="a red circle")
    assert flow_edit(known) and not flow_edit(plain)
    assert not flow_edit(replace(known, edit_mode="reimagine_1"))
    totals: list[list[int]] = [[], []]
    for task, seen in zip((plain, known), totals, strict=True):
        backend.generate([task], progress=lambda done, total, seen=seen: seen.append(total))
    assert totals[0] == totals[1] and len(totals[0]) == totals[0][-1]
    a, b = backend.generate([plain, known])
    assert a.frames.tobytes() != b.frames.tobytes()


def test_reframe_draws_the_asked_canvas_with_the_source_where_asked(backend: TinyBackend) -> None:
    wide = Task("a red circle", width=256, height=144, seed=1, source=clip(3, size=144), reframe=True)
    still = clip(3, size=144, frames=1)
    tall = Task("a red circle", width=144, height=256, num_frames=1, source=still, reframe=True, source_position=(0, 0))
    image = Task("a red circle", width=96, height=64, num_frames=1, seed=1, source=clip(3, frames=1), reframe=True)
    out = backend.generate([wide, tall, image])
    assert [m.frames.shape for m in out] == [(16, 144, 256, 3), (1, 256, 144, 3), (1, 64, 96, 3)]
    assert wide.reframe_box() == (56, 0, 144, 144) and tall.reframe_box() == (0, 0, 144, 144)
    assert any("placed at x=56, y=0" in n for n in out[0].notes)
    for task, media in zip([wide, tall, image], out, strict=True):  # the source's own pixels, kept in its region
        assert region_psnr(task, media.frames) == float("inf")
        assert "the source's own pixels kept in its region, the rest drawn around it" in media.notes


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
        ({"reframe": True, "source_prompt": "a blue circle"}, "source_prompt"),
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
    reframe = Task("", width=256, height=128, source=clip(0, size=144), reframe=True)
    assert {"edit", "reframe"} <= tiny.capabilities
    tiny.check(edit)
    assert any("draws the canvas at 128x64" in n for n in tiny.check(reframe))  # a reframe may have no prompt
    plain = replace(tiny, id="plain", capabilities=frozenset(registry.CAPABILITIES))
    for task, capability in ((edit, "edit"), (reframe, "reframe")):
        with pytest.raises(TaskError, match=rf"^{capability}: model 'plain' cannot do {capability}"):
            plain.check(task)
    with pytest.raises(TaskError, match=r"^prompt:"):
        tiny.check(replace(edit, prompt=" "))


def test_an_edit_or_reframe_is_the_same_bytes_alone_or_batched(backend: TinyBackend) -> None:
    plain = Task("a green square moves up", seed=5, num_frames=1)
    edits = [Task("a blue triangle", seed=s, source=clip(s), edit_mode="flex_1") for s in (6, 7)]
    reframe = Task("a red circle", width=112, height=64, num_frames=1, seed=8, source=clip(8, frames=1), reframe=True)
    flows = [replace(e, source_prompt="a red circle moves right", num_frames=1, source=clip(s, frames=1))
             for e, s in zip(edits, (6, 7), strict=True)]  # fmt: skip
    together = backend.generate([edits[0], flows[0], plain, reframe, edits[1], flows[1]])
    alone = [backend.generate([t])[0] for t in (edits[0], flows[0], plain, reframe, edits[1], flows[1])]
    for a, b in zip(together, alone, strict=True):
        assert a.frames.tobytes() == b.frames.tobytes()


@pytest.mark.slow
def test_shipped_weights_draw_a_reframed_source_back_and_recolour_an_adhere_edit() -> None:
    """Figures `noor eval tiny --edits` reads (its 64 prompts read the targets), here on a few clips: adhere edits by
    FlowEdit (their sources' captions as source prompts) keep shape and motion and take the new colour; a square
    source reframed to 16:9 is drawn back in its region at >= 28 dB (as drawn: the source's pixels not pasted), and a
    16:9 source on a 9:16 canvas at >= 27 dB (this clip: 28.1 dB through the canvas decoder, 25.0 dB without it)."""
    from noor.engine.tiny.detector import detect
    from noor.engine.tiny.eval import eval_prompts
    from noor.engine.tiny.eval_edits import REFRAME_PSNR_DB, REFRAMES, edit_tasks

    tasks, wants = edit_tasks(eval_prompts(3), reframe_prompts=1)
    adhere, wide, tall = tasks[:6], tasks[12], tasks[13]  # six adhere edits (English and Arabic), two reframes
    assert all(t.source_prompt for t in adhere) and [w["reframe"] for w in wants[12:]] == list(REFRAMES)
    backend = TinyBackend(threads=2, keep_source=False)
    out = backend.generate([*adhere, wide, tall])
    found = [detect(media.frames / 255.0) for media in out[:6]]
    items = [want["item"] for want in wants[:6]]
    kept = sum(f.shape == i.shape and f.motion == i.motion for f, i in zip(found, items, strict=True))
    recoloured = sum(f.colour == i.colour for f, i in zip(found, items, strict=True))
    assert kept >= 5 and recoloured >= 4, (kept, recoloured)
    assert (out[6].width, out[6].height) == (256, 144)
    assert region_psnr(wide, out[6].frames) >= REFRAME_PSNR_DB
    assert (out[7].width, out[7].height) == (144, 256) and region_psnr(tall, out[7].frames) >= REFRAME_PSNR_DB - 1.0
    edit = adhere[0]
    assert edit.source is not None
    levels = [replace(edit, edit_mode=m) for m in ("adhere_1", "flex_2", "reimagine_3")]
    changes = [change(m, edit.source) for m in backend.generate(levels)]
    assert changes == sorted(changes), changes  # a higher level changes the source more
    source = edit.source.frames / 255.0
    nearly = backend.pipe(edit.prompt, source=[source], strength=0.2, generator=torch.Generator().manual_seed(0))
    assert psnr(nearly.frames[0], source) >= 25.0  # a level near 0 (one step, at 0.17) gives back about the source


def test_a_reframe_canvas_gives_the_sources_region_the_native_short_side() -> None:
    """A reframe is drawn at the scale where its source's region has a short side of 64 (as a square source on a
    square canvas), its long side at most 256; an edit at a short side of 64."""
    from noor.engine.tiny.backend import canvas

    def reframe(width: int, height: int, source: tuple[int, int]) -> Task:
        frames = np.zeros((1, source[1], source[0], 3), np.uint8)
        return Task("", width=width, height=height, num_frames=1, source=Media(frames, 8), reframe=True)

    assert canvas(reframe(256, 144, (144, 144))) == (112, 64)  # region 144x144 -> 64x64
    assert canvas(reframe(144, 256, (256, 144))) == (112, 208)  # region 144x81 -> 112x63, not 64x36
    assert canvas(reframe(1920, 1080, (256, 144))) == (256, 144)  # the long side capped
    assert canvas(reframe(64, 64, (32, 32))) == (128, 128)  # a small source at the native scale too
    edit = Task("a red circle", width=256, height=144, num_frames=1, source=clip(0, frames=1), edit_mode="flex_1")
    assert canvas(edit) == (112, 64)

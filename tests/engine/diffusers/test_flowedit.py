"""FlowEdit on the open families (`noor.engine.diffusers.flowedit`), on toy SD3.5, FLUX.1, Wan 2.1 VACE, LTX-Video and
Wan 2.1 T2V (random weights): under the source's own prompt an edit returns the source as its VAE decodes it; under
another it moves, less far than SDEdit from the same step; its progress counts the steps it runs; an edit without a
source prompt, or in a reimagine mode, goes by SDEdit as before."""

from __future__ import annotations

from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch

from noor.engine.diffusers import flowedit
from noor.engine.diffusers.backend import to_uint8
from noor.engine.diffusers.edits import Work
from noor.engine.task import Task
from tests.engine.diffusers import test_edits
from tests.engine.diffusers.test_edits import Toy, _backend, _drawn_latents, _encoded, _source, _timesteps

# test_edits' toys (SD3.5 with 16 latent channels, Wan VACE, and the session's others), as fixtures here
sd3_16, vace, edit_toys = test_edits.sd3_16, test_edits.vace, test_edits.toys

SOURCE_PROMPT = "a red circle on the green"
FAMILIES = ["sd3.5", "flux.1-dev", "wan2.1-vace", "wan2.1-t2v", "ltx-video"]


def _task(frames: int, mode: str = "adhere_1", prompt: str = "a blue square", source_prompt: str | None = None) -> Task:
    return Task(prompt=prompt, width=32, height=32, num_frames=frames, source=_source(frames, 32, 32),
                edit_mode=mode, source_prompt=source_prompt, seed=3)  # fmt: skip


def _frames(family: str) -> int:
    return {"wan2.1-vace": 5, "wan2.1-t2v": 5, "ltx-video": 9}.get(family, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_under_the_sources_own_prompt_flowedit_returns_the_source_through_its_vae(
    edit_toys: Toy, data_dir: Path, family: str
) -> None:
    backend = _backend(edit_toys, family)
    task = _task(_frames(family), prompt=SOURCE_PROMPT, source_prompt=SOURCE_PROMPT)
    reports: list[tuple[int, int]] = []
    vae = backend.pipe("edit").vae
    drawn: list[np.ndarray] = []
    decode = vae.decode

    def spy(z: torch.Tensor, *args: object, **kw: object) -> object:
        drawn.append(z.detach().numpy().copy())
        return decode(z, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vae, "decode", spy)
        timesteps = _timesteps(backend.pipe("edit"), mp)
        (media,) = backend.generate([task], progress=lambda done, total: reports.append((done, total)))
    (note,) = [n for n in media.notes if n.startswith("adhere_1")]
    assert note.endswith("by FlowEdit from the source's prompt"), note
    # the velocities under one prompt are two calls with equal inputs, so they are bit-equal and z never moves
    # from the source's latents: what the VAE decodes is its encoding of the source (the normalisation there and
    # back is float arithmetic: within 1e-5), and the frames are those of a decode of the source's latents
    assert np.allclose(drawn[-1], _encoded(backend, task.source, "edit"), atol=1e-5, rtol=0)
    pipe = backend.pipe("edit")
    canvas = task.source.frames  # the toy's own size and length: the canvas is the source
    parts = flowedit.PARTS[type(pipe).__name__](pipe, canvas, {"guidance_scale": 1.0, "generator": None})
    with torch.no_grad():
        out = parts.output(parts.source())
    through_vae = to_uint8(out.images[0] if hasattr(out, "images") else out.frames[0])
    assert np.array_equal(media.frames, through_vae)
    # progress counts the steps FlowEdit runs (from the note's first), one report each (the transformer is called
    # at one timestep a step): it ends at its total
    ran = 8 - int(note.split("steps ")[1].split("..")[0]) + 1
    assert 0 < ran < 8 and len(set(timesteps)) == ran, (note, sorted(set(timesteps)))
    assert reports == [(k, ran) for k in range(1, ran + 1)], reports


@pytest.mark.parametrize("family", FAMILIES)
def test_under_another_prompt_flowedit_moves_less_than_sdedit_from_the_same_step(
    edit_toys: Toy, data_dir: Path, family: str
) -> None:
    backend = _backend(edit_toys, family)
    frames = _frames(family)
    wanted = _encoded(backend, _source(frames, 32, 32), "edit")
    away = {}
    for how, source_prompt in (("flowedit", SOURCE_PROMPT), ("sdedit", None)):
        task = _task(frames, mode="flex_1", source_prompt=source_prompt)
        media, drawn, _ = _drawn_latents(backend, task)
        (note,) = [n for n in media.notes if n.startswith("flex_1")]
        assert ("FlowEdit" in note) == (how == "flowedit"), note
        away[how] = float(np.abs(drawn - wanted).mean())
    # FlowEdit moves the source by what the prompts' velocities differ in; SDEdit redraws it from noise at the
    # step's level. Measured (seed 3, 8 steps, flex_1): see docs/models.md "FlowEdit"
    assert 0 < away["flowedit"] < 0.5 * away["sdedit"], away


def test_without_a_source_prompt_or_in_a_reimagine_mode_an_edit_is_sdedit(
    edit_toys: Toy, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("FlowEdit ran")

    monkeypatch.setattr(flowedit, "edit", refused)
    sd3 = _backend(edit_toys, "sd3.5")
    for task in (_task(1), _task(1, mode="reimagine_1", source_prompt=SOURCE_PROMPT)):
        media, _, ran = _drawn_latents(sd3, task)
        (note,) = [n for n in media.notes if n.startswith(task.edit_mode or "")]
        assert "FlowEdit" not in note
        assert ran == 8 - int(note.split("steps ")[1].split("..")[0]) + 1, note  # the pipeline's own steps


def test_an_sdedit_on_wan_t2v_runs_the_steps_from_its_level(toy: Toy) -> None:
    """WanPipeline's own SDEdit (`edits.FROM_STEP`: the source's latents noised to the first step's level, and the
    pipeline's schedule from there), which WanVACEPipeline's edits share; no family edits by it (Wan 2.1 T2V edits by
    WanVideoToVideoPipeline), but it is the one that keeps Wan 2.2's two experts and per-token timesteps."""
    pipe = diffusers.WanPipeline.from_pretrained(toy("wan2.1-t2v"))
    pipe.set_progress_bar_config(disable=True)
    task = _task(5)
    work = Work.of(pipe, "video", task, task, 8)
    assert work is not None
    call = {"prompt": task.prompt, "num_inference_steps": 8, "guidance_scale": 5.0, "width": 32, "height": 32,
            "num_frames": 5, "generator": torch.Generator().manual_seed(3), "output_type": "np"}  # fmt: skip
    call |= work.kwargs(pipe, call)
    assert set(call) - {"latents"} == {"prompt", "num_inference_steps", "guidance_scale", "width", "height",
                                       "num_frames", "generator", "output_type"}  # fmt: skip
    first = int(work.started[0].split("steps ")[1].split("..")[0]) - 1
    ran: list[int] = []
    step = pipe.scheduler.step

    def counted(*args: object, **kw: object) -> object:
        ran.append(1)
        return step(*args, **kw)

    pipe.scheduler.step = counted
    try:
        with work.during(pipe, call, task.seed):
            frames = pipe(**call).frames[0]
    finally:
        del pipe.scheduler.step
    assert first > 0 and len(ran) == 8 - first
    assert frames.shape == (5, 32, 32, 3)

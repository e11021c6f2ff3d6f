"""`noor eval tiny --edits` reads what it is given: a generator that draws every prompt exactly meets each target, one
that hands the sources back meets none of those a source cannot (doubles for the model, so the reading is tested
alone; the shipped model's figures are the model card's)."""

from __future__ import annotations

import numpy as np

from noor.engine.canvas import keep_source
from noor.engine.task import Media, Task
from noor.engine.tiny.eval import EvalPrompt, eval_prompts
from noor.engine.tiny.eval_edits import ATTRIBUTES, REFRAMES, background, evaluate_edits
from noor.engine.tiny.scene import render, sample_scene

PROMPTS = eval_prompts(per_language=9)  # 18 prompts: both languages, every shape and every mode


def _wanted(prompts: list[EvalPrompt]) -> dict[str, EvalPrompt]:
    return {p.prompt: p for p in prompts}


def oracle(tasks: list[Task]) -> list[Media]:
    """Each edit drawn as its prompt asks (rendered), each reframe with its source exactly where it belongs."""
    wanted, out = _wanted(PROMPTS), []
    for k, task in enumerate(tasks):
        assert task.source is not None
        if task.reframe:
            blank = np.zeros((len(task.source.frames), task.height, task.width, 3), dtype=np.uint8)
            out.append(Media(frames=keep_source(blank, task), fps=task.fps))
            continue
        item = wanted[task.prompt]
        scene = sample_scene(
            np.random.default_rng(k), 0.0, shape=item.shape, colour=item.colour, motion=item.motion,
            background=background(item.prompt),
        )  # fmt: skip
        out.append(Media(frames=(render(scene) * 255).round().astype(np.uint8), fps=8))
    return out


def copier(tasks: list[Task]) -> list[Media]:
    """Each source handed back as it is (a reframe too: at the source's size, not the canvas's)."""
    return [Media(frames=t.source.frames.copy(), fps=8) for t in tasks if t.source is not None]


def test_a_generator_that_draws_every_prompt_meets_every_target() -> None:
    calls: list[tuple[int, int]] = []
    report = evaluate_edits(oracle, PROMPTS, reframe_prompts=2, batch=5, on_clips=lambda d, t: calls.append((d, t)))
    assert len(report.adhere_rows) == len(report.reimagine_rows) == 18 and len(report.reframe_rows) == 4
    assert calls[0] == (0, 40) and calls[-1] == (40, 40) and len(calls) == 1 + 8  # batches of 5
    assert report.adhere() == {"kept": 1.0, "colour": 1.0}
    assert report.reimagine() == dict.fromkeys(ATTRIBUTES, 1.0)
    for name in REFRAMES:
        got = report.reframe(name)
        assert got["drawn_median_db"] == float("inf") and got["sized"] == 1.0, got
    assert report.passed()


def test_a_generator_that_hands_the_sources_back_keeps_them_and_changes_nothing() -> None:
    report = evaluate_edits(copier, PROMPTS, reframe_prompts=2)
    assert report.adhere() == {"kept": 1.0, "colour": 0.0}  # the source's shape and motion, not the new colour
    assert report.reimagine() == dict.fromkeys(ATTRIBUTES, 0.0)  # every attribute of a reimagine source differs
    for name in REFRAMES:  # at the source's size, not the canvas's: nothing to read where the source should be
        got = report.reframe(name)
        assert got["sized"] == 0.0 and got["median_db"] == got["drawn_median_db"] == -np.inf, got
    assert not report.passed()
    assert {r["mode"] for r in report.reimagine_rows} == {"reimagine_1", "reimagine_2", "reimagine_3"}
    assert all(r["track_px"] == 0.0 for r in report.adhere_rows)  # its path is the source's, read the same way

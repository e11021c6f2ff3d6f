from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from noor.engine.task import Task
from noor.engine.tiny.backend import TinyBackend, weights_dir
from noor.engine.tiny.eval import PSNR_TARGET_DB, TARGETS, EvalReport, eval_prompts, evaluate
from noor.engine.tiny.world import MOTIONS, render, sample_scene


def test_eval_set_is_balanced_and_bilingual() -> None:
    prompts = eval_prompts()
    assert len(prompts) >= 60
    assert sum(p.lang == "en" for p in prompts) == sum(p.lang == "ar" for p in prompts)
    assert {p.motion for p in prompts} == set(MOTIONS)
    assert len({p.prompt for p in prompts}) >= 60  # distinct texts; a repeated text gets another seed
    assert len({(p.prompt, p.seed) for p in prompts}) == len(prompts)


def test_more_seeds_draw_every_prompt_again_with_other_seeds() -> None:
    once, thrice = eval_prompts(per_language=8), eval_prompts(per_language=8, seeds=3)
    assert len(thrice) == 3 * len(once) and thrice[: len(once)] == once  # the first draws stay the same
    for k in (1, 2):
        again = thrice[k * len(once) : (k + 1) * len(once)]
        assert [(p.prompt, p.lang, p.colour, p.shape, p.motion) for p in again] == [
            (p.prompt, p.lang, p.colour, p.shape, p.motion) for p in once
        ]
    assert len({(p.lang, p.seed) for p in thrice}) == len(thrice)  # a scene shares its seed across languages


def test_evaluate_scores_a_perfect_and_a_blank_generator() -> None:
    prompts = eval_prompts(per_language=8)
    scenes = {p.seed: sample_scene(np.random.default_rng(p.seed), 0.0, p.shape, p.colour, p.motion) for p in prompts}

    def oracle(prompt: str, seed: int, start_frame: Any = None, loop: bool = False) -> np.ndarray:
        if seed in scenes:
            return render(scenes[seed])
        clip = render(sample_scene(np.random.default_rng(seed), 0.0), pingpong=loop)
        if start_frame is not None:
            clip[0] = start_frame
        return clip

    report = evaluate(oracle, prompts, keyframe_checks=2)
    assert all(v == 1.0 for acc in report.accuracy.values() for v in acc.values())
    assert report.passed()
    blank = evaluate(lambda *a, **k: np.zeros((16, 64, 64, 3), np.float32), prompts, keyframe_checks=0)
    assert not blank.passed() and blank.accuracy["en"]["colour"] == 0.0


# What the shipped weights measured on the full held-out set (README, "noor eval tiny"), less a margin:
# a regression guard. The targets (TARGETS) are not met yet; the xfail below says so and turns
# into a failure the day they are, so the floors get raised.
FLOORS = {"colour": 0.75, "motion": 0.5, "shape": 0.4}  # measured: colour 84-88%, motion 66-69%, shape 50-62%


@pytest.fixture(scope="module")
def shipped_report() -> EvalReport:
    assert (weights_dir() / "model_index.json").is_file(), "noor-tiny weights are missing from the package"
    backend = TinyBackend()

    def generate(prompt: str, seed: int, start_frame: Any = None, loop: bool = False) -> np.ndarray:
        if start_frame is not None:
            start_frame = (start_frame * 255).round().astype(np.uint8)
        task = Task(prompt=prompt, seed=seed, start_frame=start_frame, loop=loop)
        return backend.generate([task])[0].frames.astype(np.float32) / 255.0

    return evaluate(generate, eval_prompts(), keyframe_checks=4)


@pytest.mark.slow
def test_shipped_noor_tiny_keeps_its_measured_accuracy_and_keyframes(shipped_report: EvalReport) -> None:
    for lang, acc in shipped_report.accuracy.items():
        for attribute, floor in FLOORS.items():
            assert acc[attribute] >= floor, (lang, attribute, acc)
    assert shipped_report.start_psnr_db >= PSNR_TARGET_DB and shipped_report.loop_psnr_db >= PSNR_TARGET_DB


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="noor-tiny is undertrained: below the issue's accuracy targets (README)")
def test_shipped_noor_tiny_meets_the_accuracy_targets(shipped_report: EvalReport) -> None:
    for lang, acc in shipped_report.accuracy.items():
        for attribute, target in TARGETS.items():
            assert acc[attribute] >= target, (lang, attribute, acc)


@pytest.mark.slow
def test_shipped_vae_keeps_colours_apart_and_frames_sharp() -> None:
    import torch

    from noor.engine.tiny.detector import detect, psnr
    from noor.engine.tiny.world import COLOURS

    pipe = TinyBackend().pipe
    rng = np.random.default_rng(11)
    scores, colours_kept = [], []
    with torch.no_grad():
        for i in range(48):
            colour = list(COLOURS)[i % len(COLOURS)]
            scene = sample_scene(rng, 0.0, colour=colour)
            frame = render(scene, 2)[:1]  # (1, H, W, 3)
            x = torch.from_numpy(frame).permute(0, 3, 1, 2) * 2 - 1
            back = pipe.decode_latents(pipe.encode_frames(x)[:, :, None])[:, :, 0]
            back = ((back.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
            scores.append(psnr(back[0], frame[0]))
            colours_kept.append(detect(np.repeat(back, 4, axis=0)).colour == colour)
    assert np.median(scores) >= 28.0 and min(scores) >= 25.0, sorted(scores)[:5]
    assert all(colours_kept)

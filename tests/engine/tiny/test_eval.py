from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from noor.engine.resample import resize
from noor.engine.tiny.backend import TinyBackend, fit, weights_dir
from noor.engine.tiny.eval import (
    LOOP_SMOOTH_TARGET,
    QUICK,
    START_KEPT_TARGET,
    TARGETS,
    EvalReport,
    eval_prompts,
    evaluate,
    one_at_a_time,
    seam_ratio,
    start_step_ratio,
    two_object_prompts,
)
from noor.engine.tiny.scene import MOTIONS, Scene, render, sample_scene


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


def _oracle(prompts: list[Any], two_object_scenes: int = 0) -> Any:
    """Draws each eval prompt's own scene; holds a given start frame still; loops play forward then back."""
    scenes = {p.seed: sample_scene(np.random.default_rng(p.seed), 0.0, p.shape, p.colour, p.motion) for p in prompts}
    scenes |= {700 + k: scene for k, (_, _, scene) in enumerate(two_object_prompts(two_object_scenes))}

    def generate(
        prompt: str,
        seed: int,
        start_frame: Any = None,
        loop: bool = False,
        width: int = 64,
        height: int = 64,
        end_frame: Any = None,
    ) -> np.ndarray:
        if seed in scenes:  # drawn square, brought to the size as the backend does (never stretched)
            square = (render(scenes[seed]) * 255).round().astype(np.uint8)
            return fit(square, width, height).astype(np.float32) / 255.0
        if start_frame is not None and end_frame is not None:  # a cross-fade: every step the same size
            return np.stack([(1 - w) * start_frame + w * end_frame for w in np.linspace(0, 1, 16)])
        if start_frame is not None:
            return np.repeat(start_frame[None], 16, axis=0)
        return render(sample_scene(np.random.default_rng(seed), 0.0, motion="right"), pingpong=loop)

    return generate


def test_evaluate_scores_a_perfect_and_a_blank_generator() -> None:
    prompts = eval_prompts(per_language=8)
    report = evaluate(
        one_at_a_time(_oracle(prompts, 4)), prompts, keyframe_checks=4, two_object_scenes=4, aspect_prompts=8
    )
    assert all(v == 1.0 for acc in report.accuracy.values() for v in acc.values())
    assert set(report.aspects) == {"16:9", "9:16"}
    assert all(v == 1.0 for a in report.aspects.values() for v in a.values())
    assert report.start_kept == 1.0 and report.loop_smooth == 1.0 and report.sane()
    assert len(report.pair_step_ratios) == 2 and all(r == pytest.approx((1.0, 1.0)) for r in report.pair_step_ratios)
    assert report.two_objects == {"ar": 1.0, "en": 1.0} and len(report.two_object_rows) == 8
    assert report.passed()
    blank = evaluate(one_at_a_time(lambda *a, **k: np.zeros((16, 64, 64, 3), np.float32)), prompts, keyframe_checks=0)
    assert not blank.passed() and blank.accuracy["en"]["colour"] == 0.0


def test_copied_keyframes_pass_the_sanity_checks_but_not_the_keyframe_targets() -> None:
    """The failure the PSNR figures cannot see: frame 0 is the given frame and a loop's last frame is its first,
    but the clip in between is another object, and the loop jumps back at its end."""
    prompts = eval_prompts(per_language=8)
    perfect = _oracle(prompts)

    def copies_keyframes_only(
        prompt: str, seed: int, start_frame: Any = None, loop: bool = False, end_frame: Any = None
    ) -> np.ndarray:
        if start_frame is None and not loop:
            return perfect(prompt, seed)
        rng = np.random.default_rng(seed)
        other = render(sample_scene(rng, 0.0, shape="triangle", colour="green", motion="right"))
        if start_frame is not None:
            other[0] = start_frame
        if loop:
            other[-1] = other[0]
        if end_frame is not None:
            other[-1] = end_frame
        return other

    report = evaluate(one_at_a_time(copies_keyframes_only), prompts, keyframe_checks=6)
    assert report.sane()  # frame 0 and the loop's end are exact copies
    assert report.loop_smooth == 0.0 and min(report.seam_ratios) > 3
    assert report.start_kept < 0.5  # only a green triangle in the keyframe would be "kept"
    assert all(start > 3 and end > 3 for start, end in report.pair_step_ratios)  # cuts at both ends
    assert not report.passed()


def test_a_generator_that_draws_one_of_two_objects_fails_the_two_object_target() -> None:
    """The failure the issue found: a two-object prompt drawn as one object (here, only the first)."""
    two = two_object_prompts(4)
    assert all(len(scene.things) == 2 for _, _, scene in two) and {lang for _, lang, _ in two} == {"en", "ar"}
    first_only = {700 + k: Scene(scene.background, scene.things[:1]) for k, (_, _, scene) in enumerate(two)}
    report = evaluate(
        one_at_a_time(lambda prompt, seed, **_: render(first_only[seed])), [], keyframe_checks=0, two_object_scenes=4
    )
    assert report.two_objects == {"ar": 0.0, "en": 0.0} and not report.passed()
    row = report.two_object_rows[0]
    assert row["got"][0]["shape"] == row["want"][0]["shape"] and row["got"][1]["colour"] is None


def test_a_stretched_aspect_fails_where_a_filled_one_passes() -> None:
    """The issue's stretched 16:9: circles become ovals and the reader sees it; the filled frame reads as square."""
    prompts = [p for p in eval_prompts(per_language=8) if p.shape == "circle"]
    scenes = {p.seed: sample_scene(np.random.default_rng(p.seed), 0.0, p.shape, p.colour, p.motion) for p in prompts}

    def stretched(prompt: str, seed: int, width: int = 64, height: int = 64, **_: Any) -> np.ndarray:
        return resize((render(scenes[seed]) * 255).round().astype(np.uint8), width, height) / 255.0

    report = evaluate(one_at_a_time(stretched), prompts, keyframe_checks=0, aspect_prompts=len(prompts))
    assert report.accuracy["en"]["shape"] == 1.0  # square: right
    assert report.aspects["16:9"]["shape"] < 0.5 and report.aspects["9:16"]["shape"] < 0.5, report.aspects


def test_seam_and_start_step_ratios() -> None:
    scene = sample_scene(np.random.default_rng(3), 0.0, motion="right")
    assert seam_ratio(render(scene, pingpong=True)) == pytest.approx(1.0, abs=0.35)  # forward and back: no seam
    assert seam_ratio(render(scene)) > 5  # forward only, the end snapped back to the start
    still = render(sample_scene(np.random.default_rng(3), 0.0, motion="still"))
    assert seam_ratio(still) == 0.0 and start_step_ratio(still) == 0.0  # still clips: no step, no division by 0
    cut = render(scene)
    cut[0] = render(sample_scene(np.random.default_rng(4), 0.0, motion="still"))[0]
    assert start_step_ratio(cut) > 5 and start_step_ratio(render(scene)) == pytest.approx(1.0, abs=0.35)


def test_the_report_names_the_most_common_mistakes() -> None:
    """A generator that draws every square as a circle and never moves: the report says so, most common first."""
    prompts = eval_prompts(per_language=8)

    def squares_as_still_circles(prompt: str, seed: int, start_frame: Any = None, loop: bool = False) -> np.ndarray:
        item = next(p for p in prompts if p.seed == seed)
        shape = "circle" if item.shape == "square" else item.shape
        return render(sample_scene(np.random.default_rng(seed), 0.0, shape, item.colour, "still"))

    report = evaluate(one_at_a_time(squares_as_still_circles), prompts, keyframe_checks=0)
    squares = sum(p.shape == "square" for p in prompts)
    assert report.mistakes("shape") == [("square", "circle", squares)]
    moving = [p for p in prompts if p.motion != "still"]
    top = report.mistakes("motion", top=10)
    assert sum(n for *_, n in top) == len(moving)
    counts = [n for *_, n in top]
    assert {got for _, got, _ in top} == {"still"} and counts == sorted(counts, reverse=True)
    assert report.mistakes("colour") == []
    with pytest.raises(ValueError, match="attribute must be one of colour, motion, shape, got 'size'"):
        report.mistakes("size")


# The tests run `noor eval tiny --quick` (half of every part of the full set; the full set's figures are in
# docs/noor-tiny.md). What the shipped weights measured on it, less a margin of a clip or two: a regression guard
# above the targets (TARGETS), which the next test holds them to.
FLOORS = {"colour": 0.9, "motion": 0.9, "shape": 0.75}  # quick: colour 94-100%, motion 100%, shape 81% (full: 97-100,
# 100, 81-84)
# Keyframes, measured on the quick set's 8 checks (2026-12-05): the start frame's object kept in 75% (6 of 8; the
# floor allows one clip fewer; full set: 13 of 16), loop seams up to 5.3x the median step, median 2.5 (full: 3.3;
# the ceiling allows about one clip's worth of drift). Loops miss their target (docs/noor-tiny.md): see the xfail.
START_KEPT_FLOOR = 0.6
SEAM_MEDIAN_CEILING = 4.0
# A keyframe at the middle index, on the quick set's 8 clips (2026-12-05): its object kept on both sides in 7 of 8,
# the step into or out of it 1.0-2.9x the clip's median step, median 1.7 (full set: 11 of 16, median 1.5). The
# floor allows one clip fewer; the ceiling about one clip's worth of drift.
MIDDLE_KEPT_FLOOR = 0.75
MIDDLE_STEP_MEDIAN_CEILING = 2.5


@dataclass
class ShippedRun:
    """`noor eval tiny --quick` on the shipped weights, run once for the module: its exit code, output and report."""

    exit_code: int
    output: str
    report: EvalReport


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory: pytest.TempPathFactory) -> ShippedRun:
    from typer.testing import CliRunner

    from noor.cli import app

    assert (weights_dir() / "model_index.json").is_file(), "noor-tiny weights are missing from the package"
    report_path = tmp_path_factory.mktemp("eval") / "report.json"
    result = CliRunner().invoke(app, ["eval", "tiny", "--quick", "--json", str(report_path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return ShippedRun(result.exit_code, result.output, EvalReport(**json.loads(report_path.read_text())))


@pytest.mark.slow
def test_shipped_noor_tiny_keeps_its_measured_accuracy_and_keyframes(shipped_run: ShippedRun) -> None:
    report = shipped_run.report
    assert len(report.rows) == len(eval_prompts(QUICK["per_language"]))
    for lang, acc in report.accuracy.items():
        for attribute, floor in FLOORS.items():
            assert acc[attribute] >= floor, (lang, attribute, acc)
    assert report.sane(), (report.start_psnr_db, report.loop_psnr_db)
    assert len(report.seam_ratios) == len(report.start_step_ratios) == QUICK["keyframe_checks"]
    assert len(report.two_object_rows) == 2 * QUICK["two_object_scenes"] and set(report.aspects) == {"16:9", "9:16"}
    assert report.start_kept >= START_KEPT_FLOOR, report.start_kept
    assert float(np.median(report.seam_ratios)) <= SEAM_MEDIAN_CEILING, report.seam_ratios


@pytest.mark.slow
def test_shipped_noor_tiny_runs_a_clip_through_a_keyframe_at_its_middle_index(shipped_run: ShippedRun) -> None:
    report = shipped_run.report
    assert len(report.middle_step_ratios) == QUICK["keyframe_checks"] and report.sane(), report.middle_psnr_db
    assert report.middle_kept >= MIDDLE_KEPT_FLOOR, report.middle_kept
    assert float(np.median(report.middle_step_ratios)) <= MIDDLE_STEP_MEDIAN_CEILING, report.middle_step_ratios
    assert "keyframe at the middle index: colour and shape kept before and after it in" in shipped_run.output


@pytest.mark.slow
def test_shipped_noor_tiny_meets_the_prompt_targets(shipped_run: ShippedRun) -> None:
    for lang, acc in shipped_run.report.accuracy.items():
        for attribute, target in TARGETS.items():
            assert acc[attribute] >= target, (lang, attribute, acc)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True, reason="loops snap back (seam 2.5x the median step, target 1.5x); two objects: 1 of 8 (target 70%)"
)
def test_shipped_noor_tiny_meets_every_target(shipped_run: ShippedRun) -> None:
    """The check as a user runs it (`noor eval tiny --quick`): the exit code says whether every target is met,
    keyframe targets included."""
    report = shipped_run.report
    assert report.start_kept >= START_KEPT_TARGET and report.loop_smooth >= LOOP_SMOOTH_TARGET, report.seam_ratios
    assert shipped_run.exit_code == 0 and shipped_run.output.strip().endswith("all targets met"), shipped_run.output


@pytest.mark.slow
def test_noor_eval_tiny_exit_code_and_last_line_follow_the_targets(shipped_run: ShippedRun) -> None:
    passed = shipped_run.report.passed()
    assert shipped_run.exit_code == (0 if passed else 1), shipped_run.output
    assert shipped_run.output.strip().endswith("all targets met" if passed else "below target"), shipped_run.output


@pytest.mark.slow
def test_shipped_vae_keeps_colours_apart_and_frames_sharp() -> None:
    import torch

    from noor.engine.tiny.detector import detect, psnr
    from noor.engine.tiny.scene import COLOURS

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


@functools.cache  # both tests below read the same probe
def _caption_swap_ratios(sigma: float = 0.5) -> dict[tuple[str, str], float]:
    """For true first frames of each shape, noised to `sigma`: the shipped denoiser's x0 error with the shape
    swapped in the caption, over the error with the true caption (1.0: the prompt's shape word is ignored)."""
    from dataclasses import replace

    import torch

    from noor.engine.tiny.captions import caption
    from noor.engine.tiny.scene import SHAPES, Scene

    pipe = TinyBackend().pipe
    ratios = {}
    with torch.no_grad():
        for shape in SHAPES:
            rng = np.random.default_rng(5)
            scenes = [sample_scene(rng, 0.0, shape=shape) for _ in range(48)]
            frames = torch.from_numpy(np.stack([render(s, 1)[0] for s in scenes])).permute(0, 3, 1, 2) * 2 - 1
            x0 = pipe.encode_frames(frames)[:, :, None]
            x_t = (1 - sigma) * x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
            errors = {}
            for said in SHAPES:
                texts = [
                    caption(Scene(s.background, (replace(s.things[0], shape=said),)), ("en", "ar")[i % 2], rng)
                    for i, s in enumerate(scenes)
                ]
                text, mask = pipe.text_encoder.encode(texts)
                pred = pipe.transformer(x_t, torch.full((len(scenes), 1), sigma * 1000.0), text, mask)[0]
                errors[said] = float(((pred - x0) ** 2).mean())
            ratios.update({(shape, said): errors[said] / errors[shape] for said in SHAPES if said != shape})
    return ratios


@pytest.mark.slow
def test_the_shipped_denoiser_draws_the_triangle_its_prompt_names() -> None:
    """The probe above can see a shape word at work: a triangle said to be a circle or square is drawn worse."""
    ratios = _caption_swap_ratios()
    assert ratios["triangle", "circle"] > 1.2 and ratios["triangle", "square"] > 1.2, ratios


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the shipped denoiser barely tells 'square' from 'circle' (README)")
def test_the_shipped_denoiser_tells_a_square_from_a_circle_by_its_prompt() -> None:
    """Why most shape mistakes are squares drawn round: their shape word counts for little (measured 1.13-1.15;
    the previous weights 1.05-1.07, the first two phases' 1.01-1.03; the triangle 2.0-2.3)."""
    ratios = _caption_swap_ratios()
    assert ratios["square", "circle"] > 1.2 and ratios["circle", "square"] > 1.2, ratios

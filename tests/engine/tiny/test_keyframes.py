"""noor-tiny pins frames inside a clip (keyframes at indexes), and `noor eval tiny` measures it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from noor.engine.task import Task
from noor.engine.tiny.backend import TinyBackend
from noor.engine.tiny.captions import caption
from noor.engine.tiny.detector import psnr
from noor.engine.tiny.eval import PSNR_SANITY_DB, evaluate, one_at_a_time, pin_step_ratio
from noor.engine.tiny.scene import MOTIONS, render, sample_scene

STEPS = 2  # few steps: the pins are held clean at every step, however many there are


def _uint8(frames: np.ndarray) -> np.ndarray:
    return (frames * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def backend() -> TinyBackend:
    return TinyBackend()


def test_frames_pinned_inside_a_clip_come_back_at_their_indexes(backend: TinyBackend) -> None:
    """Four held-out scenes, each pinned at two frames inside the clip (16 frames, and 40 retimed from 16): the
    output's frame at each index is the pinned image, which the same prompt and seed unpinned does not draw."""
    rng = np.random.default_rng(11)
    cases: list[tuple[Task, Task, dict[int, np.ndarray]]] = []
    for k in range(4):
        scene = sample_scene(rng, two_objects_p=0.0, motion=[m for m in MOTIONS if m != "still"][k])
        prompt = caption(scene, "en" if k % 2 == 0 else "ar", rng)
        num_frames, (a, b) = (16, (5, 11)) if k < 2 else (40, (12, 27))
        clip = _uint8(render(scene, num_frames))
        pins = {a: clip[a], b: clip[b]}
        free = Task(prompt, seed=40 + k, steps=STEPS, num_frames=num_frames)
        pinned = Task(prompt, seed=40 + k, steps=STEPS, num_frames=num_frames, keyframes=tuple(pins.items()))
        cases.append((pinned, free, pins))
    out = backend.generate([task for case in cases for task in case[:2]])
    for k, (_, _, pins) in enumerate(cases):
        pinned, free = out[2 * k].frames, out[2 * k + 1].frames
        for index, image in pins.items():
            kept, unpinned = psnr(pinned[index] / 255.0, image / 255.0), psnr(free[index] / 255.0, image / 255.0)
            assert kept >= 28.0 and kept >= unpinned + 8.0, (k, index, kept, unpinned)


def test_a_keyframe_at_either_end_is_the_start_or_end_frame(backend: TinyBackend) -> None:
    scene = sample_scene(np.random.default_rng(5), two_objects_p=0.0, motion="right")
    clip = _uint8(render(scene))
    prompt = caption(scene, "en", np.random.default_rng(5))
    tasks = [
        Task(prompt, seed=3, steps=STEPS, start_frame=clip[0], end_frame=clip[-1]),
        Task(prompt, seed=3, steps=STEPS, keyframes=((0, clip[0]), (15, clip[-1]))),
        Task(prompt, seed=4, steps=STEPS, loop=True, start_frame=clip[0]),
        Task(prompt, seed=4, steps=STEPS, loop=True, keyframes=((0, clip[0]),)),
    ]
    out = [media.frames for media in backend.generate(tasks)]
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[2], out[3])
    assert np.array_equal(out[3][0], out[3][-1])  # the loop ends on its pinned first frame


def test_a_loop_pinned_inside_still_ends_where_it_starts(backend: TinyBackend) -> None:
    """Its first and last frames are free: the pipeline ties them, as for a loop without keyframes."""
    scene = sample_scene(np.random.default_rng(6), two_objects_p=0.0, motion="up")
    middle = _uint8(render(scene))[8]
    prompt = caption(scene, "en", np.random.default_rng(6))
    looped, straight = backend.generate([
        Task(prompt, seed=8, steps=STEPS, loop=True, keyframes=((8, middle),)),
        Task(prompt, seed=8, steps=STEPS, keyframes=((8, middle),)),
    ])  # fmt: skip
    seam, open_ends = (psnr(clip.frames[0] / 255.0, clip.frames[-1] / 255.0) for clip in (looped, straight))
    assert seam >= 30.0 and seam > open_ends + 5.0, (seam, open_ends)


def _pinned_oracle(cut: bool) -> Any:
    """Draws the pinned frame's own scene through it (`cut` False), or another scene with the pin pasted in."""

    def generate(prompt: str, seed: int, keyframes: tuple[tuple[int, np.ndarray], ...] = (), **_: Any) -> np.ndarray:
        ((index, frame),) = keyframes
        rng = np.random.default_rng(seed)
        clip = render(sample_scene(rng, 0.0, shape="triangle", colour="green", motion="right"))
        if not cut:  # the eval's scene, found by the one whose middle frame is the pin
            clip = next(c for c in _eval_scene_clips(8) if np.array_equal(c[index], frame))
        clip = clip.copy()
        clip[index] = frame
        return clip

    return generate


def _eval_scene_clips(checks: int) -> list[np.ndarray]:
    """The clips of the scenes `evaluate` pins, drawn from its own stream as it draws them."""
    rng, out = np.random.default_rng(9), []
    for k in range(checks):
        scene = sample_scene(rng, two_objects_p=0.0, motion=[m for m in MOTIONS if m != "still"][k % 7])
        caption(scene, "en" if k % 2 == 0 else "ar", rng)
        out.append(render(scene))
    return out


def test_the_eval_tells_a_clip_through_its_keyframe_from_a_pasted_one() -> None:
    through = evaluate(one_at_a_time(_pinned_oracle(cut=False)), [], keyframe_checks=0, index_checks=8)
    assert through.middle_kept == 1.0 and through.middle_psnr_db >= PSNR_SANITY_DB
    assert len(through.middle_step_ratios) == 8 and max(through.middle_step_ratios) < 1.5
    pasted = evaluate(one_at_a_time(_pinned_oracle(cut=True)), [], keyframe_checks=0, index_checks=8)
    assert pasted.middle_psnr_db >= PSNR_SANITY_DB  # the pinned frame is there: PSNR cannot see the cut
    assert pasted.middle_kept < 0.5 and min(pasted.middle_step_ratios) > 3, pasted.middle_step_ratios


def test_pin_step_ratio_reads_a_pop_inside_the_clip() -> None:
    scene = sample_scene(np.random.default_rng(3), 0.0, motion="right")
    clip = render(scene)
    assert pin_step_ratio(clip, 8) == pytest.approx(1.0, abs=0.35)
    clip[8] = render(sample_scene(np.random.default_rng(4), 0.0, motion="still"))[0]
    assert pin_step_ratio(clip, 8) > 5

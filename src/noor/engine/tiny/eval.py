"""`noor eval tiny`: does noor-tiny draw what the prompt says?

64 fixed prompts (32 English, 32 Arabic) that training never shows verbatim, each generated once
and read back by the pixel-level detector; plus what keyframes ask of the model: a clip given its first
frame keeps that frame's object (colour and shape, read on the clip's second half), and a loop wraps
around without a jump (its seam step no larger than 1.5x its median frame step); and 16 two-object
prompts (8 scenes, each in both languages): both objects drawn, each in its colour and shape; the
first 16 prompts again at 16:9 and 9:16, read as drawn (the square is never stretched: same targets); and
keyframes at indexes: a clip pinned to its scene's middle frame keeps that frame's object on both sides of it
(colour and shape read on the frames before and after it), and steps into and out of it no harder than its
other steps (reported: noor-tiny was trained with first and last frames only, so this measures how far its
per-frame noise levels carry to a frame inside the clip).

The start frame's, the middle keyframe's and the loop end's PSNR are reported as sanity checks only: the
pipeline holds given frames clean and copies the loop's first frame to its end, so they pass by construction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from noor.engine.tiny.captions import caption
from noor.engine.tiny.detector import detect, detect_colour, psnr
from noor.engine.tiny.scene import COLOURS, MOTIONS, SHAPES, Scene, render, sample_scene

TARGETS = {"colour": 0.90, "motion": 0.80, "shape": 0.70}
START_KEPT_TARGET = 0.80  # share of start-frame clips whose second half keeps the keyframe's colour and shape
SEAM_RATIO_MAX = 1.5  # a loop's seam step may be at most this many times its median frame step...
LOOP_SMOOTH_TARGET = 0.80  # ...in this share of loops
ASPECTS = {"16:9": (256, 144), "9:16": (144, 256)}  # read at these sizes as well as square
MAX_STRETCH = 1.2  # an object's spread may differ this much across and down (16:9 stretches it 1.78x)
TWO_OBJECTS_TARGET = 0.70  # share of two-object clips with both objects in their colour and shape
PSNR_SANITY_DB = 25.0  # given frames come back (sanity check: held clean by the pipeline, not learnt)
# Mean absolute step (pixels in [0, 1]) below which a clip counts as still: half a grey level. It keeps a
# still clip's seam ratio from dividing by nothing.
STILL_STEP = 0.5 / 255


@dataclass(frozen=True)
class EvalPrompt:
    prompt: str
    lang: str
    shape: str
    colour: str
    motion: str
    seed: int


# `noor eval tiny --quick` (what the tests run): half of every part of the full set (the defaults), about half the time
QUICK = {"per_language": 16, "keyframe_checks": 8, "two_object_scenes": 4, "aspect_prompts": 8}
SEED_STRIDE = 7919  # a prompt's k-th draw uses seed + k * SEED_STRIDE


def eval_prompts(per_language: int = 32, seeds: int = 1) -> list[EvalPrompt]:
    """A fixed, attribute-balanced prompt set: the same scenes described in English and Arabic. With `seeds`
    > 1 every prompt is drawn that many times with other seeds (after the first draws, which stay the same):
    one draw a prompt reads each figure with a standard error of about 9 points, three about 5."""
    rng = np.random.default_rng(20261122)
    colours = list(COLOURS)
    out: list[EvalPrompt] = []
    for i in range(per_language):
        shape, colour, motion = SHAPES[i % 3], colours[(i * 3) % 8], MOTIONS[i % 8]
        scene = sample_scene(rng, two_objects_p=0.0, shape=shape, colour=colour, motion=motion)
        for lang in ("en", "ar"):
            out.append(EvalPrompt(caption(scene, lang, rng), lang, shape, colour, motion, seed=1000 + i))
    return out + [replace(p, seed=p.seed + k * SEED_STRIDE) for k in range(1, seeds) for p in out]


def two_object_prompts(scenes: int = 8) -> list[tuple[str, str, Scene]]:
    """(prompt, lang, scene) for `scenes` fixed two-object scenes, each captioned in English and in Arabic."""
    rng = np.random.default_rng(20261205)
    out: list[tuple[str, str, Scene]] = []
    while len(out) < 2 * scenes:
        scene = sample_scene(rng, two_objects_p=1.0)
        if len(scene.things) == 2:  # the sampler gives up on a second object that will not keep apart
            out += [(caption(scene, lang, rng), lang, scene) for lang in ("en", "ar")]
    return out


@dataclass
class EvalReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # lang -> attribute -> share
    start_kept: float = 0.0  # share of start-frame clips that keep the keyframe's colour and shape
    loop_smooth: float = 0.0  # share of loops whose seam ratio is at most SEAM_RATIO_MAX
    seam_ratios: list[float] = field(default_factory=list)  # one per loop
    start_step_ratios: list[float] = field(default_factory=list)  # first step / median step, per start-frame clip
    # clips given a start frame and an end frame of another scene (every other check): (first step, last step)
    # over the median step; 1 is a blend, much more is a cut (reported: the model does not blend yet)
    pair_step_ratios: list[tuple[float, float]] = field(default_factory=list)
    two_objects: dict[str, float] = field(default_factory=dict)  # lang -> share with both objects right
    aspects: dict[str, dict[str, float]] = field(default_factory=dict)  # aspect -> attribute -> share
    two_object_rows: list[dict[str, Any]] = field(default_factory=list)
    start_psnr_db: float = 0.0  # sanity
    loop_psnr_db: float = 0.0  # sanity
    # keyframes at indexes: clips pinned to their scene's middle frame (`index_checks`)
    middle_kept: float = 0.0  # share whose frames before and after the pin keep its colour and shape
    middle_step_ratios: list[float] = field(default_factory=list)  # the step into or out of the pin / median step
    middle_psnr_db: float = 0.0  # sanity (min over clips): the pinned frame is held clean

    def mistakes(self, attribute: str, top: int = 3) -> list[tuple[str, str, int]]:
        """The most common (wanted, got, count) errors in one attribute, both languages together; "none" where
        the detector found no object or no motion."""
        if attribute not in TARGETS:
            raise ValueError(f"attribute must be one of {', '.join(TARGETS)}, got {attribute!r}")
        wrong = Counter(
            (r["want"][attribute], r["got"][attribute] or "none")
            for r in self.rows
            if r["want"][attribute] != r["got"][attribute]
        )
        return [(want, got, n) for (want, got), n in wrong.most_common(top)]

    def sane(self) -> bool:
        """Given frames came back (by construction: not part of `passed`); a middle keyframe's where it was asked."""
        middle = not self.middle_step_ratios or self.middle_psnr_db >= PSNR_SANITY_DB
        return self.start_psnr_db >= PSNR_SANITY_DB and self.loop_psnr_db >= PSNR_SANITY_DB and middle

    def passed(self) -> bool:
        ok = all(acc[a] >= t for acc in self.accuracy.values() for a, t in TARGETS.items())
        ok = ok and all(share >= TWO_OBJECTS_TARGET for share in self.two_objects.values())
        ok = ok and all(acc[a] >= t for acc in self.aspects.values() for a, t in TARGETS.items())
        return ok and self.start_kept >= START_KEPT_TARGET and self.loop_smooth >= LOOP_SMOOTH_TARGET


def frame_steps(clip: np.ndarray) -> np.ndarray:
    """Mean absolute change between consecutive frames of a clip (T, H, W, 3) in [0, 1]: (T - 1,)."""
    frames = np.asarray(clip, dtype=np.float32)
    return np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))


def seam_ratio(clip: np.ndarray) -> float:
    """How much harsher a loop's wrap-around is than its other steps: the larger of the step into the last
    frame and the step from the last frame back to the first, over the median of the other steps. A clip
    whose last frame repeats its first shows its seam in the step into the last frame; one that stops a
    step short shows it from last to first."""
    steps = frame_steps(clip)
    wrap = float(np.abs(np.asarray(clip[-1], np.float32) - np.asarray(clip[0], np.float32)).mean())
    seam = max(float(steps[-1]), wrap)
    return seam / max(float(np.median(steps[:-1])), STILL_STEP)


def start_step_ratio(clip: np.ndarray) -> float:
    """The step out of a given first frame over the median of the clip's other steps (1: no cut)."""
    steps = frame_steps(clip)
    return float(steps[0]) / max(float(np.median(steps[1:])), STILL_STEP)


def end_step_ratio(clip: np.ndarray) -> float:
    """The step into a given last frame over the median of the clip's other steps (1: no pop)."""
    steps = frame_steps(clip)
    return float(steps[-1]) / max(float(np.median(steps[:-1])), STILL_STEP)


def pin_step_ratio(clip: np.ndarray, index: int) -> float:
    """The larger of the steps into and out of a frame pinned inside a clip (0 < index < T - 1) over the median
    of the clip's other steps (1: the clip runs through it; much more: it pops in and out)."""
    steps = frame_steps(clip)
    others = np.delete(steps, [index - 1, index])
    return max(float(steps[index - 1]), float(steps[index])) / max(float(np.median(others)), STILL_STEP)


# (prompt, seed, start_frame=None, loop=False, width=64, height=64, end_frame=None, keyframes=()) -> (T, H, W, 3)
# in [0, 1]
Generate = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Clip:
    """One clip the eval asks for; a generator is called with only the options that differ from the default."""

    prompt: str
    seed: int
    start_frame: np.ndarray | None = None  # (H, W, 3) in [0, 1]
    loop: bool = False
    width: int = 64
    height: int = 64
    end_frame: np.ndarray | None = None
    keyframes: tuple[tuple[int, np.ndarray], ...] = ()  # (index, (H, W, 3) in [0, 1]) frames pinned in the clip

    def options(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in (
                ("start_frame", self.start_frame),
                ("loop", self.loop),
                ("width", self.width),
                ("height", self.height),
                ("end_frame", self.end_frame),
                ("keyframes", self.keyframes),
            )
            if value is not None and not (isinstance(value, (bool, int, tuple)) and value == getattr(Clip, name))
        }


# clips -> their frames, in order: a backend draws them in batches (noor-tiny's clips are the same bytes alone or
# batched, so the report does not depend on the batch size)
GenerateMany = Callable[[list[Clip]], list[np.ndarray]]


def one_at_a_time(generate: Generate) -> GenerateMany:
    """A generator of one clip per call as a GenerateMany."""
    return lambda clips: [generate(c.prompt, c.seed, **c.options()) for c in clips]


def evaluate(
    generate: GenerateMany,
    prompts: list[EvalPrompt],
    keyframe_checks: int = 4,
    on_clips: Callable[[int, int], None] | None = None,
    two_object_scenes: int = 0,
    aspect_prompts: int = 0,
    batch: int = 8,
    index_checks: int = 0,
) -> EvalReport:
    """Every clip the five parts below ask for is drawn first, in batches of `batch` (`on_clips(done, total)`
    after each), then read."""
    report = EvalReport()
    # the clips, in the order of the parts; the random draws come in the same order as the reads below
    wanted: list[Clip] = [Clip(item.prompt, item.seed) for item in prompts]
    rng, pair_rng = np.random.default_rng(7), np.random.default_rng(8)  # the pairs' draws leave the others' be
    checks = []
    for k in range(keyframe_checks):
        scene: Scene = sample_scene(rng, two_objects_p=0.0)
        start = render(scene, 2)[0]
        lang = "en" if k % 2 == 0 else "ar"
        wanted.append(Clip(caption(scene, lang, rng), 500 + k, start_frame=start))
        moving = sample_scene(rng, two_objects_p=0.0, motion=[m for m in MOTIONS if m != "still"][k % 7])
        wanted.append(Clip(caption(moving, lang, rng), 600 + k, loop=True))
        if k % 2 == 0:  # a start frame and another scene's end frame: does it move from one to the other?
            other = render(sample_scene(pair_rng, two_objects_p=0.0), 2)[0]
            wanted.append(Clip(caption(scene, lang, pair_rng), 800 + k, start_frame=start, end_frame=other))
        checks.append((scene, start))
    two = two_object_prompts(two_object_scenes)
    wanted += [Clip(prompt, 700 + k) for k, (prompt, _, _) in enumerate(two)]
    sizes = ASPECTS.items() if aspect_prompts else ()
    wanted += [Clip(p.prompt, p.seed, width=w, height=h) for _, (w, h) in sizes for p in prompts[:aspect_prompts]]
    pins, index_rng = [], np.random.default_rng(9)  # its own stream: the other parts' clips stay the same
    for k in range(index_checks):
        scene = sample_scene(index_rng, two_objects_p=0.0, motion=[m for m in MOTIONS if m != "still"][k % 7])
        frames = render(scene)
        middle = len(frames) // 2
        lang = "en" if k % 2 == 0 else "ar"
        wanted.append(Clip(caption(scene, lang, index_rng), 900 + k, keyframes=((middle, frames[middle]),)))
        pins.append((scene, middle, frames[middle]))
    drawn: list[np.ndarray] = []
    if on_clips:
        on_clips(0, len(wanted))
    for first in range(0, len(wanted), batch):
        drawn += generate(wanted[first : first + batch])
        if on_clips:
            on_clips(len(drawn), len(wanted))
    clips = iter(drawn)
    # 1. prompt following, per language and attribute
    for item in prompts:
        found = detect(next(clips))
        row = {
            "prompt": item.prompt,
            "lang": item.lang,
            "want": {"colour": item.colour, "shape": item.shape, "motion": item.motion},
            "got": {"colour": found.colour, "shape": found.shape, "motion": found.motion},
        }
        report.rows.append(row)
    for lang in sorted({p.lang for p in prompts}):
        rows = [r for r in report.rows if r["lang"] == lang]
        report.accuracy[lang] = {a: float(np.mean([r["want"][a] == r["got"][a] for r in rows])) for a in TARGETS}
    # 2. keyframes: a clip from a rendered start frame keeps its object through the clip; a loop of a moving
    # object wraps around without a jump (half the checks in each language)
    start_scores, loop_scores, kept = [], [], []
    for k, (scene, start) in enumerate(checks):
        clip = next(clips)
        start_scores.append(psnr(clip[0], start))
        report.start_step_ratios.append(start_step_ratio(clip))
        found, thing = detect(clip[len(clip) // 2 :]), scene.things[0]
        kept.append(found.colour == thing.colour and found.shape == thing.shape)
        looped = next(clips)
        loop_scores.append(psnr(looped[-1], looped[0]))
        report.seam_ratios.append(seam_ratio(looped))
        if k % 2 == 0:
            pair = next(clips)
            report.pair_step_ratios.append((start_step_ratio(pair), end_step_ratio(pair)))
    report.start_psnr_db = float(np.min(start_scores)) if start_scores else 0.0
    report.loop_psnr_db = float(np.min(loop_scores)) if loop_scores else 0.0
    report.start_kept = float(np.mean(kept)) if kept else 0.0
    report.loop_smooth = float(np.mean([r <= SEAM_RATIO_MAX for r in report.seam_ratios])) if kept else 0.0
    # 3. two objects: each drawn in its colour and shape (read from the pixels nearest its colour)
    for prompt, lang, scene in two:
        clip = next(clips)
        got = [detect_colour(clip, thing.colour) for thing in scene.things]
        report.two_object_rows.append({
            "prompt": prompt, "lang": lang,
            "want": [{"colour": t.colour, "shape": t.shape, "motion": t.motion} for t in scene.things],
            "got": [{"colour": g.colour, "shape": g.shape, "motion": g.motion} for g in got],
            "both": all(g.shape == t.shape for g, t in zip(got, scene.things, strict=True)),
        })  # fmt: skip
    for lang in sorted({r["lang"] for r in report.two_object_rows}):
        report.two_objects[lang] = float(np.mean([r["both"] for r in report.two_object_rows if r["lang"] == lang]))
    # 4. other aspects: the first prompts again, wide and tall, read as drawn (same targets as square)
    for aspect, _ in sizes:
        hits: dict[str, list[bool]] = {a: [] for a in TARGETS}
        for item in prompts[:aspect_prompts]:
            drawn_at = detect(next(clips))
            hits["colour"].append(drawn_at.colour == item.colour)
            # a shape drawn stretched is not the shape asked for, whatever template it is nearest
            hits["shape"].append(
                drawn_at.shape == item.shape and abs(np.log(drawn_at.stretch or 1.0)) < np.log(MAX_STRETCH)
            )
            hits["motion"].append(drawn_at.motion == item.motion)
        report.aspects[aspect] = {a: float(np.mean(v)) for a, v in hits.items()}
    # 5. keyframes at indexes: the middle frame's object on both sides of it, and no pop into or out of it
    pinned_kept, pinned_scores = [], []
    for scene, middle, frame in pins:
        clip, thing = next(clips), scene.things[0]
        pinned_scores.append(psnr(clip[middle], frame))
        report.middle_step_ratios.append(pin_step_ratio(clip, middle))
        sides = detect(clip[:middle]), detect(clip[middle + 1 :])
        pinned_kept.append(all(found.colour == thing.colour and found.shape == thing.shape for found in sides))
    report.middle_psnr_db = float(np.min(pinned_scores)) if pinned_scores else 0.0
    report.middle_kept = float(np.mean(pinned_kept)) if pinned_kept else 0.0
    return report


# --- trained concepts (`noor eval tiny --concept DIR`) ----------------------------------------------------------

CONCEPT_TARGET = 0.80  # share of held-out prompts for the new shape the detector reads as it, per language
BASE_DRIFT_MAX = 0.05  # a base figure may drop this much with the adapter loaded


def concept_prompts(shape: str, per_language: int = 16) -> list[EvalPrompt]:
    """Held-out prompts for a new shape: its (colour, motion) pairs the concept data never shows it in
    (concept.HELD_OUT), with seeds of their own, described in English and Arabic."""
    from noor.engine.tiny.concept import HELD_OUT

    rng = np.random.default_rng(20261206)
    pairs = sorted(HELD_OUT, key=lambda p: (list(COLOURS).index(p[0]), MOTIONS.index(p[1])))
    out: list[EvalPrompt] = []
    for i in range(per_language):
        colour, motion = pairs[i % len(pairs)]
        scene = sample_scene(rng, two_objects_p=0.0, shape=shape, colour=colour, motion=motion)
        for lang in ("en", "ar"):
            out.append(EvalPrompt(caption(scene, lang, rng), lang, shape, colour, motion, seed=30_000 + i))
    return out


@dataclass
class ConceptReport:
    shape: str
    drawn: dict[str, float] = field(default_factory=dict)  # lang -> share read as the shape, with the adapter
    drawn_without: dict[str, float] = field(default_factory=dict)  # the same prompts and seeds, no adapter
    concept_attributes: dict[str, dict[str, float]] = field(default_factory=dict)  # lang -> colour/motion, with it
    base_without: dict[str, dict[str, float]] = field(default_factory=dict)  # lang -> attribute -> share
    base_with: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    size_bytes: int = 0

    def passed(self) -> bool:
        drawn = all(share >= CONCEPT_TARGET for share in self.drawn.values())
        kept = all(
            self.base_with[lang][a] >= self.base_without[lang][a] - BASE_DRIFT_MAX - 1e-9
            for lang in self.base_without
            for a in TARGETS
        )
        from noor.engine.tiny.concept import MAX_BYTES

        return drawn and kept and self.size_bytes <= MAX_BYTES


def _shares(rows: list[dict[str, Any]], attributes: tuple[str, ...]) -> dict[str, dict[str, float]]:
    return {
        lang: {a: float(np.mean([r["want"][a] == r["got"][a] for r in rows if r["lang"] == lang])) for a in attributes}
        for lang in sorted({r["lang"] for r in rows})
    }


def _read(prompts: list[EvalPrompt], clips: list[np.ndarray], shapes: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for item, clip in zip(prompts, clips, strict=True):
        found = detect(clip, shapes)
        rows.append({
            "prompt": item.prompt, "lang": item.lang,
            "want": {"colour": item.colour, "shape": item.shape, "motion": item.motion},
            "got": {"colour": found.colour, "shape": found.shape, "motion": found.motion},
        })  # fmt: skip
    return rows


def evaluate_concept(
    generate: Callable[[list[Clip], bool], list[np.ndarray]],
    shape: str,
    per_language: int = 16,
    base_per_language: int = 32,
    batch: int = 8,
    on_clips: Callable[[int, int], None] | None = None,
) -> ConceptReport:
    """`generate(clips, with_concept)` draws clips with the adapter loaded or without it. The concept's held-out
    prompts are read with the new shape among the candidates; the base prompts (`eval_prompts`) as the base eval
    reads them."""
    report = ConceptReport(shape)
    held_out, base = concept_prompts(shape, per_language), eval_prompts(base_per_language)
    parts = [(held_out, True), (held_out, False), (base, False), (base, True)]
    total, done = sum(len(p) for p, _ in parts), 0
    drawn: list[list[np.ndarray]] = []
    for prompts, with_concept in parts:
        clips: list[np.ndarray] = []
        for first in range(0, len(prompts), batch):
            chunk = prompts[first : first + batch]
            clips += generate([Clip(p.prompt, p.seed) for p in chunk], with_concept)
            done += len(chunk)
            if on_clips:
                on_clips(done, total)
        drawn.append(clips)
    shapes = (*SHAPES, shape)
    with_rows, without_rows = _read(held_out, drawn[0], shapes), _read(held_out, drawn[1], shapes)
    report.rows = with_rows
    report.drawn = {lang: acc["shape"] for lang, acc in _shares(with_rows, ("shape",)).items()}
    report.drawn_without = {lang: acc["shape"] for lang, acc in _shares(without_rows, ("shape",)).items()}
    report.concept_attributes = _shares(with_rows, ("colour", "motion"))
    report.base_without = _shares(_read(base, drawn[2], SHAPES), tuple(TARGETS))
    report.base_with = _shares(_read(base, drawn[3], SHAPES), tuple(TARGETS))
    return report

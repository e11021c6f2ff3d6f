"""`noor eval tiny --edits`: does noor-tiny edit and reframe a clip as Dream Machine's Modify and Reframe ask?

On the held-out prompts of `noor eval tiny` (`eval.eval_prompts`), each the source's description with some words
changed, sources rendered from the synthetic world (a clip of known colour, shape and motion, as footage would be):

- **adhere**: the source is the prompt's shape and motion in another colour, so the prompt changes only the colour
  word (the same background too, where the prompt names one); edited with `adhere_1..3` in turn (`mode_index`:
  each mode meets every shape). The edit must keep the source's
  shape and motion (target: both in >= 85%) and take the new colour (>= 80%), read by the detector;
- **reimagine**: the source differs from the prompt in colour, shape and motion; edited with `reimagine_1..3` in
  turn (`mode_index`), the edit must show the prompt's colour, shape and motion (each in >= 80%);
- **reframe**: a square source (144x144) onto a 16:9 canvas (256x144), and a 16:9 source (256x144) onto a 9:16
  canvas (144x256, the source scaled to 144x81), centred: the output is at the asked size, and the source's region
  in it matches the source (PSNR of the region against the source, median over clips >= 28 dB; the lowest is
  reported beside it), read on the region as the model drew it. The backend's output keeps the source's own
  pixels there (`TinyBackend.keep_source`, on by default), which passes by construction: reported as a sanity
  check, and the generator the eval is given should draw with it off.

Every clip is drawn first, in batches, through the backend's `generate` (edits of one level share a batch), then
read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from noor.engine.canvas import keep_source
from noor.engine.task import EDIT_LEVELS, Media, Task
from noor.engine.tiny.captions import AR_BACKGROUND, EN_BACKGROUND, caption
from noor.engine.tiny.detector import detect, psnr
from noor.engine.tiny.eval import EvalPrompt
from noor.engine.tiny.scene import COLOURS, MOTIONS, SHAPES, render, sample_scene

ADHERE_KEPT_TARGET = 0.85  # adhere edits whose shape and motion are the source's
ADHERE_COLOUR_TARGET = 0.80  # adhere edits in the prompt's new colour
REIMAGINE_TARGET = 0.80  # reimagine edits showing each of the prompt's attributes
REFRAME_PSNR_DB = 28.0  # median PSNR of the source's region in a reframe against the source
ADHERE = [m for m in EDIT_LEVELS if m.startswith("adhere")]
REIMAGINE = [m for m in EDIT_LEVELS if m.startswith("reimagine")]
SOURCE_SIDE = 144  # the square source's side; the wide one is 256x144
REFRAMES = {"1:1 -> 16:9": ((144, 144), (256, 144)), "16:9 -> 9:16": ((256, 144), (144, 256))}


@dataclass
class EditReport:
    adhere_rows: list[dict[str, Any]] = field(default_factory=list)
    reimagine_rows: list[dict[str, Any]] = field(default_factory=list)
    reframe_rows: list[dict[str, Any]] = field(default_factory=list)

    def adhere(self, mode: str | None = None) -> dict[str, float]:
        """Shares of adhere edits (of one mode, or all) that kept shape and motion, and that took the new colour."""
        rows = [r for r in self.adhere_rows if mode in (None, r["mode"])]
        return {
            "kept": float(np.mean([r["kept"] for r in rows])) if rows else 0.0,
            "colour": float(np.mean([r["colour"] for r in rows])) if rows else 0.0,
        }

    def reimagine(self, mode: str | None = None) -> dict[str, float]:
        """Shares of reimagine edits (of one mode, or all) in the prompt's colour, shape and motion."""
        rows = [r for r in self.reimagine_rows if mode in (None, r["mode"])]
        return {a: float(np.mean([r["got"][a] == r["want"][a] for r in rows])) if rows else 0.0 for a in ATTRIBUTES}

    def reframe(self, name: str) -> dict[str, float]:
        """Median and lowest PSNR (dB) of the source's region, and the share of outputs at the asked size."""
        rows = [r for r in self.reframe_rows if r["reframe"] == name]
        scores, drawn = [r["psnr_db"] for r in rows], [r["drawn_psnr_db"] for r in rows]
        return {
            "median_db": float(np.median(scores)) if rows else 0.0,
            "min_db": float(np.min(scores)) if rows else 0.0,
            "drawn_median_db": float(np.median(drawn)) if rows else 0.0,
            "drawn_min_db": float(np.min(drawn)) if rows else 0.0,
            "sized": float(np.mean([r["sized"] for r in rows])) if rows else 0.0,
        }

    def passed(self) -> bool:
        adhere, reimagine = self.adhere(), self.reimagine()
        ok = adhere["kept"] >= ADHERE_KEPT_TARGET and adhere["colour"] >= ADHERE_COLOUR_TARGET
        ok = ok and all(share >= REIMAGINE_TARGET for share in reimagine.values())
        names = {r["reframe"] for r in self.reframe_rows}
        return ok and all(
            self.reframe(n)["drawn_median_db"] >= REFRAME_PSNR_DB and self.reframe(n)["sized"] == 1.0 for n in names
        )


ATTRIBUTES = ("colour", "shape", "motion")


def _clip(frames: np.ndarray) -> Media:
    """Rendered frames (T, H, W, 3) in [0, 1] as a finished 8 fps clip."""
    return Media(frames=(np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8), fps=8)


def _other(rng: np.random.Generator, options: Any, but: str) -> str:
    return str(rng.choice([o for o in options if o != but]))


def background(prompt: str) -> str | None:
    """The background a caption names (`captions`' phrases, English or Arabic), or None."""
    phrases = {
        **{p: bg for bg, ps in EN_BACKGROUND.items() for p in ps},
        **{p: bg for bg, ps in AR_BACKGROUND.items() for p in ps},
    }
    return next((bg for phrase, bg in sorted(phrases.items(), key=lambda x: -len(x[0])) if phrase in prompt), None)


def _reframe_source(rng: np.random.Generator, item: EvalPrompt, size: tuple[int, int]) -> Media:
    """The prompt's scene rendered square at the size's short side, its flat background extended to the size."""
    scene = sample_scene(
        rng,
        two_objects_p=0.0,
        shape=item.shape,
        colour=item.colour,
        motion=item.motion,
        background=background(item.prompt),
    )
    w, h = size
    square = render(scene, size=min(w, h))
    left, top = (w - min(w, h)) // 2, (h - min(w, h)) // 2
    padding = ((0, 0), (top, h - min(w, h) - top), (left, w - min(w, h) - left), (0, 0))
    return _clip(np.pad(square, padding, mode="edge"))


def mode_index(k: int) -> int:
    """Which of a family's three modes the k-th prompt takes: eval_prompts gives scene i (shape SHAPES[i % 3]) in
    both languages at k = 2i and 2i + 1, so modes go by blocks of three scenes and each meets every shape."""
    return (k // 2 // 3) % 3


def edit_tasks(prompts: list[EvalPrompt], reframe_prompts: int) -> tuple[list[Task], list[dict[str, Any]]]:
    """The tasks of the three parts, in order, and what each is read against."""
    rng = np.random.default_rng(29)
    words = np.random.default_rng(31)  # the sources' own captions (their draws leave `rng`'s scenes as they were)
    tasks: list[Task] = []
    wants: list[dict[str, Any]] = []
    for k, item in enumerate(prompts):  # adhere: only the colour word differs from the source
        colour = _other(rng, COLOURS, item.colour)
        bg = background(item.prompt)
        scene = sample_scene(rng, two_objects_p=0.0, shape=item.shape, colour=colour, motion=item.motion, background=bg)
        mode = ADHERE[mode_index(k)]
        described = caption(scene, item.lang, words)  # the source's prompt, in the prompt's language
        source = _clip(render(scene))
        tasks.append(Task(item.prompt, seed=item.seed, source=source, edit_mode=mode, source_prompt=described))
        wants.append({"part": "adhere", "mode": mode, "item": item, "source_colour": colour})
    for k, item in enumerate(prompts):  # reimagine: colour, shape and motion all differ
        scene = sample_scene(
            rng,
            two_objects_p=0.0,
            shape=_other(rng, SHAPES, item.shape),
            colour=_other(rng, COLOURS, item.colour),
            motion=_other(rng, MOTIONS, item.motion),
            background=background(item.prompt),
        )
        mode = REIMAGINE[mode_index(k)]
        tasks.append(Task(item.prompt, seed=item.seed, source=_clip(render(scene)), edit_mode=mode))
        wants.append({"part": "reimagine", "mode": mode, "item": item})
    for name, (size, (width, height)) in REFRAMES.items():
        for item in prompts[:reframe_prompts]:
            source = _reframe_source(rng, item, size)
            task = Task(item.prompt, width=width, height=height, seed=item.seed, source=source, reframe=True)
            tasks.append(task)
            wants.append({"part": "reframe", "reframe": name, "item": item})
    return tasks, wants


def region_psnr(task: Task, frames: np.ndarray) -> float:
    """PSNR (dB) of the source's region of a reframe's output (T, H, W, 3) uint8 against the source, brought to
    the region's size (a source larger than the canvas is scaled down to fit it: `Task.reframe_box`)."""
    from noor.engine.resample import resize

    assert task.source is not None
    x, y, w, h = task.reframe_box()
    source = resize(task.source.frames, w, h).astype(np.float32) / 255.0
    region = frames[:, y : y + h, x : x + w].astype(np.float32) / 255.0
    return psnr(region, source)


def track_distance(track: list[tuple[float, float, float]], source: list[tuple[float, float, float]]) -> float:
    """How far an edit's object is from its source's: the median over frames of the centroids' distance (native
    pixels; the tracks' first frames paired, inf when either has no object). Reported, not a target: it tells an
    edit that keeps its source's path from one that draws the prompt's motion afresh."""
    pairs = list(zip(track, source, strict=False))
    if not pairs:
        return float("inf")
    return float(np.median([np.hypot(a[0] - b[0], a[1] - b[1]) for a, b in pairs]))


def median_track(rows: list[dict[str, Any]], mode: str | None = None) -> float:
    """The median of `track_px` over rows (of one mode, or all)."""
    values = [r["track_px"] for r in rows if mode in (None, r["mode"])]
    return float(np.median(values)) if values else float("inf")


# tasks -> their media, in order (a backend's `generate`)
Generate = Callable[[list[Task]], list[Media]]


def evaluate_edits(
    generate: Generate,
    prompts: list[EvalPrompt],
    reframe_prompts: int = 16,
    batch: int = 8,
    on_clips: Callable[[int, int], None] | None = None,
) -> EditReport:
    """Draw every edit and reframe in batches of `batch` (`on_clips(done, total)` after each), then read them."""
    tasks, wants = edit_tasks(prompts, reframe_prompts)
    tell = on_clips or (lambda done, total: None)
    tell(0, len(tasks))
    drawn: list[Media] = []
    for first in range(0, len(tasks), batch):
        drawn.extend(generate(tasks[first : first + batch]))
        tell(len(drawn), len(tasks))
    report = EditReport()
    for task, want, media in zip(tasks, wants, drawn, strict=True):
        item: EvalPrompt = want["item"]
        if want["part"] == "reframe":  # an output of another size has no region where the source was asked: -inf
            sized = (media.width, media.height) == (task.width, task.height)
            report.reframe_rows.append({
                "reframe": want["reframe"], "prompt": item.prompt, "lang": item.lang,
                "psnr_db": region_psnr(task, keep_source(media.frames, task)) if sized else -np.inf,
                "drawn_psnr_db": region_psnr(task, media.frames) if sized else -np.inf,
                "sized": sized,
            })  # fmt: skip
            continue
        found = detect(media.frames.astype(np.float32) / 255.0)
        got = {"colour": found.colour, "shape": found.shape, "motion": found.motion}
        assert task.source is not None
        row = {
            "mode": want["mode"], "prompt": item.prompt, "lang": item.lang, "got": got,
            "want": {"colour": item.colour, "shape": item.shape, "motion": item.motion},
            "track_px": track_distance(found.track, detect(task.source.frames.astype(np.float32) / 255.0).track),
        }  # fmt: skip
        if want["part"] == "adhere":  # the source has the prompt's shape and motion, in another colour
            row["source_colour"] = want["source_colour"]
            row["kept"] = got["shape"] == item.shape and got["motion"] == item.motion
            row["colour"] = got["colour"] == item.colour
            report.adhere_rows.append(row)
        else:
            report.reimagine_rows.append(row)
    return report

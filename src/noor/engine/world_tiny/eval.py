"""`noor world eval`: does noor-world-tiny move as it is told, remember where it has been, hold together over
long walks and draw the world its caption names? Per language, on captions training never showed.

What is read (the readers in `readers.py`, which recover 100% of these from the true terrain):
- action adherence: over random actions, the scene's shift between consecutive frames (phase correlation) must
  imply the action taken; for `none`, a shift below 1 px. The world's memory carries what the player has seen
  along exactly (`memory.py`), so with it on this reads the memory and the model's new strip together; the same
  walks with the memory off read the model alone (its context frames only), reported beside it;
- revisit consistency: after a few random steps, a closed path (right n, up n, left n, down n) returns to where
  it began; the PSNR of the ground (the player's pixels left out: they are the same in every frame) between the
  last frame and the frame where the loop began, with the model's memory on and, as the baseline, off;
- long rollouts: every 100-frame window of 1,000 frames of random actions within the caption's biome's colour
  range, and the last window still read as that biome;
- caption adherence: the biome read from the opening frame's colours is the caption's;
- detail (reported, no target): the opening frames' `ground_detail` over true views' of the same biome, 1 for
  a world as crisp as the truth, near 0 for a blur of its colours.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from noor.engine.world_tiny.actions import closed_path, random_actions
from noor.engine.world_tiny.captions import LANGS, held_out_captions
from noor.engine.world_tiny.readers import check_windows, ground_detail, read_actions, read_biome, true_detail
from noor.engine.world_tiny.terrain import BIOMES, player_mask

ACTION_TARGET = 0.90  # share of moving steps read as their action
STILL_TARGET = 0.90  # share of `none` steps that move less than 1 px
REVISIT_TARGET_DB = {8: 22.0, 16: 20.0}  # mean PSNR of the ground after a closed path of n steps a side
CAPTION_TARGET = 0.85  # share of opening frames read as the caption's biome
EVAL_SEED = 1000  # seeds of the eval's worlds start here


class WorldLike(Protocol):  # what the eval needs of a world (the engine's `World` has it)
    @property
    def frame(self) -> np.ndarray: ...

    def step(self, action: str) -> np.ndarray: ...


OpenWorld = Callable[[str, int, bool], WorldLike]  # (caption, seed, memory) -> an open world
Progress = Callable[[str, int, int], None]  # (part, done, total)


@dataclass(frozen=True)
class Size:
    captions: int  # held-out captions per biome and language for caption adherence
    seeds: int  # seeds per caption
    action_walks: int  # walks per biome and language
    action_steps: int  # random actions per walk
    revisit_sides: tuple[int, ...]
    long_frames: int  # frames of each long rollout (one per biome, alternating languages)
    warmup: int = 4  # random steps before a revisit loop begins


FULL = Size(captions=5, seeds=2, action_walks=2, action_steps=30, revisit_sides=(8, 16), long_frames=1000)
QUICK = Size(captions=1, seeds=1, action_walks=1, action_steps=12, revisit_sides=(8,), long_frames=200)


@dataclass
class LanguageFigures:
    caption_hits: int = 0
    captions: int = 0
    moving_hits: int = 0
    moving: int = 0
    still_hits: int = 0
    still: int = 0
    alone_hits: int = 0  # the same walks with the memory off: the model's own reading of the action
    alone: int = 0
    revisit: dict[tuple[int, bool], list[float]] = field(default_factory=dict)  # (n, memory) -> PSNRs
    windows_ok: int = 0
    windows: int = 0
    long_biome_hits: int = 0
    long_rollouts: int = 0
    misread: Counter[str] = field(default_factory=Counter)  # "right->left" etc.
    detail: list[float] = field(default_factory=list)  # each opening frame's ground detail over the truth's

    def share(self, hits: int, n: int) -> float:
        return hits / n if n else float("nan")

    @property
    def caption(self) -> float:
        return self.share(self.caption_hits, self.captions)

    @property
    def action(self) -> float:
        return self.share(self.moving_hits, self.moving)

    @property
    def action_alone(self) -> float:
        return self.share(self.alone_hits, self.alone)

    @property
    def still_share(self) -> float:
        return self.share(self.still_hits, self.still)

    def revisit_db(self, n: int, memory: bool = True) -> float:
        values = self.revisit.get((n, memory), [])
        return float(np.mean(values)) if values else float("nan")

    def failures(self) -> list[str]:
        out = []
        if self.caption < CAPTION_TARGET:
            out.append(f"caption adherence {self.caption:.0%} < {CAPTION_TARGET:.0%}")
        if self.action < ACTION_TARGET:
            out.append(f"action adherence {self.action:.0%} < {ACTION_TARGET:.0%}")
        if self.still_share < STILL_TARGET:
            out.append(f"'none' still {self.still_share:.0%} < {STILL_TARGET:.0%}")
        for n, target in REVISIT_TARGET_DB.items():
            if (n, True) in self.revisit and self.revisit_db(n) < target:
                out.append(f"revisit n={n} {self.revisit_db(n):.1f} dB < {target} dB")
        if self.windows_ok < self.windows:
            out.append(f"long rollouts: {self.windows - self.windows_ok} of {self.windows} windows out of range")
        if self.long_biome_hits < self.long_rollouts:
            out.append(f"long rollouts: {self.long_rollouts - self.long_biome_hits} drifted to another biome")
        return out


@dataclass
class Report:
    size: Size
    by_lang: dict[str, LanguageFigures]

    def failures(self) -> list[str]:
        return [f"{lang}: {f}" for lang, figs in self.by_lang.items() for f in figs.failures()]


def ground_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two frames over the ground: the player's pixels (the same in every frame) left out."""
    keep = ~player_mask(a.shape[0])
    mse = float(np.mean((a[keep].astype(np.float64) - b[keep].astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _walk(world: WorldLike, actions: list[str]) -> np.ndarray:
    return np.stack([world.frame] + [world.step(a) for a in actions])


def evaluate(open_world: OpenWorld, size: Size = FULL, progress: Progress | None = None) -> Report:
    by_lang = {lang: LanguageFigures() for lang in LANGS}
    total_parts = 4
    done = 0

    def tick(part: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(part, done, total_parts * len(LANGS))

    for li, lang in enumerate(LANGS):
        figs = by_lang[lang]
        rng = np.random.default_rng([EVAL_SEED, li])
        # 1. caption adherence: the opening frame's biome
        for b, biome in enumerate(BIOMES):
            for c, caption in enumerate(held_out_captions(biome, lang)[: size.captions]):
                for s in range(size.seeds):
                    world = open_world(caption, EVAL_SEED + 100 * b + 10 * c + s, True)
                    figs.captions += 1
                    figs.caption_hits += read_biome(world.frame).biome == biome
                    figs.detail.append(ground_detail(world.frame) / true_detail(biome))
        tick("captions")
        # 2. action adherence over random actions
        for b, biome in enumerate(BIOMES):
            caption = held_out_captions(biome, lang)[0]
            for w in range(size.action_walks):
                actions = random_actions(rng, size.action_steps)
                frames = _walk(open_world(caption, EVAL_SEED + 500 + 10 * b + w, True), actions)
                for want, got in zip(actions, read_actions(frames), strict=True):
                    if want == "none":
                        figs.still += 1
                        figs.still_hits += got == "none"
                    else:
                        figs.moving += 1
                        figs.moving_hits += got == want
                    if got != want:
                        figs.misread[f"{want}->{got}"] += 1
                # the same walk without the memory: only the model's context frames can carry the scene along
                alone = _walk(open_world(caption, EVAL_SEED + 500 + 10 * b + w, False), actions)
                moving = [(want, got) for want, got in zip(actions, read_actions(alone), strict=True) if want != "none"]
                figs.alone += len(moving)
                figs.alone_hits += sum(want == got for want, got in moving)
        tick("actions")
        # 3. revisit: a closed path after a few random steps, memory on and off (the same seed and steps)
        for b, biome in enumerate(BIOMES):
            caption = held_out_captions(biome, lang)[-1]
            warmup = random_actions(rng, size.warmup)
            for n in size.revisit_sides:
                for memory in (True, False):
                    frames = _walk(open_world(caption, EVAL_SEED + 700 + b, memory), warmup + closed_path(n))
                    figs.revisit.setdefault((n, memory), []).append(ground_psnr(frames[-1], frames[size.warmup]))
        tick("revisit")
        # 4. long rollouts: each biome once, the languages taking turns
        for b, biome in enumerate(BIOMES):
            if b % len(LANGS) != li:
                continue
            caption = held_out_captions(biome, lang)[0]
            frames = _walk(open_world(caption, EVAL_SEED + 900 + b, True), random_actions(rng, size.long_frames - 1))
            checks = check_windows(frames, biome, window=100)
            figs.windows += len(checks)
            figs.windows_ok += sum(c.ok for c in checks)
            figs.long_rollouts += 1
            last = Counter(read_biome(f).biome for f in frames[-100:])
            figs.long_biome_hits += last.most_common(1)[0][0] == biome
        tick("long rollouts")
    return Report(size, by_lang)


def table(report: Report) -> list[tuple[str, ...]]:
    """Rows (figure, target, then one column per language) for printing."""
    langs = list(report.by_lang)
    figs = [report.by_lang[lang] for lang in langs]
    rows: list[tuple[str, ...]] = [("figure", "target", *langs)]
    rows.append(
        (
            "caption adherence (opening frame's biome)",
            f">= {CAPTION_TARGET:.0%}",
            *(f"{f.caption:.0%} of {f.captions}" for f in figs),
        )
    )
    rows.append(
        (
            "detail of the opening frames (1: the truth's)",
            "report",
            *(f"{np.mean(f.detail):.2f}" if f.detail else "-" for f in figs),
        )
    )
    rows.append(
        ("action adherence (moving steps)", f">= {ACTION_TARGET:.0%}", *(f"{f.action:.0%} of {f.moving}" for f in figs))
    )
    rows.append(
        (
            "action adherence, memory off (the model alone)",
            "report",
            *(f"{f.action_alone:.0%} of {f.alone}" for f in figs),
        )
    )
    rows.append(("'none' moves < 1 px", f">= {STILL_TARGET:.0%}", *(f"{f.still_share:.0%} of {f.still}" for f in figs)))
    for n in report.size.revisit_sides:
        target = REVISIT_TARGET_DB[n]
        rows.append(
            (f"revisit n={n}, memory on (PSNR)", f">= {target:.0f} dB", *(f"{f.revisit_db(n):.1f} dB" for f in figs))
        )
        rows.append(
            (f"revisit n={n}, memory off (baseline)", "report", *(f"{f.revisit_db(n, False):.1f} dB" for f in figs))
        )
    rows.append(("long rollouts: 100-frame windows in range", "all", *(f"{f.windows_ok} of {f.windows}" for f in figs)))
    rows.append(
        (
            "long rollouts: last window still the biome",
            "all",
            *(f"{f.long_biome_hits} of {f.long_rollouts}" for f in figs),
        )
    )
    return rows

"""The shipped noor-world-tiny on `noor world eval --quick` (held-out captions, both languages): what it meets is
asserted at its target, what it does not yet meet at a floor under its measured figure (docs/world.md), and the
whole target set is a strict xfail that turns into a failure the day it passes (then move the floors up)."""

from __future__ import annotations

import pytest

from noor.engine.world_tiny import eval as world_eval
from noor.engine.world_tiny.backend import WorldTinyBackend

# Floors under what the quick set measures where it is below a target (the full eval meets every target: docs/world.md)
CAPTION_FLOOR = 0.75  # quick: 75% (en: 3 of 4, one oasis opening frame too sandy) and 100% (ar); full: 95% / 97%
WINDOWS_MISSED = 1  # quick: one Arabic 100-frame window of 8 out of range, and that walk drifted; full: 0 of 40
ALONE_FLOOR = 0.15  # the model alone (memory off): quick 71% / 32%, full 35% / 25% (no target: reported)


@pytest.fixture(scope="module")
def report() -> world_eval.Report:
    on, off = WorldTinyBackend(), WorldTinyBackend(memory=False)
    return world_eval.evaluate(
        lambda caption, seed, memory: (on if memory else off).start(caption, seed), world_eval.QUICK
    )


def test_it_draws_the_world_its_caption_names_in_both_languages(report: world_eval.Report) -> None:
    for lang, figures in report.by_lang.items():
        assert figures.caption >= CAPTION_FLOOR, lang


def test_coming_back_shows_the_same_place_and_memory_is_what_remembers_it(report: world_eval.Report) -> None:
    for lang, figures in report.by_lang.items():
        on, off = figures.revisit_db(8, memory=True), figures.revisit_db(8, memory=False)
        assert on >= world_eval.REVISIT_TARGET_DB[8], (lang, on)
        assert on - off >= 10.0, (lang, on, off)  # measured: 99 dB (the canvas kept exactly) against 18-23 dB


def test_long_walks_keep_their_biome(report: world_eval.Report) -> None:
    figures = report.by_lang.values()
    missed = sum(f.windows - f.windows_ok for f in figures)
    drifted = sum(f.long_rollouts - f.long_biome_hits for f in figures)
    assert missed <= WINDOWS_MISSED and drifted <= WINDOWS_MISSED, (missed, drifted)
    assert sum(f.windows for f in figures) == 8  # one 200-frame walk per biome: every window was checked


def test_the_scene_moves_the_way_of_the_action_and_stays_still_for_none(report: world_eval.Report) -> None:
    for lang, figures in report.by_lang.items():
        assert figures.action >= world_eval.ACTION_TARGET, (lang, figures.action, figures.misread)
        assert figures.still_share >= world_eval.STILL_TARGET, (lang, figures.still_share)
        assert figures.action_alone >= ALONE_FLOOR, (lang, figures.action_alone)  # the model carries it too


@pytest.mark.xfail(strict=True, reason="quick set: en caption 75% (one of 4), one ar long walk drifts (full: all met)")
def test_shipped_world_tiny_meets_every_target_on_the_quick_set(report: world_eval.Report) -> None:
    assert not report.failures()

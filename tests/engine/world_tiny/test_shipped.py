"""The shipped noor-world-tiny on `noor world eval --quick` (held-out captions, both languages): what it meets is
asserted at its target, what it does not yet meet at a floor under its measured figure (docs/world.md), and the
whole target set is a strict xfail that turns into a failure the day it passes (then move the floors up)."""

from __future__ import annotations

import pytest

from noor.engine.world_tiny import eval as world_eval
from noor.engine.world_tiny.backend import WorldTinyBackend

ACTION_FLOOR = 0.20  # measured 32% and 43% on the quick set (38% and 39% on the full one); the target is 90%


@pytest.fixture(scope="module")
def report() -> world_eval.Report:
    on, off = WorldTinyBackend(), WorldTinyBackend(memory=False)
    return world_eval.evaluate(
        lambda caption, seed, memory: (on if memory else off).start(caption, seed), world_eval.QUICK
    )


def test_it_draws_the_world_its_caption_names_in_both_languages(report: world_eval.Report) -> None:
    for lang, figures in report.by_lang.items():
        assert figures.caption >= world_eval.CAPTION_TARGET, lang


def test_coming_back_shows_the_same_place_and_memory_is_what_remembers_it(report: world_eval.Report) -> None:
    for lang, figures in report.by_lang.items():
        on, off = figures.revisit_db(8, memory=True), figures.revisit_db(8, memory=False)
        assert on >= world_eval.REVISIT_TARGET_DB[8], (lang, on)
        assert on - off >= 10.0, (lang, on, off)  # measured: about 50 dB against 25 dB


def test_long_walks_keep_their_biome(report: world_eval.Report) -> None:
    for lang, figures in report.by_lang.items():
        assert figures.windows_ok == figures.windows and figures.long_biome_hits == figures.long_rollouts, lang


def test_moving_steps_read_at_least_the_floor(report: world_eval.Report) -> None:
    for lang, figures in report.by_lang.items():
        assert figures.action >= ACTION_FLOOR, (lang, figures.action, figures.misread)


@pytest.mark.xfail(strict=True, reason="action adherence is 38% (target 90%): smooth ground hides the shift")
def test_shipped_world_tiny_meets_every_target(report: world_eval.Report) -> None:
    assert not report.failures()

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from noor.engine.world_tiny.captions import (
    FRAMES,
    HELD_OUT,
    LANGS,
    PHRASES,
    biome_of,
    held_out_captions,
    sample_caption,
    training_captions,
    vocabulary_corpus,
)
from noor.engine.world_tiny.terrain import BIOMES


def _words(text: str) -> set[str]:
    return set(re.sub(r"[,:،]", " ", text).split())


def test_every_biome_has_paraphrases_in_both_languages() -> None:
    for biome in BIOMES:
        for lang in LANGS:
            assert len(PHRASES[biome][lang]) >= 5 and HELD_OUT[biome][lang], (biome, lang)
    assert "a desert with palm trees" in PHRASES["desert"]["en"] and "صحراء فيها نخيل" in PHRASES["desert"]["ar"]
    assert "a city at night" in PHRASES["city_night"]["en"] and "مدينة في الليل" in PHRASES["city_night"]["ar"]
    assert "a coast" in PHRASES["coast"]["en"] and "ساحل" in PHRASES["coast"]["ar"]
    assert "a green oasis" in PHRASES["oasis"]["en"] and "واحة خضراء" in PHRASES["oasis"]["ar"]


def test_captions_in_both_languages_map_back_to_their_biome() -> None:
    rng = np.random.default_rng(0)
    for biome in BIOMES:
        for lang in LANGS:
            for _ in range(50):
                assert biome_of(sample_caption(biome, lang, rng)) == biome
            for text in held_out_captions(biome, lang):
                assert biome_of(text) == biome
    # spacing, case, a full stop and Arabic diacritics do not matter; other text is no biome
    assert biome_of("  A City   at Night. ") == "city_night"
    assert biome_of("مدينة لَيْلاً") == "city_night"
    assert biome_of("a snowy mountain") is None and biome_of("") is None


def test_held_out_phrasings_never_come_from_the_sampler() -> None:
    rng = np.random.default_rng(1)
    for biome in BIOMES:
        for lang in LANGS:
            held = set(held_out_captions(biome, lang))
            assert len(held) == len(FRAMES[lang]) * len(HELD_OUT[biome][lang])
            sampled = {sample_caption(biome, lang, rng) for _ in range(400)}
            assert sampled == set(training_captions(biome, lang))  # the sampler reaches every training caption...
            assert not sampled & held  # ...and never a held-out one
            assert not held & set(vocabulary_corpus())


def test_held_out_phrasings_use_only_words_the_sampler_emits() -> None:
    known = set().union(*map(_words, vocabulary_corpus()))
    for biome in BIOMES:
        for lang in LANGS:
            for text in held_out_captions(biome, lang):
                assert _words(text) <= known, (text, _words(text) - known)


def test_no_phrase_names_two_biomes() -> None:
    seen: dict[str, str] = {}
    for biome in BIOMES:
        for lang in LANGS:
            for text in training_captions(biome, lang) + held_out_captions(biome, lang):
                assert seen.setdefault(text, biome) == biome, text


def test_arabic_agrees_in_gender_with_its_noun() -> None:
    ar = [p for biome in BIOMES for p in PHRASES[biome]["ar"] + HELD_OUT[biome]["ar"]]
    for phrase in ar:
        words = phrase.split()
        for noun, adjective in itertools.pairwise(words):
            if noun in ("صحراء", "مدينة", "واحة", "كثبان", "شوارع", "حدائق"):  # feminine, or plurals of things
                assert adjective not in ("رملي", "مظلم", "أخضر", "فيه"), phrase
            if noun in ("ساحل", "شاطئ"):  # masculine
                assert adjective not in ("رملية", "فيها", "خضراء"), phrase
    assert "صحراء رملية فيها نخيل" in ar and "ساحل رملي" in ar and "ساحل فيه رمال وبحر" in ar


def test_bad_biome_or_language_is_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="lang must be 'en' or 'ar', got 'fr'"):
        sample_caption("desert", "fr", rng)
    with pytest.raises(ValueError, match=r"biome must be one of .*got 'moon'"):
        held_out_captions("moon", "en")

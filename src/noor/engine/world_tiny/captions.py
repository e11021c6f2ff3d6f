"""Captions naming the terrain's biomes, in English and Arabic, from a small grammar.

A caption is a frame ("{x}", "a top-down view of {x}", "{x} من الأعلى", …) around a phrase naming the
biome ("a desert with palm trees", "صحراء فيها نخيل", …). Each biome has several phrases per language,
so the model learns the meaning rather than one string. Arabic agrees in gender with its noun: صحراء,
مدينة and واحة are feminine ("صحراء رملية", "واحة خضراء", "فيها"), ساحل and شاطئ masculine ("ساحل رملي",
"فيه"); a plural of things takes a feminine singular adjective ("شوارع مظلمة").

Some phrases are held out: `sample_caption` never emits them, and the eval prompts (`held_out_captions`)
are made of them only. They recombine words the sampler does use, so the tokenizer knows every word.
`biome_of` maps any caption of the grammar (held out or not) back to its biome.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np

from noor.engine.world_tiny.terrain import BIOMES

LANGS = ("en", "ar")

FRAMES = {
    "en": ["{x}", "{x}, seen from above", "a top-down view of {x}", "a map of {x}", "walking through {x}"],
    "ar": ["{x}", "{x} من الأعلى", "خريطة {x}", "منظر علوي: {x}"],
}

# biome -> language -> phrases the sampler emits
PHRASES: dict[str, dict[str, list[str]]] = {
    "desert": {
        "en": [
            "a desert with palm trees",
            "a sandy desert with palm trees",
            "palm trees in the desert",
            "desert dunes with a few palm trees",
            "a desert with palms and tents",
            "sand and palm trees",
        ],
        "ar": [
            "صحراء فيها نخيل",
            "صحراء رملية فيها نخيل",
            "نخيل في الصحراء",
            "كثبان رملية فيها نخيل",
            "صحراء فيها نخيل وخيام",
            "رمال ونخيل",
        ],
    },
    "city_night": {
        "en": [
            "a city at night",
            "a city by night",
            "the city at night",
            "a dark city with lit windows",
            "city streets at night",
            "a town at night",
        ],
        "ar": [
            "مدينة في الليل",
            "مدينة ليلا",
            "المدينة في الليل",
            "مدينة مظلمة فيها نوافذ مضاءة",
            "شوارع مدينة في الليل",
            "بلدة في الليل",
        ],
    },
    "coast": {
        "en": [
            "a coast",
            "a sandy coast",
            "the coast",
            "a beach by the sea",
            "the seashore",
            "a coast with sand and sea",
        ],
        "ar": ["ساحل", "ساحل رملي", "الساحل", "شاطئ على البحر", "شاطئ البحر", "ساحل فيه رمال وبحر"],
    },
    "oasis": {
        "en": [
            "a green oasis",
            "an oasis with palm trees",
            "a green oasis with water",
            "an oasis with a pond and palms",
            "green gardens around a pond",
        ],
        "ar": ["واحة خضراء", "واحة فيها نخيل", "واحة خضراء فيها ماء", "واحة فيها بركة ونخيل", "حدائق خضراء حول بركة"],
    },
}

# biome -> language -> phrases only the eval uses
HELD_OUT: dict[str, dict[str, list[str]]] = {
    "desert": {"en": ["a few palms and tents in the sandy desert"], "ar": ["نخيل وخيام في صحراء رملية"]},
    "city_night": {"en": ["dark city streets with lit windows"], "ar": ["شوارع مظلمة فيها نوافذ مضاءة"]},
    "coast": {"en": ["a sandy beach by the sea"], "ar": ["شاطئ رملي على البحر"]},
    "oasis": {"en": ["a pond with palm trees in a green oasis"], "ar": ["بركة ونخيل في واحة خضراء"]},
}


def _check(biome: str, lang: str) -> None:
    if biome not in BIOMES:
        raise ValueError(f"biome must be one of {', '.join(BIOMES)}, got {biome!r}")
    if lang not in LANGS:
        raise ValueError(f"lang must be 'en' or 'ar', got {lang!r}")


def sample_caption(biome: str, lang: str, rng: np.random.Generator) -> str:
    """A training caption of `biome` in `lang`: a random frame around a random phrase (never a held-out one)."""
    _check(biome, lang)
    frames, phrases = FRAMES[lang], PHRASES[biome][lang]
    frame = frames[int(rng.integers(len(frames)))]
    return frame.format(x=phrases[int(rng.integers(len(phrases)))])


def training_captions(biome: str, lang: str) -> list[str]:
    """Every caption `sample_caption` can emit for `biome` in `lang`."""
    _check(biome, lang)
    return [f.format(x=p) for f in FRAMES[lang] for p in PHRASES[biome][lang]]


def held_out_captions(biome: str, lang: str) -> list[str]:
    """The eval's captions of `biome` in `lang`: every frame around every held-out phrase."""
    _check(biome, lang)
    return [f.format(x=p) for f in FRAMES[lang] for p in HELD_OUT[biome][lang]]


_DIACRITICS = re.compile("[\u064b-\u0652\u0640]")  # Arabic short vowels, tanwin, shadda, sukun; tatweel


def normalise(text: str) -> str:
    """A caption as `biome_of` compares it: NFC, lower case, without Arabic diacritics or tatweel, single
    spaces, no trailing full stop."""
    text = _DIACRITICS.sub("", unicodedata.normalize("NFC", text)).lower()
    return " ".join(text.split()).rstrip(".。!").strip()


@lru_cache(maxsize=1)
def _lookup() -> dict[str, str]:
    table: dict[str, str] = {}
    for biome in BIOMES:
        for lang in LANGS:
            for text in training_captions(biome, lang) + held_out_captions(biome, lang):
                table[normalise(text)] = biome
    return table


def biome_of(caption: str) -> str | None:
    """The biome a caption of this grammar names (held-out phrasings included), or None for any other text."""
    return _lookup().get(normalise(caption))


def vocabulary_corpus() -> list[str]:
    """Every caption the sampler can emit, one a line (to build a tokenizer; held-out words all occur here)."""
    return [text for biome in BIOMES for lang in LANGS for text in training_captions(biome, lang)]

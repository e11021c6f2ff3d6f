"""Arabic text normalisation, one way for the whole tree: noor-tiny's tokenizer and the moderation policy read a
word alike.

Diacritics and tatweel are removed, the alef/yaa/taa-marbuta/hamza-seat forms unified, the article "ال" dropped
from words longer than three letters, and Latin lower-cased, so spelling variants of one word meet. A leaf: it
imports nothing of Noor's.
"""

from __future__ import annotations

import re

# harakat, tanwin, shadda, sukun, the Quranic marks, the superscript alef, and tatweel (U+0640)
DIACRITICS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
WORD = re.compile(r"\w+")
_LETTERS = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ى": "ي", "ة": "ه", "ؤ": "و", "ئ": "ي"})


def strip_marks(text: str) -> str:
    """`text` without Arabic diacritics and tatweel."""
    return DIACRITICS.sub("", text)


def normalize_word(word: str) -> str:
    word = word.lower().translate(_LETTERS)
    if word.startswith("ال") and len(word) > 3:
        word = word[2:]
    return word


def words(text: str) -> list[str]:
    """The normalised words of `text`, in order."""
    return [normalize_word(w) for w in WORD.findall(strip_marks(text))]

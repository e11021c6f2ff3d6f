"""noor-tiny's word tokenizer: any UTF-8 text in, ids of the words it knows out.

Arabic is normalised the usual way (noor.arabic: diacritics and tatweel removed, alef/yaa/taa-marbuta forms
unified, the article "ال" dropped; a joined "و" is dropped here) so spelling variants meet the same id. Words
outside the vocabulary are ignored, never an error.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from noor.arabic import WORD, normalize_word, strip_marks, words

PAD, BOS = 0, 1
SPECIALS = ("<pad>", "<bos>")


class WordTokenizer:
    def __init__(self, vocab: list[str], max_length: int = 32):
        self.vocab = list(vocab)
        self.max_length = max_length
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def build(cls, corpus: Iterable[str], max_length: int = 32) -> WordTokenizer:
        seen = sorted({w for line in corpus for w in words(line)})
        return cls(list(SPECIALS) + seen, max_length)

    def _lookup(self, word: str) -> int | None:
        if word in self.ids:
            return self.ids[word]
        if word.startswith("و") and len(word) > 2:  # joined conjunction: "ومربع" -> "مربع"
            return self.ids.get(normalize_word(word[1:]))
        return None

    def encode(self, text: str) -> list[int]:
        """Ids of the known words of `text`, after a leading BOS, cut to `max_length`."""
        ids = [BOS] + [i for i in (self._lookup(w) for w in words(text)) if i is not None]
        return ids[: self.max_length]

    def __call__(self, texts: list[str]) -> tuple[list[list[int]], list[list[bool]]]:
        """Padded ids and attention masks (True = a real token) for a batch."""
        encoded = [self.encode(t) for t in texts]
        width = max(len(e) for e in encoded)
        ids = [e + [PAD] * (width - len(e)) for e in encoded]
        mask = [[True] * len(e) + [False] * (width - len(e)) for e in encoded]
        return ids, mask

    def known_words(self, text: str) -> list[str]:
        return [self.vocab[i] for i in self.encode(text)[1:]]

    def unknown_words(self, text: str) -> list[str]:
        """The words of `text` (as written, each once, in order) that the vocabulary does not hold: the ones
        `encode` drops."""
        found = [w for w in WORD.findall(strip_marks(text)) if self._lookup(normalize_word(w)) is None]
        return list(dict.fromkeys(found))


@functools.cache
def vocabulary(weights: Path | None = None) -> WordTokenizer:
    """The tokenizer of saved noor-tiny weights (the packaged ones by default), read from its text encoder's
    config.json without loading the model."""
    folder = Path(weights) if weights else Path(str(resources.files("noor.engine.tiny") / "weights"))
    config = json.loads((folder / "text_encoder" / "config.json").read_text(encoding="utf-8"))
    return WordTokenizer(config["vocab"], config.get("max_length", 32))

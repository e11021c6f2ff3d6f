from __future__ import annotations

import json

import numpy as np

from noor.engine.tiny.backend import weights_dir
from noor.engine.tiny.captions import caption, vocabulary_corpus
from noor.engine.tiny.scene import sample_scene
from noor.engine.tiny.tokenizer import BOS, WordTokenizer, words


def tokenizer() -> WordTokenizer:
    return WordTokenizer.build(vocabulary_corpus())


def test_every_generated_caption_word_is_known() -> None:
    tok = tokenizer()
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = sample_scene(rng)
        for lang in ("en", "ar"):
            text = caption(scene, lang, rng)
            assert len(tok.known_words(text)) == len(words(text)), text


def test_arabic_normalisation_meets_spelling_variants() -> None:
    tok = tokenizer()
    # diacritics, tatweel, alef forms and the article do not change the ids
    assert tok.encode("دائرة حمراء") == tok.encode("الدائرةُ الحمـــراء")
    assert tok.encode("إلى الأعلى") == tok.encode("الى اعلى")
    # a joined conjunction is split off
    assert tok.encode("مربع ومثلث")[1:] == tok.encode("مربع مثلث")[1:]


def test_any_utf8_text_is_accepted_and_unknown_words_ignored() -> None:
    tok = tokenizer()
    assert tok.encode("") == [BOS]
    assert tok.encode("🙂 Ωmega ناقة zebra") == [BOS]
    assert tok.encode("a RED zebra circle!") == tok.encode("a red circle")
    ids, mask = tok(["red", "a red circle moves left", ""])
    assert len({len(r) for r in ids}) == 1 and [sum(m) for m in mask] == [2, 6, 1]


def test_long_prompts_are_cut_to_max_length() -> None:
    tok = WordTokenizer.build(vocabulary_corpus(), max_length=8)
    assert len(tok.encode("red " * 100)) == 8


def test_the_shipped_vocabulary_is_the_one_the_grammar_builds() -> None:
    """`noor train tiny` builds its tokenizer from the caption grammar; the shipped text encoder must hold
    that same vocabulary, word for word and id for id, or the weights it ships are not what training makes."""
    shipped = json.loads((weights_dir() / "text_encoder" / "config.json").read_text())["vocab"]
    assert shipped == tokenizer().vocab


def test_arabic_still_captions_say_in_its_place_correctly() -> None:
    """It stays in its place, "يبقى في مكانه" / "تبقى في مكانها": the pronoun suffix once came out doubled."""
    tok = tokenizer()
    assert tok.known_words("مربع يبقى في مكانه") == ["مربع", "يبقي", "في", "مكانه"]
    assert tok.known_words("دائرة تبقى في مكانها")[-1] == "مكانها"
    assert "مكانهه" not in tok.vocab


def test_unknown_words_are_named_as_written_once_each() -> None:
    from noor.engine.tiny.tokenizer import vocabulary

    shipped = vocabulary()
    assert shipped.unknown_words("a cat playing the piano at sunset, a CAT") == [
        "cat", "playing", "piano", "at", "sunset", "CAT"
    ]
    assert shipped.unknown_words("A red circle moves to the left") == []
    assert shipped.unknown_words("دائرة حمراء تتحرك إلى اليسار") == []  # article and letter forms normalised
    assert shipped.unknown_words("مربع أخضر بجانب قطة") == ["بجانب", "قطة"]

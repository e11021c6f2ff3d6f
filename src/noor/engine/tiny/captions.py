"""Captions for scenes of the synthetic world, in English and Arabic, from a small grammar.

Each attribute has several paraphrases, and Arabic agrees in gender with the shape
("دائرة حمراء تتحرك" but "مربع أحمر يتحرك"), so the model learns meanings, not one fixed string.
"""

from __future__ import annotations

import numpy as np

from noor.engine.tiny.scene import Scene, Thing

# --- English -------------------------------------------------------------------------------------

EN_COLOUR = {c: [c] for c in ("red", "green", "blue", "yellow", "orange", "purple", "cyan", "pink")}
EN_COLOUR["purple"] = ["purple", "violet"]
EN_COLOUR["cyan"] = ["cyan", "turquoise"]
EN_SHAPE = {"circle": ["circle", "ball", "disc"], "square": ["square", "box"], "triangle": ["triangle"]}
EN_MOTION = {
    "left": [
        "moves left",
        "moves to the left",
        "slides left",
        "goes to the left",
        "travels left",
        "drifts to the left",
    ],
    "right": [
        "moves right",
        "moves to the right",
        "slides right",
        "goes to the right",
        "travels right",
        "drifts to the right",
    ],
    "up": ["moves up", "rises", "goes up", "floats upward", "moves upward", "climbs up"],
    "down": ["moves down", "falls", "goes down", "sinks", "drops down", "moves downward"],
    "still": ["stays still", "does not move", "is still", "stays in place", "sits still"],
    "grow": ["grows", "gets bigger", "expands", "grows larger"],
    "shrink": ["shrinks", "gets smaller", "contracts", "shrinks away"],
    "bounce": ["bounces", "bounces up and down", "hops", "jumps up and down"],
}
EN_BACKGROUND = {
    "black": ["on a black background", "against black", "on black"],
    "white": ["on a white background", "against white", "on white"],
    "gray": ["on a gray background", "against gray", "on a grey background"],
}

# Shapes the base model never saw (scene.NEW_SHAPES), taught by a trained concept (noor.engine.tiny.concept): kept
# out of EN_SHAPE and AR_SHAPE, which the base vocabulary is built from (vocabulary_corpus). "هلال" is masculine.
EN_NEW_SHAPE = {"crescent": ["crescent"]}
AR_NEW_SHAPE = {"crescent": ("هلال", "m")}

# --- Arabic --------------------------------------------------------------------------------------

AR_SHAPE = {"circle": ("دائرة", "f"), "square": ("مربع", "m"), "triangle": ("مثلث", "m")}
AR_SHAPE_ALT = {"circle": [("كرة", "f")], "square": [("مكعب", "m")], "triangle": []}
# masculine, feminine
AR_COLOUR = {
    "red": ("أحمر", "حمراء"),
    "green": ("أخضر", "خضراء"),
    "blue": ("أزرق", "زرقاء"),
    "yellow": ("أصفر", "صفراء"),
    "orange": ("برتقالي", "برتقالية"),
    "purple": ("بنفسجي", "بنفسجية"),
    "cyan": ("سماوي", "سماوية"),
    "pink": ("وردي", "وردية"),
}
# "{v}" is the present-tense prefix: ت for feminine, ي for masculine.
AR_MOTION = {
    "left": ["{v}تحرك إلى اليسار", "{v}نتقل نحو اليسار", "{v}نزلق يسارا", "{v}ذهب إلى اليسار"],
    "right": ["{v}تحرك إلى اليمين", "{v}نتقل نحو اليمين", "{v}نزلق يمينا", "{v}ذهب إلى اليمين"],
    "up": ["{v}تحرك إلى الأعلى", "{v}رتفع", "{v}صعد للأعلى", "{v}رتفع إلى الأعلى"],
    "down": ["{v}تحرك إلى الأسفل", "{v}هبط", "{v}سقط", "{v}نزل إلى الأسفل"],
    "still": ["{still}", "لا {v}تحرك", "{v}بقى في مكان{h}", "{v}ظل ثابت{a}"],
    "grow": ["{v}كبر", "{v}زداد حجم{h}", "{v}تسع", "{v}كبر حجم{h}"],
    "shrink": ["{v}صغر", "{v}تقلص", "{v}نكمش", "{v}صغر حجم{h}"],
    "bounce": ["{v}قفز", "{v}رتد", "{v}قفز لأعلى وأسفل", "{v}تقافز"],
}
AR_BACKGROUND = {
    "black": ["على خلفية سوداء", "فوق خلفية سوداء", "على الأسود"],
    "white": ["على خلفية بيضاء", "فوق خلفية بيضاء", "على الأبيض"],
    "gray": ["على خلفية رمادية", "فوق خلفية رمادية", "على الرمادي"],
}


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _en_thing(rng: np.random.Generator, thing: Thing, first: bool) -> str:
    colour = _pick(rng, EN_COLOUR[thing.colour])
    shape = _pick(rng, EN_SHAPE.get(thing.shape) or EN_NEW_SHAPE[thing.shape])
    motion = _pick(rng, EN_MOTION[thing.motion])
    article = "an" if colour[0] in "aeiou" else "a"
    forms = [f"{article} {colour} {shape} {motion}", f"the {colour} {shape} {motion}", f"{colour} {shape} {motion}"]
    if first:
        forms.append(f"a {shape} in {colour} {motion}")
    return _pick(rng, forms)


def _ar_thing(rng: np.random.Generator, thing: Thing) -> str:
    shape, gender = AR_SHAPE.get(thing.shape) or AR_NEW_SHAPE[thing.shape]
    if AR_SHAPE_ALT.get(thing.shape) and rng.random() < 0.25:
        shape, gender = AR_SHAPE_ALT[thing.shape][0]
    colour = AR_COLOUR[thing.colour][1 if gender == "f" else 0]
    fem = gender == "f"
    motion = _pick(rng, AR_MOTION[thing.motion]).format(
        v="ت" if fem else "ي", h="ها" if fem else "ه", a="ة" if fem else "ا", still="ثابتة" if fem else "ثابت"
    )
    definite = rng.random() < 0.4
    if definite:
        shape, colour = "ال" + shape, "ال" + colour
    if definite and motion[0] in "تي" and rng.random() < 0.5:  # verb first: "تتحرك الدائرة الحمراء إلى اليسار"
        verb, _, rest = motion.partition(" ")
        return f"{verb} {shape} {colour} {rest}".strip()
    return f"{shape} {colour} {motion}"


def caption(scene: Scene, lang: str, rng: np.random.Generator) -> str:
    """One caption of `scene` in `lang` ("en" or "ar"), with paraphrases drawn from `rng`."""
    with_bg = rng.random() < 0.5
    if lang == "en":
        parts = [_en_thing(rng, thing, i == 0) for i, thing in enumerate(scene.things)]
        text = " and ".join(parts)
        if with_bg:
            bg = _pick(rng, EN_BACKGROUND[scene.background])
            text = f"{bg}, {text}" if rng.random() < 0.3 else f"{text} {bg}"
        return text
    if lang == "ar":
        parts = [_ar_thing(rng, thing) for thing in scene.things]
        text = " و".join(parts)
        if with_bg:
            bg = _pick(rng, AR_BACKGROUND[scene.background])
            text = f"{bg}، {text}" if rng.random() < 0.3 else f"{text} {bg}"
        return text
    raise ValueError(f"lang must be 'en' or 'ar', got {lang!r}")


def vocabulary_corpus() -> list[str]:
    """Every word the grammar can produce, as lines of text (used to build the tokenizer)."""
    lines: list[str] = []
    for table in (EN_COLOUR, EN_SHAPE, EN_MOTION, EN_BACKGROUND, AR_BACKGROUND):
        for options in table.values():
            lines.extend(options)
    lines.append("a an the in and ,")
    for shape, _ in list(AR_SHAPE.values()) + [alt for alts in AR_SHAPE_ALT.values() for alt in alts]:
        lines.append(f"{shape} ال{shape}")
    for m, f in AR_COLOUR.values():
        lines.append(f"{m} {f} ال{m} ال{f}")
    for options in AR_MOTION.values():
        for option in options:
            for fem in (True, False):
                lines.append(
                    option.format(
                        v="ت" if fem else "ي",
                        h="ها" if fem else "ه",
                        a="ة" if fem else "ا",
                        still="ثابتة" if fem else "ثابت",
                    )
                )
    return lines


def objects_named(text: str) -> int:
    """How many objects a prompt names: its shape words ("a red circle and a blue box": 2), in either language."""
    from noor.engine.tiny.tokenizer import normalize_word, words

    shapes = {normalize_word(w) for options in [*EN_SHAPE.values(), *EN_NEW_SHAPE.values()] for w in options}
    arabic = [*AR_SHAPE.values(), *AR_NEW_SHAPE.values(), *(a for alts in AR_SHAPE_ALT.values() for a in alts)]
    shapes |= {normalize_word(w) for w, _ in arabic}
    return sum(w in shapes or (w.startswith("و") and w[1:] in shapes) for w in words(text))

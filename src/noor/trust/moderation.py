"""Moderation in Arabic and English: a request's texts before it is queued, a job's frames after it ran.

Texts (prompt, negative prompt, the text in uploaded images' metadata) are matched against a `Policy`: rules of
blocked words and phrases, read from TOML (the built-in `policies/default.toml`, plus a tenant's own file that
adds or removes terms). Matching is on whole words after normalisation, never on substrings, so "Scunthorpe",
"cocktail" and the goddess Isis pass while these forms of a blocked word are caught:

- Arabic as noor-tiny reads it (noor.arabic: diacritics and tatweel dropped, alef/yaa/taa-marbuta and hamza
  seats unified, the article dropped), and a joined prefix (و ف ب ك ل, "لل") taken off;
- Unicode look-alikes (NFKC: presentation forms, full-width letters), accents and invisible characters;
- letters split by spaces, dots, dashes or underscores ("p.o.r.n", "د ا ع ش"), and words written together
  ("childporn");
- digits and symbols for letters ("p0rn", "$ex") and stretched letters ("pooorn"); Arabizi transliterations
  are terms of their own in the policy ("da3esh").

A refusal is a `Decision` naming the category and the rule, never the text. Frames are checked by pluggable
`FrameChecker`s (a registry; `external` posts them to a deployment's classifier). Noor ships no built-in image
classifier: an honest one needs a trained model, so without NOOR_MODERATION_CLASSIFIER_URL outputs are not checked.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from noor.arabic import normalize_word, words

log = logging.getLogger("noor.trust.moderation")

REFUSAL_MESSAGE = "Contains blacklisted words"  # Luma's documented 400 for a refused prompt
FAILURE_CODE = "content_moderated"  # the Agents API's failure code for a moderated job
DEFAULT_POLICY = "default.toml"
DEFAULT_WITHIN = 6  # words between the parts of an all_of rule, when the rule does not say


class PolicyError(ValueError):
    """A policy file that does not parse or does not fit the schema: one line naming the file and what is wrong."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    category: str | None = None
    matched_rule_id: str | None = None

    @property
    def reason(self) -> str:
        """A refused job's failure reason: the code, the category and the rule (never the text)."""
        return f"{FAILURE_CODE}: {self.category} (rule {self.matched_rule_id})"


ALLOWED = Decision(True)


# --- reading a text -------------------------------------------------------------------------------------------

_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_AT = re.compile(r"(?<=[^\W\d_])@|@(?=[^\W\d_])")
_DOLLAR = re.compile(r"(?<=[^\W\d_])\$|\$(?=[^\W\d_])")
_ARABIC = re.compile("[\u0600-\u06ff]")
_LEET = str.maketrans("013457", "oieast")
_STRETCHED = re.compile(r"(.)\1{2,}")
_PREFIXES = "وفبكل"  # conjunctions and prepositions written joined to the next word


def _clean(text: str) -> str:
    """Look-alikes folded, invisibles and accents dropped, symbols used as letters read as letters."""
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) != "Mn")
    text = _DOLLAR.sub("s", _AT.sub("a", unicodedata.normalize("NFC", text)))
    return text.replace("_", " ")


def _forms(word: str) -> set[str]:
    """The ways one written word may spell a policy word."""
    found = {word}
    if any(c.isdigit() for c in word) and any(c.isalpha() for c in word):
        found.add(word.translate(_LEET))
    for w in list(found):
        if _STRETCHED.search(w):
            found |= {_STRETCHED.sub(r"\1", w), _STRETCHED.sub(r"\1\1", w)}
    for w in list(found):
        if _ARABIC.match(w):
            if w.startswith("لل") and len(w) > 3:
                found.add(normalize_word("ال" + w[2:]))
            if w[0] in _PREFIXES and len(w) > 3:
                found.add(normalize_word(w[1:]))
                if w[1] in _PREFIXES and len(w) > 4:
                    found.add(normalize_word(w[2:]))
        elif len(w) > 3 and w.endswith("s"):
            found.add(w[:-1])
    return found


@dataclass
class _Reading:
    """A text as sequences of word forms: as written, and with runs of one- and two-letter pieces joined."""

    sequences: list[list[set[str]]]
    spelled: list[tuple[int, str]]  # (position in the joined sequence, word) joined from 3+ single letters

    @classmethod
    def of(cls, text: str) -> _Reading:
        written = words(_clean(text))
        joined: list[str] = []
        spelled: list[tuple[int, str]] = []
        i = 0
        while i < len(written):
            j = i
            while j < len(written) and len(written[j]) <= 2:
                j += 1
            if j - i >= 2:
                piece = normalize_word("".join(written[i:j]))
                if all(len(w) == 1 for w in written[i:j]) and j - i >= 3:
                    spelled.append((len(joined), piece))
                joined.append(piece)
                i = j
            else:
                joined.append(written[i])
                i += 1
        sequences = [[_forms(w) for w in written]]
        if joined != written:
            sequences.append([_forms(w) for w in joined])
        return cls(sequences, spelled)


Phrase = tuple[str, ...]  # a term's normalised words


def phrase(term: str) -> Phrase:
    return tuple(words(_clean(term)))


@dataclass(frozen=True)
class _Index:
    """Phrases by their first word, and by all their words written together."""

    by_first: dict[str, tuple[Phrase, ...]]
    by_joined: dict[str, Phrase]

    @classmethod
    def of(cls, phrases: Iterable[Phrase]) -> _Index:
        by_first: dict[str, list[Phrase]] = {}
        by_joined: dict[str, Phrase] = {}
        for p in phrases:
            by_first.setdefault(p[0], []).append(p)
            by_joined["".join(p)] = p
        return cls({k: tuple(v) for k, v in by_first.items()}, by_joined)

    def positions(self, reading: _Reading) -> list[set[int]]:
        """For each sequence of the reading, where a phrase of the index starts."""
        found: list[set[int]] = []
        for n, seq in enumerate(reading.sequences):
            at: set[int] = set()
            for i, forms in enumerate(seq):
                for form in forms:
                    if form in self.by_joined or any(
                        i + len(p) <= len(seq) and all(p[k] in seq[i + k] for k in range(1, len(p)))
                        for p in self.by_first.get(form, ())
                    ):
                        at.add(i)
                        break
            if n == len(reading.sequences) - 1:  # spelled-out letters: the last (joined) sequence's positions
                at |= {i for i, piece in reading.spelled if any(len(j) >= 4 and j in piece for j in self.by_joined)}
            found.append(at)
        return found


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    groups: tuple[tuple[Phrase, ...], ...]  # `terms`: one group; `all_of`: one group per list
    within: int = DEFAULT_WITHIN
    locked: bool = False  # a tenant's file cannot remove it or its terms
    negative_prompt: bool = True  # whether it applies to a negative prompt (what the user asks NOT to see)
    indexes: tuple[_Index, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "indexes", tuple(_Index.of(g) for g in self.groups))

    def matches(self, reading: _Reading) -> bool:
        per_group = [index.positions(reading) for index in self.indexes]  # [group][sequence] -> positions
        for n in range(len(reading.sequences)):
            starts = [group[n] for group in per_group]
            if all(starts) and _close(starts, self.within):
                return True
        return False


def _close(starts: list[set[int]], within: int) -> bool:
    """Whether one position from each set lies within `within` words of all the others."""
    if len(starts) == 1:
        return True
    return any(all(any(abs(j - i) <= within for j in s) for s in starts[1:]) for i in starts[0])


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    log_text: bool = True  # the decision log carries the texts (a tenant's file may say false)
    source: str = "built-in"

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


def moderate_text(texts: Iterable[str], policy: Policy, *, negative: bool = False) -> Decision:
    """The first rule of `policy` that one of `texts` breaks, else allowed; each text is read on its own.
    `negative`: the texts are negative prompts, read only by the rules that apply to them."""
    rules = [r for r in policy.rules if r.negative_prompt or not negative]
    for text in texts:
        if not text or not text.strip():
            continue
        reading = _Reading.of(text)
        for rule in rules:
            if rule.matches(reading):
                return Decision(False, rule.category, rule.id)
    return ALLOWED


# --- policy files -----------------------------------------------------------------------------------------------

_RULE_KEYS = {"id", "category", "terms", "all_of", "within", "locked", "negative_prompt"}
_POLICY_KEYS = {"version", "rules"}
_TENANT_KEYS = {"version", "rules", "log_text", "remove_terms", "remove_rules"}
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def _terms(where: str, value: Any) -> tuple[Phrase, ...]:
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{where} must be a non-empty list of strings")
    out = []
    for term in value:
        if not isinstance(term, str):
            raise PolicyError(f"{where} must hold strings, got {term!r}")
        p = phrase(term)
        if not p:
            raise PolicyError(f"{where}: {term!r} has no words")
        out.append(p)
    return tuple(dict.fromkeys(out))


def _rule(where: str, raw: Any) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be a table")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise PolicyError(f"{where}: unknown key {sorted(unknown)[0]!r} (keys: {', '.join(sorted(_RULE_KEYS))})")
    rule_id, category = raw.get("id"), raw.get("category")
    if not isinstance(rule_id, str) or not _ID.match(rule_id):
        raise PolicyError(f"{where}.id must be lowercase letters, digits, '_', '.', '-', got {rule_id!r}")
    where = f"rule {rule_id!r}"
    if not isinstance(category, str) or not _ID.match(category):
        raise PolicyError(f"{where}: category must be lowercase letters, digits, '_', '.', '-', got {category!r}")
    if ("terms" in raw) == ("all_of" in raw):
        raise PolicyError(f"{where} needs exactly one of terms or all_of")
    if "terms" in raw:
        groups: tuple[tuple[Phrase, ...], ...] = (_terms(f"{where}: terms", raw["terms"]),)
    else:
        lists = raw["all_of"]
        if not isinstance(lists, list) or len(lists) < 2:
            raise PolicyError(f"{where}: all_of must be a list of at least two lists of terms")
        groups = tuple(_terms(f"{where}: all_of[{i}]", g) for i, g in enumerate(lists))
    within = raw.get("within", DEFAULT_WITHIN)
    if not isinstance(within, int) or isinstance(within, bool) or not 0 < within <= 100:
        raise PolicyError(f"{where}: within must be a whole number of words from 1 to 100, got {within!r}")
    flags = {k: raw.get(k, d) for k, d in (("locked", False), ("negative_prompt", True))}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise PolicyError(f"{where}: {key} must be true or false, got {value!r}")
    return Rule(rule_id, category, groups, within, flags["locked"], flags["negative_prompt"])


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise PolicyError(f"{path}: cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise PolicyError(f"{path}: not UTF-8 text: {err.reason} at byte {err.start}") from None
    except tomllib.TOMLDecodeError as err:
        raise PolicyError(f"{path}: not valid TOML: {err}") from None


def _rules(raw: dict[str, Any], allowed_keys: set[str]) -> tuple[Rule, ...]:
    unknown = set(raw) - allowed_keys
    if unknown:
        raise PolicyError(f"unknown key {sorted(unknown)[0]!r} (keys: {', '.join(sorted(allowed_keys))})")
    if raw.get("version", 1) != 1:
        raise PolicyError(f"version must be 1, got {raw['version']!r}")
    listed = raw.get("rules", [])
    if not isinstance(listed, list):
        raise PolicyError("rules must be an array of tables ([[rules]])")
    rules = tuple(_rule(f"rules[{i}]", r) for i, r in enumerate(listed))
    seen: set[str] = set()
    for r in rules:
        if r.id in seen:
            raise PolicyError(f"rule id {r.id!r} is used twice")
        seen.add(r.id)
    return rules


def load_policy(path: Path | None = None) -> Policy:
    """A policy file on its own (the built-in one by default); PolicyError naming the file and the fault."""
    if path is None:
        with resources.as_file(resources.files("noor.trust") / "policies" / DEFAULT_POLICY) as builtin:
            return _at(builtin, lambda: Policy(_rules(_read(builtin), _POLICY_KEYS), source="built-in"))
    return _at(path, lambda: Policy(_rules(_read(path), _POLICY_KEYS), source=str(path)))


def _at(path: Path, load: Callable[[], Policy]) -> Policy:
    try:
        return load()
    except PolicyError as err:
        message = str(err)
        raise PolicyError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def tenant_policy(base: Policy, path: Path) -> Policy:
    """`base` with a tenant's file applied: its `rules` added, `remove_rules` and `remove_terms` taken out (never
    a locked rule's), and its `log_text`."""

    def load() -> Policy:
        raw = _read(path)
        added = _rules(raw, _TENANT_KEYS)
        log_text = raw.get("log_text", True)
        if not isinstance(log_text, bool):
            raise PolicyError(f"log_text must be true or false, got {log_text!r}")
        rules = list(base.rules)
        for rule_id in _strings(raw, "remove_rules"):
            found = base.rule(rule_id)
            if found is None:
                raise PolicyError(f"remove_rules: no rule {rule_id!r} in the {base.source} policy")
            if found.locked:
                raise PolicyError(f"remove_rules: rule {rule_id!r} is locked and cannot be removed")
            rules.remove(found)
        for term in _strings(raw, "remove_terms"):
            rules = _without(rules, term)
        for r in added:
            if any(r.id == old.id for old in rules):
                raise PolicyError(f"rule id {r.id!r} is already in the {base.source} policy")
        return Policy((*rules, *added), log_text, str(path))

    return _at(path, load)


def _strings(raw: dict[str, Any], key: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{key} must be a list of strings")
    return value


def _without(rules: list[Rule], term: str) -> list[Rule]:
    """`rules` with `term` taken out of every group that holds it; a rule left with an empty group is dropped."""
    p = phrase(term)
    holders = [r for r in rules if any(p in g for g in r.groups)]
    if not holders:
        raise PolicyError(f"remove_terms: {term!r} is in no rule")
    locked = [r.id for r in holders if r.locked]
    if locked:
        raise PolicyError(f"remove_terms: {term!r} is in locked rule {locked[0]!r} and cannot be removed")
    out = []
    for r in rules:
        if r in holders:
            groups = tuple(tuple(q for q in g if q != p) for g in r.groups)
            if all(groups):
                out.append(replace(r, groups=groups))
        else:
            out.append(r)
    return out


@dataclass(frozen=True)
class Policies:
    """A deployment's policies: the built-in one, and each tenant's (`<tenant>.toml` in the policy folder)."""

    builtin: Policy
    tenants: dict[str, Policy] = field(default_factory=dict)

    def for_tenant(self, tenant: str | None) -> Policy:
        return self.tenants.get(tenant or "", self.builtin)


def load_policies(directory: Path | None) -> Policies:
    """The built-in policy and every tenant file in `directory`, all read now (a server checks them at start)."""
    builtin = load_policy()
    if directory is None:
        return Policies(builtin)
    if not directory.is_dir():
        raise PolicyError(f"NOOR_MODERATION_POLICY_DIR: {directory} is not a folder")
    return Policies(builtin, {p.stem: tenant_policy(builtin, p) for p in sorted(directory.glob("*.toml"))})


@functools.cache
def configured() -> Policies:
    """The policies NOOR_MODERATION_POLICY_DIR names (read once per process; a changed file needs a restart)."""
    from noor.config import settings

    return load_policies(settings().moderation_policy_dir)


# --- what a request carries -----------------------------------------------------------------------------------

_EXIF_TEXT = {270: "ImageDescription", 315: "Artist", 33432: "Copyright"}
_EXIF_XP = (0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F)  # Windows' XPTitle..XPSubject, UTF-16LE
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def metadata_texts(data: bytes) -> list[str]:
    """The text an image file carries besides its pixels: PNG text chunks, JPEG comments, XMP, EXIF's
    description, artist, copyright, Windows title/comment/keywords/subject and the user comment."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            info, exif = dict(image.info), image.getexif()
    except (UnidentifiedImageError, OSError, ValueError):
        return []  # not an image: the upload's own check refuses it
    texts = [v for k, v in info.items() if isinstance(v, str)]
    texts += [v.decode("utf-8", "ignore") for k, v in info.items() if k in ("comment", "xmp") and isinstance(v, bytes)]
    texts += [str(exif[tag]) for tag in _EXIF_TEXT if tag in exif]
    texts += [bytes(exif[tag]).decode("utf-16-le", "ignore") for tag in _EXIF_XP if isinstance(exif.get(tag), bytes)]
    comment = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(comment, bytes) and len(comment) > 8:
        texts.append(comment[8:].decode("utf-16-le" if comment[:7] == b"UNICODE" else "utf-8", "ignore"))
    elif isinstance(comment, str):
        texts.append(comment)
    return [t.strip("\x00 ") for t in texts if t.strip("\x00 ")]


def task_texts(task: dict[str, Any], read_asset: Callable[[str], bytes] | None = None) -> list[str]:
    """A task's prompt and the metadata text of the images it is made from (read with `read_asset`): its start and
    end frames, its keyframes at indexes, and an edit's or a reframe's source image."""
    texts = [str(task.get("prompt") or "")]
    frames = [task.get("start"), task.get("end"), *(task.get("keyframes") or ())]
    keys = [frame.get("asset") if isinstance(frame, dict) else None for frame in frames] + [task.get("source")]
    for key in keys:
        if read_asset is not None and isinstance(key, str) and key.lower().endswith(_IMAGE_SUFFIXES):
            texts += metadata_texts(read_asset(key))
    return texts


def screen_task(
    task: dict[str, Any],
    tenant: str,
    read_asset: Callable[[str], bytes] | None = None,
    policies: Policies | None = None,
    classifier: Classifier | None = None,
) -> Decision:
    """Moderate a task before it is queued: its prompt and its images' metadata (`task_texts`), its negative prompt
    (by the rules that apply to one), then the external classifier if the deployment has one. The decision is logged."""
    policy = (policies or configured()).for_tenant(tenant)
    texts = task_texts(task, read_asset)
    negative = str(task.get("negative_prompt") or "")
    decision = moderate_text(texts, policy)
    if decision.allowed:
        decision = moderate_text([negative], policy, negative=True)
    if decision.allowed:
        classifier = classifier if classifier is not None else configured_classifier()
        if classifier is not None:
            decision = classifier.check_texts([t for t in texts if t])
    log_decision(decision, tenant, "request", policy, [*texts, negative])
    return decision


def log_decision(decision: Decision, tenant: str, stage: str, policy: Policy, texts: Sequence[str] = ()) -> None:
    """One JSON log line per decision; the texts only where the tenant's policy does not say `log_text = false`."""
    fields: dict[str, Any] = {
        "tenant": tenant,
        "stage": stage,
        "allowed": decision.allowed,
        "category": decision.category,
        "rule": decision.matched_rule_id,
    }
    if policy.log_text and texts:
        fields["texts"] = [t for t in texts if t]
    log.log(logging.INFO if decision.allowed else logging.WARNING, "moderation decision", extra=fields)


# --- frames -----------------------------------------------------------------------------------------------------


class FrameChecker(Protocol):
    """Looks at a job's output frames, (T, H, W, 3) uint8, and decides."""

    def check_frames(self, frames: np.ndarray) -> Decision: ...


class ClassifierError(RuntimeError):
    """The external classifier did not answer, or answered something that is not a decision."""


@dataclass
class Classifier:
    """A deployment's external classifier, by HTTP: POST JSON `{"texts": [...]}` or `{"frames": [base64 JPEG,
    ...], "width", "height"}` to `url`; the answer is `{"allowed": bool, "category": str, "rule": str}`.

    `fail_open`: whether a classifier that cannot be reached, or answers badly, lets the request through (logged)
    or refuses it (the default: category "unavailable")."""

    url: str
    timeout_s: float = 5.0
    fail_open: bool = False
    max_frames: int = 8  # frames sent per job, evenly spaced
    client: httpx.Client | None = None

    def check_texts(self, texts: Sequence[str]) -> Decision:
        return self._ask({"texts": list(texts)})

    def check_frames(self, frames: np.ndarray) -> Decision:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
        picked = np.linspace(0, len(frames) - 1, min(self.max_frames, len(frames))).round().astype(int)
        payload = {"frames": [_jpeg(frames[i]) for i in picked], "width": frames.shape[2], "height": frames.shape[1]}
        return self._ask(payload)

    def _ask(self, payload: dict[str, Any]) -> Decision:
        try:
            client = self.client or httpx.Client()
            try:
                answer = client.post(self.url, json=payload, timeout=self.timeout_s)
                answer.raise_for_status()
                return _decision(answer.json())
            finally:
                if self.client is None:
                    client.close()
        except (httpx.HTTPError, ValueError, ClassifierError) as err:
            log.warning(
                "moderation classifier failed", extra={"url": self.url, "error": str(err) or type(err).__name__}
            )
            return ALLOWED if self.fail_open else Decision(False, "unavailable", "external.unavailable")


def _decision(body: Any) -> Decision:
    if not isinstance(body, dict) or not isinstance(body.get("allowed"), bool):
        raise ClassifierError(f'the answer must be {{"allowed": true|false, ...}}, got {str(body)[:80]!r}')
    if body["allowed"]:
        return ALLOWED
    return Decision(False, str(body.get("category") or "external"), f"external.{body.get('rule') or 'refused'}")


def _jpeg(frame: np.ndarray) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=85)
    return base64.b64encode(out.getvalue()).decode("ascii")


CHECKERS: dict[str, Callable[..., FrameChecker]] = {"external": Classifier}


def checker(name: str, **options: Any) -> FrameChecker:
    """A frame checker from the registry by name, e.g. checker("external", url="http://...")."""
    if name not in CHECKERS:
        raise ValueError(f"no frame checker {name!r}; known: {', '.join(sorted(CHECKERS))}")
    return CHECKERS[name](**options)


@functools.cache
def configured_classifier() -> Classifier | None:
    """The classifier NOOR_MODERATION_CLASSIFIER_URL names, if any."""
    from noor.config import settings

    cfg = settings()
    if not cfg.moderation_classifier_url:
        return None
    return Classifier(cfg.moderation_classifier_url, cfg.moderation_classifier_timeout_s, cfg.moderation_fail_open)


def configured_checkers() -> list[FrameChecker]:
    """The deployment's frame checkers: its external classifier, or none (then outputs are not checked)."""
    classifier = configured_classifier()
    return [] if classifier is None else [classifier]


def check_frames(frames: np.ndarray, checkers: Sequence[FrameChecker] | None = None) -> Decision:
    """The first refusal of `checkers` (the deployment's by default) over a job's frames, else allowed."""
    for c in configured_checkers() if checkers is None else checkers:
        decision = c.check_frames(frames)
        if not decision.allowed:
            return decision
    return ALLOWED


def screen_frames(frames: np.ndarray, tenant: str, checkers: Sequence[FrameChecker] | None = None) -> Decision:
    """Moderate a job's output after it ran (the worker's one call): `check_frames`, logged. A refusal fails the
    job with `decision.reason`, which refunds it."""
    decision = check_frames(frames, checkers)
    log_decision(decision, tenant, "output", configured().for_tenant(tenant))
    return decision

"""The trained concepts this machine serves: `concepts.toml` in the data dir, one table per concept key.

    [concepts."red_square"]
    model = "wan-toy"                      # the installed model (noor models list) the adapter acts on
    path = "/adapters/red-square"          # noor train lora --out: pytorch_lora_weights.safetensors, lora_config.json
    description = "a red square sliding right"
    size_bytes = 8192                      # the adapter folder's files
    [concepts."red_square".words]          # the words it teaches, per language (when lora_config.json names them)
    en = ["redsquare"]

`noor concepts add` writes it (after checking the folder against the model); a Dream Machine request names a
concept by key (`concepts: [{"key": "red_square"}]`), and the worker resolves the key to its folder when the job
runs (`get`), so a concept removed in between fails that job with the reason. The file is read again on every
lookup: a concept added by one process is seen by the next request of another.
"""

from __future__ import annotations

import inspect
import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noor.engine import registry
from noor.engine.examples import CONFIG_NAME, WEIGHT_NAME  # what `noor train lora` writes
from noor.engine.task import Concept, TaskError

FILE_NAME = "concepts.toml"
KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class InstalledConcept:
    key: str
    model: str
    path: str
    description: str = ""
    size_bytes: int = 0
    words: dict[str, list[str]] = field(default_factory=dict)  # language -> the words it teaches

    @property
    def concept(self) -> Concept:
        """What a task carries (`Task.concepts`)."""
        return Concept(self.key, self.path)

    def to_toml(self) -> dict[str, Any]:
        return {"model": self.model, "path": self.path, "description": self.description, "size_bytes": self.size_bytes}


class UnknownConcept(TaskError):
    """A key not in concepts.toml; lists the installed keys and the models they act on."""

    def __init__(self, key: str, known: dict[str, InstalledConcept] | None = None):
        known = installed() if known is None else known
        listed = ", ".join(f"{k} ({c.model})" for k, c in known.items()) or "none (noor concepts add)"
        super().__init__("concepts", key, f"unknown concept; installed concepts and their models: {listed}")


def config_path() -> Path:
    from noor.config import settings

    return settings().data_dir / FILE_NAME


def installed(path: Path | None = None) -> dict[str, InstalledConcept]:
    """Every registered concept, by key (sorted)."""
    path = path or config_path()
    if not path.is_file():
        return {}
    table = tomllib.loads(path.read_text(encoding="utf-8")).get("concepts", {})
    found = {}
    for key, entry in sorted(table.items()):
        words = {lang: [str(w) for w in ws] for lang, ws in (entry.get("words") or {}).items()}
        found[key] = InstalledConcept(
            key=key,
            model=str(entry["model"]),
            path=str(entry["path"]),
            description=str(entry.get("description", "")),
            size_bytes=int(entry.get("size_bytes", 0)),
            words=words,
        )
    return found


def get(key: str, path: Path | None = None) -> InstalledConcept:
    known = installed(path)
    if key not in known:
        raise UnknownConcept(key, known)
    return known[key]


def save(concepts: dict[str, InstalledConcept], path: Path | None = None) -> Path:
    path = path or config_path()
    lines = ["# Noor's registered concepts; edit with `noor concepts add` (see docs/models.md).", ""]
    for key in sorted(concepts):
        c = concepts[key]
        lines.append(f"[concepts.{json.dumps(key)}]")
        for name, value in c.to_toml().items():
            lines.append(f"{name} = {value!r}" if isinstance(value, int) else f"{name} = {json.dumps(value)}")
        if c.words:
            lines.append(f"[concepts.{json.dumps(key)}.words]")
            lines += [f"{json.dumps(lang)} = {json.dumps(ws, ensure_ascii=False)}" for lang, ws in c.words.items()]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)
    return path


def read_adapter(
    folder: Path,
    files: Sequence[str] = (WEIGHT_NAME, CONFIG_NAME),
    kind: str = "an adapter",
    made_by: str = "noor train lora",
) -> dict[str, Any]:
    """An adapter folder's lora_config.json, after checking the folder holds `files` (what `made_by` writes for
    `kind`); ValueError naming the folder or file and what is wrong. The registry's check of a folder and the
    first step of noor-tiny's (`noor.engine.tiny.concept.read`, with its embeddings file)."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    for name in files:
        if not (folder / name).is_file():
            raise ValueError(f"{folder} has no {name}: not {kind} ({made_by} writes it)")
    try:
        record = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{folder / CONFIG_NAME} is not JSON ({err})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{folder / CONFIG_NAME} is not a JSON object")
    return record


def words_of(record: dict[str, Any]) -> dict[str, list[str]]:
    """The words an adapter teaches per language (`"words": {"en": [...]}` or `{"en": "word"}`); {} when none."""
    words = record.get("words")
    if not isinstance(words, dict):
        return {}
    return {str(lang): [ws] if isinstance(ws, str) else [str(w) for w in ws] for lang, ws in words.items()}


def trained_for(record: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(model id, family, weights dir) the adapter names in its lora_config.json (any may be None)."""
    config: dict[str, Any] = record["config"] if isinstance(record.get("config"), dict) else {}
    model = record.get("model")
    family = record.get("family") or config.get("family")
    weights = config.get("model_path")
    return (str(model) if model else None, str(family) if family else None, str(weights) if weights else None)


def default_model(record: dict[str, Any]) -> str:
    """The installed model an adapter was trained on, when its lora_config.json says: the model id it names, or
    the one installed model of its family at the weights dir it was trained from. ValueError naming --model."""
    model, family, weights = trained_for(record)
    if model:
        return model
    specs = [s for s in registry.available() if s.family == family]
    same = [s for s in specs if weights and s.source == str(Path(weights).expanduser().resolve())]
    if len(same) == 1:
        return same[0].id
    choices = ", ".join(s.id for s in specs) or f"none of family {family} (noor models add)"
    raise ValueError(f"--model: give the model the adapter acts on ({family} models installed: {choices})")


def check_model(spec: registry.ModelSpec, record: dict[str, Any], folder: Path) -> None:
    """ValueError naming --model when the adapter was trained for another model than `spec`; then the backend's own
    trial check (`check_concept`: the adapter's layers exist in the model)."""
    model, family, _ = trained_for(record)
    if model and model != spec.id:
        raise ValueError(f"--model: the adapter was trained for model {model!r}, not {spec.id!r}")
    if not model and family != spec.family:
        raise ValueError(f"--model: the adapter was trained for a {family} model; {spec.id!r} is {spec.family}")
    entry = getattr(spec, "entry", None)
    if entry is not None:  # an open model: its transformer, built on the meta device (no weights read)
        from noor.engine.diffusers.concepts import check_concept

        check_concept(entry, folder)
        return
    backend = getattr(spec.load, "func", spec.load)
    if spec.family == "noor-tiny":
        from noor.engine.tiny.backend import TinyBackend

        backend = TinyBackend
    check = getattr(backend, "check_concept", None)
    if check is None:
        raise ValueError(f"--model: model {spec.id!r} does not load adapters")
    if isinstance(inspect.getattr_static(backend, "check_concept"), staticmethod | classmethod):
        check(folder)
    else:  # a method of a loaded backend
        getattr(spec.load(), "check_concept")(folder)  # noqa: B009  (not every Backend has it)


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def add(
    key: str, folder: Path, model: str | None = None, description: str = "", path: Path | None = None
) -> InstalledConcept:
    """Validate and register one concept (replacing one with the same key). ValueError naming the option."""
    if not KEY_PATTERN.match(key):
        raise ValueError(f"KEY: must be lowercase letters, digits, '_' or '-' (at most 64), got {key!r}")
    folder = folder.expanduser().resolve()
    try:
        record = read_adapter(folder)
    except ValueError as err:
        raise ValueError(f"--path: {err}") from None
    model_id = model or default_model(record)
    try:
        spec = registry.get(model_id)
    except registry.UnknownModel as err:
        raise ValueError(f"--model: {str(err).split(': ', 1)[1]}") from None
    try:
        check_model(spec, record, folder)
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith("--") else f"--path: {message}") from None
    concept = InstalledConcept(
        key=key,
        model=spec.id,
        path=str(folder),
        description=description.strip(),
        size_bytes=folder_size(folder),
        words=words_of(record),
    )
    concepts = installed(path)
    concepts[key] = concept
    save(concepts, path)
    return concept


def remove(key: str, path: Path | None = None) -> InstalledConcept:
    concepts = installed(path)
    if key not in concepts:
        raise UnknownConcept(key, concepts)
    gone = concepts.pop(key)
    save(concepts, path)
    return gone


def for_task(keys: list[str], model: str | None = None, path: Path | None = None) -> tuple[Concept, ...]:
    """A job's concept keys as the task's adapters, resolved now: UnknownConcept for one removed since, TaskError
    for one registered again for another model than the job's."""
    known = installed(path)
    missing = [k for k in keys if k not in known]
    if missing:
        raise UnknownConcept(missing[0], known)
    for key in keys:
        if model is not None and known[key].model != model:
            raise TaskError("concepts", key, f"the concept acts on model {known[key].model!r}, not {model!r}")
    return tuple(known[k].concept for k in keys)

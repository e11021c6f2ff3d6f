"""Check a local weights dir (Hugging Face diffusers layout) before it is registered, and guess its family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from noor.engine.diffusers.families import FAMILIES, Family, read_config

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


class Layout(Protocol):
    """What a weights dir is checked against: a video family (`Family`) or an audio one (`audio.AudioFamily`)."""

    @property
    def name(self) -> str: ...
    @property
    def index_classes(self) -> tuple[str, ...]: ...
    @property
    def components(self) -> tuple[str, ...]: ...


class WeightsError(ValueError):
    """A weights dir that is missing, incomplete or of another family; the message says exactly what."""


def model_index(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise WeightsError(f"--path: no such directory, got {str(path)!r}")
    if not path.is_dir():
        raise WeightsError(f"--path: not a directory, got {str(path)!r}")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise WeightsError(f"--path: {path} has no model_index.json (not a diffusers pipeline dir)")
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as err:
        raise WeightsError(f"--path: {index_file} is not valid JSON ({err})") from err
    if not isinstance(index, dict) or "_class_name" not in index:
        raise WeightsError(f"--path: {index_file} names no pipeline (_class_name)")
    return index


def missing_parts(path: Path, family: Layout, index: dict[str, Any]) -> list[str]:
    """What the dir lacks for this family: components absent from model_index.json, folders, configs, weights."""
    missing = []
    for name in family.components:
        entry = index.get(name)
        if not isinstance(entry, list) or entry[0] is None:
            missing.append(f"{name} (not in model_index.json)")
            continue
        folder = path / name
        if not folder.is_dir():
            missing.append(f"{name}/ (folder)")
            continue
        files = [f for f in folder.rglob("*") if f.is_file()]
        if name.startswith(("tokenizer", "feature_extractor", "image_processor")) or name == "scheduler":
            if not files:
                missing.append(f"{name}/ (empty)")
            continue
        if not (folder / "config.json").is_file():
            missing.append(f"{name}/config.json")
        if not any(f.name.endswith(WEIGHT_SUFFIXES) for f in files):
            missing.append(f"{name}/ weights (*.safetensors)")
    return missing


def check(path: Path, family: Layout) -> dict[str, Any]:
    """Raise WeightsError naming what is wrong; return model_index.json."""
    index = model_index(path)
    pipeline = index["_class_name"]
    if pipeline not in family.index_classes:
        from noor.engine.diffusers.audio import AUDIO_FAMILIES

        layouts: list[Layout] = [*FAMILIES.values(), *AUDIO_FAMILIES.values()]
        others = [f.name for f in layouts if pipeline in f.index_classes]
        hint = f"; it looks like {' or '.join(others)}" if others else ""
        raise WeightsError(
            f"--family: {path} holds a {pipeline}, not a {family.name} model "
            f"(expects {' or '.join(family.index_classes)}){hint}"
        )
    missing = missing_parts(path, family, index)
    if missing:
        raise WeightsError(f"--path: {path} is incomplete for {family.name}; missing: {', '.join(missing)}")
    return index


def detect(path: Path) -> Family:
    """The family of a weights dir, from its pipeline class and configs; refuses to guess between look-alikes."""
    index = model_index(path)
    pipeline = index["_class_name"]
    candidates = [f for f in FAMILIES.values() if pipeline in f.index_classes]
    if not candidates:
        raise WeightsError(f"--path: {path} holds a {pipeline}, which no Noor family runs")
    if pipeline.startswith("Wan"):
        two_experts = isinstance(index.get("transformer_2"), list) and index["transformer_2"][0] is not None
        five_b = read_config(path, "vae").get("z_dim") == 48  # Wan 2.2's high-compression VAE
        if two_experts:
            candidates = [f for f in candidates if "a14b" in f.name]
        elif five_b:
            candidates = [f for f in candidates if f.name == "wan2.2-ti2v"]
        else:
            candidates = [f for f in candidates if f.name.startswith("wan2.1")]
    if len(candidates) > 1:
        names = " or ".join(f.name for f in candidates)
        raise WeightsError(f"--family: {path} holds a {pipeline}, which could be {names}; say which with --family")
    return candidates[0]


def transformer_shape(path: Path) -> tuple[int, int, int]:
    """(blocks, hidden size, time patch) of a weights dir's transformer, as the catalog counts them:
    dual-stream plus single-stream blocks, heads x head dim."""
    config = read_config(path, "transformer")
    blocks = int(config.get("num_layers", 0)) + int(config.get("num_single_layers", 0) or 0)
    hidden = int(config.get("num_attention_heads", 0)) * int(config.get("attention_head_dim", 0))
    patch = config.get("patch_size")
    patch_t = patch[0] if isinstance(patch, list | tuple) else config.get("patch_size_t") or 1
    return blocks, hidden, int(patch_t)


def match_perf_id(path: Path, family: Family) -> str | None:
    """The catalog architecture (noor.catalog) whose blocks, hidden size and time patch this dir's transformer
    has, among the family's; None when none or several match (a toy, a fine-tune of another size)."""
    from noor import catalog

    blocks, hidden, patch_t = transformer_shape(path)
    found = [
        pid
        for pid in family.perf_ids
        if (arch := catalog.model(pid)).layers == blocks and arch.hidden_size == hidden and arch.patch[0] == patch_t
    ]
    return found[0] if len(found) == 1 else None

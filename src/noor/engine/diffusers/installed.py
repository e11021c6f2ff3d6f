"""The models this machine has: `models.toml` in the data dir, one table per Noor model id.

    [models."wan-1.3b"]
    family = "wan2.1-t2v"
    path = "/weights/Wan2.1-T2V-1.3B-Diffusers"
    dtype = "bfloat16"
    width = 832          # defaults a request falls back to; the family's when absent
    cache = "first-block"
    perf_id = "wan2.1-t2v-1.3b"   # catalog architecture for ETAs and prices (noor.perf); inferred when it matches

`noor models add` writes it (after checking the weights dir); the registry reads it again whenever it
has changed, so a model added by one process is seen by the next request of another.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Self

from noor.engine import registry
from noor.engine.diffusers import families, parallel, weights
from noor.engine.diffusers.options import DTYPES, Options, cache_config, check_dtype
from noor.engine.task import TaskError

FILE_NAME = "models.toml"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
RESERVED_IDS = tuple(registry.built_in())  # tiny, resample


@dataclass(frozen=True)
class Entry:
    """What every models.toml entry has, a video or image model's (`InstalledModel`, table `models`) and an audio
    model's (`audio.InstalledAudio`, table `audio`), and how one is written to and read from its table."""

    id: str
    family: str
    path: str
    dtype: str = "bfloat16"
    device: str = "auto"  # "auto": cuda if there is one, else cpu

    noun: ClassVar[str] = "model"  # what an error calls an entry of this table
    not_keys: ClassVar[tuple[str, ...]] = ("id",)  # fields not written as keys of their own

    def to_toml(self) -> dict[str, Any]:
        """Its keys as models.toml has them: the fields set, in field order, without the id (the table's key)."""
        return {k: v for k, v in asdict(self).items() if k not in self.not_keys and v is not None}

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in fields(cls)} - set(cls.not_keys)

    @classmethod
    def check_keys(cls, model_id: str, data: dict[str, Any], also: Collection[str] = ()) -> None:
        """Refuse keys that are neither fields nor `also` (never accept a key and ignore it)."""
        unknown = set(data) - cls.keys() - set(also)
        if unknown:
            raise ValueError(f"{FILE_NAME}: {cls.noun} {model_id!r} has unknown keys: {', '.join(sorted(unknown))}")

    @classmethod
    def from_toml(cls, model_id: str, data: dict[str, Any]) -> Self:
        cls.check_keys(model_id, data)
        return cls(id=model_id, **data)

    def check_id(self, taken: Collection[str], taken_by: str) -> None:
        """The id is well formed, not a built-in model's, and not in the other table (`taken`, entries of
        `taken_by`): one id names one model."""
        if not ID_PATTERN.match(self.id):
            raise ValueError(f"ID: must be lowercase letters, digits, '.', '_' or '-' (at most 64), got {self.id!r}")
        if self.id in RESERVED_IDS:
            raise ValueError(f"ID: {self.id!r} is built in; choose another id")
        if self.id in taken:
            raise ValueError(f"ID: {self.id!r} is an installed {taken_by}; choose another id")

    def checked_device(self) -> str:
        """The device it runs on (`auto` resolved), after checking the dtype is one and that device takes it."""
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype: must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        device = resolve_device(self.device)
        check_dtype(self.dtype, device)
        return device


@dataclass(frozen=True)
class InstalledModel(Entry):
    not_keys: ClassVar[tuple[str, ...]] = ("id", "options")

    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: int | None = None
    steps: int | None = None
    guidance: float | None = None
    perf_id: str | None = None  # catalog architecture its ETA and price come from; None: not priced
    parallel: str | None = None  # ranks every request runs on, e.g. "ulysses=2" (engine.diffusers.parallel)
    options: Options = field(default_factory=Options)

    @property
    def spec_family(self) -> families.Family:
        return families.get(self.family)

    def defaults(self) -> dict[str, Any]:
        """width, height, frames, fps, steps, guidance: this entry's, else the family's."""
        fam = self.spec_family
        return {
            "width": self.width or fam.width,
            "height": self.height or fam.height,
            "frames": self.frames or fam.frames,
            "fps": self.fps or fam.fps,
            "steps": self.steps or fam.steps,
            "guidance": fam.guidance if self.guidance is None else self.guidance,
        }

    def to_toml(self) -> dict[str, Any]:
        """Its own keys, then the options that differ from the defaults (flat in the entry's table)."""
        return super().to_toml() | {k: v for k, v in asdict(self.options).items() if v != getattr(Options(), k)}

    @classmethod
    def from_toml(cls, model_id: str, data: dict[str, Any]) -> Self:
        own, opts = cls.keys(), {f.name for f in fields(Options)}
        cls.check_keys(model_id, data, also=opts)
        return cls(
            id=model_id,
            **{k: v for k, v in data.items() if k in own},
            options=Options(**{k: v for k, v in data.items() if k in opts}),
        )


def config_path() -> Path:
    from noor.config import settings

    return settings().data_dir / FILE_NAME


def read_table(name: str, path: Path | None = None) -> dict[str, dict[str, Any]]:
    """One table of models.toml as it is written: `models` (video and image), `audio` (noor.engine.diffusers.audio)."""
    path = path or config_path()
    if not path.is_file():
        return {}
    table = tomllib.loads(path.read_text()).get(name, {})
    return table if isinstance(table, dict) else {}


def file_version(path: Path) -> tuple[str, int, int, int] | None:
    """What changes when models.toml is written (`save` replaces it: a new inode); None when there is none."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)


def load(path: Path | None = None) -> dict[str, InstalledModel]:
    return {mid: InstalledModel.from_toml(mid, entry) for mid, entry in read_table("models", path).items()}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def save(
    models: dict[str, InstalledModel], path: Path | None = None, audio: dict[str, dict[str, Any]] | None = None
) -> Path:
    """Write models.toml: `models`, and the audio models' table (`audio`; None: kept as the file has it)."""
    path = path or config_path()
    if audio is None:
        audio = read_table("audio", path)
    lines = ["# Noor's installed models; edit with `noor models add` (see docs/models.md).", ""]
    tables = [("models", {mid: m.to_toml() for mid, m in models.items()}), ("audio", audio)]
    for name, entries in tables:
        for mid in sorted(entries):
            lines.append(f"[{name}.{json.dumps(mid)}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in entries[mid].items()]
            lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def validate(model: InstalledModel) -> InstalledModel:
    """Check an entry against its weights and this machine; raise ValueError naming the option and value."""
    model.check_id(read_table("audio"), "audio model")
    path = Path(model.path).expanduser().resolve()
    family = families.get(model.family) if model.family else weights.detect(path)
    index = weights.check(path, family)
    device = model.checked_device()
    model.options.check(device)
    check_cache_support(model.options, path, family, index)
    geometry = family.geometry(path)
    d = replace(model, family=family.name, path=str(path)).defaults()
    for name in ("width", "height"):
        if not geometry.spatial <= d[name] <= family.max_side:
            raise ValueError(f"--size: {name} must be between {geometry.spatial} and {family.max_side}, got {d[name]}")
        if d[name] % geometry.spatial:
            raise ValueError(f"--size: {family.name} needs {name} in multiples of {geometry.spatial}, got {d[name]}")
    if geometry.fixed_size and (d["width"], d["height"]) != geometry.fixed_size:
        w, h = geometry.fixed_size
        raise ValueError(f"--size: these {family.name} weights draw only {w}x{h}, got {d['width']}x{d['height']}")
    if geometry.temporal and (d["frames"] - 1) % geometry.temporal:
        raise ValueError(f"--frames: {family.name} needs {geometry.temporal}k+1 frames, got {d['frames']}")
    if d["frames"] > family.max_frames:
        raise ValueError(f"--frames: {family.name} makes at most {family.max_frames} frames, got {d['frames']}")
    if model.parallel is not None:  # the plan must split this checkpoint at its default shape
        try:
            plan = parallel.parse(model.parallel)
        except parallel.ParallelError as err:
            raise ValueError(f"--{err}") from None
        positions = geometry.positions(d["width"], d["height"], d["frames"])
        tokens = positions["num_frames"] * positions["height"] * positions["width"]
        try:
            parallel.Denoiser.read(path).check(plan, tokens, d["guidance"])
        except parallel.ParallelError as err:
            raise ValueError(f"--{err}") from None
        model = replace(model, parallel=plan.text())
    return replace(model, family=family.name, path=str(path), perf_id=checked_perf_id(model.perf_id, path, family))


def check_cache_support(options: Options, path: Path, family: families.Family, index: dict[str, Any]) -> None:
    """A cache needs the transformer class to take diffusers' cache hooks (SD3's does not), else the worker
    would fail when it loads the model."""
    import diffusers
    import torch

    if options.cache == "none":
        return
    name = str(index.get("transformer", [None, ""])[1])
    cls = getattr(diffusers, name, None)
    if not hasattr(cls, "enable_cache"):
        raise ValueError(f"--cache: {family.name}'s {name} has no diffusers cache support, got {options.cache!r}")
    # the hooks find the transformer's blocks by class; build it on the meta device (no memory) and try them
    with torch.device("meta"):
        model = cls.from_config(families.read_config(path, "transformer"))  # type: ignore[union-attr]
    try:
        model.enable_cache(cache_config(_NoPipe(), options))
    except (ValueError, TypeError, IndexError, KeyError) as err:
        raise ValueError(
            f"--cache: diffusers cannot attach {options.cache} to {family.name}'s {name} ({err}), got {options.cache!r}"
        ) from None


class _NoPipe:
    """Stands in for the pipeline whose current timestep the timestep-driven caches read (only while running)."""

    current_timestep = None


def checked_perf_id(perf_id: str | None, path: Path, family: families.Family) -> str | None:
    """The catalog architecture that prices this model: the one given (a catalog model of the family's kind),
    else the family's architecture its transformer config matches, else None (its generations go unpriced)."""
    from noor import catalog

    if not perf_id:
        return weights.match_perf_id(path, family)
    try:
        arch = catalog.model(perf_id)
    except catalog.UnknownId as err:
        raise ValueError(f"--perf-id: not a catalog model, got {perf_id!r}; valid: {', '.join(err.valid)}") from None
    if arch.kind != family.kind:
        raise ValueError(
            f"--perf-id: {family.name} makes {family.kind}s and {perf_id} is a catalog {arch.kind} model,"
            f" got {perf_id!r}"
        )
    return perf_id


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device: this machine has no CUDA device, got {device!r}")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device: must be auto, cpu or cuda[:N], got {device!r}")
    return device


def add(model: InstalledModel, path: Path | None = None) -> InstalledModel:
    """Validate and write one entry (replacing an entry with the same id)."""
    checked = validate(model)
    models = load(path)
    models[checked.id] = checked
    save(models, path)
    return checked


def remove(model_id: str, path: Path | None = None) -> None:
    models = load(path)
    if model_id not in models:
        raise TaskError("model", model_id, "not an installed model")
    del models[model_id]
    save(models, path)

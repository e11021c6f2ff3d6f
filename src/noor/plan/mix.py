"""A request mix: classes of requests (model, size, frames, steps, SLO) and each one's share of traffic.

Shares must sum to 1. A class with frames = 1 is an image; more frames is a video.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from noor import catalog
from noor.plan.errors import PlanError

SHARE_TOLERANCE = 1e-6
_FIELDS = {"name", "model", "width", "height", "frames", "steps", "share", "slo_wait_p95_s", "slo_e2e_p95_s"}


@dataclass(frozen=True)
class RequestClass:
    name: str
    model: str
    width: int
    height: int
    frames: int
    share: float
    steps: int | None = None
    slo_wait_p95_s: float | None = None
    slo_e2e_p95_s: float | None = None

    @property
    def is_video(self) -> bool:
        return self.frames > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Mix:
    classes: tuple[RequestClass, ...]
    source: str  # where it came from: "default (noor/plan/default_mix.toml)", a path, or "request"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "classes": [c.to_dict() for c in self.classes]}


LIMITS = {"width": 16384, "height": 16384, "frames": 10_000, "steps": 1000}


def _positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(field, value, "must be a positive integer")
    top = LIMITS.get(field.rsplit(".", 1)[-1])
    if top is not None and value > top:
        raise PlanError(field, value, f"must be <= {top}")
    return value


def _positive_float(field: str, value: object, allow_zero: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    if bad or value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        raise PlanError(field, value, "must be a number >= 0" if allow_zero else "must be a number > 0")
    return float(value)  # type: ignore[arg-type]


def from_dict(data: Any, source: str = "request", field: str = "mix") -> Mix:
    """A mix from plain data ({"classes": [{...}, ...]}); every bad field raises PlanError naming it."""
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise PlanError(f"{field}.classes", data.get("classes") if isinstance(data, dict) else data,
                        "must be a non-empty list of request classes")
    classes = []
    for i, raw in enumerate(data["classes"]):
        where = f"{field}.classes[{i}]"
        if not isinstance(raw, dict):
            raise PlanError(where, raw, "must be a table of fields")
        unknown = sorted(set(raw) - _FIELDS)
        if unknown:
            valid = ", ".join(sorted(_FIELDS))
            raise PlanError(f"{where}.{unknown[0]}", raw[unknown[0]], f"unknown field; valid: {valid}")
        for required in ("model", "share"):
            if required not in raw:
                raise PlanError(f"{where}.{required}", None, "is required")
        model_id = raw["model"]
        try:
            arch = catalog.model(str(model_id))
        except catalog.UnknownId as err:
            raise PlanError(f"{where}.model", model_id, f"unknown model; valid: {', '.join(err.valid)}") from None
        frames = _positive_int(f"{where}.frames", raw.get("frames", arch.default_frames))
        share = _positive_float(f"{where}.share", raw["share"])
        if share > 1:
            raise PlanError(f"{where}.share", raw["share"], "must be in (0, 1]")
        wait = raw.get("slo_wait_p95_s")
        e2e = raw.get("slo_e2e_p95_s")
        if wait is not None and e2e is not None:
            raise PlanError(f"{where}.slo_e2e_p95_s", e2e, "give slo_wait_p95_s or slo_e2e_p95_s, not both")
        classes.append(
            RequestClass(
                name=str(raw.get("name", f"{model_id} {frames}f")),
                model=arch.id,
                width=_positive_int(f"{where}.width", raw.get("width", arch.default_width)),
                height=_positive_int(f"{where}.height", raw.get("height", arch.default_height)),
                frames=frames,
                share=share,
                steps=None if raw.get("steps") is None else _positive_int(f"{where}.steps", raw["steps"]),
                slo_wait_p95_s=None if wait is None else _positive_float(f"{where}.slo_wait_p95_s", wait, True),
                slo_e2e_p95_s=None if e2e is None else _positive_float(f"{where}.slo_e2e_p95_s", e2e),
            )
        )
    total = sum(c.share for c in classes)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        shares = " + ".join(f"{c.share:g}" for c in classes)
        raise PlanError(f"{field}.classes[*].share", f"{shares} = {total:g}", "shares must sum to 1")
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise PlanError(f"{field}.classes[*].name", names, "class names must be unique")
    return Mix(tuple(classes), source)


def load(path: Path | None = None, field: str = "--mix") -> Mix:
    """The mix in a TOML file, or the packaged default."""
    if path is None:
        text = (resources.files("noor.plan") / "default_mix.toml").read_text(encoding="utf-8")
        return from_dict(tomllib.loads(text), "default (noor/plan/default_mix.toml)", "mix")
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(field, str(path), "no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise PlanError(field, str(path), f"not valid TOML ({err})") from None
    return from_dict(raw, str(path), "mix")

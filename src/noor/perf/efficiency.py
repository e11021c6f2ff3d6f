"""Efficiency factors: the share of a chip's peak each kernel class reaches, and a few shared constants.

The numbers live in calibration.toml, written by `noor perf calibrate` from the published
measurements (with their provenance), or edited by hand where a constant is assumed, not fitted.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

KERNEL_CLASSES = ("linear", "attention", "conv")


@dataclass(frozen=True)
class Efficiency:
    families: dict[str, dict[str, float]]  # family -> {"linear", "attention", "conv", optional "attention_fa3"}
    like: dict[str, str]  # families without data -> the family assumed to behave alike
    constants: dict[str, float]  # shared: half-saturation sizes, activation traffic, link efficiency...
    provenance: dict[str, Any] = field(default_factory=dict)
    # family -> {software release: speed-up over the family's first release in the data}: MLPerf rounds show
    # the same chip getting faster as TensorRT and the harness improve (fitted, reported by `noor perf calibrate`)
    software: dict[str, dict[str, float]] = field(default_factory=dict)

    def software_speedup(self, family: str, release: str | None) -> float:
        return self.software.get(family, {}).get(release, 1.0) if release else 1.0

    def family(self, name: str) -> dict[str, float]:
        seen = set()
        while name not in self.families:
            if name in seen or name not in self.like:
                raise KeyError(f"no efficiency for chip family {name!r} (add it or a `like` entry)")
            seen.add(name)
            name = self.like[name]
        return self.families[name]

    def factor(self, family: str, kernel: str, fa3: bool = False) -> float:
        table = self.family(family)
        if kernel == "attention" and fa3 and "attention_fa3" in table:
            return table["attention_fa3"]
        return table[kernel]

    def __getitem__(self, constant: str) -> float:
        return self.constants[constant]


def calibration_path() -> Path:
    return Path(str(resources.files("noor.perf") / "calibration.toml"))


def from_toml(text: str) -> Efficiency:
    raw = tomllib.loads(text)
    return Efficiency(
        families={k: {kk: float(vv) for kk, vv in v.items() if kk != "note"} for k, v in raw["families"].items()},
        like=dict(raw.get("like", {})),
        constants={k: float(v["value"]) for k, v in raw["constants"].items()},
        provenance={**raw.get("provenance", {}), "holdout": raw.get("holdout", {})},
        software={k: {kk: float(vv) for kk, vv in v.items()} for k, v in raw.get("software", {}).items()},
    )


@cache
def load() -> Efficiency:
    return from_toml(calibration_path().read_text(encoding="utf-8"))

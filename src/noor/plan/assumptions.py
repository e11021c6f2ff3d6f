"""Every number the planner assumes, each with its source; overrides replace the value and say so.

    a = assumptions.resolve({"pue.liquid": 1.1})
    a["pue.liquid"]          # 1.1
    a.entry("pue.liquid")    # Assumption(key, value, unit, source="override", default=1.2, ...)

Keys come from assumptions.toml, plus one per catalog chip: `chip_tdp_w.<id>` (from noor.catalog, its
source quoted) and `chip_price_usd.<id>` (in the TOML where a price was read or assumed).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from noor import catalog
from noor.plan.errors import PlanError

OVERRIDE = "override"


@dataclass(frozen=True)
class Assumption:
    key: str
    value: float | None  # None: no figure known (a chip with unpublished power or no price)
    unit: str
    source: str
    default: float | None = None  # the packaged value before any override

    @property
    def overridden(self) -> bool:
        return self.source == OVERRIDE

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "unit": self.unit, "source": self.source,
                "default": self.default}


# Valid range of each key (by prefix): (low, high, inclusive low?, message)
_RANGES: list[tuple[str, float, float, bool, str]] = [
    ("pue.climate_adder", -0.5, 2.0, True, "must be between -0.5 and 2"),
    ("pue", 1.0, 5.0, True, "a PUE must be >= 1 (facility power includes IT power) and <= 5"),
    ("it.storage_of_network_storage", 0.0, 1.0, True, "must be between 0 and 1"),
    ("it.average_draw", 0.0, 1.0, False, "must be in (0, 1]"),
    ("it.", 1.0, 10.0, True, "must be >= 1 (a whole includes its part)"),
    ("rack_kw.", 0.0, math.inf, False, "must be > 0"),
    ("node.chips", 1.0, 1024.0, True, "must be an integer >= 1"),
    ("serve.utilisation", 0.0, 1.0, False, "must be in (0, 1]"),
    ("serve.max_chips_per_request", 1.0, 1024.0, True, "must be an integer >= 1"),
    ("serve.", 0.0, 100.0, True, "must be between 0 and 100"),
    ("power.usd_per_kwh", 0.0, math.inf, True, "must be >= 0"),
    ("life.", 0.0, 100.0, False, "must be > 0 years"),
    ("capex.", 0.0, math.inf, True, "must be >= 0"),
    ("opex.", 0.0, math.inf, True, "must be >= 0"),
    ("chip_price_usd.", 0.0, math.inf, True, "must be >= 0"),
    ("chip_tdp_w.", 0.0, math.inf, False, "must be > 0"),
]
_INTEGER_KEYS = ("node.chips", "serve.max_chips_per_request")


@cache
def _packaged() -> dict[str, Assumption]:
    raw = tomllib.loads((resources.files("noor.plan") / "assumptions.toml").read_text(encoding="utf-8"))
    table = {
        key: Assumption(key, float(f["value"]), f["unit"], f["source"], float(f["value"]))
        for key, f in raw["assumptions"].items()
    }
    table["pue"] = Assumption(
        "pue", None, "facility W per IT W", "derived: pue.<cooling> + pue.climate_adder (set it to fix the PUE)", None
    )
    for chip_id, chip in catalog.chips().items():
        source = f"noor.catalog chips.toml: {chip.source}" if chip.tdp_w else "not published (chips.toml has no tdp_w)"
        table[f"chip_tdp_w.{chip_id}"] = Assumption(f"chip_tdp_w.{chip_id}", chip.tdp_w, "W", source, chip.tdp_w)
        price = f"chip_price_usd.{chip_id}"
        if price not in table:
            table[price] = Assumption(price, None, "USD", "no price read (rent-only or unpublished)", None)
    return table


def valid_keys() -> list[str]:
    return sorted(_packaged())


def _key_help() -> str:
    general = [k for k in valid_keys() if not k.startswith(("chip_tdp_w.", "chip_price_usd."))]
    return ", ".join([*general, "chip_tdp_w.<chip id>", "chip_price_usd.<chip id>"])


def check_value(key: str, value: object, field_name: str | None = None) -> float:
    """The value as a float, or PlanError naming `field_name` (default: the key) and the value."""
    name = field_name or key
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(str(value))
        except ValueError:
            raise PlanError(name, value, "must be a number") from None
    number = float(value)
    if not math.isfinite(number):
        raise PlanError(name, value, "must be a finite number")
    for prefix, low, high, inclusive, message in _RANGES:
        if key.startswith(prefix):
            below = number < low if inclusive else number <= low
            if below or number > high:
                raise PlanError(name, value, message)
            if key in _INTEGER_KEYS and number != int(number):
                raise PlanError(name, value, message)
            break
    return number


class Assumptions(Mapping[str, float | None]):
    """The resolved assumptions: packaged values with overrides applied."""

    def __init__(self, entries: dict[str, Assumption]):
        self._entries = entries

    def __getitem__(self, key: str) -> float | None:
        return self._entries[key].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, key: str) -> Assumption:
        return self._entries[key]

    def num(self, key: str) -> float:
        value = self._entries[key].value
        if value is None:
            raise PlanError(key, None, "no value known; set one with --set")
        return value

    def overrides(self) -> dict[str, float | None]:
        return {k: e.value for k, e in self._entries.items() if e.overridden}

    def listed(self, chips: list[str] | None = None) -> list[Assumption]:
        """Entries to print with a report: all general ones, and per-chip ones only for `chips`."""
        out = []
        for key, entry in self._entries.items():
            family, _, chip_id = key.partition(".")
            if family in ("chip_tdp_w", "chip_price_usd") and (chips is None or chip_id not in chips):
                continue
            out.append(entry)
        return out

    def with_overrides(self, overrides: Mapping[str, object], field_of: Mapping[str, str] | None = None) -> Assumptions:
        entries = dict(self._entries)
        for key, value in overrides.items():
            name = (field_of or {}).get(key, key)
            if key not in entries:
                raise PlanError(name, key, f"unknown assumption; valid: {_key_help()}")
            number = check_value(key, value, name)
            entries[key] = replace(entries[key], value=number, source=OVERRIDE)
        return Assumptions(entries)


def resolve(overrides: Mapping[str, object] | None = None, field_of: Mapping[str, str] | None = None) -> Assumptions:
    """Packaged assumptions with `overrides` ({key: value}) applied; unknown keys and bad values raise PlanError."""
    return Assumptions(dict(_packaged())).with_overrides(overrides or {}, field_of)


def parse_set(items: list[str], field_name: str = "--set") -> dict[str, float]:
    """`key=value` strings (from --set) as a dict; a malformed one raises PlanError naming it."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PlanError(field_name, item, "must be key=value")
        out[key.strip()] = check_value(key.strip(), value.strip(), f"{field_name} {key.strip()}")
    return out


def read_file(path: Path, field_name: str = "--assumptions") -> dict[str, float]:
    """An overrides TOML: `[assumptions]` with `"key" = value` lines (or keys at the top level)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(field_name, str(path), "no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise PlanError(field_name, str(path), f"not valid TOML ({err})") from None
    table = raw.get("assumptions", raw)
    flat: dict[str, object] = {}

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, Mapping):
                walk(key, v)
            else:
                flat[key] = v

    walk("", table)
    return {k: check_value(k, v, f"{field_name} {k}") for k, v in flat.items()}

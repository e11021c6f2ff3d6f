"""What a caller (CLI or HTTP) gives the planner, resolved into a Mix and Assumptions.

The named options are shortcuts for assumption keys; `set` takes any key. A bad value raises
PlanError naming the caller's own field (`--pue` on the command line, `pue` in JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noor.plan import assumptions as assumptions_mod
from noor.plan import mix as mix_mod
from noor.plan.assumptions import Assumptions, check_value

# named option -> assumption key
NAMED = {
    "pue": "pue",
    "power_price": "power.usd_per_kwh",
    "life_years": "life.accelerator_years",
    "utilisation": "serve.utilisation",
}


@dataclass
class Options:
    """The overridable inputs shared by every plan command."""

    pue: float | None = None
    power_price: float | None = None
    life_years: float | None = None
    utilisation: float | None = None
    set: dict[str, Any] = field(default_factory=dict)  # assumption key -> value
    assumptions_file: Path | None = None
    mix: dict[str, Any] | Path | None = None  # inline mix, a TOML path, or None for the default


def resolve(opts: Options, name_of: Mapping[str, str] | None = None) -> tuple[mix_mod.Mix, Assumptions]:
    """(mix, assumptions) from the options; `name_of` maps field names to the caller's (e.g. pue -> --pue)."""
    names = dict(name_of or {})

    def name(field_name: str) -> str:
        return names.get(field_name, field_name)

    overrides: dict[str, object] = {}
    field_of: dict[str, str] = {}
    if opts.assumptions_file is not None:
        for key, value in assumptions_mod.read_file(opts.assumptions_file, name("assumptions_file")).items():
            overrides[key], field_of[key] = value, f"{name('assumptions_file')} {key}"
    for key, value in opts.set.items():
        overrides[key], field_of[key] = value, f"{name('set')} {key}" if name("set") == "--set" else f"set.{key}"
    for option, key in NAMED.items():
        value = getattr(opts, option)
        if value is not None:
            overrides[key] = check_value(key, value, name(option))
            field_of[key] = name(option)
    a = assumptions_mod.resolve(overrides, field_of)
    if isinstance(opts.mix, Path):
        mix = mix_mod.load(opts.mix, name("mix"))
    elif opts.mix is None:
        mix = mix_mod.load()
    else:
        mix = mix_mod.from_dict(opts.mix, "request", name("mix"))
    return mix, a


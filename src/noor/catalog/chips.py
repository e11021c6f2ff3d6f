"""Accelerators (chips.toml) as typed records; `cpu-local` is filled in from a cached measurement."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from noor.catalog.errors import UnknownId

KernelClass = Literal["linear", "attention", "conv"]


class Chip(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    vendor: str
    family: str = Field(description="whose kernel efficiencies apply (noor/perf/calibration.toml)")
    bf16_tflops: float | None = Field(None, gt=0, description="dense")
    fp8_tflops: float | None = Field(None, gt=0, description="dense")
    hbm_gb: float | None = Field(None, gt=0)
    hbm_tbps: float | None = Field(None, gt=0)
    scaleup_gbps: float | None = Field(None, gt=0, description="per chip, both directions together")
    scaleup_domain: int = Field(1, ge=1, description="chips one scale-up link connects")
    scaleout_gbps: float | None = Field(
        None, gt=0, description="per chip, both directions together: the network between scale-up domains"
    )
    scaleout: str | None = Field(None, description="the scale-out tier (NIC and fabric), named in estimates over it")
    tdp_w: float | None = Field(None, gt=0)
    usd_per_hour: float = Field(ge=0, description="assumption: rental per chip-hour")
    source: str
    status: Literal["measured", "announced"] = Field(
        "measured",
        description="measured: a shipping part (datasheet, product docs, published runs); announced: a vendor's"
        " figures for a part not yet shipping when its source was written",
    )
    measured: bool = False  # this machine, measured by noor itself (cpu-local): its rates replace the roofline's
    # Only for measured chips (cpu-local): achieved fp32 FLOP/s per kernel class and per-op dispatch cost.
    class_tflops: dict[str, float] = Field(default_factory=dict)
    attention_half_tokens: float = Field(0.0, ge=0, description="measured: keys at which attention runs at half rate")
    activation_tbps: float | None = Field(
        None, gt=0, description="measured: activation traffic of norms, GELU, modulation (else hbm_tbps applies)"
    )
    op_overhead_s: float = Field(0.0, ge=0)
    conv_half_channels: float = Field(0.0, ge=0, description="measured: conv channels at which it runs at half rate")
    attention_call_s: float = Field(0.0, ge=0, description="measured: fixed cost of one attention layer call")

    @model_validator(mode="after")
    def _scaleout_named(self) -> Chip:
        if (self.scaleout_gbps is None) != (self.scaleout is None):
            raise ValueError(f"chip {self.id!r}: give scaleout_gbps and scaleout (its name) together, or neither")
        return self

    def peak_tflops(self, precision: str, kernel: KernelClass = "linear") -> float:
        """Dense peak for a kernel class at a precision; fp8 falls back to bf16 where a chip has none."""
        if self.measured:
            return self.class_tflops[kernel]
        if precision == "fp8" and self.fp8_tflops and kernel == "linear":
            return self.fp8_tflops
        if self.bf16_tflops is None:
            raise ValueError(f"chip {self.id!r} has no bf16_tflops")
        return self.bf16_tflops


@cache
def _table() -> dict[str, Chip]:
    raw = tomllib.loads((resources.files("noor.catalog") / "chips.toml").read_text(encoding="utf-8"))
    return {key: Chip(id=key, **fields) for key, fields in raw["chips"].items()}


def chip_ids() -> list[str]:
    return sorted(_table())


def chips(include_local: bool = False) -> dict[str, Chip]:
    """Every chip; `cpu-local` only when asked, since it may need a measurement."""
    table = dict(_table())
    if include_local:
        table["cpu-local"] = chip("cpu-local")
    else:
        table.pop("cpu-local", None)
    return table


def chip(chip_id: str) -> Chip:
    table = _table()
    if chip_id not in table:
        raise UnknownId("chip", chip_id, table)
    entry = table[chip_id]
    if entry.measured:
        from noor.catalog.local import local_chip

        return local_chip(entry)
    return entry

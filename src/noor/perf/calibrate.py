"""Fit the efficiency factors to published measurements, and check any constants against them.

Physics, not rows: a handful of parameters — per chip family the efficiency of linear layers,
attention and convolutions (plus FlashAttention-3 on Hopper), and five shared constants (GEMM and
attention half-saturation sizes, elementwise traffic eager vs compiled, link efficiency). The fit
minimises a robust loss on log(predicted / published), with a weak prior that pulls parameters the
data cannot see towards a typical value instead of letting them run off.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from noor import catalog
from noor.perf.efficiency import Efficiency, calibration_path
from noor.perf.estimate import estimate
from noor.perf.published import Case, Published, read_any

FITTED_FAMILIES = ("hopper", "hopper-h20", "ampere", "ada", "tpu")
FITTED_CONSTANTS = {  # name: (prior, lower, upper)
    "linear_half_tokens": (256.0, 1.0, 65536.0),
    "attention_half_keys": (256.0, 1.0, 65536.0),
    # an eager DiT block reads/writes activation-sized tensors some 20-60 times (norms, modulation,
    # rotary, gates, residuals, casts, transposes): the bound keeps this a traffic count, not a fudge
    "activation_passes_eager": (20.0, 1.0, 64.0),
    "activation_passes_compiled": (8.0, 1.0, 64.0),
    "link_efficiency": (0.6, 0.05, 1.0),
}
FIXED_CONSTANTS = {  # name: (value, source)
    "memory_efficiency": (0.8, "assumption: STREAM-like copies reach about 80% of HBM peak on recent GPUs"),
    "launch_overhead_s": (5e-6, "assumption: CUDA kernel launch + PyTorch dispatch, a few microseconds per op"),
    "collective_latency_s": (2e-5, "assumption: NCCL small-message all-to-all latency within a node, ~20 us"),
    "host_link_gbps": (25.0, "assumption: achieved host<->GPU copy over PCIe Gen4/Gen5 x16 with pinned memory"),
    "host_tflops": (1.0, "assumption: a 2-socket server CPU running a text encoder in bf16 (t5_cpu)"),
}
EFFICIENCY_PRIOR = 0.5  # where an efficiency rests when the data say nothing about it
PRIOR_WEIGHT = 0.15  # residual weight of the prior per parameter, in log units


@dataclass
class Row:
    case: Case
    predicted: float
    error: float  # (predicted - published) / published


def predict_case(case: Case, eff: Efficiency) -> float:
    model, chip = catalog.model(case.model), catalog.chip(case.chip)
    e = estimate(model, case.shape, chip, case.plan, eff)
    if case.per_step:
        return e.stage("denoise").detail["step_s"]
    latency = sum(s.latency_s for s in e.stages)  # also when memory says no: the published run did run
    return latency / case.shape.batch if case.per_image else latency


def check(published: Published, eff: Efficiency) -> list[Row]:
    rows = []
    for case in published.cases:
        predicted = predict_case(case, eff)
        rows.append(Row(case, predicted, (predicted - case.seconds) / case.seconds))
    return rows


def summary(rows: list[Row]) -> dict[str, float]:
    errors = sorted(abs(r.error) for r in rows)
    if not errors:
        return {"rows": 0, "median_ape": math.nan, "p90_ape": math.nan}
    p90 = errors[min(len(errors) - 1, math.ceil(0.9 * len(errors)) - 1)]
    return {"rows": len(errors), "median_ape": statistics.median(errors), "p90_ape": p90}


def _pack(eff: Efficiency) -> tuple[list[str], np.ndarray]:
    names, values = [], []
    for fam in FITTED_FAMILIES:
        table = eff.families.get(fam, {})
        for k in ("linear", "attention", "conv"):
            names.append(f"{fam}.{k}")
            values.append(table.get(k, EFFICIENCY_PRIOR))
    names.append("hopper.attention_fa3")
    values.append(eff.families.get("hopper", {}).get("attention_fa3", EFFICIENCY_PRIOR))
    for k, (prior, _, _) in FITTED_CONSTANTS.items():
        names.append(k)
        values.append(eff.constants.get(k, prior))
    return names, np.log(np.array(values, dtype=float))


def _unpack(names: list[str], x: np.ndarray, base: Efficiency) -> Efficiency:
    families = {k: dict(v) for k, v in base.families.items()}
    constants = dict(base.constants)
    for name, value in zip(names, np.exp(x), strict=True):
        if "." in name:
            fam, k = name.split(".", 1)
            families.setdefault(fam, {})[k] = float(value)
        else:
            constants[name] = float(value)
    for k, (v, _) in FIXED_CONSTANTS.items():
        constants[k] = v
    return replace(base, families=families, constants=constants)


def fit(published: Published, start: Efficiency) -> Efficiency:
    from scipy.optimize import least_squares

    names, x0 = _pack(start)
    priors, lower, upper = [], [], []
    for n in names:
        prior, lo, hi = FITTED_CONSTANTS.get(n, (EFFICIENCY_PRIOR, 0.02, 1.0))
        priors.append(math.log(prior))
        lower.append(math.log(lo))
        upper.append(math.log(hi))
    x0 = np.clip(x0, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
    weights = np.sqrt([c.weight for c in published.cases])

    def residuals(x: np.ndarray) -> np.ndarray:
        eff = _unpack(names, x, start)
        logs = [math.log(predict_case(c, eff) / c.seconds) for c in published.cases]
        return np.concatenate([weights * np.array(logs), PRIOR_WEIGHT * (x - np.array(priors))])

    result = least_squares(residuals, x0, bounds=(lower, upper), loss="soft_l1", f_scale=0.15, x_scale=1.0)
    return _unpack(names, result.x, start)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def to_toml(eff: Efficiency, sources: list[Path], stats: dict[str, float], published: Published) -> str:
    """calibration.toml text: every number with where it came from."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Efficiency factors for noor.perf, written by `noor perf calibrate` — do not hand-edit fitted values;",
        "# re-run the command. Fixed constants say which assumption they are.",
        "",
        "[provenance]",
        'command = "noor perf calibrate"',
        f'fitted_at = "{now}"',
        f"data = {[f'{p.name} sha256:{_sha256(p)}' for p in sources]!r}".replace("'", '"'),
        'data_source = "data/published in the repository (every row carries its source_url)"',
        f"cases = {len(published.cases)}",
        f"skipped = {len(published.skipped)}",
        f"median_ape = {stats['median_ape']:.4f}",
        f"p90_ape = {stats['p90_ape']:.4f}",
        'method = "scipy least_squares, soft_l1 loss on log(predicted/published); weak prior: '
        f'{PRIOR_WEIGHT} x log-distance to {EFFICIENCY_PRIOR} (efficiencies) or to the listed prior (constants)"',
        "",
    ]
    for name in FITTED_CONSTANTS:
        lines += [f"[constants.{name}]", f"value = {eff.constants[name]:.6g}", 'source = "fitted"', ""]
    for name, (value, source) in FIXED_CONSTANTS.items():
        lines += [f"[constants.{name}]", f"value = {value:.6g}", f'source = "{source}"', ""]
    for fam in sorted(eff.families):
        table = eff.families[fam]
        lines.append(f'[families."{fam}"]')
        lines += [f"{k} = {v:.4f}" for k, v in sorted(table.items())]
        note = "fitted" if fam in FITTED_FAMILIES else "not fitted"
        lines += [f'note = "{note}"', ""]
    lines.append("[like]  # families without calibration data: assumed to behave like these")
    lines += [f'{k} = "{v}"' for k, v in sorted(eff.like.items())]
    return "\n".join(lines) + "\n"


def calibrate(paths: list[Path], start: Efficiency, out: Path | None = None) -> tuple[Efficiency, list[Row]]:
    """Fit on the CSVs, write the constants file (default: the package's), return the fit and its rows."""
    published = Published()
    for p in paths:
        part = read_any(p)
        published.cases += part.cases
        published.skipped += part.skipped
    eff = fit(published, start)
    rows = check(published, eff)
    (out or calibration_path()).write_text(to_toml(eff, paths, summary(rows), published), encoding="utf-8")
    return eff, rows

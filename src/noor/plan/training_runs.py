"""Published training runs (data/published/training_runs.csv) and the MFU model fitted on them.

Each run's MFU is derived from what its source states, in the order the CSV gives it:
  - model TFLOP/s per chip (Llama 3's Table 4, OPT):        MFU = TFLOP/s / bf16 peak;
  - tokens/s per chip (LLaMA 65B):                           MFU = 6 N x tokens/s / bf16 peak;
  - chip-hours for the whole run (Llama 2 and 3 model cards): MFU = 6 N D / (chip-hours x 3600 x bf16 peak).
Peaks are the catalog's dense BF16 figures (noor.catalog chips.toml).

The MFU model (`--mfu auto`): log MFU = a + b x log2(bf16 peak / 312 TFLOP/s), least squares over the runs.
A faster chip is harder to keep fed (the same interconnect and kernels get relatively slower), so its MFU is
lower: the published runs say so (A100 runs 0.41-0.48, H100 runs 0.14-0.44). With two chip generations in the
data the slope is in effect an A100 vs H100 step; for other chips it extrapolates that trend in peak FLOP/s,
an assumption until runs on them are published. Model size was tried as a second feature: it made the
held-out error worse (docs/plan.md gives both).
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from noor import catalog
from noor.plan.errors import PlanError

# the published runs live in the repository beside the other published figures (data/published; a source checkout)
RUNS_CSV = Path(__file__).resolve().parents[3] / "data" / "published" / "training_runs.csv"
REFERENCE_TFLOPS = 312.0  # A100's dense BF16 peak: the feature is 0 there
TARGET_MEDIAN_ERROR = 0.20  # issue #31: held-out median error of the training plan vs published runs
MFU_BOUNDS = (0.05, 0.7)  # a prediction is kept within what any published dense run reached


@dataclass(frozen=True)
class Run:
    name: str
    params_b: float
    tokens: float
    chip: str
    num_chips: int | None
    chip_hours: float | None
    days: float | None
    mfu: float  # derived from the source's own figures (module docstring)
    basis: str  # which figure the MFU came from
    source_url: str

    @property
    def peak_tflops(self) -> float:
        return peak_tflops(self.chip)


def peak_tflops(chip_id: str) -> float:
    chip = catalog.chip(chip_id)
    if chip.bf16_tflops is None:
        raise PlanError("chip", chip_id, "has no published dense BF16 peak (chips.toml bf16_tflops)")
    return chip.bf16_tflops


def _float(text: str) -> float | None:
    return float(text) if text.strip() else None


def _run(row: dict[str, str]) -> Run:
    params_b, tokens, chip = float(row["params_b"]), float(row["tokens"]), row["chip"]
    peak = peak_tflops(chip) * 1e12
    tflops, rate, hours = (_float(row[k]) for k in ("model_tflops_per_chip", "tokens_per_s_per_chip", "chip_hours"))
    if tflops is not None:
        mfu, basis = tflops * 1e12 / peak, f"{tflops:g} model TFLOP/s per chip"
    elif rate is not None:
        mfu, basis = 6 * params_b * 1e9 * rate / peak, f"{rate:g} tokens/s per chip"
    elif hours is not None:
        mfu, basis = 6 * params_b * 1e9 * tokens / (hours * 3600 * peak), f"{hours:,.0f} chip-hours"
    else:
        raise ValueError(f"{row['run']}: needs model_tflops_per_chip, tokens_per_s_per_chip or chip_hours")
    chips = _float(row["num_chips"])
    return Run(
        row["run"],
        params_b,
        tokens,
        chip,
        int(chips) if chips else None,
        hours,
        _float(row["days"]),
        mfu,
        basis,
        row["source_url"],
    )


@cache
def load(path: Path = RUNS_CSV) -> tuple[Run, ...]:
    with path.open(encoding="utf-8", newline="") as f:
        return tuple(_run(row) for row in csv.DictReader(f))


def _features(peak: float) -> list[float]:
    return [1.0, math.log2(peak / REFERENCE_TFLOPS)]


@dataclass(frozen=True)
class MfuModel:
    coef: tuple[float, ...]
    runs: tuple[str, ...]  # the runs it was fitted on

    def predict(self, chip_id: str) -> float:
        log_mfu = float(np.dot(self.coef, _features(peak_tflops(chip_id))))
        return min(max(math.exp(log_mfu), MFU_BOUNDS[0]), MFU_BOUNDS[1])


def fit(runs: tuple[Run, ...]) -> MfuModel:
    x = np.array([_features(r.peak_tflops) for r in runs])
    y = np.array([math.log(r.mfu) for r in runs])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return MfuModel(tuple(float(c) for c in coef), tuple(r.name for r in runs))


@cache
def mfu_model() -> MfuModel:
    """The model `--mfu auto` uses: fitted on every published run."""
    return fit(load())


@dataclass(frozen=True)
class HeldOut:
    run: Run
    predicted_mfu: float

    @property
    def time_error(self) -> float:
        """Predicted training time over the published one, minus 1 (time = FLOPs / (chips x peak x MFU))."""
        return self.run.mfu / self.predicted_mfu - 1


def leave_one_out(runs: tuple[Run, ...] | None = None) -> list[HeldOut]:
    """Each run predicted by the model fitted on all the others."""
    runs = runs if runs is not None else load()
    return [HeldOut(r, fit(tuple(o for o in runs if o is not r)).predict(r.chip)) for r in runs]


def median_error(rows: list[HeldOut]) -> float:
    return statistics.median(abs(h.time_error) for h in rows)


def check_markdown(rows: list[HeldOut]) -> str:
    """The held-out table docs/plan.md carries (`noor plan train --check`)."""
    model = mfu_model()
    lines = [
        "| run | chip | chips | params B | tokens | published from | published MFU | held-out MFU | time error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for h in rows:
        r = h.run
        lines.append(
            f"| {r.name} | {r.chip} | {r.num_chips or '-'} | {r.params_b:g} | {r.tokens:.3g} | {r.basis} "
            f"| {r.mfu:.3f} | {h.predicted_mfu:.3f} | {h.time_error:+.0%} |"
        )
    med = median_error(rows)
    verdict = "meets" if med <= TARGET_MEDIAN_ERROR else "misses"
    lines += [
        "",
        f"Leave-one-out median |time error| over {len(rows)} runs: {med:.1%} ({verdict} the "
        f"{TARGET_MEDIAN_ERROR:.0%} target). Fitted on all runs: log MFU = {model.coef[0]:.3f} "
        f"{model.coef[1]:+.3f} x log2(bf16 peak / {REFERENCE_TFLOPS:g} TFLOP/s).",
    ]
    return "\n".join(lines) + "\n"

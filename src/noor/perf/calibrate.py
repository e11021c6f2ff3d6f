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
from noor.perf.efficiency import KERNEL_CLASSES, Efficiency, calibration_path
from noor.perf.estimate import estimate
from noor.perf.published import Case, Published, read_any

FITTED_FAMILIES = ("hopper", "hopper-h20", "ampere", "ada", "tpu")
FA3_FAMILIES = ("hopper", "hopper-h20")
# Efficiencies one parameter holds for several (family, kernel class) pairs, with the reason.
SHARED_EFFICIENCIES: dict[str, tuple[tuple[str, str], ...]] = {
    # "conv" is the VAE decoder's class (a denoiser's convs run as GEMMs): no published row times a decode alone,
    # so a family's conv share is seen only through the part of a multi-chip run that does not shrink with the
    # chips, which also holds what the model does not count (a pipeline's face or image encoders, sequence-parallel
    # overheads). Fitted per family, Hopper's fell to 1.6% of peak on the 2026-12-05 data (ConsisID's H100 rows and
    # MLPerf's SDXL decode) while Ampere's stood at 39% and the H20's at 44%: priced that way an H100 decodes
    # LTX-Video's VAE 13x slower than before, which no run shows. Every NVIDIA family decodes with the same eager
    # PyTorch and cuDNN kernels, so one share of bf16 peak for all.
    "cuda.conv": tuple((fam, "conv") for fam in ("hopper", "hopper-h20", "ampere", "ada")),
    # the TPU family has two rows (MLPerf SDXL on v5e and v6e), which cannot tell three kernel classes apart: one
    # share of peak for all of them
    "tpu.all": (("tpu", "linear"), ("tpu", "attention"), ("tpu", "conv")),
}
ACTIVATION_PASSES_COUNTED = 190.0  # see activation_passes_eager below
FITTED_CONSTANTS = {  # name: (prior, lower, upper)
    # GEMM rows (tokens) at which a linear layer runs at half its large-batch rate. Only FLUX's 4608-token and SDXL's
    # rows see it (video models' tens of thousands saturate); held out without FLUX, an unbounded fit took it to
    # ~3000 and Hopper's linear share to 0.3, i.e. a 3072-wide bf16 GEMM of 3000 rows at half speed, which no cuBLAS
    # measurement shows (an H100 fills its 132 SMs with 128x256 tiles from ~1400 rows). Bounds 32..2048.
    "linear_half_tokens": (256.0, 32.0, 2048.0),
    # head width at which attention reaches half its wide-head rate (see estimate._Device.attention_s): an H100's
    # 989 TFLOPS of bf16 MMA against ~3.9 T exponentials/s (16 per SM per clock, 132 SMs, 1.83 GHz; FlashAttention-3
    # section 3.1) gives 989 / (4 x 3.9) ~ 63; an A100's 312 against 2.4 T gives ~32. One shared value, prior 48.
    "attention_half_head_dim": (48.0, 4.0, 512.0),
    # an eager DiT block reads and writes activation-sized tensors many times (norms with fp32 casts,
    # modulation, rotary, gates, residuals): diffusers' WanTransformerBlock dispatches ~190 activation-sized
    # passes of bytes outside its matmuls (tests/perf/test_workload.py counts them with TorchDispatchMode).
    # What reaches HBM is at most that (an L2 cache keeps some); the upper bound is the count plus a margin
    # for families whose blocks do more, so the fit stays a traffic count, not a fudge. It was 64 until the
    # count showed the fit pinned there (2026-12-05).
    "activation_passes_eager": (64.0, 1.0, ACTIVATION_PASSES_COUNTED * 1.3),
    "activation_passes_compiled": (8.0, 1.0, ACTIVATION_PASSES_COUNTED * 1.3),
    "link_efficiency": (0.6, 0.05, 1.0),
    # the host CPU running a text encoder in bf16 (Wan's --t5_cpu): fitted since 2026-12-05, when it was an assumed
    # 1 TFLOPS that left the RTX 4090 rows' fixed time to the VAE. PyTorch's bf16 GEMM on a CPU without AMX runs
    # at a few hundred GFLOPS, a 2-socket AMX server at several TFLOPS: prior 1, bounds 0.05..10.
    "host_tflops": (1.0, 0.05, 10.0),
}
FIXED_CONSTANTS = {  # name: (value, source)
    "attention_half_keys": (
        300.0,
        "FlashAttention-2's forward at 512 keys runs at 60-75% of its 16k-key rate on A100 and H100 (Dao 2023,"
        " figs. 4-5): half rate near 200-350 keys. Fixed since 2026-12-05: the rows see it only through SDXL's"
        " 77-key cross-attention, and the fit took it to its bound (1024) to absorb the UNet's misfit",
    ),
    "memory_efficiency": (0.8, "assumption: STREAM-like copies reach about 80% of HBM peak on recent GPUs"),
    "launch_overhead_s": (5e-6, "assumption: CUDA kernel launch + PyTorch dispatch, a few microseconds per op"),
    "collective_latency_s": (2e-5, "assumption: NCCL small-message all-to-all latency within a node, ~20 us"),
    "host_link_gbps": (25.0, "assumption: achieved host<->GPU copy over PCIe Gen4/Gen5 x16 with pinned memory"),
}
EFFICIENCY_PRIOR = 0.5  # where an efficiency rests when the data say nothing about it, unless its class has one:
EFFICIENCY_PRIORS = {  # kernel class: the share of peak its kernels typically reach, with where that comes from
    # cuBLAS/cuBLASLt bf16 GEMMs of a few thousand rows reach 70-80% of dense peak on A100 and H100 (NVIDIA's
    # published cuBLAS figures; Dao 2023 quotes ~70% for well-tuned GEMMs on A100)
    "linear": 0.75,
    # FlashAttention-2's forward: 50-73% of peak on A100, ~35% on H100 (Dao 2023, fig. 4-5); FA3 ~75% on H100
    # (Shah et al. 2024)
    "attention": 0.5,
    "attention_fa3": 0.6,
    # an fp32 VAE decoder: TF32 convs at half the bf16 rate, with GroupNorm between them
    "conv": 0.25,
}
EFFICIENCY_BOUNDS = (0.02, 1.0)  # a share of the chip's peak
# a later software release's speed-up over the first one seen for a family: prior 1 (no change); MLPerf rounds
# six months apart have moved SDXL on the same H100 by a few percent to ~1.3x, so 0.5..2 is loose
SOFTWARE_PRIOR = (1.0, 0.5, 2.0)
# residual weight of the prior per parameter, in log units. 0.15 until 2026-12-05; with 0.15 a parameter only one
# model pins (Hopper's linear share by FLUX) ran to its bound once that model was held out. Chosen with POOL_WEIGHT
# from {0.15, 0.3, 0.6} x {0.3, 1.0} looking at the leave-one-model-out table (docs/perf.md says so): 0.6 let the
# priors override the data (MLPerf v4.1 fitted slower than v4.0 on the same chips).
PRIOR_WEIGHT = 0.3
# Partial pooling: each family's efficiency of a kernel class is also pulled towards the mean over the fitted
# families (log units). A family's rows separate its linear from its attention share only where its models mix the
# two differently: held out, FLUX (the one linear-bound model on Hopper) took Hopper's linear share from 1.0 to
# 0.3, the other Hopper rows being attention- or elementwise-bound. Kernel libraries reach similar shares of peak
# on every recent GPU (cuBLAS GEMMs 70-90%), so a family the data do not pin borrows its peers' share instead.
# The weight: 1 left FLUX held out at 34% (Hopper linear 0.38 without it); 3 holds a family within ~30% of its
# peers unless its own rows insist (chosen with PRIOR_WEIGHT, looking at the leave-one-model-out table).
POOLED_KERNELS = ("linear", "attention")
POOL_WEIGHT = 3.0


@dataclass
class Row:
    case: Case
    predicted: float
    error: float  # (predicted - published) / published


def predict_case(case: Case, eff: Efficiency) -> float:
    model, chip = catalog.model(case.model), catalog.chip(case.chip)
    e = estimate(model, case.shape, chip, case.plan, eff)
    speedup = eff.software_speedup(chip.family, case.software)
    if case.per_step:
        return e.stage("denoise").detail["step_s"] / speedup
    latency = sum(s.latency_s for s in e.stages) / speedup  # also when memory says no: the published run did run
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


def software_releases(published: Published) -> dict[str, list[str]]:
    """family -> the software releases its rows name, oldest first; the first is the reference (factor 1)."""
    seen: dict[str, set[str]] = {}
    for case in published.cases:
        if case.software:
            seen.setdefault(catalog.chip(case.chip).family, set()).add(case.software)
    return {fam: sorted(releases) for fam, releases in sorted(seen.items())}


# Efficiencies whose upper bound is not 1, with the reason. An efficiency is measured against the chip's
# quoted peak; where that peak is the wrong one for what the kernels run, the fit shows it by leaving 1.
EFFICIENCY_UPPER = {
    # chips.csv's Ada peaks (RTX 4090 165 TFLOPS, L40 181) are FP16/BF16 tensor rates with FP32 accumulation
    # from secondary sources (waredb, xDiT docs); the fit pinned ada.linear at 1.0 with the 2026-12-05 data, i.e.
    # the Ada rows run faster than those peaks allow. 2.0 is the FP16-accumulate rate's ratio (chips.csv notes).
    "ada.linear": 2.0,
    # fused attention accumulates in FP32 too: the same quoted peak, the same ratio
    "ada.attention": 2.0,
    # the H20's 148 TFLOPS is its capped MMA rate (LOW reliability, chips.csv); its exponential units are a whole
    # Hopper die's, so the shared head-width term (an H100's MMA-to-exponential ratio) takes too much from it and
    # FlashAttention-3 on it appears at 100% of that peak; the H100's ratio of FA3 to its FA2 share (~1.5) bounds it
    "hopper-h20.attention_fa3": 1.5,
}
# Efficiencies whose lower bound is not EFFICIENCY_BOUNDS[0], with the reason (none since "cuda.conv" is shared).
EFFICIENCY_LOWER: dict[str, float] = {}


def bounds(name: str) -> tuple[float, float, float]:
    """(prior, lower, upper) of a fitted parameter, by its packed name."""
    if name in FITTED_CONSTANTS:
        return FITTED_CONSTANTS[name]
    if name.startswith("software."):
        return SOFTWARE_PRIOR
    lower = EFFICIENCY_LOWER.get(name, EFFICIENCY_BOUNDS[0])
    prior = EFFICIENCY_PRIORS.get(name.split(".", 1)[1], EFFICIENCY_PRIOR)
    return (prior, lower, EFFICIENCY_UPPER.get(name, EFFICIENCY_BOUNDS[1]))


def _pack(eff: Efficiency, published: Published) -> tuple[list[str], np.ndarray]:
    """The fitted parameters' names and log values: `eff`'s where it has them, else their priors."""
    shared = {pair for pairs in SHARED_EFFICIENCIES.values() for pair in pairs}
    names = [f"{fam}.{k}" for fam in FITTED_FAMILIES for k in KERNEL_CLASSES if (fam, k) not in shared]
    names += list(SHARED_EFFICIENCIES)
    names += [f"{fam}.attention_fa3" for fam in FA3_FAMILIES]  # FA3 runs on Hopper only; the H20 is a Hopper die
    names += list(FITTED_CONSTANTS)
    names += [f"software.{fam}.{r}" for fam, releases in software_releases(published).items() for r in releases[1:]]
    values = []
    for name in names:
        prior = bounds(name)[0]
        if name in SHARED_EFFICIENCIES:
            pairs = SHARED_EFFICIENCIES[name]
            logs = [math.log(eff.families.get(fam, {}).get(k, prior)) for fam, k in pairs]
            values.append(math.exp(statistics.fmean(logs)))
        elif name.startswith("software."):
            _, fam, release = name.split(".", 2)
            values.append(eff.software.get(fam, {}).get(release, prior))
        elif "." in name:
            fam, k = name.split(".", 1)
            values.append(eff.families.get(fam, {}).get(k, prior))
        else:
            values.append(eff.constants.get(name, prior))
    return names, np.log(np.array(values, dtype=float))


def _unpack(names: list[str], x: np.ndarray, base: Efficiency) -> Efficiency:
    families = {k: dict(v) for k, v in base.families.items()}
    constants = dict(base.constants)
    software: dict[str, dict[str, float]] = {}
    for name, value in zip(names, np.exp(x), strict=True):
        if name.startswith("software."):
            _, fam, release = name.split(".", 2)
            software.setdefault(fam, {})[release] = float(value)
        elif name in SHARED_EFFICIENCIES:
            for fam, k in SHARED_EFFICIENCIES[name]:
                families.setdefault(fam, {})[k] = float(value)
        elif "." in name:
            fam, k = name.split(".", 1)
            families.setdefault(fam, {})[k] = float(value)
        else:
            constants[name] = float(value)
    for k, (v, _) in FIXED_CONSTANTS.items():
        constants[k] = v
    return replace(base, families=families, constants=constants, software=software)


def fitted_parameters(eff: Efficiency, published: Published) -> dict[str, float]:
    names, x = _pack(eff, published)
    return dict(zip(names, np.exp(x).tolist(), strict=True))


def at_bound(eff: Efficiency, published: Published, tolerance: float = 0.005) -> list[str]:
    """Fitted parameters that ended on a bound (within `tolerance` in log units): each is a model to fix."""
    out = []
    for name, value in fitted_parameters(eff, published).items():
        _, lo, hi = bounds(name)
        if min(abs(math.log(value / lo)), abs(math.log(hi / value))) < tolerance:
            out.append(f"{name} = {value:.4g} (bounds {lo:g}..{hi:g})")
    return out


def from_priors(base: Efficiency) -> Efficiency:
    """`base` with every fitted value taken back to its prior: where a fit starts, so that the same data give the
    same constants whatever calibration.toml held before (a least-squares fit can end in another valley)."""
    families = {fam: dict(table) for fam, table in base.families.items() if fam not in FITTED_FAMILIES}
    constants = {k: v for k, v in base.constants.items() if k not in FITTED_CONSTANTS}
    return replace(base, families=families, constants=constants, software={})


def fit(published: Published, start: Efficiency) -> Efficiency:
    """Fit from `start`'s values (`from_priors` for a fit that does not depend on an earlier one)."""
    from scipy.optimize import least_squares

    names, x0 = _pack(start, published)
    priors, lower, upper = [], [], []
    for n in names:
        prior, lo, hi = bounds(n)
        priors.append(math.log(prior))
        lower.append(math.log(lo))
        upper.append(math.log(hi))
    x0 = np.clip(x0, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
    weights = np.sqrt([c.weight for c in published.cases])

    pools = _pools(names)

    def residuals(x: np.ndarray) -> np.ndarray:
        eff = _unpack(names, x, start)
        logs = [math.log(predict_case(c, eff) / c.seconds) for c in published.cases]
        pooled = [POOL_WEIGHT * (x[i] - x[pool].mean()) for pool in pools for i in pool]
        return np.concatenate([weights * np.array(logs), PRIOR_WEIGHT * (x - np.array(priors)), pooled])

    result = least_squares(
        residuals,
        x0,
        bounds=(lower, upper),
        loss="soft_l1",
        f_scale=0.15,
        x_scale=1.0,
        jac_sparsity=_sparsity(names, published),
    )
    return _unpack(names, result.x, start)


def _sparsity(names: list[str], published: Published) -> np.ndarray:
    """Which parameters each residual can move: a row's chip family's own and the shared ones; a prior its own.

    Families do not share rows, so scipy perturbs several families' parameters in one evaluation."""
    own = np.zeros((len(published.cases), len(names)), dtype=bool)
    for i, case in enumerate(published.cases):
        fam = catalog.chip(case.chip).family
        for j, name in enumerate(names):
            head = name.split(".", 1)[0]
            own[i, j] = (
                "." not in name
                or head == fam
                or any(f == fam for f, _ in SHARED_EFFICIENCIES.get(name, ()))
                or name.startswith(f"software.{fam}.")
            )
    pooled = np.zeros((sum(len(p) for p in _pools(names)), len(names)), dtype=bool)
    row = 0
    for pool in _pools(names):
        for _ in pool:
            pooled[row, pool] = True
            row += 1
    return np.vstack([own, np.eye(len(names), dtype=bool), pooled]).astype(int)


def _pools(names: list[str]) -> list[list[int]]:
    """Per pooled kernel class, the indices of the fitted families' own parameters for it."""
    return [[names.index(f"{fam}.{k}") for fam in FITTED_FAMILIES if f"{fam}.{k}" in names] for k in POOLED_KERNELS]


HOLDOUTS = ("model", "chip")


def holdout(published: Published, start: Efficiency, by: str) -> list[Row]:
    """Leave one group out: for each model (or chip), fit on every other row and predict that group's rows.

    What `noor models add --perf-id` relies on is the held-out error: a new model's rows were never fitted."""
    if by not in HOLDOUTS:
        raise ValueError(f"holdout must be one of {', '.join(HOLDOUTS)}, got {by!r}")
    groups: dict[str, list[Case]] = {}
    for case in published.cases:
        groups.setdefault(getattr(case, by), []).append(case)
    rows: list[Row] = []
    for _, held in sorted(groups.items()):
        rest = Published(cases=[c for c in published.cases if getattr(c, by) != getattr(held[0], by)])
        rows += check(Published(cases=held), fit(rest, start))
    return rows


def by_group(rows: list[Row], by: str) -> dict[str, dict[str, float]]:
    """Per model (or chip): rows and median absolute error."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(getattr(r.case, by), []).append(r)
    return {k: summary(v) for k, v in sorted(groups.items())}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def to_toml(
    eff: Efficiency,
    sources: list[Path],
    stats: dict[str, float],
    published: Published,
    held: dict[str, list[Row]] | None = None,
) -> str:
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
    for by, rows in (held or {}).items():
        lines.append(f"[holdout.{by}]  # leave one {by} out: rows and median absolute error of the held-out fit")
        for name, s in by_group(rows, by).items():
            lines.append(f'"{name}" = {{ rows = {s["rows"]:.0f}, median_ape = {s["median_ape"]:.4f} }}')
        total = summary(rows)
        lines += [f'"*" = {{ rows = {total["rows"]:.0f}, median_ape = {total["median_ape"]:.4f} }}', ""]
    for name in FITTED_CONSTANTS:
        lines += [f"[constants.{name}]", f"value = {eff.constants[name]:.6g}", 'source = "fitted"', ""]
    for name, (value, source) in FIXED_CONSTANTS.items():
        lines += [f"[constants.{name}]", f"value = {value:.6g}", f'source = "{source}"', ""]
    for fam in sorted(eff.software):
        lines.append(f'[software."{fam}"]  # speed-up of each later release over the first in the data (fitted)')
        lines += [f'"{k}" = {v:.4f}' for k, v in sorted(eff.software[fam].items())]
        lines.append("")
    for fam in sorted(eff.families):
        table = eff.families[fam]
        lines.append(f'[families."{fam}"]')
        lines += [f"{k} = {v:.4f}" for k, v in sorted(table.items())]
        note = "fitted" if fam in FITTED_FAMILIES else "not fitted"
        lines += [f'note = "{note}"', ""]
    lines.append("[like]  # families without calibration data: assumed to behave like these")
    lines += [f'{k} = "{v}"' for k, v in sorted(eff.like.items())]
    return "\n".join(lines) + "\n"


def read_all(paths: list[Path]) -> Published:
    published = Published()
    for p in paths:
        part = read_any(p)
        published.cases += part.cases
        published.skipped += part.skipped
    return published


def calibrate(
    paths: list[Path], start: Efficiency, out: Path | None = None, holdouts: tuple[str, ...] = ()
) -> tuple[Efficiency, list[Row], dict[str, list[Row]]]:
    """Fit on the CSVs, hold out each model (or chip) if asked, write the constants file (default: the package's)."""
    published = read_all(paths)
    start = from_priors(start)
    eff = fit(published, start)
    rows = check(published, eff)
    held = {by: holdout(published, start, by) for by in holdouts}  # from the priors too: not from a fit that saw them
    (out or calibration_path()).write_text(to_toml(eff, paths, summary(rows), published, held), encoding="utf-8")
    return eff, rows, held

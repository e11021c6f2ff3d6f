"""Published measurements (the shared CSV formats) turned into perf-model cases.

Each row becomes a `Case` (model, chip, shape, plan, measured seconds) or is set aside with the
reason. The reading rules are the rows' own notes (see the folder's README.md): per-step rows are
per-step, MLPerf samples/s per accelerator become seconds per image at a batch of 8.
"""

from __future__ import annotations

import csv
import re
import statistics
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from noor.perf.parallelism import ParallelPlan
from noor.perf.shape import Shape

ALIASES_FILE = "aliases.toml"  # the names published tables use -> catalog ids, with sources
MLPERF_BATCH = 8  # assumption: per-accelerator batch of NVIDIA's SDXL harness configs; large enough to saturate


@dataclass
class Case:
    label: str
    model: str
    chip: str
    shape: Shape
    plan: ParallelPlan
    seconds: float
    per_step: bool = False  # compare one denoising step, not the whole request
    per_image: bool = False  # seconds per image of a batch (throughput)
    weight: float = 1.0
    source: str = ""
    software: str | None = None  # the harness release a row was measured with (an MLPerf round), if it says


SkipKind = Literal["unknown name", "not in catalog", "unstated", "not modelled"]


@dataclass
class Skipped:
    label: str
    reason: str
    kind: SkipKind = "unstated"


@cache
def aliases() -> dict[str, dict[str, dict[str, str]]]:
    """{"chips": {published name: {"chip": id or "", "why", "source"}}, "models": {...}} from aliases.toml."""
    raw = tomllib.loads((resources.files("noor.perf") / ALIASES_FILE).read_text(encoding="utf-8"))
    return {"chips": raw.get("chips", {}), "models": raw.get("models", {})}


def resolve(kind: Literal["chips", "models"], name: str) -> tuple[str | None, Skipped | None]:
    """A published name's catalog id, or why its rows are set aside (an unknown name, or not in the catalog)."""
    entry = aliases()[kind].get(name.strip().lower())
    what = kind.removesuffix("s")
    if entry is None:
        return None, Skipped(
            "", f"unknown {what} name {name.strip()!r} (add it to perf/{ALIASES_FILE})", "unknown name"
        )
    target = entry[what]
    if not target:
        return None, Skipped(
            "", f"{what} {name.strip()!r} not in the catalog: {entry.get('why', '')}", "not in catalog"
        )
    return target, None


@dataclass
class Published:
    cases: list[Case] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _degrees(par: str, gpus: int) -> tuple[int, int, int] | str:
    """(ulysses, ring, cfg) from a parallelism description, or why it cannot be read."""
    p = par.lower()
    if gpus == 1:
        return 1, 1, 1
    if re.search(r"\btp\d", p):
        return "tensor parallelism is not modelled"
    found = {}
    for name, pattern in (
        ("u", r"ulysses(?:_size)?[=\- ](\d+)"),
        ("r", r"ring(?:_size)?[=\- ](\d+)"),
        ("c", r"cfg(?:_parallel)?[=\- ](\d+)"),
        ("p", r"pipefusion=(\d+)"),
        ("s", r"\bsp=?(\d+)"),
    ):
        m = re.search(pattern, p)
        if m:
            found[name] = int(m.group(1))
    u, r, c = found.get("u", 1) * found.get("s", 1), found.get("r", 1) * found.get("p", 1), found.get("c", 1)
    if u * r * c == gpus:
        return u, r, c
    if "usp" in p and not found:  # Wan's USP without a stated split: its README examples use Ulysses
        return gpus, 1, 1
    return f"degrees {u}x{r}x{c} do not multiply to {gpus} chips"


def read_measurements(path: Path) -> Published:
    out = Published()
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        label = f"m{i:03d} {row['model']} | {row['gpu']} x{row['num_gpus']} | {row['parallelism']}"[:110]
        model, model_skip = resolve("models", row["model"])
        chip, chip_skip = resolve("chips", row["gpu"])
        width, height, frames, steps = (_int(row[k]) for k in ("width", "height", "frames", "steps"))
        gpus = _int(row["num_gpus"]) or 1
        notes = (row["notes"] + " " + row["parallelism"]).lower()
        if skip := chip_skip or model_skip:
            out.skipped.append(Skipped(label, skip.reason, skip.kind))
            continue
        assert model is not None and chip is not None
        if not (width and height and frames and steps):
            out.skipped.append(Skipped(label, "resolution, frames or steps not stated in the source"))
            continue
        degrees = _degrees(row["parallelism"], gpus)
        if isinstance(degrees, str):
            out.skipped.append(Skipped(label, degrees, "not modelled"))
            continue
        par = row["parallelism"].lower()
        batch = int(m.group(1)) if (m := re.search(r"batch=(\d+)", par)) else 1
        precision = "fp8" if "fp8" in par else "bf16"
        compiled = "torch.compile" in par or "compile=torch" in par
        offload = "sequential" if "sequential cpu offload" in par else ("model" if "offload_model" in par else "none")
        per_step = "per-step latency" in notes
        u, r, c = degrees
        plan = ParallelPlan(
            gpus=gpus,
            ulysses=u,
            ring=r,
            cfg=c,
            precision=precision,  # type: ignore[arg-type]
            compiled=compiled,
            attention="fa3" if "flashattention3 on hopper" in notes and chip in ("h100-sxm", "h20") else "default",
            offload=offload,  # type: ignore[arg-type]
            shard_weights="fsdp" in par,
            text_encoder_on_cpu="t5_cpu" in par,
        )
        # approximate sources (the README's '~' rows) count half
        weight = 0.5 if "approximate" in notes else 1.0
        out.cases.append(
            Case(
                label=label,
                model=model,
                chip=chip,
                shape=Shape(width, height, frames if model not in ("flux.1-dev", "sana-1600m") else 1, steps, batch),
                plan=plan,
                seconds=float(row["seconds"]),
                per_step=per_step,
                weight=weight,
                source=row["source_url"],
            )
        )
    return out


def read_mlperf(path: Path) -> Published:
    """Closed-division Offline SDXL: one case per (round, accelerator), the median over submitters."""
    out = Published()
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            label = f"mlperf {row['round']} {row['accelerator']} {row['scenario']} {row['division']}"
            if row["scenario"] != "Offline" or row["division"] != "closed":
                continue  # Server is bound by a latency target; open division may change the model or steps
            chip, skip = resolve("chips", row["accelerator"])
            if skip:
                out.skipped.append(Skipped(label, skip.reason, skip.kind))
                continue
            assert chip is not None
            if "maxq" in row["system"].lower() or "maxq" in row["notes"].lower():
                continue  # power-capped systems: a different operating point
            per_acc = float(row["per_accelerator"]) if row["per_accelerator"] else None
            if per_acc:
                groups[(row["round"], chip)].append(per_acc)
    for (rnd, chip), values in sorted(groups.items()):
        nvidia = not chip.startswith("tpu")
        out.cases.append(
            Case(
                label=f"mlperf {rnd} sdxl offline {chip} (median of {len(values)})",
                model="sdxl",
                chip=chip,
                # MLPerf SDXL: 1024x1024, 20 Euler steps, guidance 8 (2 passes): mlcommons/inference text_to_image
                shape=Shape(1024, 1024, 1, 20, MLPERF_BATCH),
                # NVIDIA submits a TensorRT engine with an 8-bit (INT8/FP8) UNet (NVIDIA MLPerf v4.0 blog);
                # Google's TPU submissions run bf16 JAX/flax. Both are compiled graphs.
                plan=ParallelPlan(precision="fp8" if nvidia else "bf16", compiled=True),
                seconds=1.0 / statistics.median(values),
                per_image=True,
                source="https://github.com/mlcommons/inference_results_" + rnd,
                software=f"mlperf-{rnd}",  # each round ships a newer TensorRT and harness: a fitted factor
            )
        )
    return out


def read_any(path: Path) -> Published:
    """A CSV in either shared format, told apart by its header."""
    with path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    if "per_accelerator" in header:
        return read_mlperf(path)
    if "seconds" in header and "gpu" in header:
        return read_measurements(path)
    raise ValueError(f"{path}: not a published-measurements CSV (need measurements.csv or mlperf_sdxl.csv columns)")

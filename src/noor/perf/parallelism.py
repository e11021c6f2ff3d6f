"""How a request runs: on how many chips, split how (sequence parallel Ulysses/ring, CFG parallel),
at what precision, compiled or eager, with weights sharded or offloaded."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from noor.catalog import ModelArch
from noor.perf.shape import PerfError

Strategy = Literal["auto", "ulysses", "ring", "cfg", "hybrid"]
STRATEGIES: tuple[str, ...] = ("auto", "ulysses", "ring", "cfg", "hybrid")


@dataclass(frozen=True)
class ParallelPlan:
    gpus: int = 1
    strategy: Strategy = "auto"
    # Explicit degrees (all three, product = gpus) override the strategy.
    ulysses: int | None = None
    ring: int | None = None
    cfg: int | None = None
    precision: Literal["bf16", "fp8", "fp32"] | None = None  # None: the model's own (bf16, tiny: fp32)
    compiled: bool = False  # torch.compile / TensorRT: fused elementwise ops
    attention: Literal["default", "fa3"] = "default"  # fa3: FlashAttention-3 on Hopper
    offload: Literal["none", "model", "sequential"] = "none"
    shard_weights: bool = False  # FSDP: each chip holds 1/gpus of the denoiser's weights
    text_encoder_on_cpu: bool = False
    usd_per_hour: float | None = None  # None: the chip's catalog price

    def __post_init__(self) -> None:
        if not isinstance(self.gpus, int) or self.gpus < 1:
            raise PerfError("gpus", self.gpus, "must be a positive integer")
        if self.strategy not in STRATEGIES:
            raise PerfError("strategy", self.strategy, f"must be one of {', '.join(STRATEGIES)}")
        degrees = (self.ulysses, self.ring, self.cfg)
        if any(d is not None for d in degrees):
            if any(d is None or d < 1 for d in degrees):
                raise PerfError("ulysses/ring/cfg", degrees, "give all three degrees, each >= 1")
            if self.ulysses * self.ring * self.cfg != self.gpus:  # type: ignore[operator]
                raise PerfError("gpus", self.gpus, f"must equal ulysses x ring x cfg = {degrees}")
        if self.usd_per_hour is not None and self.usd_per_hour < 0:
            raise PerfError("usd_per_hour", self.usd_per_hour, "must be >= 0")

    @property
    def degrees(self) -> tuple[int, int, int] | None:
        if self.ulysses is None or self.ring is None or self.cfg is None:
            return None
        return self.ulysses, self.ring, self.cfg

    @classmethod
    def from_text(cls, text: str) -> ParallelPlan:
        """`ulysses=2`, `ring=2`, `cfg=2`, `ulysses=2,cfg=2`, ... -> a plan with all three degrees; `auto=K`: K
        chips, split as `estimate` finds fastest; `1`: one chip. The inverse of `text`."""
        name, _, value = text.partition("=")
        if name.strip() == "auto":
            if not value.strip().isdigit() or int(value) < 1:
                raise PerfError("parallel", text, "auto=K needs a chip count K >= 1")
            return cls(gpus=int(value), strategy="auto")
        degrees = {"ulysses": 1, "ring": 1, "cfg": 1}
        seen: set[str] = set()
        for part in [] if text.strip() == "1" else [p.strip() for p in text.split(",")]:
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in degrees or not value.strip().isdigit():
                raise PerfError(
                    "parallel", text, "expected strategy=degree[,strategy=degree] (ulysses, ring, cfg), or auto=K"
                )
            if name in seen:
                raise PerfError("parallel", text, f"{name} is given twice")
            seen.add(name)
            degrees[name] = int(value)
            if degrees[name] < 1:
                raise PerfError("parallel", text, f"{name} must be >= 1")
        u, r, c = degrees["ulysses"], degrees["ring"], degrees["cfg"]
        return cls(gpus=u * r * c, ulysses=u, ring=r, cfg=c)

    def text(self) -> str:
        """The `--parallel` text: `ulysses=2,cfg=2`; `auto=K` when the perf model splits each request; `1`: one."""
        if self.degrees is None:
            return f"auto={self.gpus}"
        parts = [f"{n}={d}" for n, d in zip(("ulysses", "ring", "cfg"), self.degrees, strict=True) if d > 1]
        return ",".join(parts) or "1"

    def label(self) -> str:
        if self.degrees is None:
            return f"{self.gpus} chip(s), {self.strategy}"
        u, r, c = self.degrees
        parts = [f"ulysses={u}" if u > 1 else "", f"ring={r}" if r > 1 else "", f"cfg={c}" if c > 1 else ""]
        return f"{self.gpus} chip(s)" + (": " + " x ".join(p for p in parts if p) if self.gpus > 1 else "")


def _factorisations(gpus: int) -> list[tuple[int, int, int]]:
    out = []
    for c in range(1, gpus + 1):
        if gpus % c:
            continue
        rest = gpus // c
        for u in range(1, rest + 1):
            if rest % u == 0:
                out.append((u, rest // u, c))
    return out


def candidates(plan: ParallelPlan, model: ModelArch) -> list[ParallelPlan]:
    """The concrete plans (all degrees set) a plan allows for this model; at least one, or PerfError."""
    if plan.degrees is not None:
        options = [plan.degrees]
    else:
        g = plan.gpus
        wanted = {
            "ulysses": [(g, 1, 1)],
            "ring": [(1, g, 1)],
            "cfg": [(1, 1, g)],
            "hybrid": [d for d in _factorisations(g) if sum(x > 1 for x in d) >= 2],
            "auto": _factorisations(g),
        }[plan.strategy]
        options = wanted
    valid, reasons = [], []
    for u, r, c in options:
        if c > model.guidance_passes:
            reasons.append(f"cfg={c} needs {c} guidance passes; {model.id} has {model.guidance_passes}")
        elif model.heads % u:
            reasons.append(f"ulysses={u} must divide {model.id}'s {model.heads} heads")
        else:
            valid.append(replace(plan, ulysses=u, ring=r, cfg=c))
    if not valid:
        reason = reasons[0] if reasons else "no split of the chips"
        raise PerfError("strategy", plan.strategy, f"no valid {plan.gpus}-chip split: {reason}")
    return valid

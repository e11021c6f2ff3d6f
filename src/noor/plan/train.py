"""`plan_training`: a training run on K chips: FLOPs, days at an MFU, energy, dollars, checkpoints, network.

    job = train.job_for_model("wan2.1-t2v-14b", videos=50e6)     # 50M clips at the model's default size
    job = train.job_for_params(70e9, tokens=2e12)                 # a dense transformer, 6 N D
    plan = train.plan_training(job, "h100-sxm", 4096, "auto", a)
    plan.days, plan.to_dict()

FLOPs (Kaplan et al. 2020; nanoGPT's MFU estimate): 6 x N x D for the dense parameters (forward 2 N D,
backward 4 N D), N the parameters each token passes through (a mixture of experts: the active share), D the
tokens the blocks see. For a catalog video or image model, D comes from its VAE compression and patching
(noor.perf.workload.latent_grid: 81 frames of 832x480 through Wan's 4x8x8 VAE and 1x2x2 patches = 21 x 30 x
52 = 32,760 tokens a clip), and self- and cross-attention, which 6 N D leaves out, are added: 3 x one
forward pass's attention FLOPs (noor.perf.workload.denoise_pass) per clip. Text encoders and the VAE are
frozen and their outputs cached before training (as Open-Sora and Wan's recipes do): not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from noor import catalog
from noor.catalog import UnknownId
from noor.perf.shape import PerfError, Shape
from noor.perf.workload import denoise_pass
from noor.plan import training_runs
from noor.plan.assumptions import Assumptions
from noor.plan.errors import PlanError
from noor.plan.site import check_chip, check_cooling, chip_tdp_w, site_pue

# Mixed-precision Adam: bf16 weights and gradients (2 + 2) plus fp32 master weights, momentum and variance
# (4 + 4 + 4) = 16 bytes a parameter (Rajbhandari et al., ZeRO, 2020, §3.1: "16Ψ bytes"). A checkpoint that
# can resume training holds the same state.
TRAIN_BYTES_PER_PARAM = 16
# A link's name by vendor, for the network tier a plan states
SCALEUP_LINK = {"nvidia": "NVLink", "amd": "Infinity Fabric", "google": "ICI", "aws": "NeuronLink"}


@dataclass(frozen=True)
class TrainingJob:
    """What is trained and on how much data."""

    params: float  # parameters held (all experts): memory and checkpoints
    active_params: float  # parameters each token passes through: FLOPs
    tokens: float  # tokens through the blocks (text included for a joint-attention model)
    attention_flops: float = 0.0  # forward + backward self- and cross-attention, all clips
    model: str | None = None
    clips: float | None = None  # clips (images, for an image model) the tokens come from
    tokens_per_clip: int | None = None
    clip_shape: str | None = None  # e.g. "832x480, 81 frames"
    notes: tuple[str, ...] = ()

    @property
    def dense_flops(self) -> float:
        return 6.0 * self.active_params * self.tokens

    @property
    def flops(self) -> float:
        return self.dense_flops + self.attention_flops


def _positive(value: float, field_name: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise PlanError(field_name, value, "must be > 0")
    return float(value)


def job_for_params(params: float, tokens: float) -> TrainingJob:
    """A dense model of `params` parameters on `tokens` tokens: 6 N D, attention not counted."""
    _positive(params, "params")
    _positive(tokens, "tokens")
    return TrainingJob(params, params, tokens, notes=("attention FLOPs are not counted without --model (6 N D only)",))


def job_for_model(model_id: str, tokens: float | None = None, videos: float | None = None) -> TrainingJob:
    """A catalog model on `videos` clips at its default size and frames, or on `tokens` tokens (clips of that
    size, as many as the tokens make)."""
    try:
        model = catalog.model(model_id)
    except UnknownId:
        raise PlanError("model", model_id, f"unknown; valid: {', '.join(catalog.model_ids())}") from None
    if (tokens is None) == (videos is None):
        raise PlanError("tokens", tokens, "give one of tokens or videos")
    shape = Shape.default(model)
    try:
        work = denoise_pass(model, shape, 1)  # one forward pass over one clip: what training sees per sample
    except PerfError as err:
        raise PlanError("model", model_id, str(err)) from None
    per_clip = work.tokens
    clips = _positive(videos, "videos") if videos is not None else _positive(tokens or 0.0, "tokens") / per_clip
    active = model.params_b * 1e9 * model.experts_active / model.experts_total
    frames = f", {shape.num_frames} frames" if model.kind == "video" else ""
    notes = [
        f"{'videos' if model.kind == 'video' else 'images'} at {model.id}'s default size: "
        f"{shape.width}x{shape.height}{frames} = {per_clip:,} tokens each (VAE {model.vae.spatial}x spatial, "
        f"{model.vae.temporal}x temporal; patches {'x'.join(map(str, model.patch))})",
        "text encoders and VAE frozen, their outputs cached: not counted",
    ]
    if model.experts_total > 1:
        notes.append(
            f"{model.experts_active} of {model.experts_total} experts active per token: FLOPs on "
            f"{active / 1e9:g}B of {model.params_b:g}B parameters"
        )
    return TrainingJob(
        params=model.params_b * 1e9,
        active_params=active,
        tokens=clips * per_clip,
        attention_flops=3.0 * (work.attention_flops + work.cross_flops) * clips,
        model=model.id,
        clips=clips,
        tokens_per_clip=per_clip,
        clip_shape=f"{shape.width}x{shape.height}{frames}",
        notes=tuple(notes),
    )


def replica_chips(params: float, chip_id: str) -> int:
    """Chips one copy of the training state needs: params x 16 bytes over the chip's memory (activations
    not counted: a lower bound)."""
    hbm_gb = catalog.chip(chip_id).hbm_gb
    if not hbm_gb:
        raise PlanError("chip", chip_id, "has no published memory (chips.toml hbm_gb)")
    return max(1, math.ceil(params * TRAIN_BYTES_PER_PARAM / (hbm_gb * 1e9)))


def network_tier(chip_id: str, replica: int) -> str:
    chip = catalog.chip(chip_id)
    link = SCALEUP_LINK.get(chip.vendor.lower(), "scale-up link")
    speed = f" at {chip.scaleup_gbps:g} GB/s a chip" if chip.scaleup_gbps else ""
    where = (
        f"one replica ({replica} chips) fits in one {link} domain"
        if replica <= chip.scaleup_domain
        else f"one replica ({replica} chips) spans {math.ceil(replica / chip.scaleup_domain)} {link} domains: "
        "pipeline or sharded state crosses the scale-out fabric"
    )
    return (
        f"scale-up: {link} domains of {chip.scaleup_domain} chips{speed}; scale-out: a rail-optimised "
        "InfiniBand/RoCE fabric, 400 Gb/s a chip as Llama 3's clusters (assumed; its power is in "
        f"it.it_per_server); {where}"
    )


@dataclass
class TrainPlan:
    job: TrainingJob
    chip: str
    chips: int
    mfu: float
    mfu_source: str
    cooling: str
    checkpoints_kept: int
    assumptions: Assumptions
    replica: int
    peak_tflops: float
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.job.flops / (self.chips * self.peak_tflops * 1e12 * self.mfu)

    @property
    def days(self) -> float:
        return self.seconds / 86400

    @property
    def chip_hours(self) -> float:
        return self.chips * self.seconds / 3600

    def energy_kwh(self) -> float:
        """Every chip at TDP for the whole run, with its server's and the IT room's share, times the PUE."""
        a = self.assumptions
        watts = (
            chip_tdp_w(a, self.chip)
            * a.num("it.server_per_accelerator")
            * a.num("it.it_per_server")
            * site_pue(a, self.cooling)
            * a.num("it.average_draw")
        )
        return self.chips * watts * self.seconds / 3600 / 1e3

    def to_dict(self) -> dict[str, Any]:
        a, job = self.assumptions, self.job
        kwh = self.energy_kwh()
        checkpoint_gb = job.params * TRAIN_BYTES_PER_PARAM / 1e9
        keys = [
            "pue",
            f"pue.{self.cooling}",
            "pue.climate_adder",
            "it.server_per_accelerator",
            "it.it_per_server",
            "it.average_draw",
            "power.usd_per_kwh",
            f"chip_tdp_w.{self.chip}",
        ]
        listed = [a.entry(k).to_dict() for k in keys]
        listed[0] = {**listed[0], "value": site_pue(a, self.cooling)} if listed[0]["value"] is None else listed[0]
        return {
            "kind": "train",
            "inputs": {
                "model": job.model,
                "params": job.params,
                "active_params": job.active_params,
                "tokens": job.tokens,
                "videos": job.clips,
                "clip": job.clip_shape,
                "chip": self.chip,
                "chips": self.chips,
                "mfu": self.mfu_source,
                "cooling": self.cooling,
                "checkpoints_kept": self.checkpoints_kept,
                "assumptions": listed,
            },
            "flops": {
                "dense": job.dense_flops,
                "attention": job.attention_flops,
                "total": job.flops,
                "tokens_per_clip": job.tokens_per_clip,
            },
            "time": {
                "mfu": self.mfu,
                "bf16_peak_tflops": self.peak_tflops,
                "days": self.days,
                "chip_hours": self.chip_hours,
            },
            "energy": {"kwh": kwh, "mwh": kwh / 1e3, "usd": kwh * a.num("power.usd_per_kwh")},
            "cost": {
                "usd_per_chip_hour": catalog.chip(self.chip).usd_per_hour,
                "rental_usd": self.chip_hours * catalog.chip(self.chip).usd_per_hour,
            },
            "checkpoints": {
                "bytes_per_param": TRAIN_BYTES_PER_PARAM,
                "gb_each": checkpoint_gb,
                "kept": self.checkpoints_kept,
                "tb_total": checkpoint_gb * self.checkpoints_kept / 1e3,
            },
            "memory": {
                "replica_chips": self.replica,
                "hbm_gb": catalog.chip(self.chip).hbm_gb,
                "replicas": self.chips // self.replica,
            },
            "network": network_tier(self.chip, self.replica),
            "notes": [*job.notes, *self.notes],
        }


def resolve_mfu(mfu: float | str, chip_id: str) -> tuple[float, str]:
    """(MFU, where it came from): a number in (0, 1], or `auto` (fitted on published runs)."""
    if mfu == "auto":
        value = training_runs.mfu_model().predict(chip_id)
        return value, f"auto: {value:.3f}, fitted on {len(training_runs.load())} published runs (training_runs.csv)"
    try:
        value = float(mfu)
    except (TypeError, ValueError):
        raise PlanError("mfu", mfu, "must be a number in (0, 1] or auto") from None
    if not math.isfinite(value) or not 0 < value <= 1:
        raise PlanError("mfu", mfu, "must be in (0, 1]")
    return value, f"{value:g} (given)"


def plan_training(
    job: TrainingJob,
    chip_id: str,
    chips: int,
    mfu: float | str,
    a: Assumptions,
    cooling: str = "liquid",
    checkpoints_kept: int = 3,
) -> TrainPlan:
    # 1. validate
    chip_id = check_chip(chip_id)
    cooling = check_cooling(cooling)
    if isinstance(chips, bool) or not isinstance(chips, int) or chips < 1:
        raise PlanError("chips", chips, "must be an integer >= 1")
    if isinstance(checkpoints_kept, bool) or not isinstance(checkpoints_kept, int) or checkpoints_kept < 1:
        raise PlanError("checkpoints_kept", checkpoints_kept, "must be an integer >= 1")
    replica = replica_chips(job.params, chip_id)
    if chips < replica:
        hbm = catalog.chip(chip_id).hbm_gb
        raise PlanError(
            "chips",
            chips,
            f"below one replica: {job.params:.3g} params x {TRAIN_BYTES_PER_PARAM} bytes "
            f"needs {replica} {chip_id} ({hbm:g} GB each)",
        )
    # 2. the rate: peak x MFU
    value, source = resolve_mfu(mfu, chip_id)
    notes = [
        f"memory: one copy of the training state needs {replica} chips (activations not counted); "
        "sharded data parallel spreads it over all chips"
    ]
    return TrainPlan(
        job,
        chip_id,
        chips,
        value,
        source,
        cooling,
        checkpoints_kept,
        a,
        replica,
        training_runs.peak_tflops(chip_id),
        notes,
    )

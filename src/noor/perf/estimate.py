"""`estimate(model, shape, chip, plan) -> Estimate`: the cost of one request on one chip type and plan.

Latency is a roofline per kernel class: each class runs at peak x efficiency(chip family, class)
x saturation (small GEMMs and short attention rows do not fill a chip), or at the memory bound if
that is slower; elementwise traffic is memory-bound; communication goes over the scale-up link, and over the
scale-out network for the share of a collective that crosses scale-up domains.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from noor.catalog import Chip, ModelArch
from noor.perf import workload
from noor.perf.efficiency import Efficiency, load
from noor.perf.memory import LADDER, MemoryPlan, tiled
from noor.perf.parallelism import ParallelPlan, candidates
from noor.perf.shape import Shape
from noor.perf.topology import place


@dataclass
class StageEstimate:
    name: str  # text_encoder | first_frame | denoise | vae_decode | offload
    latency_s: float
    flops: float
    detail: dict[str, float] = field(default_factory=dict)  # seconds (or FLOPs) by part


@dataclass
class Estimate:
    model: str
    chip: str
    shape: Shape
    plan: ParallelPlan
    fits: bool
    why_not: str | None
    latency_s: float | None  # None when the plan does not fit
    peak_memory_gb: float  # per chip
    energy_j: float | None  # at TDP for all chips: an upper bound; None if the chip's power is unpublished
    flops: float
    cost_usd: float | None
    usd_per_hour: float  # per chip
    stages: list[StageEstimate]
    memory_gb: dict[str, float]
    notes: list[str] = field(default_factory=list)
    memory_plan: list[str] = field(default_factory=list)  # what it took to fit (noor.perf.memory), empty: as asked

    def stage(self, name: str) -> StageEstimate:
        return next(s for s in self.stages if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["plan_label"] = self.plan.label()
        return out


@dataclass
class _Device:
    """What one chip offers, after efficiency: FLOP/s per kernel class, bytes/s, link bytes/s."""

    chip: Chip
    eff: Efficiency
    precision: str
    fa3: bool

    def rate(self, kernel: str, precision: str | None = None) -> float:
        peak = self.chip.peak_tflops(precision or self.precision, kernel) * 1e12  # type: ignore[arg-type]
        return peak * (1.0 if self.chip.measured else self.eff.factor(self.chip.family, kernel, self.fa3))

    def linear_s(self, flops: float, rows: float, precision: str | None = None) -> float:
        half = 0.0 if self.chip.measured else self.eff["linear_half_tokens"]
        return flops / (self.rate("linear", precision) * rows / (rows + half)) if flops else 0.0

    def attention_s(self, flops: float, keys: float, head_dim: int | None) -> float:
        """Fused attention at `keys` keys per query. Each score costs 4 x head_dim FLOPs on the tensor cores and one
        exponential on the special-function units, which FlashAttention-2 does not overlap with them (Shah et al.
        2024, FlashAttention-3, section 3): narrow heads (CogVideoX's 64) reach a smaller share of peak than wide
        ones (Wan's and FLUX's 128). `head_dim` None: no softmax (linear attention). A measured CPU's rate already
        holds its own."""
        if not flops:
            return 0.0
        if self.chip.measured:
            return flops / (self.rate("attention") * keys / (keys + self.chip.attention_half_tokens))
        rate = self.rate("attention") * keys / (keys + self.eff["attention_half_keys"])
        if head_dim is not None:
            rate *= head_dim / (head_dim + self.eff["attention_half_head_dim"])
        return flops / rate

    def conv_rate(self, channels: int) -> float:
        """3x3 conv FLOP/s at a channel width; a CPU (oneDNN vectorises over channels) saturates in it."""
        half = self.chip.conv_half_channels if self.chip.measured else 0.0
        return self.rate("conv") * channels / (channels + half)

    def decode_s(self, work: workload.VaeWork, precision: str) -> float:
        """A VAE decode: its convs, plus a GroupNorm and a SiLU over every conv's input (each read and written once).
        An fp32 decoder (Wan's, SDXL's upcast one) runs its convs at the TF32 tensor rate, half the bf16 one on every
        NVIDIA part since Ampere (A100, H100, L40S datasheets); a measured CPU's rates are fp32 already."""
        nbytes = workload.BYTES[precision]
        tf32 = 0.5 if precision == "fp32" and not self.chip.measured else 1.0
        convs = sum(f / (self.conv_rate(c) * tf32) for f, c in work.conv_rows)
        return convs + self.activation_s(work.activation_elems * nbytes * 2 * 2)

    def memory_s(self, nbytes: float) -> float:
        if not self.chip.hbm_tbps:
            return 0.0
        return nbytes / (self.chip.hbm_tbps * 1e12 * (1.0 if self.chip.measured else self.eff["memory_efficiency"]))

    def activation_s(self, nbytes: float) -> float:
        """Elementwise work on activations: memory-bound on an accelerator; measured as such on cpu-local."""
        if self.chip.measured and self.chip.activation_tbps:
            return nbytes / (self.chip.activation_tbps * 1e12)
        return self.memory_s(nbytes)

    def link_s(self, nbytes: float, scaleout: bool = False) -> float:
        """Bytes each way over the scale-up link, or over the scale-out network between domains; both at the
        fitted achieved share of their peak (`link_efficiency`: one parameter for both tiers, an assumption)."""
        if not nbytes:
            return 0.0
        gbps = self.chip.scaleout_gbps if scaleout else self.chip.scaleup_gbps
        one_way = (gbps or 0.0) / 2 * 1e9 * self.eff["link_efficiency"]
        return nbytes / one_way if one_way else math.inf

    def tiered_s(self, nbytes_up: float, nbytes_out: float) -> float:
        """A collective's in-domain share over the scale-up link and its cross-domain share over the scale-out
        network at the same time (NCCL drives both): the slower of the two."""
        return max(self.link_s(nbytes_up), self.link_s(nbytes_out, scaleout=True))

    @property
    def attention_call_s(self) -> float:
        """Fixed cost of one attention layer call, measured on cpu-local; in `kernel_s` elsewhere."""
        return self.chip.attention_call_s if self.chip.measured else 0.0

    @property
    def kernel_s(self) -> float:
        return self.chip.op_overhead_s if self.chip.measured else self.eff["launch_overhead_s"]


def estimate(
    model: ModelArch, shape: Shape, chip: Chip, plan: ParallelPlan | None = None, efficiency: Efficiency | None = None
) -> Estimate:
    """Price one request. With several allowed splits (strategy auto/hybrid), the fastest that fits; if none fits
    as asked, the first memory plan real runs use (noor.perf.memory.LADDER) with which one does."""
    plan = plan or ParallelPlan()
    eff = efficiency or load()
    splits = candidates(plan, model)
    options = [_estimate_one(model, shape, chip, p, eff) for p in splits]
    fitting = [e for e in options if e.fits]
    if fitting:
        return min(fitting, key=lambda e: e.latency_s or math.inf)
    if not any(e.why_not and e.why_not.startswith("needs") for e in options):
        return min(options, key=lambda e: e.peak_memory_gb)  # refused for a reason memory plans do not change
    offloads = ("none", "model", "sequential")
    for memory in LADDER:
        if offloads.index(memory.offload) < offloads.index(plan.offload):
            memory = replace(memory, offload=plan.offload)  # never less offload than asked
        tried = [_estimate_one(model, shape, chip, replace(p, offload=memory.offload), eff, memory) for p in splits]
        fitting = [e for e in tried if e.fits]
        if fitting:
            return min(fitting, key=lambda e: e.latency_s or math.inf)
    return min(options, key=lambda e: e.peak_memory_gb)


def _estimate_one(
    model: ModelArch, shape: Shape, chip: Chip, plan: ParallelPlan, eff: Efficiency, memory: MemoryPlan | None = None
) -> Estimate:
    memory = memory or MemoryPlan()
    assert plan.degrees is not None
    u, r, c = plan.degrees
    g = plan.gpus
    notes: list[str] = []
    real = shape.for_model(model)
    if real.num_frames == 1:  # an image is guided at every step, and apart from clips if the model says so
        passes = model.image_guidance_passes or model.guidance_passes
        model = model.model_copy(update={"guidance_passes": passes, "guided_step_share": 1.0})
    interval = model.guidance_passes > 1 and model.guided_step_share < 1
    first_frame = model.first_frame_stage and real.num_frames > 1
    if real != Shape(shape.width, shape.height, shape.num_frames, real.steps, shape.batch):
        notes.append(
            f"{model.id} always draws {real.width}x{real.height}x{real.num_frames} and resizes; priced at that size"
        )
    precision = plan.precision or model.precision
    if chip.measured:
        precision = "fp32"  # what the CPU runs; its measured rates are fp32
    elif precision == "fp32":
        precision = "bf16"
    nbytes = workload.BYTES[precision]
    act_bytes = 4 if precision == "fp32" else 2
    dev = _Device(chip, eff, precision, fa3=plan.attention == "fa3")
    steps = real.steps or model.default_steps

    # 1. text encoder: every prompt (and the negative one under CFG), on one chip or the host CPU
    guided = model.guidance_passes > 1 or (first_frame and model.image_guidance_passes > 1)
    prompts = real.batch * (2 if guided else 1)
    te_flops = workload.text_encoder_flops(model, prompts)
    te_params = workload.text_encoder_params(model)
    if plan.text_encoder_on_cpu:
        te_s = te_flops / (eff["host_tflops"] * 1e12)
    else:
        rows = prompts * max(model.text_tokens, 1)
        te_s = max(
            dev.linear_s(te_flops, rows, "bf16" if precision == "fp8" else precision),
            dev.memory_s(te_params * act_bytes),
        )
        te_s += sum(e.layers for e in model.text_encoders) * 12 * dev.kernel_s

    # 2. one denoising step: the guidance passes batched, split over cfg x ulysses x ring chips
    passes_per_group = math.ceil(model.guidance_passes / c)
    work = workload.denoise_pass(model, real, batch=real.batch * passes_per_group)
    sp = u * r
    rows_dev = work.tokens * real.batch * passes_per_group / sp
    active_params = model.params_b * 1e9 * model.experts_active / model.experts_total
    t_linear = max(dev.linear_s(work.linear_per_rank(sp), rows_dev), dev.memory_s(active_params * nbytes))
    # linear attention (Sana) has no softmax: its "keys" are the head's state width
    head_dim = model.head_dim if model.attention != "linear" else None
    t_attn = dev.attention_s(work.attention_flops / sp, work.attention_keys / r, head_dim)
    t_attn += work.self_attention_calls * dev.attention_call_s
    t_cross = dev.attention_s(work.cross_flops / sp, max(model.text_tokens + model.image_tokens, 1), model.head_dim)
    t_cross += work.cross_attention_calls * dev.attention_call_s
    # a denoiser's 3x3 convs (SDXL's UNet) are implicit GEMMs that cuDNN/TensorRT run with the GEMM kernels,
    # at the linear layers' precision; the "conv" class is the VAE decoder's (eager, fp32, GroupNorm-bound).
    # A measured CPU has its own conv rate (oneDNN, by channel width).
    if chip.measured:
        conv_rate = dev.conv_rate(work.conv_channels) if work.conv_channels else dev.rate("conv")
    else:
        conv_rate = dev.rate("linear") * rows_dev / (rows_dev + eff["linear_half_tokens"])
    t_conv = work.conv_flops / sp / conv_rate if work.conv_flops else 0.0
    passes_key = "activation_passes_compiled" if plan.compiled else "activation_passes_eager"
    t_elem = dev.activation_s(work.activation_elems / sp * act_bytes * eff[passes_key])
    t_launch = (work.host_ops if chip.measured else work.kernels) * dev.kernel_s * (0.3 if plan.compiled else 1.0)
    compute = t_linear + t_attn + t_cross + t_conv + t_elem + t_launch
    # communication: Ulysses all-to-alls (q, k, v, out) are on the critical path; ring passes K/V
    # around while attention runs; FSDP gathers each block's weights ahead of use.
    # Over more chips than one scale-up domain, each collective's cross-domain share moves over the scale-out
    # network (noor.perf.topology places the ranks).
    block_bytes = rows_dev * work.hidden_size * act_bytes
    where = place((u, r, c), chip.scaleup_domain)
    # without a scale-out tier the plan is refused (step 6); its parts are priced as if in one domain, not infinite
    timing = where if chip.scaleout_gbps is not None else place((u, r, c), g)
    near, far = timing.ulysses_peers
    all_to_all = dev.tiered_s(block_bytes * near / u, block_bytes * far / u) + eff["collective_latency_s"]
    t_ulysses = work.layers * 4 * all_to_all if u > 1 else 0.0
    t_ring_total = work.layers * dev.link_s(2 * block_bytes * (r - 1), timing.ring_crosses) if r > 1 else 0.0
    t_ring = max(0.0, t_ring_total - t_attn)
    weight_bytes = active_params * nbytes
    gathered = weight_bytes * (g - 1) / g
    t_gather = dev.tiered_s(gathered - weight_bytes * timing.gather_share, weight_bytes * timing.gather_share)
    t_fsdp = max(0.0, t_gather - compute) if plan.shard_weights and g > 1 else 0.0
    latents = work.video_tokens * real.batch * model.vae.latent_channels * 4
    t_cfg = dev.link_s(latents, timing.cfg_crosses) if c > 1 else 0.0
    step_s = compute + t_ulysses + t_ring + t_fsdp + t_cfg
    if plan.offload == "sequential":  # every block's weights cross the host link each pass
        step_s = max(step_s, active_params * nbytes / (eff["host_link_gbps"] * 1e9))
    denoise_s = steps * step_s
    per_step = {
        "linear_s": t_linear,
        "self_attention_s": t_attn,
        "cross_attention_s": t_cross,
        "conv_s": t_conv,
        "elementwise_s": t_elem,
        "launch_s": t_launch,
        "ulysses_comm_s": t_ulysses,
        "ring_comm_exposed_s": t_ring,
        "fsdp_comm_exposed_s": t_fsdp,
        "cfg_comm_s": t_cfg,
        "step_s": step_s,
        "scaleup_domains": float(where.domains),
        "linear_flops": work.linear_flops * steps,
        "self_attention_flops": work.attention_flops * steps,
        "cross_attention_flops": work.cross_flops * steps,
        "conv_flops": work.conv_flops * steps,
        "tokens": float(work.tokens),
        "passes_per_step": float(model.guidance_passes),
    }
    denoise_flops = work.flops * c * steps * (model.guidance_passes / (passes_per_group * c))
    if interval:  # a guidance interval: the steps outside it run one pass, priced as an unguided model's
        share = model.guided_step_share
        single = model.model_copy(update={"guidance_passes": 1, "guided_step_share": 1.0, "first_frame_stage": False})
        one = _estimate_one(single, shape, chip, plan, eff).stage("denoise")
        denoise_s = share * denoise_s + (1 - share) * one.latency_s
        denoise_flops = share * denoise_flops + (1 - share) * one.flops
        per_step = {k: share * v + (1 - share) * one.detail[k] if k != "tokens" else v for k, v in per_step.items()}

    # 3. VAE decode on one chip
    vae = workload.vae_decode(model, real)
    live_share, tile_work = tiled(real.width, real.height) if memory.vae_tiling else (1.0, 1.0)
    vae_flops = vae.flops * tile_work
    vae_s = tile_work * dev.decode_s(vae, model.vae.precision)

    # 4. moving weights between host and chip (offload): once per request, and at each MoE switch
    offload_s = 0.0
    if plan.offload == "model":
        moves = 1 + (model.experts_total - 1)
        offload_s = moves * active_params * nbytes / (eff["host_link_gbps"] * 1e9)
    te_weight_bytes = 0.0 if plan.text_encoder_on_cpu else te_params * act_bytes
    if memory.text_encoder_offload and plan.offload == "none":  # the encoder's weights go back to the host once
        offload_s += te_weight_bytes / (eff["host_link_gbps"] * 1e9)

    stages = [
        StageEstimate("text_encoder", te_s, te_flops),
        StageEstimate("denoise", denoise_s, denoise_flops, per_step),
        StageEstimate("vae_decode", vae_s, vae_flops),
    ]
    if first_frame:  # the first frame drawn as an image first (Emu Video), guided as images are
        image_model = model.model_copy(update={"first_frame_stage": False})
        image_shape = Shape(real.width, real.height, 1, steps, real.batch)
        first = _estimate_one(image_model, image_shape, chip, plan, eff).stage("denoise")
        stages.insert(1, StageEstimate("first_frame", first.latency_s, first.flops, first.detail))
    if offload_s:
        stages.append(StageEstimate("offload", offload_s, 0.0))
    latency_s = sum(s.latency_s for s in stages)

    # 5. peak memory per chip: the largest stage
    gb = 1e-9
    dit_resident = {"none": model.params_b * 1e9, "model": active_params, "sequential": active_params / model.layers}
    dit_gb = dit_resident[plan.offload] * nbytes / (g if plan.shard_weights else 1) * gb
    te_gb = 0.0 if plan.text_encoder_on_cpu else te_params * (4 if precision == "fp32" else 2) * gb
    keep_te = te_gb if plan.offload == "none" and not memory.text_encoder_offload else 0.0
    act_gb = rows_dev * (model.ffn_size * model.ffn_matrices / 2 + 4 * model.hidden_size) * act_bytes * gb
    decoded_together = 1 if memory.vae_slicing else real.batch
    # the decoder's weights, and the input, output and a skip of its largest feature map
    vae_bytes = workload.BYTES[model.vae.precision]
    vae_gb = (model.vae.params_m * 1e6 + vae.largest_elems * live_share * decoded_together * 3) * vae_bytes * gb
    resident_dit = dit_gb if plan.offload == "none" else 0.0
    memory_gb = {
        "denoiser_weights_gb": dit_gb,
        "text_encoder_weights_gb": te_gb,
        "activations_gb": act_gb,
        "vae_gb": vae_gb,
        # with the encoder offloaded after encoding, the denoiser is loaded once it has gone
        "text_stage_gb": te_gb + (0.0 if memory.text_encoder_offload else resident_dit),
        "denoise_stage_gb": dit_gb + keep_te + act_gb,
        "decode_stage_gb": vae_gb + resident_dit + keep_te,
    }
    peak_gb = max(memory_gb["text_stage_gb"], memory_gb["denoise_stage_gb"], memory_gb["decode_stage_gb"])

    # 6. does it fit; energy and money
    why_not = None
    if where.domains > 1 and chip.scaleout_gbps is None:
        why_not = (
            f"{g} chips span {where.domains} of {chip.id}'s scale-up domains ({chip.scaleup_domain} chips each)"
            f" and {chip.id} has no published scale-out tier (scaleout_gbps)"
        )
    elif chip.hbm_gb is not None and peak_gb > chip.hbm_gb:
        why_not = (
            f"needs {peak_gb:.1f} GB per chip, {chip.id} has {chip.hbm_gb:.0f} GB"
            " (try more chips with shard_weights, offload, or a smaller size)"
        )
    usd_per_hour = chip.usd_per_hour if plan.usd_per_hour is None else plan.usd_per_hour
    fits = why_not is None
    energy = chip.tdp_w * g * latency_s if chip.tdp_w else None
    if where.domains > 1 and chip.scaleout_gbps is not None:
        notes.append(
            f"{g} chips over {where.domains} scale-up domains of {chip.scaleup_domain} ({g // where.domains} in each):"
            " cross-domain traffic over"
            f" {chip.scaleout} ({chip.scaleout_gbps:g} GB/s per chip, both directions)"
        )
    if chip.tdp_w is None:
        notes.append(f"{chip.id}'s power is not published: no energy figure")
    total_flops = sum(s.flops for s in stages)
    return Estimate(
        model=model.id,
        chip=chip.id,
        shape=real,
        plan=plan,
        fits=fits,
        why_not=why_not,
        latency_s=latency_s if fits else None,
        peak_memory_gb=peak_gb,
        energy_j=energy if fits else None,
        flops=total_flops,
        cost_usd=usd_per_hour * g * latency_s / 3600 if fits else None,
        usd_per_hour=usd_per_hour,
        stages=stages,
        memory_gb=memory_gb,
        notes=notes + [f"to fit: {label}" for label in memory.labels()],
        memory_plan=memory.labels(),
    )

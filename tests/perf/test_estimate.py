from __future__ import annotations

import pytest

from noor import catalog, perf
from noor.perf import ParallelPlan, Shape, efficiency, workload
from noor.perf.estimate import StageEstimate

WAN = "wan2.1-t2v-14b"


def test_a_plan_that_does_not_fit_says_why_instead_of_a_number() -> None:
    # 321 frames at 720p: even streaming the weights (the last memory plan) leaves the activations over 24 GB
    e = perf.predict(WAN, "rtx-4090", Shape(1280, 720, 321, 50))
    assert not e.fits and e.latency_s is None and e.cost_usd is None
    assert "24 GB" in (e.why_not or "") and e.peak_memory_gb > 24


def test_more_chips_are_faster_and_memory_per_chip_falls_with_sharding() -> None:
    latencies = []
    for g in (1, 2, 4, 8):
        e = perf.predict(WAN, "h100-sxm", plan=ParallelPlan(gpus=g, strategy="ulysses", shard_weights=True))
        assert e.fits and e.latency_s is not None
        latencies.append(e.latency_s)
    assert latencies == sorted(latencies, reverse=True)
    one = perf.predict(WAN, "h100-sxm").peak_memory_gb
    eight_gpus = ParallelPlan(gpus=8, strategy="ulysses", shard_weights=True)
    eight = perf.predict(WAN, "h100-sxm", plan=eight_gpus).peak_memory_gb
    assert eight < one


def test_ulysses_must_divide_the_heads() -> None:
    with pytest.raises(perf.PerfError, match="ulysses=7 must divide"):
        perf.predict(WAN, "h100-sxm", plan=ParallelPlan(gpus=7, strategy="ulysses"))


def test_cfg_parallel_needs_guidance_passes() -> None:
    with pytest.raises(perf.PerfError, match="guidance passes"):
        perf.predict("flux.1-dev", "h100-sxm", plan=ParallelPlan(gpus=2, strategy="cfg"))


def test_auto_picks_the_fastest_valid_split() -> None:
    auto = perf.predict(WAN, "h100-sxm", plan=ParallelPlan(gpus=4))
    for strategy in ("ulysses", "ring", "hybrid"):
        other = perf.predict(WAN, "h100-sxm", plan=ParallelPlan(gpus=4, strategy=strategy))  # type: ignore[arg-type]
        assert auto.latency_s is not None and other.latency_s is not None
        assert auto.latency_s <= other.latency_s


def test_beyond_the_scale_up_domain_without_a_scale_out_tier_does_not_fit() -> None:
    assert catalog.chip("rtx-4090").scaleout_gbps is None  # no published server network for a GeForce card
    e = perf.predict(WAN, "rtx-4090", plan=ParallelPlan(gpus=16, strategy="ring", shard_weights=True))
    assert not e.fits and e.latency_s is None
    assert e.why_not == (
        "16 chips span 2 of rtx-4090's scale-up domains (8 chips each) and rtx-4090 has no published scale-out tier"
        " (scaleout_gbps)"
    )


def test_fp8_helps_where_the_chip_has_it() -> None:
    shape = Shape(1024, 1024, 1, 28)
    h100 = [perf.predict("flux.1-dev", "h100-sxm", shape, ParallelPlan(precision=p)).latency_s for p in ("bf16", "fp8")]
    a100 = [
        perf.predict("flux.1-dev", "a100-80gb", shape, ParallelPlan(precision=p)).latency_s for p in ("bf16", "fp8")
    ]
    assert h100[1] < h100[0]  # type: ignore[operator]
    assert a100[1] == a100[0]


def test_energy_and_cost_follow_from_latency() -> None:
    e = perf.predict(WAN, "h100-sxm", plan=ParallelPlan(gpus=2, strategy="ulysses", usd_per_hour=3.0))
    assert e.latency_s is not None
    assert e.energy_j == pytest.approx(700 * 2 * e.latency_s)
    assert e.cost_usd == pytest.approx(3.0 * 2 * e.latency_s / 3600)
    assert e.latency_s == pytest.approx(sum(s.latency_s for s in e.stages))


def test_stage_breakdown_separates_linear_self_and_cross_attention() -> None:
    detail = perf.predict(WAN, "h100-sxm").stage("denoise").detail
    assert detail["linear_flops"] > 0 and detail["self_attention_flops"] > 0 and detail["cross_attention_flops"] > 0
    # at 720p x 81 frames attention dominates the step
    assert detail["self_attention_s"] > detail["linear_s"]


def test_chips_without_published_power_give_no_energy() -> None:
    e = perf.predict("flux.1-dev", "tpu-v5p")
    assert e.fits and e.energy_j is None and any("power" in n for n in e.notes)


def test_bad_shape_names_the_field() -> None:
    with pytest.raises(perf.PerfError, match="width"):
        Shape(0, 720, 81)
    with pytest.raises(perf.PerfError, match="num_frames"):
        perf.predict("flux.1-dev", "h100-sxm", Shape(1024, 1024, 5))


def test_tiny_is_priced_at_its_native_size(fixed_cpu_local: None) -> None:
    native = perf.estimate_task("tiny", 64, 64, 16, 16)
    resized = perf.estimate_task("tiny", 1280, 720, 24, 16)
    assert native.latency_s == resized.latency_s and resized.notes
    assert native.chip == "cpu-local" and native.fits and native.cost_usd is not None


def test_estimate_task_is_cached_per_request_shape(fixed_cpu_local: None) -> None:
    first = perf.estimate_task("tiny", 64, 64, 16, 16)
    assert perf.estimate_task("tiny", 64, 64, 16, 16) is first
    assert perf.estimate_task("tiny", 64, 64, 16, 8).latency_s < first.latency_s  # type: ignore[operator]


def test_unknown_ids_raise_with_the_valid_list() -> None:
    with pytest.raises(catalog.UnknownId, match=r"valid: .*h100-sxm"):
        perf.predict(WAN, "h100")


def test_a_measured_cpu_pays_per_attention_call_per_operator_and_for_narrow_convs(fixed_cpu_local: None) -> None:
    """On cpu-local, each attention layer call costs its measured fixed cost, every dispatched operator
    its overhead, and narrow convs run below the wide-conv rate (catalog/local.py measures all three)."""
    chip = catalog.chip("cpu-local")
    tiny, shape = catalog.model("tiny"), Shape(64, 64, 16, 16)
    base = perf.estimate(tiny, shape, chip)
    no_calls = perf.estimate(tiny, shape, chip.model_copy(update={"attention_call_s": 0.0}))
    step, step0 = base.stage("denoise").detail, no_calls.stage("denoise").detail
    calls = tiny.layers * (2 if tiny.attention == "factorised" else 1)
    assert step["self_attention_s"] - step0["self_attention_s"] == pytest.approx(calls * 1e-4)
    assert step["cross_attention_s"] - step0["cross_attention_s"] == pytest.approx(tiny.layers * 1e-4)
    assert step["launch_s"] == pytest.approx(140 * tiny.layers * chip.op_overhead_s)
    wide = perf.estimate(tiny, shape, chip.model_copy(update={"conv_half_channels": 0.0}))
    assert wide.stage("vae_decode").latency_s < base.stage("vae_decode").latency_s
    # an accelerator pays per kernel launch only (its host runs ahead of the queue)
    wan = catalog.model(WAN)
    wan_h100 = perf.estimate(wan, Shape(1280, 720, 81, 50), catalog.chip("h100-sxm"))
    launch = workload.KERNELS_PER_BLOCK * wan.layers * efficiency.load()["launch_overhead_s"]
    assert wan_h100.stage("denoise").detail["launch_s"] == pytest.approx(launch)


def test_a_first_frame_stage_adds_one_image_denoise_to_clips_only(fixed_cpu_local: None) -> None:
    """A model that draws a clip's first frame as an image first (Emu Video's two stages) pays for that
    image's denoising, guided as its images are, on top of the clip's; an image has no second stage."""
    chip = catalog.chip("cpu-local")
    tiny = catalog.model("tiny").model_copy(update={"guidance_passes": 1, "guided_step_share": 1.0})  # clip unguided
    assert tiny.first_frame_stage and tiny.image_guidance_passes == 2
    one = tiny.model_copy(update={"first_frame_stage": False})
    clip_one = perf.estimate(one, Shape(64, 64, 16, 16), chip)
    clip_two = perf.estimate(tiny, Shape(64, 64, 16, 16), chip)
    image = perf.estimate(one, Shape(64, 64, 1, 16), chip)
    assert [s.name for s in clip_two.stages] == ["text_encoder", "first_frame", "denoise", "vae_decode"]
    first = clip_two.stage("first_frame")
    assert first.detail["passes_per_step"] == 2 and clip_two.stage("denoise").detail["passes_per_step"] == 1
    assert first.latency_s == pytest.approx(image.stage("denoise").latency_s)
    assert first.flops == pytest.approx(image.stage("denoise").flops)
    for name in ("denoise", "vae_decode"):
        assert clip_two.stage(name).latency_s == pytest.approx(clip_one.stage(name).latency_s)
    assert clip_two.stage("text_encoder").flops == 2 * clip_one.stage("text_encoder").flops  # the negative prompt too
    assert clip_two.latency_s == pytest.approx(sum(s.latency_s for s in clip_two.stages))
    assert clip_two.flops == pytest.approx(sum(s.flops for s in clip_two.stages))
    assert 0 < first.flops < clip_one.stage("denoise").flops / 4  # one frame of sixteen, guided twice
    image_two = perf.estimate(tiny, Shape(64, 64, 1, 16), chip)
    assert image_two.latency_s == image.latency_s and "first_frame" not in [s.name for s in image_two.stages]


def test_a_guidance_interval_guides_only_its_share_of_a_clips_steps(fixed_cpu_local: None) -> None:
    """guided_step_share: the clip's steps inside the guidance interval run both passes, the others one; an
    image (or a first frame) is guided at every step."""
    chip, tiny = catalog.chip("cpu-local"), catalog.model("tiny")
    assert tiny.guidance_passes == 2 and 0 < tiny.guided_step_share < 1  # noor-tiny's shipped sampling
    clip = Shape(64, 64, 16, 16)

    def denoise(share: float, passes: int = 2, shape: Shape = clip) -> StageEstimate:
        model = tiny.model_copy(update={"guided_step_share": share, "guidance_passes": passes})
        return perf.estimate(model, shape, chip).stage("denoise")

    full, single, part = denoise(1.0), denoise(1.0, passes=1), denoise(0.25)
    assert full.latency_s > 1.5 * single.latency_s  # both passes cost nearly twice one
    assert part.latency_s == pytest.approx(0.25 * full.latency_s + 0.75 * single.latency_s)
    assert part.flops == pytest.approx(0.25 * full.flops + 0.75 * single.flops)
    assert part.detail["passes_per_step"] == pytest.approx(1.25)
    image = Shape(64, 64, 1, 16)
    assert denoise(0.25, shape=image).latency_s == denoise(1.0, shape=image).latency_s
    both = perf.estimate(tiny, clip, chip)
    assert both.stage("first_frame").detail["passes_per_step"] == 2  # the first frame: guided at every step


def test_narrow_attention_heads_cost_more_per_flop() -> None:
    """Each score costs 4 x head_dim MMA FLOPs and one exponential: CogVideoX's 64-wide heads run attention at a
    smaller share of peak than Wan's 128-wide ones (FlashAttention-3, section 3.1)."""
    eff = efficiency.load()
    half = eff["attention_half_head_dim"]
    cog, wan = catalog.model("cogvideox-5b"), catalog.model("wan2.1-t2v-14b")
    assert (cog.head_dim, wan.head_dim) == (64, 128)
    chip = catalog.chip("h100-sxm")
    rates = {}
    for model in (cog, wan):
        e = perf.estimate(model, Shape(720, 480, 49, 1), chip)
        work = workload.denoise_pass(model, e.shape, batch=model.guidance_passes)
        rates[model.id] = work.attention_flops / e.stage("denoise").detail["self_attention_s"]
    keys = {m.id: workload.denoise_pass(m, Shape(720, 480, 49, 1).for_model(m), 1).attention_keys for m in (cog, wan)}
    saturation = {k: v / (v + eff["attention_half_keys"]) for k, v in keys.items()}
    expected = (64 / (64 + half)) / (128 / (128 + half)) * saturation[cog.id] / saturation[wan.id]
    assert rates[cog.id] / rates[wan.id] == pytest.approx(expected)


def test_an_fp32_vae_decodes_at_half_the_rate_of_a_bf16_one() -> None:
    """Wan's VAE decodes in fp32 (TF32 on the tensor cores: half the bf16 rate); the same decoder in bf16 takes
    half the conv time and half the elementwise bytes."""
    wan = catalog.model("wan2.1-t2v-14b")
    assert wan.vae.precision == "fp32"
    as_bf16 = wan.model_copy(update={"vae": wan.vae.model_copy(update={"precision": "bf16"})})
    chip, shape = catalog.chip("a100-80gb"), Shape(832, 480, 81, 1)
    fp32_s = perf.estimate(wan, shape, chip).stage("vae_decode").latency_s
    bf16_s = perf.estimate(as_bf16, shape, chip).stage("vae_decode").latency_s
    assert fp32_s == pytest.approx(2 * bf16_s)


def test_ltx_videos_vae_decode_on_an_h100_takes_seconds_not_a_minute() -> None:
    """The reverted first refit drove Hopper's conv share to 1.6% of peak and priced this decode at 54.7 s;
    LTX-Video's 32x32x8 VAE decodes in a second or two in practice. The conv share is shared by every NVIDIA
    family now (calibrate.SHARED_EFFICIENCIES) and the decoder's widest row runs at a quarter resolution."""
    e = perf.estimate(catalog.model("ltx-video-2b"), Shape(768, 512, 121), catalog.chip("h100-sxm"))
    assert e.stage("vae_decode").latency_s < 2.0
    convs = {efficiency.load().factor(f, "conv") for f in ("hopper", "hopper-h20", "ampere", "ada")}
    assert len(convs) == 1

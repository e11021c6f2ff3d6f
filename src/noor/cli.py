"""`noor`: the command line. Thin: parse flags, call the packages, print results."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import pydantic
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    help="Noor: open generative video. Generate, serve and plan.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Train the built-in model.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a model.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
console = Console(stderr=True)

# Which CLI option each engine field comes from, to name it in errors.
OPTION_OF = {
    "prompt": "PROMPT",
    "width": "--size",
    "height": "--size",
    "num_frames": "--frames",
    "steps": "--steps",
    "fps": "--fps",
    "seed": "--seed",
    "guidance": "--guidance",
    "model": "--model",
    "i2v": "--start-image",
    "end_frame": "--end-image",
    "loop": "--loop",
    "aspect_ratio": "--aspect-ratio",
    "resolution": "--resolution",
}


class BadInput(Exception):
    """A user error: printed as one line, exit code 2."""


def fail(option: str, value: object, message: str) -> NoReturn:
    raise BadInput(f"{option}: {message}, got {value!r}")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _parse_size(size: str | None, aspect_ratio: str | None, resolution: str | None) -> tuple[int, int] | None:
    from noor.engine.task import size_from_aspect

    if size and (aspect_ratio or resolution):
        fail("--size", size, "give --size or --aspect-ratio/--resolution, not both")
    if size:
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            fail("--size", size, "must be WIDTHxHEIGHT, e.g. 640x360")
        return w, h
    if aspect_ratio or resolution:
        return size_from_aspect(aspect_ratio or "16:9", resolution or "540p")
    return None


def _keyframe(option: str, path: Path | None) -> Any:
    from noor.engine.media import MediaError, read_image

    if path is None:
        return None
    try:
        return read_image(path)
    except MediaError as err:
        fail(option, str(path), str(err))


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="what to see, in English or Arabic")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help=".mp4 for a video; .png/.jpg/.webp for one frame")
    ] = Path("noor.mp4"),
    model: Annotated[str, typer.Option(help="model id (`tiny` is built in; see `noor models list`)")] = "tiny",
    seed: Annotated[int, typer.Option(help="random seed; same seed, same clip")] = 0,
    frames: Annotated[int | None, typer.Option("--frames", help="number of frames (1 = an image)")] = None,
    fps: Annotated[int | None, typer.Option(help="frames per second of the video (default: the model's)")] = None,
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the model's)")] = None,
    guidance: Annotated[float | None, typer.Option(help="classifier-free guidance scale")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT, e.g. 640x360")] = None,
    aspect_ratio: Annotated[
        str | None, typer.Option("--aspect-ratio", help="1:1, 16:9, 9:16, 4:3, 3:4, 21:9, 9:21")
    ] = None,
    resolution: Annotated[str | None, typer.Option(help="540p, 720p, 1080p or 4k (with --aspect-ratio)")] = None,
    start_image: Annotated[
        Path | None, typer.Option("--start-image", help="first frame (an image, or a video: its last frame = extend)")
    ] = None,
    end_image: Annotated[Path | None, typer.Option("--end-image", help="last frame")] = None,
    loop: Annotated[bool, typer.Option("--loop", help="end where it starts")] = False,
    negative_prompt: Annotated[str, typer.Option("--negative-prompt", help="what not to see")] = "",
    weights: Annotated[Path | None, typer.Option(help="weights dir for `tiny` (default: the packaged ones)")] = None,
) -> None:
    """Generate a video (or an image) from a prompt."""
    from noor.engine import media, registry
    from noor.engine.task import Task, TaskError

    started = time.perf_counter()
    # 1. validate everything before any work
    try:
        spec = registry.get(model)
        suffix = output.suffix.lower()
        if suffix not in media.VIDEO_SUFFIXES + media.IMAGE_SUFFIXES:
            fail("-o", str(output), "must end in .mp4, .png, .jpg, .jpeg or .webp")
        is_image_path = suffix in media.IMAGE_SUFFIXES
        num_frames = frames if frames is not None else (1 if is_image_path else spec.native_frames)
        if is_image_path and num_frames != 1:
            fail("--frames", num_frames, f"an image output ({output.name}) takes 1 frame; use .mp4 for a video")
        width, height = _parse_size(size, aspect_ratio, resolution) or (spec.native_width, spec.native_height)
        task = Task(
            prompt=prompt,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            num_frames=num_frames,
            fps=spec.default_fps if fps is None else fps,
            steps=steps,
            guidance=guidance,
            seed=seed,
            start_frame=_keyframe("--start-image", start_image),
            end_frame=_keyframe("--end-image", end_image),
            loop=loop,
        )
        notes = spec.check(task)
    except TaskError as err:
        raise BadInput(f"{OPTION_OF.get(err.field, err.field)}: {str(err).split(': ', 1)[1]}") from err
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")

    # 2. load the model once, denoise with a progress bar, write the file
    with console.status(f"loading {spec.id}…"):
        from noor.runtime.local import load_backend

        backend = load_backend(spec.id, weights=weights)
    with _progress() as bar:
        job = bar.add_task("denoising", total=task.steps or spec.default_steps, info="")

        def on_progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        result = backend.generate([task], on_progress)[0]
    path = media.save(result, output)
    seconds = time.perf_counter() - started
    kind = "image" if result.is_image else f"{len(result.frames)} frames, {result.fps} fps"
    print(f"{path}  {kind}, {result.width}x{result.height}, {seconds:.1f} s")


@train_app.command("tiny")
def train_tiny(
    out: Annotated[Path, typer.Option(help="where to write the pipeline (Hugging Face layout)")] = Path("noor-tiny"),
    steps: Annotated[int, typer.Option(min=1, help="denoiser optimiser steps")] = 4500,
    vae_steps: Annotated[int, typer.Option("--vae-steps", min=1, help="VAE optimiser steps")] = 1200,
    decoder_steps: Annotated[int, typer.Option("--decoder-steps", min=0, help="decoder refinement steps")] = 1200,
    pool_clips: Annotated[int, typer.Option("--pool-clips", min=1, help="rendered clips encoded for training")] = 12000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    seed: Annotated[int, typer.Option()] = 0,
    bf16: Annotated[bool, typer.Option("--bf16/--fp32", help="bfloat16 autocast (faster only on some CPUs)")] = False,
) -> None:
    """Train noor-tiny from scratch on the synthetic world, with a fixed seed (VAE, then denoiser)."""
    from noor.engine.tiny.train import TrainConfig, train

    cfg = TrainConfig(
        steps=steps,
        vae_steps=vae_steps,
        decoder_steps=decoder_steps,
        pool_clips=pool_clips,
        batch_size=batch_size,
        seed=seed,
        bf16=bf16,
    )
    started = time.perf_counter()
    labels = {"vae": "1/4 VAE", "decoder": "2/4 decoder", "encode": "3/4 encoding clips", "denoiser": "4/4 denoiser"}
    with _progress() as bar:
        jobs: dict[str, Any] = {}
        recent: list[float] = []

        def on_step(stage: str, step: int, total: int, loss: float) -> None:
            if stage not in jobs:
                jobs[stage] = bar.add_task(labels[stage], total=total, info="")
                recent.clear()
            info = ""
            if stage != "encode":
                recent.append(loss)
                del recent[:-50]
                info = f"loss {sum(recent) / len(recent):.4f}"
            bar.update(jobs[stage], completed=step + 1, info=info)

        losses = train(cfg, out, on_step=on_step)
    minutes = (time.perf_counter() - started) / 60
    print(f"{out}  {steps} denoiser steps, final loss {sum(losses[-50:]) / len(losses[-50:]):.4f}, {minutes:.1f} min")


@eval_app.command("tiny")
def eval_tiny(
    weights: Annotated[Path | None, typer.Option(help="weights dir (default: the packaged ones)")] = None,
    per_language: Annotated[int, typer.Option("--per-language", min=1, max=32, help="prompts per language")] = 32,
    keyframe_checks: Annotated[int, typer.Option("--keyframe-checks", min=0)] = 4,
    steps: Annotated[int | None, typer.Option(min=1, max=100)] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the full report here")] = None,
) -> None:
    """Check noor-tiny's colour, shape and motion on held-out prompts, and its keyframe fidelity."""
    from noor.engine.task import Task
    from noor.engine.tiny.backend import TinyBackend
    from noor.engine.tiny.eval import PSNR_TARGET_DB, TARGETS, eval_prompts, evaluate

    backend = TinyBackend(weights)
    prompts = eval_prompts(per_language)

    def generate_clip(prompt: str, seed: int, start_frame: Any = None, loop: bool = False) -> Any:
        if start_frame is not None:
            start_frame = (start_frame * 255).round().astype("uint8")
        task = Task(prompt=prompt, seed=seed, steps=steps, start_frame=start_frame, loop=loop)
        return backend.generate([task])[0].frames.astype("float32") / 255.0

    with _progress() as bar:
        job = bar.add_task("evaluating", total=len(prompts) + keyframe_checks, info="")
        report = evaluate(generate_clip, prompts, keyframe_checks, on_item=lambda: bar.advance(job))

    table = Table(title="noor-tiny on held-out prompts")
    table.add_column("language")
    for attribute, target in TARGETS.items():
        table.add_column(f"{attribute} (>= {target:.0%})", justify="right")
    for lang, acc in report.accuracy.items():
        table.add_row(lang, *(f"{acc[a]:.0%}" for a in TARGETS))
    Console().print(table)
    print(
        f"start frame: PSNR (min) {report.start_psnr_db:.1f} dB, colour+shape kept in {report.start_consistency:.0%};"
        f" loop: last-vs-first PSNR (min) {report.loop_psnr_db:.1f} dB (target >= {PSNR_TARGET_DB:.0f} dB)"
    )
    if json_out:
        json_out.write_text(json.dumps(report.__dict__, indent=2, ensure_ascii=False) + "\n")
    if not report.passed():
        print("below target")
        raise typer.Exit(1)


# --- noor models ---
models_app = typer.Typer(help="Models on this machine: the built-in one and diffusers weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Every model this machine can run: id, family, what it can do, defaults, where its weights are."""
    from noor.engine import registry

    table = Table(title="models")
    for column in ("id", "family", "can do", "defaults", "weights"):
        table.add_column(column)
    for spec in registry.available():
        defaults = f"{spec.native_width}x{spec.native_height}, {spec.native_frames} frames, {spec.default_steps} steps"
        table.add_row(spec.id, spec.family, " ".join(sorted(spec.capabilities)), defaults, spec.source)
    Console(width=200).print(table)


@models_app.command("add")
def models_add(
    model_id: Annotated[str, typer.Argument(metavar="ID", help="the Noor model id, e.g. wan-1.3b")],
    path: Annotated[Path, typer.Option(help="weights dir, Hugging Face diffusers layout (model_index.json)")],
    family: Annotated[str | None, typer.Option(help="model family (default: detected from the weights)")] = None,
    dtype: Annotated[str, typer.Option(help="bfloat16, float16 or float32")] = "bfloat16",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N]")] = "auto",
    size: Annotated[str | None, typer.Option(help="default WIDTHxHEIGHT (default: the family's)")] = None,
    frames: Annotated[int | None, typer.Option(help="default number of frames")] = None,
    fps: Annotated[int | None, typer.Option(help="default frames per second")] = None,
    steps: Annotated[int | None, typer.Option(help="default denoising steps")] = None,
    guidance: Annotated[float | None, typer.Option(help="default guidance scale")] = None,
    offload: Annotated[str, typer.Option(help="none, model, sequential or group (CPU offload to a GPU)")] = "none",
    vae_tiling: Annotated[bool, typer.Option("--vae-tiling", help="decode in tiles (less memory)")] = False,
    vae_slicing: Annotated[bool, typer.Option("--vae-slicing", help="decode one clip at a time")] = False,
    attention: Annotated[str, typer.Option(help="diffusers attention backend, e.g. native, flash, sage")] = "",
    cache: Annotated[str, typer.Option(help="none, first-block, faster, pab or taylorseer")] = "none",
    cache_threshold: Annotated[float, typer.Option("--cache-threshold", help="First Block Cache threshold")] = 0.05,
) -> None:
    """Register a local weights dir under a model id, after checking it is complete and of its family."""
    from noor.engine.diffusers import installed
    from noor.engine.diffusers.options import Options

    width, height = _parse_size(size, None, None) or (None, None)
    entry = installed.InstalledModel(
        id=model_id,
        family=family or "",
        path=str(path),
        dtype=dtype,
        device=device,
        width=width,
        height=height,
        frames=frames,
        fps=fps,
        steps=steps,
        guidance=guidance,
        options=Options(offload, vae_tiling, vae_slicing, attention, cache, cache_threshold),
    )
    try:
        added = installed.add(entry)
    except ValueError as err:
        raise BadInput(str(err)) from err
    print(f"{added.id}  {added.family}, {added.dtype}, {added.path}  (in {installed.config_path()})")


@models_app.command("show")
def models_show(model_id: Annotated[str, typer.Argument(metavar="ID", help="a model id")]) -> None:
    """A model's family, capabilities, defaults, shape rules and options."""
    from noor.engine import registry
    from noor.engine.task import TaskError

    try:
        spec = registry.get(model_id)
    except TaskError as err:
        raise BadInput(f"ID: {str(err).split(': ', 1)[1]}") from err
    rows = {
        "id": spec.id,
        "family": spec.family,
        "description": spec.description,
        "weights": spec.source,
        "can do": " ".join(sorted(spec.capabilities)),
        "defaults": f"{spec.native_width}x{spec.native_height}, {spec.native_frames} frames at {spec.default_fps} fps,"
        f" {spec.default_steps} steps, guidance {spec.default_guidance}",
    }
    geometry = getattr(spec, "geometry", None)
    if geometry is not None:
        rows["sizes"] = f"sides in multiples of {geometry.spatial}, up to {spec.limits.max_side}"
        rows["frames"] = f"{geometry.temporal}k+1, up to {spec.limits.max_frames}" if geometry.temporal else "1 (image)"
    entry = getattr(spec, "entry", None)
    if entry is not None:
        rows["dtype"] = f"{entry.dtype} on {entry.device}"
        rows["options"] = ", ".join(f"{k}={v}" for k, v in vars(entry.options).items())
    for key, value in rows.items():
        print(f"{key:12} {value}")


# --- noor perf ---
perf_app = typer.Typer(help="What a request costs on a chip: seconds, memory, energy, dollars.", no_args_is_help=True)
app.add_typer(perf_app, name="perf")
PERF_OPTION_OF = {"width": "--width", "height": "--height", "num_frames": "--frames", "steps": "--steps",
                  "gpus": "--gpus", "strategy": "--strategy", "usd_per_hour": "--usd-per-hour"}
PublishedCsv = Annotated[Path, typer.Argument(metavar="CSV", help="a CSV in the shared published format")]


def _perf_request(model: str, chips: list[str], gpus: int, strategy: str, width: int | None, height: int | None,
                  frames: int | None, steps: int | None, precision: str, compiled: bool,
                  usd_per_hour: float | None) -> list[Any]:
    """Parse the shared `noor perf` options and estimate on each chip; bad input names its option."""
    from noor import catalog, perf

    try:
        arch = catalog.model(model)
    except catalog.UnknownId as err:
        fail("--model", model, f"unknown model; valid: {', '.join(err.valid)}")
    for chip_id in chips:
        if chip_id not in catalog.chip_ids():
            fail("--chip", chip_id, f"unknown chip; valid: {', '.join(catalog.chip_ids())}")
    if precision not in ("auto", "bf16", "fp8"):
        fail("--precision", precision, "must be auto, bf16 or fp8")
    try:
        shape = perf.Shape(
            arch.default_width if width is None else width,
            arch.default_height if height is None else height,
            arch.default_frames if frames is None else frames,
            steps,
        )
        plan = perf.Plan(gpus=gpus, strategy=strategy, precision=None if precision == "auto" else precision,  # type: ignore[arg-type]
                         compiled=compiled, usd_per_hour=usd_per_hour)
        return [perf.estimate(arch, shape, catalog.chip(c), plan) for c in chips]
    except perf.PerfError as err:
        raise BadInput(f"{PERF_OPTION_OF.get(err.field, err.field)}: {str(err).split(': ', 1)[1]}") from err


@perf_app.command("predict")
def perf_predict(
    model: Annotated[str, typer.Option(help="model id from the catalog, e.g. wan2.1-t2v-14b")],
    chip: Annotated[str, typer.Option(help="chip id, e.g. h100-sxm or cpu-local")],
    gpus: Annotated[int, typer.Option(help="chips working on the one request")] = 1,
    strategy: Annotated[str, typer.Option(help="auto, ulysses, ring, cfg or hybrid")] = "auto",
    width: Annotated[int | None, typer.Option(help="pixels (default: the model's)")] = None,
    height: Annotated[int | None, typer.Option(help="pixels (default: the model's)")] = None,
    frames: Annotated[int | None, typer.Option(help="frames (default: the model's; 1 for images)")] = None,
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the model's)")] = None,
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp8 (linear layers)")] = "auto",
    compiled: Annotated[bool, typer.Option("--compiled", help="torch.compile / TensorRT-style fused kernels")] = False,
    usd_per_hour: Annotated[float | None, typer.Option("--usd-per-hour", help="price per chip-hour")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Predict one request's latency, peak memory, energy, FLOPs and cost, with a per-stage breakdown."""
    from noor.perf import report

    (estimate,) = _perf_request(model, [chip], gpus, strategy, width, height, frames, steps, precision, compiled,
                                usd_per_hour)
    data = report.as_json(estimate)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    Console().print(report.estimate_table(estimate))
    if not estimate.fits:
        print(f"does not fit: {estimate.why_not} (peak {estimate.peak_memory_gb:.1f} GB per chip)")
        return
    energy = "-" if estimate.energy_j is None else f"{estimate.energy_j / 1e3:.1f} kJ"
    print(f"latency {estimate.latency_s:.2f} s, peak memory {estimate.peak_memory_gb:.1f} GB/chip, energy {energy},"
          f" {estimate.flops / 1e12:.1f} TFLOP, ${estimate.cost_usd:.4f} at ${estimate.usd_per_hour:.2f}/chip-h")
    for note in estimate.notes:
        print(f"note: {note}")


@perf_app.command("compare")
def perf_compare(
    model: Annotated[str, typer.Option(help="model id from the catalog")],
    chips: Annotated[str | None, typer.Option(help="comma-separated chip ids (default: every catalog chip)")] = None,
    gpus: Annotated[int, typer.Option(help="chips per request")] = 1,
    strategy: Annotated[str, typer.Option(help="auto, ulysses, ring, cfg or hybrid")] = "auto",
    width: Annotated[int | None, typer.Option()] = None,
    height: Annotated[int | None, typer.Option()] = None,
    frames: Annotated[int | None, typer.Option()] = None,
    steps: Annotated[int | None, typer.Option()] = None,
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp8")] = "auto",
    compiled: Annotated[bool, typer.Option("--compiled")] = False,
) -> None:
    """One request on many chips, fastest first."""
    from noor import catalog
    from noor.perf import report

    ids = [c.strip() for c in chips.split(",") if c.strip()] if chips else sorted(catalog.chips())
    estimates = _perf_request(model, ids, gpus, strategy, width, height, frames, steps, precision, compiled, None)
    Console(width=200).print(report.compare_table(estimates))


@perf_app.command("check")
def perf_check(csv_path: PublishedCsv) -> None:
    """Published vs predicted for every row of a CSV, with median and p90 absolute error."""
    from noor.perf import efficiency, published, report
    from noor.perf.calibrate import check

    if not csv_path.exists():
        fail("CSV", str(csv_path), "no such file")
    try:
        data = published.read_any(csv_path)
    except ValueError as err:
        fail("CSV", str(csv_path), str(err).split(": ", 1)[1])
    rows = check(data, efficiency.load())
    Console(width=220).print(report.check_table(rows, f"{csv_path.name}: published vs predicted"))
    for skipped in data.skipped:
        print(f"skipped  {skipped.label}: {skipped.reason}")
    print(report.summary_line(rows))


@perf_app.command("calibrate")
def perf_calibrate(
    data: Annotated[Path, typer.Option(help="folder with measurements.csv and mlperf_sdxl.csv")] = Path(
        "../shared/data/published"
    ),
    out: Annotated[Path | None, typer.Option(help="where to write (default: the package's calibration.toml)")] = None,
) -> None:
    """Fit the efficiency factors on the published figures; print every row and write the constants file."""
    from noor.perf import calibrate, efficiency, report

    paths = [data / "measurements.csv", data / "mlperf_sdxl.csv"]
    for p in paths:
        if not p.exists():
            fail("--data", str(data), f"has no {p.name}")
    with console.status("fitting…"):
        _, rows = calibrate.calibrate(paths, efficiency.load(), out)
    efficiency.load.cache_clear()
    Console(width=220).print(report.check_table(rows, "calibration: published vs fitted"))
    print(report.summary_line(rows))
    print(f"wrote {out or efficiency.calibration_path()}")


# --- end noor perf ---


# --- noor plan ---
plan_app = typer.Typer(help="Plan the compute: megawatts -> chips, racks, videos/day and dollars.",
                       no_args_is_help=True)
app.add_typer(plan_app, name="plan")
PLAN_OPTION_OF = {"power_mw": "--power-mw", "chip": "--chip", "chips": "--chips", "cooling": "--cooling",
                  "pue": "--pue", "power_price": "--power-price", "life_years": "--life-years",
                  "utilisation": "--utilisation", "set": "--set", "assumptions_file": "--assumptions", "mix": "--mix",
                  "scenario": "SCENARIO", "budget_usd": "--budget-usd", "site": "--site", "objective": "--objective",
                  "demand_per_day": "--demand", "sort_by": "--by"}
PlanPue = Annotated[float | None, typer.Option("--pue", help="facility W per IT W (default: by --cooling)")]
PlanPowerPrice = Annotated[float | None, typer.Option("--power-price", help="USD per kWh")]
PlanLife = Annotated[float | None, typer.Option("--life-years", help="accelerator depreciation, years")]
PlanUtil = Annotated[float | None, typer.Option("--utilisation", help="max busy fraction of each pool, (0, 1]")]
PlanSet = Annotated[list[str] | None, typer.Option("--set", help="override any assumption: key=value (repeat)")]
PlanAssumptions = Annotated[Path | None, typer.Option("--assumptions", help="TOML of overrides: [assumptions] key = v")]
PlanMix = Annotated[Path | None, typer.Option("--mix", help="request mix TOML (default: the packaged one)")]
PlanCooling = Annotated[str, typer.Option("--cooling", help="air or liquid")]
PlanJson = Annotated[bool, typer.Option("--json", help="print the JSON document instead of Markdown")]
PlanHtml = Annotated[Path | None, typer.Option("--html", help="also write an HTML report (inline SVG charts)")]
PlanMd = Annotated[Path | None, typer.Option("--markdown", help="also write the Markdown report")]


def _plan_bad(err: Exception) -> NoReturn:
    from noor.plan import PlanError

    assert isinstance(err, PlanError)
    name = PLAN_OPTION_OF.get(err.field, err.field)
    raise BadInput(f"{name}: {err.message}, got {err.value!r}") from err


def _plan_inputs(pue: float | None, power_price: float | None, life_years: float | None, utilisation: float | None,
                 sets: list[str] | None, assumptions_file: Path | None, mix: Path | None) -> Any:
    from noor.plan import inputs
    from noor.plan.assumptions import parse_set

    overrides = parse_set(sets or [])
    opts = inputs.Options(pue=pue, power_price=power_price, life_years=life_years, utilisation=utilisation,
                          set=overrides, assumptions_file=assumptions_file, mix=mix)
    return inputs.resolve(opts, PLAN_OPTION_OF)


def _plan_emit(doc: dict[str, Any], as_json: bool, markdown_path: Path | None, html_path: Path | None) -> None:
    from noor.plan import report

    text = report.markdown(doc)
    if markdown_path:
        markdown_path.write_text(text, encoding="utf-8")
    if html_path:
        html_path.write_text(report.html_report(doc), encoding="utf-8")
    print(report.to_json(doc) if as_json else text, end="" if not as_json else "\n")
    for path in (markdown_path, html_path):
        if path:
            console.print(f"wrote {path}")


@plan_app.command("site")
def plan_site_cmd(
    power_mw: Annotated[float, typer.Option("--power-mw", help="facility power, MW")],
    chip: Annotated[str, typer.Option(help="chip id, e.g. b200 (see `noor plan chips`)")],
    cooling: PlanCooling = "liquid",
    pue: PlanPue = None,
    power_price: PlanPowerPrice = None,
    life_years: PlanLife = None,
    utilisation: PlanUtil = None,
    sets: PlanSet = None,
    assumptions_file: PlanAssumptions = None,
    mix: PlanMix = None,
    as_json: PlanJson = False,
    html_out: PlanHtml = None,
    md_out: PlanMd = None,
) -> None:
    """One site: facility MW -> IT -> chips, racks -> videos/day, kWh and $ per video; every assumption listed."""
    from noor.plan import PlanError
    from noor.plan.site import plan_site

    try:
        mix_, a = _plan_inputs(pue, power_price, life_years, utilisation, sets, assumptions_file, mix)
        doc = plan_site(power_mw, chip, mix_, a, cooling).to_dict()
    except PlanError as err:
        _plan_bad(err)
    _plan_emit(doc, as_json, md_out, html_out)


@plan_app.command("chips")
def plan_chips_cmd(
    power_mw: Annotated[float, typer.Option("--power-mw", help="facility power, MW")],
    chips: Annotated[str | None, typer.Option(help="comma-separated chip ids (default: every catalog chip)")] = None,
    by: Annotated[str, typer.Option("--by", help="videos_per_mw, usd_per_video or time_to_video")] = "videos_per_mw",
    cooling: PlanCooling = "liquid",
    pue: PlanPue = None,
    power_price: PlanPowerPrice = None,
    life_years: PlanLife = None,
    utilisation: PlanUtil = None,
    sets: PlanSet = None,
    assumptions_file: PlanAssumptions = None,
    mix: PlanMix = None,
    as_json: PlanJson = False,
    html_out: PlanHtml = None,
    md_out: PlanMd = None,
) -> None:
    """Every chip on the same power and mix, ranked by videos/day per MW, $/video or time; misfits marked."""
    from noor.plan import PlanError
    from noor.plan.chips import rank_chips

    ids = [c.strip() for c in chips.split(",") if c.strip()] if chips else None
    try:
        mix_, a = _plan_inputs(pue, power_price, life_years, utilisation, sets, assumptions_file, mix)
        doc = rank_chips(power_mw, mix_, a, cooling, ids, by).to_dict()
    except PlanError as err:
        _plan_bad(err)
    _plan_emit(doc, as_json, md_out, html_out)


@plan_app.command("growth")
def plan_growth_cmd(
    scenario: Annotated[Path, typer.Argument(metavar="SCENARIO", help="scenario TOML (see examples/plan/growth.toml)")],
    pue: PlanPue = None,
    power_price: PlanPowerPrice = None,
    life_years: PlanLife = None,
    utilisation: PlanUtil = None,
    sets: PlanSet = None,
    assumptions_file: PlanAssumptions = None,
    mix: PlanMix = None,
    as_json: PlanJson = False,
    html_out: PlanHtml = None,
    md_out: PlanMd = None,
) -> None:
    """Phases of building against a demand forecast: chips to buy, capacity vs demand, utilisation, spend."""
    from noor.plan import PlanError, growth

    try:
        sc = growth.load_scenario(scenario)
        mix_, a = _plan_inputs(pue, power_price, life_years, utilisation, sets, assumptions_file, mix)
        a = a.with_overrides({k: v for k, v in sc.overrides.items() if k not in a.overrides()})
        doc = growth.plan_growth(sc, a, mix_ if mix else None).to_dict()
    except PlanError as err:
        _plan_bad(err)
    _plan_emit(doc, as_json, md_out, html_out)


@plan_app.command("optimise")
def plan_optimise_cmd(
    site: Annotated[list[str], typer.Option("--site", help="NAME=MW[:air|liquid], repeat for each site")],
    chips: Annotated[str | None, typer.Option(help="comma-separated candidate chip ids (default: every chip)")] = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="capex limit, USD")] = None,
    objective: Annotated[str, typer.Option(help="max-output (videos/day) or min-cost (of --demand)")] = "max-output",
    demand: Annotated[float | None, typer.Option("--demand", help="videos/day to serve (min-cost)")] = None,
    supply: Annotated[list[str] | None, typer.Option("--supply", help="CHIP=MAX_CHIPS available, repeat")] = None,
    pue: PlanPue = None,
    power_price: PlanPowerPrice = None,
    life_years: PlanLife = None,
    utilisation: PlanUtil = None,
    sets: PlanSet = None,
    assumptions_file: PlanAssumptions = None,
    mix: PlanMix = None,
    as_json: PlanJson = False,
    html_out: PlanHtml = None,
    md_out: PlanMd = None,
) -> None:
    """The chip mix and split across sites that maximises videos/day or minimises cost (HiGHS MILP)."""
    from noor.plan import PlanError
    from noor.plan import optimise as opt

    ids = [c.strip() for c in chips.split(",") if c.strip()] if chips else None
    try:
        limits = [opt.parse_site(s, "--site") for s in site]
        caps: dict[str, int] = {}
        for item in supply or []:
            chip_id, sep, count = item.partition("=")
            if not sep or not count.strip().isdigit():
                raise PlanError("--supply", item, "must be CHIP=MAX_CHIPS")
            caps[chip_id.strip()] = int(count)
        mix_, a = _plan_inputs(pue, power_price, life_years, utilisation, sets, assumptions_file, mix)
        doc = opt.optimise(limits, ids, mix_, a, budget_usd, objective, demand, caps).to_dict()  # type: ignore[arg-type]
    except PlanError as err:
        _plan_bad(err)
    _plan_emit(doc, as_json, md_out, html_out)


# --- end noor plan ---


keys_app = typer.Typer(help="Tenants' API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str | None, typer.Option(help="tenant name (created if new)")] = None,
    worker: Annotated[bool, typer.Option("--worker", help="a key for `noor worker` instead of a tenant")] = False,
    regions: Annotated[str | None, typer.Option(help="comma-separated regions the tenant's jobs may use")] = None,
    credits: Annotated[float, typer.Option(help="starting credits for a new tenant, in US cents")] = 0.0,
    max_concurrent: Annotated[int, typer.Option("--max-concurrent", min=1, help="queued+running jobs at once")] = 10,
    per_minute: Annotated[int, typer.Option("--per-minute", min=1, help="creates per rolling minute")] = 20,
) -> None:
    """Create an API key (and the tenant if it is new). The key is printed once; only its hash is kept."""
    from noor.config import settings
    from noor.jobs import tenants
    from noor.jobs.store import Store

    if worker == (tenant is not None):
        fail("--tenant", tenant, "give --tenant NAME for a tenant key, or --worker for a worker key")
    store = Store(settings().resolved_database_url)
    try:
        if tenant is None:  # --worker
            print(tenants.create_worker_key(store))
            return
        if tenant not in {t.name for t in tenants.list_tenants(store)}:
            region_list = [r.strip() for r in regions.split(",") if r.strip()] if regions else None
            tenants.create_tenant(
                store,
                tenant,
                regions=region_list,
                credits_cents=credits,
                max_concurrent=max_concurrent,
                max_per_minute=per_minute,
            )
        print(tenants.create_key(store, tenant))
    except tenants.TenantError as err:
        raise BadInput(f"--tenant: {err}") from err
    finally:
        store.close()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port (default 8000)")] = None,
    workers: Annotated[int | None, typer.Option(min=0, max=64, help="local worker processes (default 1)")] = None,
) -> None:
    """Serve the Dream Machine-compatible API with local workers on the built-in model."""
    import uvicorn

    from noor import catalog, logs
    from noor.api.app import ApiConfig, create_app, render_payload
    from noor.api.requests import DEFAULT_ALIASES
    from noor.config import settings
    from noor.engine import registry
    from noor.jobs import tenants
    from noor.jobs.assets import AssetStore
    from noor.jobs.store import Store
    from noor.runtime.local import LocalWorkers
    from noor.runtime.ssrf import Guard
    from noor.runtime.webhooks import WebhookConfig, WebhookDeliverer
    from noor.scheduling import SchedulingError

    cfg = settings()
    host, port = host or cfg.host, port or cfg.port
    count = cfg.workers if workers is None else workers
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        policy = cfg.scheduling_policy()
    except SchedulingError as err:
        raise BadInput(f"NOOR_SCHEDULER: {err}") from err
    store = Store(cfg.resolved_database_url, scheduler=policy)
    if not tenants.list_tenants(store):  # first run: an admin tenant and its key, shown once
        tenants.create_tenant(store, "admin", credits_cents=1_000_000, max_concurrent=100, max_per_minute=600)
        print(f"admin API key (shown once): {tenants.create_key(store, 'admin')}")
    logs.setup(cfg.log_level, cfg.log_format)
    aliases = DEFAULT_ALIASES | cfg.aliases
    for alias, target in aliases.items():
        if target not in {spec.id for spec in registry.available()}:
            raise BadInput(f"NOOR_ALIASES: {alias!r} maps to {target!r}, which is not an installed model")
    guard = Guard.from_strings(cfg.ssrf_allow)
    secret = cfg.secret()
    try:
        catalog.chip(cfg.worker_chip)
    except catalog.UnknownId as err:
        raise BadInput(f"NOOR_WORKER_CHIP: {err}") from err
    config = ApiConfig(
        secret=secret,
        guard=guard,
        aliases=aliases,
        public_url=cfg.public_url,
        chip=cfg.worker_chip,
        markup=cfg.price_markup,
    )
    api = create_app(store, AssetStore(cfg.resolved_assets_url), config)
    pool = LocalWorkers(count, cfg.resolved_database_url, cfg.resolved_assets_url, cfg.threads)
    pool.start()
    base_url = cfg.public_url or f"http://{host}:{port}"
    hooks = WebhookDeliverer(
        store, WebhookConfig(secret=secret, guard=guard, render=lambda p: render_payload(base_url, secret, p))
    )
    stop_hooks = threading.Event()
    threading.Thread(target=hooks.run_forever, args=(stop_hooks,), daemon=True, name="webhooks").start()
    print(f"Noor is serving on http://{host}:{port}  (data in {cfg.data_dir}, {count} local worker(s))", flush=True)
    try:
        uvicorn.run(api, host=host, port=port, log_config=logs.config(cfg.log_level, cfg.log_format))
    finally:
        stop_hooks.set()
        pool.close()
        store.close()


@app.command("worker")
def worker_command(
    server: Annotated[str, typer.Option(help="the `noor serve` URL, e.g. http://10.0.0.5:8000")],
    key: Annotated[str, typer.Option(help="a worker key (`noor keys create --worker` on the server)")],
    model: Annotated[list[str], typer.Option(help="models this worker runs (repeatable)")] = ["tiny"],  # noqa: B006
    name: Annotated[str | None, typer.Option(help="worker name (default: host-pid)")] = None,
    region: Annotated[str | None, typer.Option(help="only run jobs that may run in this region")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads")] = None,
    lease_s: Annotated[float, typer.Option("--lease-s", min=5, help="seconds a claim lasts without a heartbeat")] = 30,
) -> None:
    """Run jobs for a `noor serve` from this process or machine, through its worker API."""
    import os
    import signal
    import socket

    from noor import logs
    from noor.config import settings
    from noor.engine import registry
    from noor.runtime.local import load_backend
    from noor.runtime.remote import Server, ServerError
    from noor.runtime.worker import Worker, WorkerConfig

    for m in model:
        try:
            registry.get(m)
        except registry.UnknownModel as err:
            raise BadInput(f"--model: {err}") from err
    if not server.startswith(("http://", "https://")):
        fail("--server", server, "must be an http:// or https:// URL")
    logs.setup(settings().log_level, settings().log_format)
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    remote = Server(server, key, name)
    try:
        remote.ping()  # checks the URL and the key before loading anything
    except ServerError as err:
        raise BadInput(f"--server: {err}") from err
    config = WorkerConfig(name=name, models=[*model, "resample"], lease_s=lease_s, region=region)
    worker = Worker(remote, remote, config, lambda m: load_backend(m, threads))
    for m in model:
        worker.backend(m)  # load once, before the first job
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"worker {name} runs {', '.join(model)} for {server}", file=sys.stderr, flush=True)
    try:
        worker.run_forever(stop)
    except KeyboardInterrupt:
        pass
    finally:
        remote.close()


# --- noor simulate ---
simulate_app = typer.Typer(help="Simulate a fleet over a day: queues, SLOs, failures, energy, cost.",
                           no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")
ScenarioFile = Annotated[Path, typer.Argument(metavar="SCENARIO.toml", help="a scenario (see examples/sim/)")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="override a key: sites[0].gpus=512 (repeatable)")]


def _toml_value(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def _scenario_data(path: Path, seed: int | None, sets: list[str] | None) -> dict[str, Any]:
    import tomllib

    from noor import sim

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail("SCENARIO", str(path), "no such file")
    except tomllib.TOMLDecodeError as err:
        fail("SCENARIO", str(path), f"not valid TOML ({err})")
    overrides: dict[str, Any] = {}
    for item in sets or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            fail("--set", item, "must be KEY=VALUE, e.g. sites[0].gpus=512")
        overrides[key.strip()] = _toml_value(value.strip())
    if seed is not None:
        overrides["seed"] = seed
    try:
        data = sim.apply_overrides(data, overrides)
    except sim.ScenarioError as err:
        raise BadInput(f"--set: {err}") from err
    if isinstance(data.get("trace"), dict) and "path" in data["trace"]:
        data["trace"]["path"] = str((path.parent / str(data["trace"]["path"])).resolve())
    return data


def _write(path: Path, text: str, option: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        fail(option, str(path), f"cannot write ({err.strerror})")


@simulate_app.command("run")
def simulate_run(
    scenario: ScenarioFile,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result (with the resolved scenario) "
                                                                  "as JSON; - for stdout")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="write an HTML report with plots")] = None,
    analytic: Annotated[bool, typer.Option("--analytic", help="queueing approximation per site and hour "
                                                             "instead of the event simulation")] = False,
    seed: Annotated[int | None, typer.Option(help="override the scenario's seed")] = None,
    set_: SetOption = None,
) -> None:
    """Run one scenario: a summary table, and optionally JSON and an HTML report."""
    from noor import sim
    from noor.sim.summary import jsonable, tables

    data = _scenario_data(scenario, seed, set_)
    try:
        parsed = sim.parse(data)
        with _progress() as bar:
            task = bar.add_task("simulating" if not analytic else "approximating", total=100, info=scenario.name)
            result = sim.run(parsed, progress=lambda x: bar.update(task, completed=100 * x), analytic=analytic,
                             keep=html is not None)
            bar.update(task, completed=100)
    except sim.ScenarioError as err:
        raise BadInput(f"{scenario.name}: {err}") from err
    out = Console(width=None if sys.stdout.isatty() else 160)  # piped: wide enough for the tables
    if json_out is not None and str(json_out) == "-":
        print(json.dumps(jsonable(result), indent=2))
    else:
        for table in tables(result):
            out.print(table)
        if json_out is not None:
            _write(json_out, json.dumps(jsonable(result), indent=2), "--json")
            console.print(f"wrote {json_out}")
    if html is not None:
        from noor.sim.report import html_report

        _write(html, html_report(result), "--html")
        console.print(f"wrote {html}")


@simulate_app.command("sweep")
def simulate_sweep(
    scenario: ScenarioFile,
    set_: Annotated[list[str] | None, typer.Option("--set", help="a key and its values: scheduling.policy=fifo,sjf "
                                                                 "(repeatable; the grid is every combination)")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="points run at once (local processes)")] = 2,
    ray: Annotated[bool, typer.Option("--ray", help="run the points as Ray tasks (Ray must be installed)")] = False,
    analytic: Annotated[bool, typer.Option("--analytic", help="the queueing approximation for every point")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the rows as JSON")] = None,
) -> None:
    """Run a grid of variants of one scenario in parallel and tabulate them."""
    from noor.sim import sweep as sweeps
    from noor.sim.summary import jsonable

    data = _scenario_data(scenario, None, None)
    axes: dict[str, list[Any]] = {}
    for item in set_ or []:
        key, eq, values = item.partition("=")
        if not eq or not key or not sweeps.split_values(values):
            fail("--set", item, "must be KEY=V1,V2,..., e.g. sites[0].gpus=256,512")
        axes[key.strip()] = [_toml_value(v) for v in sweeps.split_values(values)]
    if not axes:
        fail("--set", None, "give at least one KEY=V1,V2,... to sweep")
    n = 1
    for axis in axes.values():
        n *= len(axis)
    try:
        if ray:
            sweeps.require_ray()
        with _progress() as bar:
            task = bar.add_task("sweeping", total=n, info=f"{n} points, {'ray' if ray else f'{jobs} processes'}")
            rows = sweeps.sweep(data, axes, jobs=jobs, analytic=analytic, ray=ray,
                                progress=lambda done, total: bar.update(task, completed=done))
    except sweeps.SweepError as err:
        raise BadInput(str(err)) from err
    table = Table(title=f"{scenario.name}: {n} points ({'analytic' if analytic else 'event'})")
    for key in axes:
        table.add_column(key)
    for col in ("GPUs", "utilisation", "videos/h", "wait p95 s", "e2e p95 s", "SLO met", "energy MWh", "$/video"):
        table.add_column(col, justify="right")

    def num(x: Any, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    for row in rows:
        table.add_row(*(str(row[k]) for k in axes), f"{row['gpus']:,}", num(row["utilisation"], ".1%"),
                      num(row["videos_per_hour"], ",.0f"), num(row["wait_p95_s"], ",.1f"),
                      num(row["e2e_p95_s"], ",.1f"), num(row["slo_attainment"], ".1%"),
                      num(row["energy_kwh"] and row["energy_kwh"] / 1000, ",.1f"), num(row["usd_per_video"], ".3f"))
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if json_out is not None:
        _write(json_out, json.dumps(jsonable({"scenario": data, "axes": axes, "rows": rows}), indent=2), "--json")
        console.print(f"wrote {json_out}")


def main() -> None:
    """Entry point: user errors are one line on stderr and exit code 2, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except BadInput as err:
        print(f"noor: error: {err}", file=sys.stderr)
        sys.exit(2)
    except pydantic.ValidationError as err:  # a bad NOOR_* setting
        first = err.errors()[0]
        name = "NOOR_" + str(first["loc"][0]).upper() if first["loc"] else err.title
        print(f"noor: error: {name}: {first['msg']}, got {first.get('input')!r}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        print("noor: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as err:  # typer's usage errors: bad option, bad value, missing argument
        show = getattr(err, "show", None)
        if type(err).__name__ == "NoArgsIsHelpError" and show is not None:
            show()
        else:
            message = err.format_message() if hasattr(err, "format_message") else str(err)
            print(f"noor: error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    if isinstance(code, int):
        sys.exit(code)


if __name__ == "__main__":
    main()

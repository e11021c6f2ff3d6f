"""`noor generate`, `noor train tiny`, `noor eval tiny` and `noor models`: making pixels."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from noor.cli.base import BadInput, CheckpointEvery, Nproc, Resume, app, console, fail, progress, run_training

if TYPE_CHECKING:
    from noor.engine.sound import AudioSpec

train_app = typer.Typer(help="Train the built-in models, or a LoRA on an open model.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a model.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")


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
    "parallel": "--parallel",
}


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


def _parallel_plan(spec: Any, task: Any, text: str | None) -> Any:
    """`--parallel` as a plan this model and request can run (TaskError naming why not); None: the model's own."""
    from noor.engine.diffusers import parallel
    from noor.engine.task import TaskError

    if text is None:
        return None
    try:
        plan = parallel.parse(text)
    except parallel.ParallelError as err:
        raise TaskError("parallel", text, str(err).split(": ", 1)[1]) from None
    if plan.gpus > 1 and not spec.can_split:
        raise TaskError("parallel", text, f"model {spec.id!r} runs on one rank; several ranks are for the open models")
    spec.splits(task, plan)
    return plan


def _concept(path: Path) -> Any:
    """A --concept folder as a Task's Concept: its key the one its lora_config.json suggests, else the folder's name."""
    from noor.engine.task import Concept

    if not path.is_dir():
        fail("--concept", str(path), "no such folder (an adapter folder written by noor train lora)")
    key = path.resolve().name
    with contextlib.suppress(OSError, ValueError, AttributeError):  # the backend's check names what is wrong
        key = str(json.loads((path / "lora_config.json").read_text(encoding="utf-8")).get("key") or key)
    return Concept(key, str(path.resolve()))


def _concept_notes(notes: list[str], prompt: str, concepts: Any) -> list[str]:
    """noor-tiny's notes without the one on words it does not know when the task's concepts add them all."""
    from noor.arabic import normalize_word
    from noor.config import settings
    from noor.engine.tiny.tokenizer import vocabulary

    added: set[str] = set()
    for c in concepts:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            words = json.loads((Path(c.path) / "lora_config.json").read_text(encoding="utf-8")).get("words", {})
            added |= {str(w) for ws in words.values() for w in ws}
    unknown = vocabulary(settings().tiny_weights).unknown_words(prompt)
    if unknown and all(normalize_word(w) in added for w in unknown):
        return [n for n in notes if not n.startswith("tiny does not know")]
    return notes


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="what to see, in English or Arabic")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help=".mp4 for a video; .png/.jpg/.webp for one frame")
    ] = Path("noor.mp4"),
    model: Annotated[
        str, typer.Option(help="model id (`tiny` is built in; see `noor models list`) or an API name such as ray-2")
    ] = "tiny",
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
    parallel: Annotated[
        str | None,
        typer.Option(help="run on several ranks: ulysses=K, ring=K, cfg=2 or a mix (ulysses=2,cfg=2); open models"),
    ] = None,
    concept: Annotated[
        list[Path] | None,
        typer.Option(
            "--concept", help="a trained concept to draw with (an adapter folder: noor train lora); repeatable"
        ),
    ] = None,
) -> None:
    """Generate a video (or an image) from a prompt."""
    from noor.engine import media, registry
    from noor.engine.task import Task, TaskError

    started = time.perf_counter()
    # 1. validate everything before any work
    try:
        from noor.config import settings

        aliases = registry.DEFAULT_ALIASES | settings().aliases  # the API's model names too (ray-2, sora-2...)
        spec = registry.get(aliases.get(model, model))
        if weights is not None and not spec.weights_option:
            fail("--weights", str(weights), f"model {spec.id!r} takes no weights dir (its weights: {spec.source})")
        suffix = output.suffix.lower()
        if suffix not in media.VIDEO_SUFFIXES + media.IMAGE_SUFFIXES:
            fail("-o", str(output), "must end in .mp4, .png, .jpg, .jpeg or .webp")
        if not output.parent.is_dir():
            fail("-o", str(output), f"no such folder: {str(output.parent)!r}")
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
            concepts=tuple(_concept(path) for path in concept or ()),
        )
        notes = spec.check(task)
        if task.concepts and spec.id == "tiny":
            notes = _concept_notes(notes, prompt, task.concepts)
        plan = _parallel_plan(spec, task, parallel)
    except TaskError as err:
        raise BadInput(f"{OPTION_OF.get(err.field, err.field)}: {str(err).split(': ', 1)[1]}") from err
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")

    # 2. load the model once, denoise with a progress bar, write the file
    with console.status(f"loading {spec.id}…"):
        from noor.runtime.local import load_backend

        backend = load_backend(spec.id, weights=weights, parallel=plan)
    for path in concept or ():
        check = getattr(backend, "check_concept", None)
        if check is None:
            fail("--concept", str(path), f"model {spec.id!r} does not load trained concepts here")
        try:
            check(path)
        except ValueError as err:
            raise BadInput(f"--concept: {err}") from None
    ranks = getattr(backend, "plan", None)  # a k-rank backend (noor.runtime.ranks)
    on_ranks = ""
    if ranks is not None:
        on_ranks = f", on {ranks.gpus} ranks ({ranks.text()})"
    with progress() as bar:
        job = bar.add_task("denoising", total=task.steps or spec.default_steps, info="")

        def on_progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        result = backend.generate([task], on_progress)[0]
    path = media.save(result, output)
    seconds = time.perf_counter() - started
    kind = "image" if result.is_image else f"{len(result.frames)} frames, {result.fps} fps"
    print(f"{path}  {kind}, {result.width}x{result.height}, {seconds:.1f} s{on_ranks}")


@train_app.command("tiny")
def train_tiny(
    out: Annotated[Path, typer.Option(help="where to write the pipeline (Hugging Face layout)")] = Path("noor-tiny"),
    steps: Annotated[int, typer.Option(min=1, help="denoiser optimiser steps")] = 5500,
    schedule_steps: Annotated[
        int, typer.Option("--schedule-steps", help="the learning-rate schedule spans the larger of this and --steps")
    ] = 6500,
    vae_steps: Annotated[int, typer.Option("--vae-steps", min=1, help="VAE optimiser steps")] = 1200,
    decoder_steps: Annotated[int, typer.Option("--decoder-steps", min=0, help="decoder refinement steps")] = 1200,
    pool_clips: Annotated[int, typer.Option("--pool-clips", min=1, help="rendered clips encoded for training")] = 12000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    seed: Annotated[int, typer.Option()] = 0,
    bf16: Annotated[bool, typer.Option("--bf16/--fp32", help="bfloat16 autocast (faster only on some CPUs)")] = False,
    attention: Annotated[
        str, typer.Option(help="denoiser self-attention: joint (3D rotary; the shipped weights) or factorised")
    ] = "joint",
    shift: Annotated[
        float, typer.Option(help="noise-level shift in training and sampling (1: none; SD3/Wan shift large inputs)")
    ] = 3.0,
    conv_channels: Annotated[
        int,
        typer.Option("--conv-channels", help="conv stem and head width at full latent resolution (0: none)"),
    ] = 0,
    shared_noise: Annotated[
        float,
        typer.Option("--shared-noise", help="share of each frame's noise common to all frames (0: none)"),
    ] = 0.0,
    image_batch: Annotated[
        int,
        typer.Option("--image-batch", help="first frames (images) trained beside each batch of clips (0: none)"),
    ] = 128,
    image_first: Annotated[
        bool,
        typer.Option(
            "--image-first/--clip-at-once",
            help="sample text-to-video as first frame, then clip (Emu Video's two stages)",
        ),
    ] = True,
    clip_guidance_scale: Annotated[
        float,
        typer.Option("--clip-guidance-scale", help="the saved pipeline's guidance for clips (images take the call's)"),
    ] = 3.0,
    clip_guidance_min_sigma: Annotated[
        float,
        typer.Option("--clip-guidance-min-sigma", help="guide a clip only at noise levels at or above this (0: all)"),
    ] = 0.7,
    tune_steps: Annotated[
        int, typer.Option("--tune-steps", min=0, help="steps of the second denoiser phase (stage 5; 0: none)")
    ] = 1500,
    tune_lr: Annotated[float, typer.Option("--tune-lr", help="the second phase's peak learning rate")] = 2e-4,
    tune_uniform_sigma_p: Annotated[
        float,
        typer.Option("--tune-uniform-sigma-p", help="share of the second phase's noise levels drawn uniformly"),
    ] = 0.5,
    tune_motion_weight: Annotated[
        float,
        typer.Option("--tune-motion-weight", help="extra loss weight where the clip changes, second phase (0: none)"),
    ] = 0.0,
    tune_keyframe_concat: Annotated[
        bool,
        typer.Option(
            "--tune-keyframe-concat/--no-tune-keyframe-concat",
            help="the second phase adds keyframe concatenation (every token sees the given frames at its place)",
        ),
    ] = False,
    init_vae: Annotated[
        str | None, typer.Option("--init-vae", help="start from this pipeline's VAE (skips stages 1-2)")
    ] = None,
    init_denoiser: Annotated[
        str | None,
        typer.Option("--init-denoiser", help="start the second phase from this pipeline's denoiser (skips stage 4)"),
    ] = None,
    nproc: Nproc = 1,
    checkpoint_every: CheckpointEvery = 0,
    resume: Resume = False,
) -> None:
    """Train noor-tiny from scratch on the synthetic world, with a fixed seed (VAE, then denoiser); on --nproc
    processes, the same run (the same seed gives the same loss curve) in less time."""
    from noor.engine.tiny.train import ConfigError, TrainConfig, train

    try:
        cfg = TrainConfig(
            steps=steps,
            schedule_steps=schedule_steps,
            vae_steps=vae_steps,
            decoder_steps=decoder_steps,
            pool_clips=pool_clips,
            batch_size=batch_size,
            seed=seed,
            bf16=bf16,
            attention=attention,
            shift=shift,
            conv_channels=conv_channels,
            shared_noise=shared_noise,
            image_batch=image_batch,
            image_first=image_first,
            clip_guidance_scale=clip_guidance_scale,
            clip_guidance_min_sigma=clip_guidance_min_sigma,
            tune_steps=tune_steps,
            tune_lr=tune_lr,
            tune_uniform_sigma_p=tune_uniform_sigma_p,
            tune_motion_weight=tune_motion_weight,
            tune_keyframe_concat=tune_keyframe_concat,
            init_vae=init_vae,
            init_denoiser=init_denoiser,
        )
    except ConfigError as err:  # the option is the field's name; the CLI says which value it got
        fail("--" + err.field.replace("_", "-"), str(err.value), err.message)
    started = time.perf_counter()
    labels = {
        "vae": "1/5 VAE",
        "decoder": "2/5 decoder",
        "encode": "3/5 encoding clips",
        "denoiser": "4/5 denoiser",
        "tune": "5/5 second phase",
    }
    batches = {"--batch-size": batch_size, "--image-batch": image_batch}
    losses = run_training(train, labels, cfg, out, nproc, checkpoint_every, resume, batches)
    minutes = (time.perf_counter() - started) / 60
    done = f"{0 if init_denoiser else steps} + {tune_steps}" if tune_steps else f"{steps}"
    print(f"{out}  {done} denoiser steps, final loss {sum(losses[-50:]) / len(losses[-50:]):.4f}, {minutes:.1f} min")


def _uint8(frame: Any) -> Any:
    return None if frame is None else (frame * 255).round().astype("uint8")


def _median(pairs: list[tuple[float, float]], index: int) -> str:
    return f"{statistics.median(p[index] for p in pairs):.1f}" if pairs else "-"


@eval_app.command("tiny")
def eval_tiny(
    weights: Annotated[Path | None, typer.Option(help="weights dir (default: the packaged ones)")] = None,
    per_language: Annotated[int, typer.Option("--per-language", min=1, max=32, help="prompts per language")] = 32,
    keyframe_checks: Annotated[
        int,
        typer.Option(
            "--keyframe-checks", min=0, help="start-frame clips, loops and middle-keyframe clips, half in each language"
        ),
    ] = 16,
    two_object_scenes: Annotated[
        int, typer.Option("--two-object-scenes", min=0, max=64, help="two-object scenes, each in both languages")
    ] = 8,
    aspect_prompts: Annotated[
        int, typer.Option("--aspect-prompts", min=0, max=64, help="prompts also drawn at 16:9 and 9:16")
    ] = 16,
    seeds: Annotated[int, typer.Option(min=1, max=10, help="draws of each prompt, each with its own seed")] = 1,
    steps: Annotated[int | None, typer.Option(min=1, max=100)] = None,
    batch: Annotated[
        int, typer.Option(min=1, max=64, help="clips drawn at once (the same clips at any batch size, only faster)")
    ] = 8,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the full report here")] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="a reduced set (what the tests run): half the prompts, checks and scenes"),
    ] = False,
    edits: Annotated[
        bool,
        typer.Option(
            "--edits",
            help="check edits and reframes instead, on the same prompts (--aspect-prompts: reframes)",
        ),
    ] = False,
    concept: Annotated[
        Path | None,
        typer.Option(
            "--concept",
            help="check a trained concept instead (an adapter folder: noor train lora --model tiny): its shape on "
            "held-out prompts with and without it, and the base figures with it loaded",
        ),
    ] = None,
) -> None:
    """Check noor-tiny's colour, shape and motion on held-out prompts, and its keyframe fidelity (or, with
    --edits, its edits and reframes)."""
    from noor.engine.task import Task
    from noor.engine.tiny import eval as tiny_eval
    from noor.engine.tiny.backend import TinyBackend

    if quick:
        per_language, keyframe_checks, two_object_scenes, aspect_prompts = tiny_eval.QUICK.values()

    if concept is not None:  # its own prompts: the base eval's other parts are not run
        unused = {"--edits": edits, "--seeds": seeds != 1}
        if not quick:
            unused |= {"--keyframe-checks": keyframe_checks != 16, "--two-object-scenes": two_object_scenes != 8}
            unused |= {"--aspect-prompts": aspect_prompts != 16}
        for option, given in unused.items():
            if given:
                raise BadInput(f"{option}: not part of the --concept eval (held-out and base prompts); leave it out")
    backend = TinyBackend(weights)
    if concept is not None:
        _eval_concept(backend, concept, per_language, steps, batch, json_out)
        return
    prompts = tiny_eval.eval_prompts(per_language, seeds)
    if edits:
        _eval_edits(backend, prompts, min(aspect_prompts, len(prompts)), steps, batch, json_out)
        return

    def generate_clips(clips: list[tiny_eval.Clip]) -> list[Any]:
        tasks = [
            Task(
                c.prompt,
                seed=c.seed,
                steps=steps,
                start_frame=_uint8(c.start_frame),
                end_frame=_uint8(c.end_frame),
                loop=c.loop,
                width=c.width,
                height=c.height,
                keyframes=tuple((index, _uint8(frame)) for index, frame in c.keyframes),
            )
            for c in clips
        ]
        return [media.frames.astype("float32") / 255.0 for media in backend.generate(tasks)]

    with progress() as bar:
        aspect_prompts = min(aspect_prompts, len(prompts))
        job = bar.add_task("evaluating", total=None, info="clips")
        report = tiny_eval.evaluate(
            generate_clips,
            prompts,
            keyframe_checks,
            lambda done, total: bar.update(job, completed=done, total=total),
            two_object_scenes,
            aspect_prompts,
            batch,
            index_checks=keyframe_checks,
        )

    table = Table(title="noor-tiny on held-out prompts")
    table.add_column("language")
    for attribute, target in tiny_eval.TARGETS.items():
        table.add_column(f"{attribute} (>= {target:.0%})", justify="right")
    for lang, acc in report.accuracy.items():
        table.add_row(lang, *(f"{acc[a]:.0%}" for a in tiny_eval.TARGETS))
    for aspect, acc in report.aspects.items():  # the first prompts again, wide and tall
        table.add_row(f"{aspect} ({aspect_prompts})", *(f"{acc[a]:.0%}" for a in tiny_eval.TARGETS))
    Console().print(table)
    for attribute in tiny_eval.TARGETS:
        mistakes = report.mistakes(attribute)
        if mistakes:
            listed = ", ".join(f"{want} as {got} ({n})" for want, got, n in mistakes)
            print(f"most common {attribute} mistakes: {listed}")
    if keyframe_checks:
        ev, seams, first_steps = tiny_eval, report.seam_ratios, report.start_step_ratios
        print(
            f"start frame: colour and shape kept in {report.start_kept:.0%} of clips (>= {ev.START_KEPT_TARGET:.0%}); "
            f"step out of it {statistics.median(first_steps):.1f}x the median step (median over clips)\n"
            f"loop: seam <= {ev.SEAM_RATIO_MAX}x the median step in {report.loop_smooth:.0%} of loops (>= "
            f"{ev.LOOP_SMOOTH_TARGET:.0%}); seam ratio median {statistics.median(seams):.2f}, max {max(seams):.2f}\n"
            f"start and end frames of two scenes: step out of the first {_median(report.pair_step_ratios, 0)}x, "
            f"into the last {_median(report.pair_step_ratios, 1)}x the median step (1 is a blend; not a target yet)\n"
            f"sanity (given frames are held clean, not scored): start PSNR (min) {report.start_psnr_db:.1f} dB, "
            f"loop end PSNR (min) {report.loop_psnr_db:.1f} dB, middle keyframe PSNR (min) "
            f"{report.middle_psnr_db:.1f} dB, {'ok' if report.sane() else 'BROKEN'}\n"
            f"keyframe at the middle index: colour and shape kept before and after it in {report.middle_kept:.0%} of "
            f"clips; step into or out of it {statistics.median(report.middle_step_ratios):.1f}x the median step "
            "(median over clips; not a target yet)"
        )
    if two_object_scenes:
        shares = ", ".join(f"{lang} {share:.0%}" for lang, share in report.two_objects.items())
        print(f"two objects: both in their colour and shape in {shares} (>= {tiny_eval.TWO_OBJECTS_TARGET:.0%})")
    _verdict(report, json_out)


def _verdict(report: Any, json_out: Path | None) -> None:
    """An eval's ending: its report as JSON (`--json`), then "all targets met", or "below target" and exit 1."""
    if json_out:
        json_out.write_text(json.dumps(report.__dict__, indent=2, ensure_ascii=False, default=str) + "\n")
    if not report.passed():
        print("below target")
        raise typer.Exit(1)
    print("all targets met")


def _eval_concept(
    backend: Any, folder: Path, per_language: int, steps: int | None, batch: int, json_out: Path | None
) -> None:
    """`noor eval tiny --concept DIR`: exit 1 below the concept's targets."""
    from noor.engine.task import Concept, Task
    from noor.engine.tiny import concept as tiny_concept
    from noor.engine.tiny import eval as tiny_eval
    from noor.engine.tiny.scene import NEW_SHAPES

    try:
        adapter = tiny_concept.read(folder, backend.pipe)
    except tiny_concept.ConceptError as err:
        raise BadInput(f"--concept: {err}") from None
    words = [w for ws in adapter.config.get("words", {}).values() for w in ws]
    shape = next((s for s in NEW_SHAPES if s in words), None)
    if shape is None:
        fail("--concept", str(folder), f"its words {words} name none of the shapes the detector reads ({NEW_SHAPES})")
    loaded = (Concept(str(adapter.config.get("key") or folder.name), str(folder.resolve())),)

    def generate_clips(clips: list[tiny_eval.Clip], with_concept: bool) -> list[Any]:
        tasks = [Task(c.prompt, seed=c.seed, steps=steps, concepts=loaded if with_concept else ()) for c in clips]
        return [media.frames.astype("float32") / 255.0 for media in backend.generate(tasks)]

    with progress() as bar:
        job = bar.add_task("evaluating", total=None, info="clips")
        report = tiny_eval.evaluate_concept(
            generate_clips, shape, per_language, per_language, batch,
            lambda done, total: bar.update(job, completed=done, total=total),
        )  # fmt: skip
    report.size_bytes = tiny_concept.adapter_bytes(folder)
    table = Table(title=f"noor-tiny with the concept {folder} ({shape}), held-out prompts")
    for column in ("language", f"{shape} with it (>= {tiny_eval.CONCEPT_TARGET:.0%})", f"{shape} without it"):
        table.add_column(column, justify="right")
    table.add_column("colour / motion with it", justify="right")
    for lang, share in report.drawn.items():
        extra = report.concept_attributes[lang]
        table.add_row(
            lang, f"{share:.0%}", f"{report.drawn_without[lang]:.0%}", f"{extra['colour']:.0%} / {extra['motion']:.0%}"
        )
    Console().print(table)
    base = Table(title=f"base prompts without the adapter and with it (within {tiny_eval.BASE_DRIFT_MAX:.0%} points)")
    base.add_column("language")
    for attribute, target in tiny_eval.TARGETS.items():
        base.add_column(f"{attribute} (>= {target:.0%})", justify="right")
    for lang, without in report.base_without.items():
        with_it = report.base_with[lang]
        base.add_row(lang, *(f"{without[a]:.0%} -> {with_it[a]:.0%}" for a in tiny_eval.TARGETS))
    Console().print(base)
    print(f"adapter size {report.size_bytes / 1e6:.2f} MB (<= {tiny_concept.MAX_BYTES / 1e6:.0f} MB)")
    _verdict(report, json_out)


def _eval_edits(
    backend: Any, prompts: list[Any], reframe_prompts: int, steps: int | None, batch: int, json_out: Path | None
) -> None:
    """`noor eval tiny --edits`: edits and reframes on the held-out prompts, measured beside their targets."""
    from dataclasses import replace

    from noor.engine.task import EDIT_LEVELS
    from noor.engine.tiny import eval_edits as ev

    backend.keep_source = False  # the reframes' source regions as drawn; the eval reads them kept and as drawn

    def generate_tasks(tasks: list[Any]) -> list[Any]:
        return list(backend.generate([replace(t, steps=steps) for t in tasks]))

    with progress() as bar:
        job = bar.add_task("evaluating edits", total=None, info="clips")
        report = ev.evaluate_edits(
            generate_tasks,
            prompts,
            reframe_prompts,
            batch,
            lambda done, total: bar.update(job, completed=done, total=total),
        )
    table = Table(title="noor-tiny edits and reframes on held-out prompts")
    for column in ("figure", "measured", "target"):
        table.add_column(column)
    adhere = report.adhere()
    table.add_row(
        f"adhere: shape and motion kept ({len(report.adhere_rows)})",
        f"{adhere['kept']:.0%}",
        f">= {ev.ADHERE_KEPT_TARGET:.0%}",
    )
    table.add_row("adhere: new colour", f"{adhere['colour']:.0%}", f">= {ev.ADHERE_COLOUR_TARGET:.0%}")
    for mode in [m for m in ev.ADHERE if any(r["mode"] == m for r in report.adhere_rows)]:
        got = report.adhere(mode)
        table.add_row(
            f"  {mode} (level {EDIT_LEVELS[mode]}): kept / colour / track px",
            f"{got['kept']:.0%} / {got['colour']:.0%} / {ev.median_track(report.adhere_rows, mode):.1f}",
            "",
        )
    reimagine = report.reimagine()
    shares = " / ".join(f"{reimagine[a]:.0%}" for a in ev.ATTRIBUTES)
    table.add_row(
        f"reimagine: colour / shape / motion ({len(report.reimagine_rows)})",
        shares,
        f">= {ev.REIMAGINE_TARGET:.0%} each",
    )
    for mode in [m for m in ev.REIMAGINE if any(r["mode"] == m for r in report.reimagine_rows)]:
        got = report.reimagine(mode)
        shares = " / ".join(f"{got[a]:.0%}" for a in ev.ATTRIBUTES)
        track = ev.median_track(report.reimagine_rows, mode)
        table.add_row(f"  {mode} (level {EDIT_LEVELS[mode]}): ... / track px", f"{shares} / {track:.1f}", "")
    for name in ev.REFRAMES:
        got = report.reframe(name)
        table.add_row(
            f"reframe {name}: source region PSNR as drawn, median (lowest)",
            f"{got['drawn_median_db']:.1f} dB ({got['drawn_min_db']:.1f})",
            f">= {ev.REFRAME_PSNR_DB:.0f} dB",
        )
        table.add_row(
            "  with the source's pixels kept (the default output; sanity)",
            f"{got['median_db']:.1f} dB ({got['min_db']:.1f})",
            "(by construction)",
        )
        table.add_row(f"reframe {name}: at the asked size", f"{got['sized']:.0%}", "100%")
    Console(width=120).print(table)
    _verdict(report, json_out)


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
    for sound in registry.audio_models():
        table.add_row(sound.id, sound.family, "audio", _audio_defaults(sound), sound.source)
    Console(width=200).print(table)


def _audio_defaults(spec: AudioSpec) -> str:
    layout = {1: "mono", 2: "stereo"}.get(spec.channels, f"{spec.channels} channels")
    return f"{spec.sample_rate} Hz {layout}, up to {spec.max_seconds:g} s, {spec.default_steps} steps"


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
    perf_id: Annotated[
        str | None,
        typer.Option("--perf-id", help="catalog architecture for ETAs and prices (default: matched from the weights)"),
    ] = None,
    parallel: Annotated[
        str | None,
        typer.Option(help="every request on K ranks: ulysses=K, ring=K, cfg=2, a mix, or auto=K (perf model's pick)"),
    ] = None,
) -> None:
    """Register a local weights dir under a model id, after checking it is complete and of its family."""
    from noor.engine.diffusers import audio, installed, weights
    from noor.engine.diffusers.options import Options
    from noor.engine.diffusers.parallel import parse as parse_plan

    if audio.is_audio(family, path):  # a sound model: the options that shape a picture do not apply
        picture_only = {
            "--size": size, "--frames": frames, "--fps": fps, "--offload": None if offload == "none" else offload,
            "--vae-tiling": vae_tiling or None, "--vae-slicing": vae_slicing or None, "--attention": attention or None,
            "--cache": None if cache == "none" else cache, "--perf-id": perf_id, "--parallel": parallel,
        }  # fmt: skip
        for option, value in picture_only.items():
            if value is not None:
                raise BadInput(f"{option}: an audio model takes no {option} (it makes sound), got {value!r}")
        sound_entry = audio.InstalledAudio(model_id, family or "", str(path), dtype, device, steps, guidance)
        try:
            sound = audio.add(sound_entry)
        except ValueError as err:
            raise BadInput(str(err)) from err
        spec = audio.spec_of(sound)
        print(f"{sound.id}  {sound.family}, {sound.dtype}, {sound.path}  (in {installed.config_path()})")
        print(f"makes sound: {_audio_defaults(spec)}")
        return
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
        perf_id=perf_id,
        parallel=parallel,
        options=Options(offload, vae_tiling, vae_slicing, attention, cache, cache_threshold),
    )
    try:
        added = installed.add(entry)
    except ValueError as err:
        raise BadInput(str(err)) from err
    print(f"{added.id}  {added.family}, {added.dtype}, {added.path}  (in {installed.config_path()})")
    if added.parallel:
        print(f"each request runs on {parse_plan(added.parallel).gpus} ranks ({added.parallel})")
    if added.perf_id:
        print(f"priced as {added.perf_id} (noor.perf): `noor serve` gives its generations an ETA and a price")
    else:
        choices = ", ".join(added.spec_family.perf_ids) or "a catalog model id (noor perf predict --help)"
        blocks, hidden, _ = weights.transformer_shape(Path(added.path))
        print(
            f"not priced: no catalog architecture of {added.family} has its transformer ({blocks} blocks, hidden"
            f" {hidden}); its generations carry no ETA or price. Give --perf-id (e.g. {choices}) to price it."
        )


@models_app.command("show")
def models_show(model_id: Annotated[str, typer.Argument(metavar="ID", help="a model id")]) -> None:
    """A model's family, capabilities, defaults, shape rules and options."""
    from noor.engine import registry
    from noor.engine.task import TaskError

    sounds = {sound.id: sound for sound in registry.audio_models()}
    if model_id in sounds:
        sound = sounds[model_id]
        for key, value in {
            "id": sound.id, "family": sound.family, "description": sound.description, "weights": sound.source,
            "can do": "audio", "defaults": _audio_defaults(sound) + f", guidance {sound.default_guidance}",
        }.items():  # fmt: skip
            print(f"{key:12} {value}")
        return
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
        rows["priced as"] = entry.perf_id or "not priced (no catalog architecture; `noor models add --perf-id`)"
        rows["dtype"] = f"{entry.dtype} on {entry.device}"
        rows["options"] = ", ".join(f"{k}={v}" for k, v in vars(entry.options).items())
    for key, value in rows.items():
        print(f"{key:12} {value}")


# --- noor perf ---

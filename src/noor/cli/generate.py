"""`noor generate`: a video or an image from a prompt, on any model this machine runs."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from noor.cli.base import BadInput, app, console, fail, parse_size, progress, read_keyframe

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
        width, height = parse_size(size, aspect_ratio, resolution) or (spec.native_width, spec.native_height)
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
            start_frame=read_keyframe("--start-image", start_image),
            end_frame=read_keyframe("--end-image", end_image),
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

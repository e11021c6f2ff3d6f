"""`noor world run`, `noor world eval` and `noor train world`: the interactive world model from the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from noor.cli.base import CheckpointEvery, Nproc, Resume, app, fail, progress, read_keyframe, run_training
from noor.cli.train import train_app

world_app = typer.Typer(
    help="Play the interactive world model from a script of actions, or evaluate it.", no_args_is_help=True
)
app.add_typer(world_app, name="world")


def _backend(weights: Path | None, memory: bool = True) -> Any:
    from noor.engine.world_tiny.backend import WorldTinyBackend

    try:
        return WorldTinyBackend(weights, memory=memory)
    except FileNotFoundError as err:
        fail("--weights", str(weights), str(err))


@world_app.command("run")
def run(
    prompt: Annotated[str, typer.Argument(help="the world, in English or Arabic: 'a desert with palm trees'")],
    actions: Annotated[
        str, typer.Option(help="ACTION[:COUNT],… with actions up, down, left, right, none: one frame per step")
    ] = "right:8,up:8,left:8,down:8",
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the walk's video (.mp4); its actions go beside it as .json")
    ] = Path("walk.mp4"),
    seed: Annotated[int, typer.Option(min=0)] = 0,
    start_image: Annotated[
        Path | None, typer.Option("--start-image", help="open the world from this image instead of the caption")
    ] = None,
    fps: Annotated[int, typer.Option(min=1, max=60, help="frames a second of the video")] = 15,
    weights: Annotated[
        Path | None, typer.Option(help="weights dir (default: NOOR_WORLD_TINY_WEIGHTS, else the packaged ones)")
    ] = None,
    memory: Annotated[
        bool,
        typer.Option("--memory/--no-memory", help="the world's memory of places seen (off: its context window only)"),
    ] = True,
) -> None:
    """Walk a world with a script of actions and write the video: one frame per action after the opening one."""
    import numpy as np

    from noor.config import settings
    from noor.engine.media import MediaError, save
    from noor.engine.task import Media, TaskError
    from noor.engine.world_tiny.actions import parse_actions

    try:
        script = parse_actions(actions)
    except ValueError as err:
        fail("--actions", actions, str(err))
    if output.suffix.lower() != ".mp4":
        fail("--output", str(output), "must end in .mp4")
    if output.is_dir():
        fail("--output", str(output), "is a folder; give a file name ending in .mp4")
    image = read_keyframe("--start-image", start_image)
    if not prompt.strip() and image is None:
        fail("PROMPT", prompt, "must not be empty (or give --start-image)")
    backend = _backend(weights or settings().world_tiny_weights, memory)
    started = time.perf_counter()
    try:
        world = backend.start(prompt, seed, image)
    except TaskError as err:
        fail(
            "PROMPT" if err.field == "prompt" else f"--{err.field.replace('_', '-')}",
            err.value,
            str(err).split(": ", 1)[1],
        )
    frames = [world.frame]
    with progress() as bar:
        job = bar.add_task("walking", total=len(script), info="")
        for action in script:
            frames.append(world.step(action))
            bar.update(job, advance=1, info=action)
    seconds = time.perf_counter() - started
    try:
        path = save(Media(np.stack(frames), fps), output)
    except MediaError as err:
        fail("--output", str(output), str(err))
    record = {
        "prompt": prompt,
        "seed": seed,
        "start_image": str(start_image) if start_image else None,
        "memory": memory,
        "fps": fps,
        "actions": script,  # frame k + 1 is the view after actions[k]; frame 0 is the opening one
        "frames": len(frames),
    }
    path.with_suffix(".json").write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{path}  {len(frames)} frames ({len(script)} actions), {len(script) / seconds:.1f} frames/s drawn")


@world_app.command("eval")
def evaluate(
    weights: Annotated[Path | None, typer.Option(help="weights dir (default: the packaged ones)")] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="a reduced set (what the tests run): fewer captions, shorter walks")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
) -> None:
    """Action adherence, revisit consistency (memory on and off), long rollouts and caption adherence, per
    language, on held-out captions; exits 1 when a figure is below its target."""
    from noor.engine.world_tiny import eval as world_eval

    with_memory = _backend(weights, memory=True)
    without = _backend(weights, memory=False)
    size = world_eval.QUICK if quick else world_eval.FULL

    def open_world(caption: str, seed: int, memory: bool) -> Any:
        return (with_memory if memory else without).start(caption, seed)

    started = time.perf_counter()
    with progress() as bar:
        job = bar.add_task("evaluating", total=8, info="")

        def on_progress(part: str, done: int, total: int) -> None:
            bar.update(job, completed=done, total=total, info=part)

        report = world_eval.evaluate(open_world, size, on_progress)
    rows = world_eval.table(report)
    table = Table(
        *rows[0], title=f"noor world eval ({'quick' if quick else 'full'}), {time.perf_counter() - started:.0f} s"
    )
    for row in rows[1:]:
        table.add_row(*row)
    Console().print(table)
    failures = report.failures()
    if json_out:
        figures = {
            lang: {
                "caption": f.caption, "action": f.action, "still": f.still_share,
                "revisit_db": {f"{n}{'' if m else '_no_memory'}": f.revisit_db(n, m) for n, m in f.revisit},
                "windows_ok": f.windows_ok, "windows": f.windows, "long_biome_hits": f.long_biome_hits,
                "long_rollouts": f.long_rollouts, "misread": dict(f.misread),
            }
            for lang, f in report.by_lang.items()
        }  # fmt: skip
        json_out.write_text(json.dumps({"figures": figures, "failures": failures}, indent=1) + "\n")
    if failures:
        for line in failures:
            print(f"below target: {line}")
        raise typer.Exit(1)
    print("every figure meets its target")


@train_app.command("world")
def train_world(
    out: Annotated[
        Path, typer.Option("--output", "-o", help="where to write the pipeline (Hugging Face layout)")
    ] = Path("noor-world-tiny"),
    steps: Annotated[int, typer.Option(min=1, help="denoiser optimiser steps")] = 3000,
    vae_steps: Annotated[int, typer.Option("--vae-steps", min=1, help="VAE optimiser steps")] = 1000,
    maps_per_biome: Annotated[int, typer.Option("--maps-per-biome", min=1, help="training maps of each biome")] = 16,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    save_every: Annotated[
        int, typer.Option("--save-every", min=0, help="also write the pipeline every N steps (0: at the end only)")
    ] = 500,
    nproc: Nproc = 1,
    checkpoint_every: CheckpointEvery = 0,
    resume: Resume = False,
) -> None:
    """Train noor-world-tiny from scratch on the procedural terrain with a fixed seed (VAE, then denoiser); on
    --nproc processes, the same run (the same seed gives the same loss curve) in less time."""
    from noor.engine.world_tiny.train import ConfigError, TrainConfig, train

    try:
        cfg = TrainConfig(
            seed=seed,
            steps=steps,
            vae_steps=vae_steps,
            maps_per_biome=maps_per_biome,
            batch_size=batch_size,
            save_every=save_every,
        )
    except ConfigError as err:
        fail("--" + err.field.replace("_", "-"), "", str(err))
    labels = {"vae": "1/3 VAE", "encode": "2/3 encoding maps", "denoiser": "3/3 denoiser"}
    log = run_training(train, labels, cfg, out, nproc, checkpoint_every, resume, {"--batch-size": batch_size})
    loss, minutes = log["denoiser_final_loss_avg100"], log["seconds"] / 60
    print(f"{out}  {steps} denoiser steps, final loss {loss:.4f}, {minutes:.1f} min")

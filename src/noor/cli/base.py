"""The `noor` app, its one-line user errors, its progress bar and the options several command groups read (a size,
a keyframe, training on N processes): what every command group shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.core
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# typer 0.29 writes a required argument as `{prompt}` in the usage line and gives every flag a `<bool>` value
# in the help, as if `--loop` took one. Noor's help follows the usual convention instead (`PROMPT`, `[OUTPUT]`,
# a flag with no value): two display hooks of typer.core, pinned by pyproject's typer range and held by
# tests/test_cli.py::test_help_shows_plain_usage_and_flags_without_values.


def _usage_name(self: typer.core.TyperArgument) -> str:
    name = self.display_name_raw.upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


_option_type = typer.core.TyperOption.display_type_rich


def _option_type_unless_flag(self: typer.core.TyperOption, ctx: typer.core._click.Context) -> str | None:
    return None if self.is_flag else _option_type(self, ctx)


typer.core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
typer.core.TyperOption.display_type_rich = _option_type_unless_flag  # type: ignore[method-assign]

app = typer.Typer(
    help="Noor: open generative video. Generate, serve and plan.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


class BadInput(Exception):
    """A user error: printed as one line, exit code 2."""


def fail(option: str, value: object, message: str) -> NoReturn:
    """One line naming the option and the value (once: a message that already quotes the value is not followed
    by it again)."""
    if repr(value) in message:
        raise BadInput(f"{option}: {message}")
    raise BadInput(f"{option}: {message}, got {value!r}")


def parse_size(size: str | None, aspect_ratio: str | None, resolution: str | None) -> tuple[int, int] | None:
    """--size WIDTHxHEIGHT, or --aspect-ratio/--resolution as a size (a missing one: 16:9, 540p); None: neither."""
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


def read_keyframe(option: str, path: Path | None) -> Any:
    """The image (or a video's last frame) at `path` for a keyframe option; None when not given."""
    from noor.engine.media import MediaError, read_image

    if path is None:
        return None
    try:
        return read_image(path)
    except MediaError as err:
        fail(option, str(path), str(err))


def progress() -> Progress:
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


@contextmanager
def stage_bars(labels: dict[str, str]) -> Iterator[Callable[[str, int, int, float], None]]:
    """A bar per training stage (labelled by `labels[stage]`); yields the `on_step(stage, step, total, loss)` that
    moves them, with the loss averaged over the stage's last 50 steps (none for a stage named "encode")."""
    with progress() as bar:
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

        yield on_step


# the options every `noor train` command that runs on N processes takes (run_training reads them)
Nproc = Annotated[
    int, typer.Option("--nproc", min=1, help="training processes (DDP ranks; each trains on its share of a batch)")
]
CheckpointEvery = Annotated[
    int, typer.Option("--checkpoint-every", min=0, help="save a checkpoint every N denoiser steps (0: none)")
]
Resume = Annotated[
    bool, typer.Option("--resume", help="continue from the last checkpoint in the output's checkpoints/ (if any)")
]


def run_training(
    train: Callable[..., Any],
    labels: dict[str, str],
    cfg: Any,
    out: Path,
    nproc: int,
    checkpoint_every: int,
    resume: bool,
    batches: dict[str, int],
    backend: str | None = "gloo",
) -> Any:
    """`train(cfg, out, on_step=, group=, checkpoint_every=, resume=)` on `nproc` processes (`noor.engine.ddp`),
    rank 0 showing `stage_bars(labels)`; rank 0's result. Refused before any rank starts: a batch (`batches`: option
    -> size) that does not split evenly over the ranks, or a checkpoint to resume made with other settings. A rank
    that dies is one line and exit code 1. `backend`: gloo, as the built-in trainers run on CPU (they do not move
    their models to a GPU); None picks nccl where CUDA is, for a trainer that puts each rank on its GPU."""
    from dataclasses import asdict
    from functools import partial

    from noor.engine.checkpoint import CheckpointMismatch, verify
    from noor.engine.ddp import RankFailed, launch, train_on_rank

    for option, size in batches.items():
        if size % nproc:
            fail(option, size, f"must split evenly over --nproc {nproc} processes")
    if resume:
        try:
            if not verify(out / "checkpoints", asdict(cfg)):
                typer.echo(f"no checkpoint in {out / 'checkpoints'}: starting from the beginning", err=True)
        except CheckpointMismatch as err:
            fail("--resume", str(out / "checkpoints"), str(err))
    run = partial(train, checkpoint_every=checkpoint_every, resume=resume)
    try:
        return launch(nproc, train_on_rank, run, partial(stage_bars, labels), cfg, out, backend=backend)
    except RankFailed as err:
        typer.echo(f"noor: error: {err}; continue with --resume", err=True)
        raise typer.Exit(1) from err

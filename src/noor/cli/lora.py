"""`noor train lora`: fine-tune a LoRA adapter for an open model on a folder of captioned clips or images."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from noor.cli.base import BadInput, fail, progress, stage_bars
from noor.cli.train import train_app

# Which option each LoraTrainConfig field comes from, to name it in errors.
OPTION_OF = {"batch_size": "--batch-size", "width": "--size", "height": "--size"}
BARS = {"encode": "1/2 encoding examples", "lora": "2/2 LoRA steps"}
# noor-tiny's concept training (noor.engine.tiny.concept): its defaults where the open models' differ
TINY_DEFAULTS: dict[str, float] = {"steps": 1200, "rank": 8, "lr": 5e-3, "batch_size": 8}
OPEN_DEFAULTS: dict[str, float] = {"steps": 500, "rank": 16, "lr": 1e-4, "batch_size": 1}


def _model(name: str, family: str | None) -> tuple[str, str, dict[str, Any]]:
    """(weights dir, family, the entry's defaults) of an installed model id or a diffusers pipeline dir."""
    from noor.engine.diffusers import families, installed, weights

    entries = installed.load()
    if name in entries:
        entry = entries[name]
        return entry.path, entry.family, entry.defaults()
    path = Path(name).expanduser()
    if not path.is_dir():
        known = ", ".join(sorted(entries)) or "none (noor models add)"
        fail("--model", name, f"not an installed model or a diffusers pipeline folder; installed: {known}")
    try:
        fam = families.get(family) if family else weights.detect(path)
        weights.check(path.resolve(), fam)
    except families.UnknownFamily as err:
        raise BadInput(str(err)) from None
    except weights.WeightsError as err:
        raise BadInput(str(err).replace("--path:", "--model:", 1)) from None
    return str(path.resolve()), fam.name, {}


def _refuse_a_file(out: Path) -> None:
    """--out is the folder a run writes (its adapter, or its data): refused when it names a file."""
    if out.is_file():
        fail("--out", str(out), "is a file; give a folder")


def _size(size: str | None) -> tuple[int, int]:
    if not size:
        return 0, 0
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        fail("--size", size, "must be WIDTHxHEIGHT, e.g. 832x480")
    if w < 1 or h < 1:
        fail("--size", size, "sides must be at least 1")
    return w, h


@train_app.command("lora")
def train_lora(
    model: Annotated[str, typer.Option(help="an installed model id (noor models list) or a diffusers pipeline folder")],
    data: Annotated[
        Path, typer.Option(help="a folder of clips or images with captions.jsonl, or a NAME.txt caption beside each")
    ],
    out: Annotated[
        Path, typer.Option("-o", "--out", help="where to write the adapter (diffusers' LoRA format) and its config")
    ],
    steps: Annotated[int | None, typer.Option(help="optimiser steps (default: 500; tiny: 1200)")] = None,
    rank: Annotated[int | None, typer.Option(help="the LoRA's rank (default: 16; tiny: 8)")] = None,
    alpha: Annotated[int | None, typer.Option(help="the LoRA's alpha (scale alpha/rank; default: the rank)")] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW's learning rate (default: 1e-4; tiny: 5e-3)")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="examples a step, over all processes (default: 1; tiny: 8)")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="WIDTHxHEIGHT the examples are cropped and resized to (default: the model's)")
    ] = None,
    frames: Annotated[int | None, typer.Option(help="frames of each clip trained on (default: the model's)")] = None,
    family: Annotated[
        str | None, typer.Option(help="the model family, when --model is a folder Noor cannot tell")
    ] = None,
    dtype: Annotated[str, typer.Option(help="the frozen weights' dtype; the LoRA trains in float32")] = "float32",
    nproc: Annotated[int, typer.Option(help="training processes on this machine (DDP; gloo on CPU)")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    prior_target: Annotated[
        str | None,
        typer.Option(
            "--prior-target",
            help="tiny: what its base-shape examples teach, clip (the rendered clip) or frozen (the base model's own "
            "prediction: its base prompts kept as they were) (default: clip)",
        ),
    ] = None,
) -> None:
    """Fine-tune a LoRA on a model's transformer (its flow-matching objective) from a folder of captioned examples;
    `pipe.load_lora_weights(OUT)` loads the result. `--model tiny`: a concept for the built-in model (its new words'
    embeddings and a LoRA; `noor generate --concept OUT` draws with it)."""
    from noor.engine import examples as training_data
    from noor.engine.diffusers import lora

    tiny = model == "tiny"
    if tiny:
        others = {"--size": size, "--frames": frames, "--family": family}
        for option, value in others.items():
            if value is not None:
                fail(option, value, "noor-tiny trains at its own 64x64, 16 frames; leave it out with --model tiny")
        if prior_target not in (None, "clip", "frozen"):
            fail("--prior-target", prior_target, "must be clip or frozen")
        if dtype != "float32" or nproc != 1:
            option, value = ("--dtype", dtype) if dtype != "float32" else ("--nproc", nproc)
            fail(option, value, "noor-tiny trains in float32 on one process")
    chosen = TINY_DEFAULTS if tiny else OPEN_DEFAULTS
    steps = int(chosen["steps"]) if steps is None else steps
    rank = int(chosen["rank"]) if rank is None else rank
    lr = float(chosen["lr"]) if lr is None else lr
    batch_size = int(chosen["batch_size"]) if batch_size is None else batch_size
    if tiny:
        _train_tiny(data, out, alpha, seed, steps, rank, lr, batch_size, prior_target or "clip")
        return
    if prior_target is not None:
        fail("--prior-target", prior_target, "only noor-tiny's concepts have base-shape examples (--model tiny)")

    # 1. validate: the model, the options, the data (every example decoded) before any process starts
    path, family_name, defaults = _model(model, family)
    width, height = _size(size)
    if frames is not None and frames < 1:
        fail("--frames", frames, "must be at least 1")
    _refuse_a_file(out)
    try:
        cfg = lora.LoraTrainConfig(
            model_path=path,
            family=family_name,
            steps=steps,
            rank=rank,
            alpha=alpha,
            lr=lr,
            batch_size=batch_size,
            width=width or defaults.get("width", 0),
            height=height or defaults.get("height", 0),
            frames=defaults.get("frames", 0) if frames is None else frames,
            fps=defaults.get("fps", 0),
            guidance=defaults.get("guidance"),
            dtype=dtype,
            nproc=nproc,
            seed=seed,
        ).check()
        examples = training_data.read_examples(data)
    except lora.UnsupportedFamily as err:
        fail("--model", model, str(err))
    except lora.ConfigError as err:
        fail(OPTION_OF.get(err.field, "--" + err.field.replace("_", "-")), err.value, err.message)
    except training_data.DataError as err:
        raise BadInput(f"--data: {err}") from None
    # 2. train on N processes; rank 0 shows the bars and writes OUT
    try:
        result = lora.run(cfg, examples, out, partial(stage_bars, BARS))
    except training_data.DataError as err:
        raise BadInput(f"--data: {err}") from None
    took = f"{result.seconds:.1f} s" if result.seconds < 120 else f"{result.seconds / 60:.1f} min"
    print(
        f"{out}  {cfg.steps} steps on {cfg.nproc} process(es), rank {cfg.rank}, {len(examples)} examples:"
        f" loss on them {result.loss_before:.4f} -> {result.loss_after:.4f}, {took}"
    )


def _train_tiny(
    data: Path,
    out: Path,
    alpha: int | None,
    seed: int,
    steps: int,
    rank: int,
    lr: float,
    batch_size: int,
    prior_target: str = "clip",
) -> None:
    """`noor train lora --model tiny`: a concept for noor-tiny (noor.engine.tiny.concept)."""
    from noor.engine import examples as training_data
    from noor.engine.tiny import concept
    from noor.engine.tiny.backend import weights_dir
    from noor.engine.tiny.tokenizer import vocabulary

    _refuse_a_file(out)
    try:
        cfg = concept.TinyLoraConfig(
            steps=steps,
            rank=rank,
            alpha=rank if alpha is None else alpha,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            prior_target=prior_target,
        ).check()
    except ValueError as err:
        name, _, message = str(err).partition(": ")
        raise BadInput(f"--{name.replace('_', '-')}: {message}") from None
    try:
        concept.read_data(data, vocabulary())  # the folder and its new words, before any work
        with stage_bars(BARS) as on_step:
            result = concept.train(weights_dir(), data, out, cfg, on_step)
    except training_data.DataError as err:
        raise BadInput(f"--data: {err}") from None
    except FloatingPointError as err:
        raise BadInput(f"--lr: {err}") from None
    except KeyboardInterrupt:
        raise BadInput(f"interrupted: nothing written to {out}" if not out.exists() else "interrupted") from None
    took = f"{result.seconds:.1f} s" if result.seconds < 120 else f"{result.seconds / 60:.1f} min"
    words = ", ".join(w for ws in result.words.values() for w in ws)
    print(
        f"{out}  noor-tiny concept ({words}): {cfg.steps} steps, rank {cfg.rank}, {result.clips} clips"
        f" ({result.examples} captions): loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}, {took},"
        f" {result.size_bytes / 1e6:.2f} MB"
    )


@train_app.command("concept-data")
def concept_data(
    out: Annotated[Path, typer.Option("-o", "--out", help="the data folder to write (clips and captions.jsonl)")],
    shape: Annotated[str, typer.Option(help="the new shape to teach noor-tiny")] = "crescent",
    clips: Annotated[int, typer.Option(help="clips to render, 1 to 200 (the prior's included)")] = 200,
    prior: Annotated[float, typer.Option(help="the share of clips of the base shapes (prior preservation)")] = 0.25,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Render a LoRA data folder teaching noor-tiny a shape it never saw, captioned in English and Arabic, for
    `noor train lora --model tiny --data OUT`."""
    from noor.engine.tiny import concept
    from noor.engine.tiny.scene import NEW_SHAPES

    if shape not in NEW_SHAPES:
        fail("--shape", shape, f"must be one of {', '.join(NEW_SHAPES)}")
    if not 1 <= clips <= 200:
        fail("--clips", clips, "must be between 1 and 200")
    if not 0.0 <= prior < 1.0:
        fail("--prior", prior, "must be at least 0 and below 1")
    _refuse_a_file(out)
    try:
        with progress() as bar:
            job = bar.add_task("rendering clips", total=clips, info="")
            counts = concept.render_data(
                out, shape, clips, prior, seed, lambda _, i, n, __: bar.update(job, completed=i + 1)
            )
    except KeyboardInterrupt:
        raise BadInput(f"interrupted: {out} is incomplete") from None
    print(
        f"{out}  {counts['clips']} clips ({counts[shape]} of the {shape}, {counts['prior']} of the base shapes),"
        " each captioned in English and Arabic"
    )

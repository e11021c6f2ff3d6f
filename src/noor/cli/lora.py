"""`noor train lora`: fine-tune a LoRA adapter for an open model on a folder of captioned clips or images."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from noor.cli.base import BadInput, fail, stage_bars
from noor.cli.generate import train_app

# Which option each LoraTrainConfig field comes from, to name it in errors.
OPTION_OF = {"batch_size": "--batch-size", "width": "--size", "height": "--size"}
BARS = {"encode": "1/2 encoding examples", "lora": "2/2 LoRA steps"}


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
    out: Annotated[Path, typer.Option(help="where to write the adapter (diffusers' LoRA format) and its config")],
    steps: Annotated[int, typer.Option(help="optimiser steps")] = 500,
    rank: Annotated[int, typer.Option(help="the LoRA's rank")] = 16,
    alpha: Annotated[int | None, typer.Option(help="the LoRA's alpha (scale alpha/rank; default: the rank)")] = None,
    lr: Annotated[float, typer.Option(help="AdamW's learning rate")] = 1e-4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="examples a step, over all processes")] = 1,
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
) -> None:
    """Fine-tune a LoRA on a model's transformer (its flow-matching objective) from a folder of captioned examples;
    `pipe.load_lora_weights(OUT)` loads the result."""
    from noor.engine.diffusers import lora

    # 1. validate: the model, the options, the data (every example decoded) before any process starts
    path, family_name, defaults = _model(model, family)
    width, height = _size(size)
    if frames is not None and frames < 1:
        fail("--frames", frames, "must be at least 1")
    if out.is_file():
        fail("--out", str(out), "is a file; give a folder")
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
        examples = lora.read_examples(data)
    except lora.UnsupportedFamily as err:
        fail("--model", model, str(err))
    except lora.ConfigError as err:
        fail(OPTION_OF.get(err.field, "--" + err.field.replace("_", "-")), err.value, err.message)
    except lora.DataError as err:
        raise BadInput(f"--data: {err}") from None
    # 2. train on N processes; rank 0 shows the bars and writes OUT
    try:
        result = lora.run(cfg, examples, out, partial(stage_bars, BARS))
    except lora.DataError as err:
        raise BadInput(f"--data: {err}") from None
    took = f"{result.seconds:.1f} s" if result.seconds < 120 else f"{result.seconds / 60:.1f} min"
    print(
        f"{out}  {cfg.steps} steps on {cfg.nproc} process(es), rank {cfg.rank}, {len(examples)} examples:"
        f" loss on them {result.loss_before:.4f} -> {result.loss_after:.4f}, {took}"
    )

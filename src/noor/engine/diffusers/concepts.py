"""Trained concepts on an open model: a LoRA adapter (`noor train lora`) checked against the model's transformer
when it is registered (`check_concept`), and loaded for one task only when it is drawn (`loaded`).

The adapter is loaded with diffusers' `load_lora_weights(dir, adapter_name=key)` (peft layers wrapped around the
frozen projections) and unloaded with `unload_lora_weights` after the task, which puts the original modules back:
the weights after a task are, bit for bit, the weights before it (tests/engine/test_concepts.py).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from noor.engine.concepts import WEIGHT_NAME
from noor.engine.diffusers import families
from noor.engine.diffusers.installed import InstalledModel
from noor.engine.task import Concept


def lora_shapes(folder: Path) -> dict[str, tuple[int, int]]:
    """Module path in the transformer -> (in_features, out_features) the adapter's A and B matrices fit. Reads the
    safetensors header only (no tensors)."""
    from safetensors import safe_open

    a: dict[str, int] = {}
    b: dict[str, int] = {}
    with safe_open(str(folder / WEIGHT_NAME), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118  (safe_open has no __iter__)
            if not name.startswith("transformer.") or ".lora_" not in name:
                raise ValueError(f"{WEIGHT_NAME} holds {name!r}, not a transformer LoRA weight")
            module, kind = name.removeprefix("transformer.").split(".lora_", 1)
            shape = f.get_slice(name).get_shape()
            if kind.startswith("A"):
                a[module] = shape[1]
            elif kind.startswith("B"):
                b[module] = shape[0]
    if not a or a.keys() != b.keys():
        raise ValueError(f"{WEIGHT_NAME} has no complete lora_A/lora_B pairs")
    return {m: (a[m], b[m]) for m in sorted(a)}


def check_concept(model: InstalledModel, folder: Path) -> None:
    """ValueError with a one-line reason when the adapter does not fit this model: every module it adapts must be
    a linear layer of the model's transformer with the adapter's input and output widths. The transformer is built
    on the meta device from its config (no weights read)."""
    import diffusers
    import torch

    shapes = lora_shapes(folder)
    name = _transformer_class(Path(model.path))
    cls = getattr(diffusers, name)
    with torch.device("meta"):
        transformer = cls.from_config(families.read_config(Path(model.path), "transformer"))
    modules = dict(transformer.named_modules())
    for module, (fan_in, fan_out) in shapes.items():
        layer = modules.get(module)
        if layer is None:
            raise ValueError(f"the adapter changes {module!r}, which {model.id}'s {name} does not have")
        if not isinstance(layer, torch.nn.Linear):
            raise ValueError(f"the adapter changes {module!r}, which is a {type(layer).__name__} in {model.id}")
        if (layer.in_features, layer.out_features) != (fan_in, fan_out):
            raise ValueError(
                f"the adapter's {module!r} is {fan_in}->{fan_out} wide; {model.id}'s is"
                f" {layer.in_features}->{layer.out_features} (trained on another size of the model?)"
            )


def _transformer_class(path: Path) -> str:
    import json

    index = json.loads((path / "model_index.json").read_text())
    return str(index["transformer"][1])


@contextlib.contextmanager
def loaded(pipe: Any, concepts: Sequence[Concept]) -> Iterator[None]:
    """The task's adapters loaded into `pipe` (each under its key, all active at weight 1) for the block, then
    unloaded, whatever happens inside."""
    if not concepts:
        yield
        return
    if not hasattr(pipe, "load_lora_weights"):
        raise ValueError(f"concepts: {type(pipe).__name__} loads no LoRA adapters, got {[c.key for c in concepts]}")
    try:
        with warnings.catch_warnings():
            # peft warns when a second adapter joins the first: several at once is what a task with several asks
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
            for concept in concepts:
                pipe.load_lora_weights(concept.path, weight_name=WEIGHT_NAME, adapter_name=concept.key)
        pipe.set_adapters([c.key for c in concepts])
        yield
    finally:
        pipe.unload_lora_weights()

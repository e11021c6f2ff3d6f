"""A LoRA trained by `noor train lora`'s own code on the toy Wan 2.1, once per test session: the adapter the
concept tests register and draw with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from noor.engine import examples as training_data
from noor.engine.diffusers import lora
from tests.engine.diffusers.test_lora import write_examples
from tests.engine.diffusers.toys import TOYS, toy_dir

FAMILY = "wan2.1-t2v"


def toy_lora(factory: Any, family: str = FAMILY) -> Path:
    """The adapter folder (pytorch_lora_weights.safetensors + lora_config.json), trained on two captioned clips of
    squares sliding right on the family's toy (the toy Wan 2.1 by default); its lora_config.json names the toy's
    weights dir as the model it was trained on."""
    out = factory.getbasetemp() / "toy-lora" / family
    if (out / lora.CONFIG_NAME).is_file():
        return out
    _, width, height, frames = TOYS[family]
    cfg = lora.LoraTrainConfig(
        model_path=str(toy_dir(factory, family)), family=family, steps=8, rank=4, alpha=8, lr=1e-2, batch_size=2,
        width=width, height=height, frames=frames,
    ).check()  # fmt: skip
    examples = training_data.read_examples(write_examples(out.parent / f"data-{family}", family))
    lora.train(cfg, examples, out)
    return out

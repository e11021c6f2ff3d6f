"""Facts as data: model architectures and chips, from TOML files that cite their sources.

from noor import catalog
catalog.model("wan2.1-t2v-14b").hidden_size   # 5120
catalog.chip("h100-sxm").bf16_tflops          # 989.4
catalog.chip("cpu-local")                     # this machine, measured once and cached
catalog.world("noor-world-tiny").steps        # 4: interactive world models
"""

from noor.catalog.chips import Chip, chip, chip_ids, chips
from noor.catalog.errors import UnknownId
from noor.catalog.models import (
    ModelArch,
    TextEncoder,
    Vae,
    WorldArch,
    model,
    model_ids,
    models,
    world,
    world_ids,
    worlds,
)

__all__ = [
    "Chip",
    "ModelArch",
    "TextEncoder",
    "UnknownId",
    "Vae",
    "WorldArch",
    "chip",
    "chip_ids",
    "chips",
    "model",
    "model_ids",
    "models",
    "world",
    "world_ids",
    "worlds",
]

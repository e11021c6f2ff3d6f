"""Model architectures (models.toml) as typed, validated records."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from noor.catalog.errors import UnknownId


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextEncoder(_Frozen):
    id: str
    params_b: float = Field(gt=0)
    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    source: str


class Vae(_Frozen):
    id: str
    spatial: int = Field(gt=0, description="pixels per latent along each side")
    temporal: int = Field(gt=0, description="frames per latent frame (causal: 1 + 4k frames -> 1 + k)")
    latent_channels: int = Field(gt=0)
    conv3d: bool
    params_m: float = Field(gt=0)
    decoder: tuple[tuple[int, int, int], ...] = Field(description="(channels, 3x3 convs, time divisor) per 2x scale")
    first_row_scale: int = Field(1, ge=1, description="the first decoder row runs at 1/this resolution")
    precision: Literal["bf16", "fp32"] = Field("bf16", description="what its reference pipeline decodes in")
    source: str

    def latent_frames(self, num_frames: int) -> int:
        """Causal video VAEs keep the first frame alone: 81 frames at 4x -> 21 latent frames."""
        return 1 + (num_frames - 1) // self.temporal if self.temporal > 1 else num_frames


class ModelArch(_Frozen):
    id: str
    name: str
    kind: Literal["video", "image"]
    task: str
    arch: Literal["dit", "mmdit", "unet"]
    params_b: float = Field(gt=0, description="denoiser parameters held in memory (all experts)")
    layers: int = Field(gt=0)
    double_stream_layers: int = Field(0, ge=0, description="MM-DiT blocks with separate text weights")
    hidden_size: int = Field(gt=0)
    heads: int = Field(gt=0)
    ffn_size: int = Field(gt=0)
    ffn_matrices: Literal[2, 3] = 2
    attention: Literal["full", "factorised", "linear"] = "full"
    patch: tuple[int, int, int]
    cross_attention: bool = False
    text_tokens: int = Field(ge=0)
    image_tokens: int = Field(0, ge=0)
    text_encoders: tuple[TextEncoder, ...]
    vae: Vae
    experts_total: int = Field(1, ge=1)
    experts_active: int = Field(1, ge=1)
    guidance_passes: int = Field(ge=1, le=3)
    default_steps: int = Field(gt=0)
    default_width: int = Field(gt=0)
    default_height: int = Field(gt=0)
    default_frames: int = Field(gt=0)
    renders_native: bool = False
    precision: Literal["bf16", "fp32"] = "bf16"
    conv_stem_channels: int = Field(
        0, ge=0, description="a DiT's conv stem and head at full latent resolution (noor-tiny): their width"
    )
    first_frame_stage: bool = Field(
        False, description="draws a clip's first frame as an image, then the clip from it (Emu Video; noor-tiny)"
    )
    image_guidance_passes: int = Field(
        0, ge=0, le=3, description="passes per step for an image or a first frame, where not guidance_passes (0)"
    )
    guided_step_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of a clip's denoising steps that run guidance_passes, the rest one pass (a guidance"
        " interval, noor-tiny); images and first frames are guided at every step",
    )
    unet_levels: tuple[tuple[int, int], ...] = ()
    unet_layers_per_block: int = 2
    vace_layers: tuple[int, ...] = Field(
        (),
        description="main blocks that add a VACE block's hint (Wan VACE): one VACE block each, a main block's"
        " weights over the control video's tokens (as many as the video's)",
    )
    vace_in_channels: int = Field(0, ge=0, description="channels of the control video VACE's patch embedding reads")
    sources: dict[str, str]

    @model_validator(mode="after")
    def _consistent(self) -> ModelArch:
        if self.hidden_size % self.heads:
            raise ValueError(f"{self.id}: hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.experts_active > self.experts_total:
            raise ValueError(f"{self.id}: experts_active > experts_total")
        if self.arch == "unet" and not self.unet_levels:
            raise ValueError(f"{self.id}: a unet needs unet_levels")
        self._check_vace()
        for group in ("transformer", "defaults"):
            if not self.sources.get(group):
                raise ValueError(f"{self.id}: sources.{group} must cite where those fields come from")
        return self

    def _check_vace(self) -> None:
        """diffusers' WanVACETransformer3DModel's own rules: hints at distinct main blocks, layer 0 among them
        (the first VACE block projects the control video in), read from a control video of some channels."""
        layers, channels = self.vace_layers, self.vace_in_channels
        if not layers and not channels:
            return
        if not layers or not channels:
            raise ValueError(
                f"{self.id}: vace_layers and vace_in_channels go together, got vace_layers {list(layers)} and"
                f" vace_in_channels {channels}"
            )
        if self.arch != "dit":
            raise ValueError(f"{self.id}: vace_layers needs a dit (Wan VACE), got arch {self.arch!r}")
        if list(layers) != sorted(set(layers)) or layers[0] != 0 or layers[-1] >= self.layers:
            raise ValueError(
                f"{self.id}: vace_layers must rise from 0 without repeats, below layers {self.layers}; got"
                f" {list(layers)}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads

    @property
    def blocks_per_pass(self) -> int:
        """Transformer blocks one denoising pass runs: the main ones and any VACE blocks."""
        return self.layers + len(self.vace_layers)


class WorldArch(_Frozen):
    """An autoregressive (interactive) world model: each chunk of new latent frames is denoised in `steps`
    passes over its own tokens while attending to cached keys/values of earlier frames (and memory tokens),
    then one more pass writes its clean keys/values to the cache, then the VAE decodes it."""

    id: str
    name: str
    base: str = Field(description="what the denoiser is built on (a catalog model id, or 'own')")
    params_b: float = Field(gt=0)
    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    heads: int = Field(gt=0)
    ffn_size: int = Field(gt=0)
    ffn_matrices: Literal[2, 3] = 2
    patch: tuple[int, int] = Field(description="(h, w) latent pixels per token")
    width: int = Field(gt=0, description="output pixels")
    height: int = Field(gt=0)
    vae: Vae
    chunk_latent_frames: int = Field(1, ge=1, description="latent frames denoised together (1: frame by frame)")
    context_frames: int = Field(ge=0, description="earlier latent frames whose keys/values each chunk attends to")
    memory_tokens: int = Field(0, ge=0, description="extra cached tokens every chunk attends to (a memory)")
    cross_tokens: int = Field(0, ge=0, description="prompt/image tokens read by cross-attention each pass")
    steps: int = Field(gt=0, description="denoising passes per chunk")
    cache_pass: bool = Field(True, description="one more pass over the clean chunk to write its keys/values")
    precision: Literal["bf16", "fp32"] = "bf16"
    dispatched_ops_per_pass: int | None = Field(
        None, gt=0, description="operators one pass dispatches, counted (a CPU pays each); unset: 140 per block"
    )
    sources: dict[str, str]

    @model_validator(mode="after")
    def _consistent(self) -> WorldArch:
        if self.hidden_size % self.heads:
            raise ValueError(f"{self.id}: hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        for name, side in (("width", self.width), ("height", self.height)):
            if side % (self.vae.spatial * self.patch[0 if name == "height" else 1]):
                raise ValueError(f"{self.id}: {name} {side} is not a whole number of tokens")
        for group in ("transformer", "defaults"):
            if not self.sources.get(group):
                raise ValueError(f"{self.id}: sources.{group} must cite where those fields come from")
        return self

    @property
    def tokens_per_latent_frame(self) -> int:
        return (self.height // (self.vae.spatial * self.patch[0])) * (self.width // (self.vae.spatial * self.patch[1]))

    @property
    def frames_per_chunk(self) -> int:
        """Output frames a chunk decodes to: a causal video VAE turns each latent frame into `temporal` frames."""
        return self.chunk_latent_frames * self.vae.temporal


def _load_toml(name: str) -> dict[str, Any]:
    return tomllib.loads((resources.files("noor.catalog") / name).read_text(encoding="utf-8"))


@cache
def models() -> dict[str, ModelArch]:
    raw = _load_toml("models.toml")
    encoders = {k: TextEncoder(id=k, **v) for k, v in raw["text_encoders"].items()}
    vaes = {k: Vae(id=k, **v) for k, v in raw["vaes"].items()}
    out = {}
    for key, fields in raw["models"].items():
        fields = dict(fields)
        fields["text_encoders"] = tuple(encoders[e] for e in fields["text_encoders"])
        fields["vae"] = vaes[fields["vae"]]
        out[key] = ModelArch(id=key, **fields)
    return out


@cache
def worlds() -> dict[str, WorldArch]:
    raw = _load_toml("models.toml")
    vaes = {k: Vae(id=k, **v) for k, v in raw["vaes"].items()}
    out = {}
    for key, fields in raw.get("worlds", {}).items():
        fields = dict(fields)
        fields["vae"] = vaes[fields["vae"]]
        out[key] = WorldArch(id=key, **fields)
    return out


def world_ids() -> list[str]:
    return sorted(worlds())


def world(world_id: str) -> WorldArch:
    table = worlds()
    if world_id not in table:
        raise UnknownId("world model", world_id, table)
    return table[world_id]


def model_ids() -> list[str]:
    return sorted(models())


def model(model_id: str) -> ModelArch:
    table = models()
    if model_id not in table:
        raise UnknownId("model", model_id, table)
    return table[model_id]

"""Model families: which diffusers pipeline runs each, what it can do, and the shapes it accepts.

A family is data. The shape rules (a side must be a multiple of the VAE's spatial compression times
the transformer's patch size; a clip must be `t*k + 1` frames for a VAE that compresses time by `t`)
are read from the weights' own config files, so a toy model and the real one follow the same code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# What the request needs from the pipeline: text only, a start frame (and maybe an end frame), or one image.
MODES = ("t2v", "i2v", "image")
# How keyframes reach a pipeline's __call__.
KEYFRAME_STYLES = ("none", "image", "image+last_image", "ltx_conditions")


@dataclass(frozen=True)
class Geometry:
    """The shapes a model accepts: sides in multiples of `spatial`, clips of `temporal * k + 1` frames."""

    spatial: int
    temporal: int  # 0: an image model (one frame)
    # positions per axis (latent frames, patches down, patches across) a precomputed rotary table holds:
    # Wan's `rope_max_seq_len`; a longer axis crashes the transformer, so it is refused at create time. 0: no limit
    max_positions: int = 0
    # a pipeline that sizes the clip itself draws about target_side**2 pixels (its transformer's target_size)
    # at the keyframe's aspect ratio (HunyuanVideo 1.5 I2V); Noor asks for that size up front. 0: the request's size
    target_side: int = 0
    # (width, height): the only size the transformer can draw (learnt position embeddings); None: any multiple
    fixed_size: tuple[int, int] | None = None

    def positions(self, width: int, height: int, num_frames: int) -> dict[str, int]:
        """Rotary positions per axis, named after the request field that sets them."""
        latent_frames = (num_frames - 1) // self.temporal + 1 if self.temporal else 1
        return {"num_frames": latent_frames, "height": height // self.spatial, "width": width // self.spatial}

    def drawn_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) a `target_side` pipeline draws for a keyframe of this size (its own bucket rule;
        `spatial` is the VAE's ratio alone, as HunyuanVideo 1.5 patches by 1)."""
        from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor

        processor = HunyuanVideo15ImageProcessor(vae_scale_factor=self.spatial)
        h, w = processor.calculate_default_height_width(height, width, target_size=self.target_side)
        return int(w), int(h)


@dataclass(frozen=True, kw_only=True)
class BaseFamily:
    """What every family says, the video and image ones here and the audio ones (`audio.AudioFamily`): its name,
    the weights dir's layout (`weights.check`), the defaults a request falls back to, and a note."""

    name: str
    title: str
    kind: str  # "video", "image" or "audio"
    index_classes: tuple[str, ...]  # what model_index.json's `_class_name` may say
    components: tuple[str, ...]  # component folders the weights dir must have
    steps: int
    guidance: float
    note: str = ""  # sizes and checkpoints this family was trained on, for `noor models show`


@dataclass(frozen=True, kw_only=True)
class Family(BaseFamily):
    pipelines: dict[str, str]  # mode -> diffusers pipeline class
    capabilities: frozenset[str]
    keyframes: str  # one of KEYFRAME_STYLES, for the i2v pipeline
    geometry: Callable[[Path], Geometry]
    width: int
    height: int
    frames: int
    fps: int
    max_frames: int
    max_side: int = 2048
    end_needs_start: bool = True  # an end frame alone is refused (the pipeline needs `image`)
    needs_end: bool = False  # first-last-frame models embed both frames: a start frame alone is refused
    perf_ids: tuple[str, ...] = ()  # the catalog architectures (noor.catalog) this family's checkpoints can be


def read_config(path: Path, component: str) -> dict[str, Any]:
    file = path / component / "config.json"
    if not file.is_file():
        return {}
    data = json.loads(file.read_text())
    return data if isinstance(data, dict) else {}


def _patch(transformer: dict[str, Any], default: int) -> int:
    patch = transformer.get("patch_size", default)
    if isinstance(patch, list | tuple):  # Wan: (t, h, w)
        return int(patch[-1])
    return int(patch or 1)


def wan_geometry(path: Path) -> Geometry:
    # AutoencoderKLWan: 2**len(temperal_downsample) spatial, 2**sum(temperal_downsample) temporal (Wan 2.1: 8, 4);
    # Wan 2.2's 5B VAE states its factors (16, 4).
    vae = read_config(path, "vae")
    down = vae.get("temperal_downsample", [False, True, True])
    spatial = int(vae.get("scale_factor_spatial") or 2 ** len(down))
    temporal = int(vae.get("scale_factor_temporal") or 2 ** sum(bool(d) for d in down))
    transformer = read_config(path, "transformer")
    # WanRotaryPosEmbed precomputes rope_max_seq_len positions per axis (1024 in every released config); the
    # time patch is 1 in all of them, so latent frames are positions
    max_positions = int(transformer.get("rope_max_seq_len", 1024))
    return Geometry(spatial * _patch(transformer, 2), temporal, max_positions=max_positions)


def ltx_geometry(path: Path) -> Geometry:
    # AutoencoderKLLTXVideo: patch_size * 2**(scaling blocks) spatial, patch_size_t * 2**(...) temporal (32, 8).
    vae = read_config(path, "vae")
    scaling = vae.get("spatio_temporal_scaling", [True, True, True, False])
    spatial = vae.get("spatial_compression_ratio") or int(vae.get("patch_size", 4)) * 2 ** sum(map(bool, scaling))
    temporal = vae.get("temporal_compression_ratio") or int(vae.get("patch_size_t", 1)) * 2 ** sum(map(bool, scaling))
    # LTXConditionPipeline also insists on multiples of 32 whatever the VAE (the real one is 32 anyway)
    return Geometry(math.lcm(int(spatial) * _patch(read_config(path, "transformer"), 1), 32), int(temporal))


def hunyuan_geometry(path: Path) -> Geometry:
    # AutoencoderKLHunyuanVideo(15) state their ratios: HunyuanVideo 8 and 4, HunyuanVideo 1.5 16 and 4.
    vae = read_config(path, "vae")
    spatial = int(vae.get("spatial_compression_ratio", 8))
    return Geometry(
        spatial * _patch(read_config(path, "transformer"), 2), int(vae.get("temporal_compression_ratio", 4))
    )


def hunyuan15_i2v_geometry(path: Path) -> Geometry:
    # HunyuanVideo15ImageToVideoPipeline sizes the clip itself: the bucket nearest the image's aspect ratio with
    # about target_size**2 pixels in multiples of the VAE's ratio (16); target_size is 640 in the 480p checkpoint
    g = hunyuan_geometry(path)
    target = int(read_config(path, "transformer").get("target_size", 640))
    return replace(g, target_side=target)


def cogvideox_geometry(path: Path) -> Geometry:
    # AutoencoderKLCogVideoX: 2**(len(block_out_channels) - 1) spatial (8), temporal_compression_ratio (4).
    # Its decoder takes latent frames in pairs after the first, so the latent count must be odd: 49 frames =
    # 13 latents = 1 + 6 pairs. That makes clips 2*4k + 1 frames (CogVideoX 1.5's 81 too).
    vae = read_config(path, "vae")
    spatial = 2 ** (len(vae.get("block_out_channels", [128, 256, 256, 512])) - 1)
    temporal = 2 * int(vae.get("temporal_compression_ratio", 4))
    transformer = read_config(path, "transformer")
    fixed = None
    if transformer.get("use_learned_positional_embeddings"):
        # CogVideoX-5B-I2V learnt its position embeddings for one latent grid (sample_width x sample_height = 90x60,
        # i.e. 720x480) and diffusers raises at any other size
        fixed = (int(transformer["sample_width"]) * spatial, int(transformer["sample_height"]) * spatial)
    return Geometry(spatial * _patch(transformer, 2), temporal, fixed_size=fixed)


def _vae_scale(path: Path) -> int:
    # AutoencoderKL: 2**(len(block_out_channels) - 1), 8 for the real ones
    return int(2 ** (len(read_config(path, "vae").get("block_out_channels", [128, 256, 512, 512])) - 1))


def sd3_geometry(path: Path) -> Geometry:
    return Geometry(_vae_scale(path) * _patch(read_config(path, "transformer"), 2), 0)  # SD3 patches by 2: 16


def flux_geometry(path: Path) -> Geometry:
    return Geometry(_vae_scale(path) * 2, 0)  # FLUX packs 2x2 latents into one token: 16


VIDEO = frozenset({"t2v", "image"})
I2V = frozenset({"i2v", "extend"})
KEYFRAMED = frozenset({"i2v", "extend", "end_frame", "loop"})
# work on a source clip (`edits`): the family names each operation's pipeline in `pipelines` under its name
EDITS = frozenset({"edit", "reframe"})
# frames pinned at indexes inside the clip (`keyframes`), its pipeline in `pipelines` under "keyframes"
PINS = frozenset({"keyframes"})

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            name="wan2.1-t2v",
            title="Wan 2.1 text-to-video (1.3B, 14B), and video edits",
            kind="video",
            # an edit is SDEdit by WanVideoToVideoPipeline (`strength`), or FlowEdit (edits.Work). No reframe:
            # diffusers has no masked-denoising pipeline for this transformer (VACE's is another checkpoint)
            pipelines={"t2v": "WanPipeline", "edit": "WanVideoToVideoPipeline"},
            index_classes=("WanPipeline",),
            components=("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
            capabilities=VIDEO | {"edit"},
            keyframes="none",
            geometry=wan_geometry,
            width=832,
            height=480,
            frames=81,
            fps=16,
            steps=50,
            guidance=5.0,
            max_frames=161,
            note="1.3B: 480p; 14B: 480p and 720p; 81 frames at 16 fps",
            perf_ids=("wan2.1-t2v-1.3b", "wan2.1-t2v-14b"),
        ),
        Family(
            name="wan2.1-i2v",
            title="Wan 2.1 image-to-video (14B, 480p/720p)",
            kind="video",
            pipelines={"i2v": "WanImageToVideoPipeline"},
            index_classes=("WanImageToVideoPipeline",),
            components=("transformer", "vae", "text_encoder", "tokenizer", "scheduler", "image_encoder"),
            capabilities=I2V,
            keyframes="image+last_image",
            geometry=wan_geometry,
            width=832,
            height=480,
            frames=81,
            fps=16,
            steps=40,
            guidance=5.0,
            max_frames=161,
            perf_ids=("wan2.1-i2v-14b",),
        ),
        Family(
            name="wan2.2-ti2v",
            title="Wan 2.2 TI2V-5B (text- and image-to-video, 720p at 24 fps)",
            kind="video",
            # no edit: WanVideoToVideoPipeline (diffusers 0.42.1) sizes its noise by 2**len(temperal_downsample) = 8
            # pixels a latent, not this VAE's 16, and fails on the source's latents; FlowEdit does not make its
            # per-token timesteps (`flowedit.supports`)
            pipelines={"t2v": "WanPipeline", "i2v": "WanImageToVideoPipeline"},
            index_classes=("WanPipeline", "WanImageToVideoPipeline"),
            components=("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
            capabilities=VIDEO | I2V,
            keyframes="image+last_image",
            geometry=wan_geometry,
            width=1280,
            height=704,
            frames=121,
            fps=24,
            steps=50,
            guidance=5.0,
            max_frames=161,
            perf_ids=("wan2.2-ti2v-5b",),
        ),
        Family(
            name="wan2.2-t2v-a14b",
            title="Wan 2.2 T2V-A14B (two experts: high-noise and low-noise transformers)",
            kind="video",
            # no edit: WanVideoToVideoPipeline has one transformer, so it would run every step on the high-noise
            # expert, though an edit from noise level 0.87 or below (adhere_1..flex_1) is wholly past the switch to
            # the low-noise one (boundary_ratio 0.875), the others partly; FlowEdit does not switch (`supports`)
            pipelines={"t2v": "WanPipeline"},
            index_classes=("WanPipeline",),
            components=("transformer", "transformer_2", "vae", "text_encoder", "tokenizer", "scheduler"),
            capabilities=VIDEO,
            keyframes="none",
            geometry=wan_geometry,
            width=1280,
            height=720,
            frames=81,
            fps=16,
            steps=40,
            guidance=4.0,
            max_frames=161,
            perf_ids=("wan2.2-t2v-a14b",),
        ),
        Family(
            name="ltx-video",
            title="LTX-Video (0.9.x): text-to-video, and keyframes through LTXConditionPipeline",
            kind="video",
            pipelines={
                "t2v": "LTXPipeline",
                "i2v": "LTXConditionPipeline",
                "edit": "LTXConditionPipeline",
                "reframe": "LTXConditionPipeline",
                "keyframes": "LTXConditionPipeline",
            },
            index_classes=("LTXPipeline", "LTXImageToVideoPipeline", "LTXConditionPipeline"),
            components=("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
            capabilities=VIDEO | KEYFRAMED | EDITS | PINS,
            keyframes="ltx_conditions",
            geometry=ltx_geometry,
            width=768,
            height=512,
            frames=161,
            fps=24,
            steps=50,
            guidance=3.0,
            max_frames=257,
            end_needs_start=False,
            perf_ids=("ltx-video-2b",),
        ),
        Family(
            name="hunyuanvideo",
            title="HunyuanVideo (13B) text-to-video",
            kind="video",
            pipelines={"t2v": "HunyuanVideoPipeline"},
            index_classes=("HunyuanVideoPipeline",),
            components=(
                "transformer",
                "vae",
                "text_encoder",
                "tokenizer",
                "text_encoder_2",
                "tokenizer_2",
                "scheduler",
            ),
            capabilities=VIDEO,
            keyframes="none",
            geometry=hunyuan_geometry,
            width=1280,
            height=720,
            frames=129,
            fps=24,
            steps=50,
            guidance=6.0,
            max_frames=129,
            perf_ids=("hunyuanvideo",),
        ),
        Family(
            name="cogvideox",
            title="CogVideoX (2B, 5B; 1.5) text-to-video",
            kind="video",
            pipelines={"t2v": "CogVideoXPipeline"},
            index_classes=("CogVideoXPipeline",),
            components=("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
            capabilities=frozenset({"t2v"}),
            keyframes="none",
            geometry=cogvideox_geometry,
            width=720,
            height=480,
            frames=49,
            fps=8,
            steps=50,
            guidance=6.0,
            max_frames=81,
            note="CogVideoX 1.0: 49 frames at 720x480; 1.5: up to 81 frames",
            perf_ids=("cogvideox-2b", "cogvideox-5b", "cogvideox1.5-5b"),
        ),
        Family(
            name="flux.1-dev",
            title="FLUX.1 [dev] text-to-image (guidance-distilled)",
            kind="image",
            pipelines={"image": "FluxPipeline", "edit": "FluxImg2ImgPipeline", "reframe": "FluxInpaintPipeline"},
            index_classes=("FluxPipeline",),
            components=(
                "transformer",
                "vae",
                "text_encoder",
                "tokenizer",
                "text_encoder_2",
                "tokenizer_2",
                "scheduler",
            ),
            capabilities=frozenset({"image"}) | EDITS,
            keyframes="none",
            geometry=flux_geometry,
            width=1024,
            height=1024,
            frames=1,
            fps=1,
            steps=28,
            guidance=3.5,
            max_frames=1,
            perf_ids=("flux.1-dev",),
        ),
        Family(
            name="sd3.5",
            title="Stable Diffusion 3.5 (medium, large, large turbo) text-to-image",
            kind="image",
            pipelines={
                "image": "StableDiffusion3Pipeline",
                "edit": "StableDiffusion3Img2ImgPipeline",
                "reframe": "StableDiffusion3InpaintPipeline",
            },
            index_classes=("StableDiffusion3Pipeline",),
            components=(
                "transformer",
                "vae",
                "text_encoder",
                "tokenizer",
                "text_encoder_2",
                "tokenizer_2",
                "text_encoder_3",
                "tokenizer_3",
                "scheduler",
            ),
            capabilities=frozenset({"image"}) | EDITS,
            keyframes="none",
            geometry=sd3_geometry,
            width=1024,
            height=1024,
            frames=1,
            fps=1,
            steps=28,
            guidance=4.5,
            max_frames=1,
            perf_ids=("sd3.5-large", "sd3.5-medium"),
        ),
    ]
}
# Look-alikes: the same pipeline and parts, trained for another job.
FAMILIES["wan2.1-flf2v"] = replace(
    FAMILIES["wan2.1-i2v"],
    name="wan2.1-flf2v",
    title="Wan 2.1 first-last-frame-to-video (14B, 720p)",
    capabilities=frozenset({"i2v", "end_frame", "loop"}),
    width=1280,
    height=720,
    guidance=5.5,
    needs_end=True,
    perf_ids=("wan2.1-flf2v-14b",),
)
FAMILIES["wan2.1-vace"] = replace(
    FAMILIES["wan2.1-t2v"],
    name="wan2.1-vace",
    title="Wan 2.1 VACE (1.3B, 14B): text-to-video, keyframes at indexes, edit and reframe conditioned on the source",
    pipelines={
        "t2v": "WanVACEPipeline",
        "edit": "WanVACEPipeline",
        "reframe": "WanVACEPipeline",
        "keyframes": "WanVACEPipeline",
    },
    index_classes=("WanVACEPipeline",),
    capabilities=VIDEO | EDITS | PINS,
    note="1.3B: 480p; 14B: 480p and 720p; 81 frames at 16 fps",
    perf_ids=("wan2.1-vace-1.3b", "wan2.1-vace-14b"),  # the T2V transformer and its VACE blocks (noor.catalog)
)
FAMILIES["wan2.2-i2v-a14b"] = replace(
    FAMILIES["wan2.2-t2v-a14b"],
    name="wan2.2-i2v-a14b",
    title="Wan 2.2 I2V-A14B (two experts)",
    pipelines={"i2v": "WanImageToVideoPipeline"},
    index_classes=("WanImageToVideoPipeline",),
    capabilities=I2V,
    keyframes="image+last_image",
    guidance=3.5,
    perf_ids=("wan2.2-i2v-a14b",),
)
FAMILIES["hunyuanvideo-1.5"] = replace(
    FAMILIES["hunyuanvideo"],
    name="hunyuanvideo-1.5",
    title="HunyuanVideo 1.5 (8.3B) text-to-video",
    pipelines={"t2v": "HunyuanVideo15Pipeline"},
    index_classes=("HunyuanVideo15Pipeline",),
    width=848,
    height=480,
    frames=121,
    guidance=6.0,  # set on the checkpoint's guider; the pipeline takes no guidance_scale
    max_frames=241,
    perf_ids=("hunyuanvideo-1.5",),
)
FAMILIES["hunyuanvideo-1.5-i2v"] = replace(
    FAMILIES["hunyuanvideo-1.5"],
    name="hunyuanvideo-1.5-i2v",
    title="HunyuanVideo 1.5 (8.3B) image-to-video",
    pipelines={"i2v": "HunyuanVideo15ImageToVideoPipeline"},
    index_classes=("HunyuanVideo15ImageToVideoPipeline",),
    components=(*FAMILIES["hunyuanvideo-1.5"].components, "image_encoder", "feature_extractor"),
    capabilities=I2V,
    keyframes="image",
    geometry=hunyuan15_i2v_geometry,
    # The pipeline draws at the keyframe's aspect ratio, at the area its transformer was trained for
    # (`target_size`: 480p or 720p checkpoints); Noor picks that size at create time (Geometry.target_side).
    note="480p and 720p checkpoints; the size follows the start frame's aspect ratio at the checkpoint's area",
    # the SigLIP image encoder (~0.4B, once per clip) is not in the catalog entry: small next to 50 steps
    perf_ids=("hunyuanvideo-1.5",),
)
FAMILIES["cogvideox-i2v"] = replace(
    FAMILIES["cogvideox"],
    name="cogvideox-i2v",
    title="CogVideoX (5B; 1.5) image-to-video",
    pipelines={"i2v": "CogVideoXImageToVideoPipeline"},
    index_classes=("CogVideoXImageToVideoPipeline",),
    capabilities=I2V,
    keyframes="image",
    note="",
    perf_ids=("cogvideox-5b-i2v",),
)
FAMILIES["flux.1-schnell"] = replace(
    FAMILIES["flux.1-dev"], name="flux.1-schnell", title="FLUX.1 [schnell] text-to-image (4 steps, no guidance)",
    steps=4, guidance=0.0, perf_ids=("flux.1-schnell",),
)  # fmt: skip


class UnknownFamily(ValueError):
    pass


def get(name: str) -> Family:
    if name not in FAMILIES:
        raise UnknownFamily(f"--family: unknown family, got {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def mode_of(family: Family, *, start: bool, end: bool, image: bool) -> str:
    """Which of the family's pipelines a request needs."""
    if start or end:
        return "i2v"
    if image and family.kind == "image":
        return "image"
    return "t2v" if "t2v" in family.pipelines else next(iter(family.pipelines))


def round_to(value: int, multiple: int) -> int:
    return max(multiple, multiple * round(value / multiple))


def fit_frames(num_frames: int, temporal: int) -> int:
    """The nearest `temporal * k + 1` frame count; a one-frame request stays one frame, and a video stays a video
    (k >= 1: 4 frames on an 8k+1 model are 9, not a single image)."""
    if temporal <= 0:
        return 1
    if num_frames <= 1:
        return 1
    return temporal * max(1, round((num_frames - 1) / temporal)) + 1

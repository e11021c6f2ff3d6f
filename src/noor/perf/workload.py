"""FLOPs and bytes of each stage of one request: text encoding, one denoising pass, VAE decode.

Counting rules (a multiply-add = 2 FLOPs, as in Kaplan et al. 2020 and nanoGPT's MFU estimate):
  - linear layers: 2 x tokens x weights each token passes through;
  - self-attention: QK^T and PV = 4 x queries x keys x hidden (FlashAttention paper's count);
  - cross-attention: 4 x video tokens x context tokens x hidden, plus the context K/V projections;
  - 3x3 (x3) convolutions: 2 x k x c_in x c_out per output element.
Everything here is for the whole request (all passes of a step together, before any split over GPUs).
A sequence split (Ulysses, ring) divides the video tokens only: the prompt is whole on every rank, so its own
work (`PassWork.prompt_linear_flops`) is done by each rank in full (`PassWork.linear_per_rank`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from noor.catalog import ModelArch, Vae
from noor.perf.shape import PerfError, Shape

BYTES = {"bf16": 2, "fp8": 1, "fp32": 4}


@dataclass
class PassWork:
    """One transformer (or UNet) forward pass over a batch of `batch` sequences."""

    tokens: int  # per sequence, text included for joint attention: the length self-attention sees
    video_tokens: int  # per sequence
    linear_flops: float
    attention_flops: float
    cross_flops: float
    conv_flops: float = 0.0
    conv_channels: int = 0  # width of the convs, where they are narrow enough for it to set their rate (0: wide)
    attention_keys: int = 0  # keys each query attends to (sets how well attention kernels saturate)
    activation_elems: float = 0.0  # tokens x hidden x layers: the elementwise traffic unit
    hidden_size: int = 0
    layers: int = 0
    kernels: int = 0  # kernel launches per pass (framework overhead)
    host_ops: int = 0  # operators dispatched per pass (what eager PyTorch costs on a CPU)
    self_attention_calls: int = 0  # attention layer calls per pass (their fixed cost on a measured CPU)
    cross_attention_calls: int = 0
    # of linear_flops, the prompt's own: its projection into the model's width, its cross-attention keys and
    # values, a joint model's text tokens through the blocks
    prompt_linear_flops: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return self.linear_flops + self.attention_flops + self.cross_flops + self.conv_flops

    def linear_per_rank(self, sequence_ranks: int) -> float:
        """Linear FLOPs each of `sequence_ranks` ranks does (Ulysses x ring): its share of the video tokens' work
        and all of the prompt's, which every rank holds whole (docs/parallel.md: "The prompt stays whole"). A
        cfg split is already in `self`: a pass over one group's branches carries only their prompts."""
        return (self.linear_flops - self.prompt_linear_flops) / sequence_ranks + self.prompt_linear_flops


def latent_grid(model: ModelArch, shape: Shape) -> tuple[int, int, int]:
    """(latent frames / patch_t, rows, cols) of patches: the token grid of one sequence."""
    vae, (pt, ph, pw) = model.vae, model.patch
    for name, side, multiple in (("width", shape.width, vae.spatial * pw), ("height", shape.height, vae.spatial * ph)):
        if side < multiple:
            raise PerfError(name, side, f"must be at least {multiple} for {model.id}")
    frames = vae.latent_frames(shape.num_frames) if model.kind == "video" else 1
    if model.kind == "image" and shape.num_frames != 1:
        raise PerfError("num_frames", shape.num_frames, f"{model.id} makes images: must be 1")
    return -(-frames // pt), shape.height // (vae.spatial * ph), shape.width // (vae.spatial * pw)


# Kernel launches per transformer block in eager PyTorch: norms, modulation, q/k/v/out, rotary,
# attention, MLP, gates and residuals: the operators diffusers' WanTransformerBlock dispatches that are not
# views, counted with TorchDispatchMode in bf16 (tests/perf/test_workload.py counts them again; diffusers
# 0.42, 2026-12-05; it was an uncounted 50 before). It matters only where kernels are tiny.
KERNELS_PER_BLOCK = 92
# Operators dispatched per block, views and transposes included: each costs host time, which a GPU
# hides behind its queue but a CPU pays in line. Counted with torch's TorchDispatchMode on one
# forward pass: diffusers' WanTransformerBlock 129; noor-tiny's TinyBlock 114 joint, 128 factorised (under no_grad,
# 2026-12-03).
DISPATCHED_OPS_PER_BLOCK = 140
# Operators noor-tiny's conv stem and head add to a pass (two diffusers ResnetBlock2D, two convs, reshapes),
# counted the same way (tests/perf/test_workload.py counts them again).
CONV_STEM_OPS = 46


def denoise_pass(model: ModelArch, shape: Shape, batch: int) -> PassWork:
    """One forward pass of the denoiser over `batch` sequences (e.g. 2 = CFG's two passes batched)."""
    if model.arch == "unet":
        return _unet_pass(model, shape, batch)
    t, h, w = latent_grid(model, shape)
    video = t * h * w
    # Wan VACE's blocks are main blocks over the control video's tokens (padded to the video's): each costs what
    # a main block does
    d, L = model.hidden_size, model.blocks_per_pass
    context = model.text_tokens + model.image_tokens
    joint = model.arch == "mmdit"
    seq = video + (model.text_tokens if joint else 0)

    # 1. linear layers per token per block: attention q,k,v,o + FFN (+ cross-attention q,o)
    per_token = 4 * d * d + model.ffn_matrices * d * model.ffn_size
    if model.cross_attention:
        per_token += 2 * d * d
    if model.attention == "factorised":  # a second self-attention (temporal) with its own q,k,v,o
        per_token += 4 * d * d
    projection = text_projection_flops(model, batch)
    kv = 2.0 * batch * L * context * 2 * d * d if model.cross_attention else 0.0  # the context's K and V, once a pass
    # VACE's patch embedding of the control video (a conv with stride = kernel: a matmul per token), the first
    # VACE block's proj_in and each one's proj_out (its hint)
    vace = len(model.vace_layers)
    patch_in = model.vace_in_channels * model.patch[0] * model.patch[1] * model.patch[2]
    hints = 2.0 * batch * video * (patch_in + (vace + 1) * d) * d if vace else 0.0
    linear = 2.0 * batch * L * seq * per_token + projection + kv + hints
    # the prompt's own work: its projection, its K and V, and a joint model's text tokens through the blocks (in
    # `linear` through `seq`)
    prompt = projection + kv + (2.0 * batch * L * model.text_tokens * per_token if joint else 0.0)

    # 2. self-attention over the sequence
    if model.attention == "full":
        attention = 4.0 * batch * L * seq * seq * d
        keys = seq
    elif model.attention == "factorised":  # within each frame, then across frames at each patch
        spatial = h * w
        attention = 4.0 * batch * L * (t * spatial * spatial + spatial * t * t) * d
        keys = spatial
    else:  # linear attention: a (head_dim x head_dim) state per head
        attention = 4.0 * batch * L * seq * d * model.head_dim
        keys = model.head_dim

    # 3. cross-attention to the prompt (and image tokens)
    cross = 4.0 * batch * L * video * context * d if model.cross_attention else 0.0

    # 4. a conv stem and head at full latent resolution (noor-tiny): conv in, a resnet (two 3x3 convs), and
    # after the blocks a resnet on [tokens' output, stem features] (2c -> c, with a 1x1 shortcut) and conv out
    conv, conv_elems, conv_ops = 0.0, 0.0, 0
    if c := model.conv_stem_channels:
        pixels = batch * t * model.patch[0] * h * model.patch[1] * w * model.patch[2]  # latent pixels per pass
        z = model.vae.latent_channels
        per_pixel = 9 * (z * c + 2 * c * c + 2 * c * c + c * c + c * z) + 2 * c * c
        conv = 2.0 * pixels * per_pixel
        conv_elems = float(pixels) * c * 8  # GroupNorm + SiLU over each resnet input and output, and the head
        conv_ops = CONV_STEM_OPS
    return PassWork(
        tokens=seq,
        video_tokens=video,
        linear_flops=linear,
        attention_flops=attention,
        cross_flops=cross,
        conv_flops=conv,
        conv_channels=model.conv_stem_channels,
        attention_keys=keys,
        activation_elems=float(batch) * seq * d * L + conv_elems,
        hidden_size=d,
        layers=L,
        kernels=KERNELS_PER_BLOCK * L + conv_ops,
        host_ops=DISPATCHED_OPS_PER_BLOCK * L + conv_ops,
        self_attention_calls=L * (2 if model.attention == "factorised" else 1),
        cross_attention_calls=L if model.cross_attention else 0,
        prompt_linear_flops=prompt,
    )


def text_projection_flops(model: ModelArch, batch: int) -> float:
    """The denoiser's projection of a pass's prompt tokens from its text encoder's width into its own: two
    layers, width -> hidden -> hidden, for a cross-attention DiT (PixArtAlphaTextProjection: Wan's
    `condition_embedder.text_embedder`, LTX-Video's and Sana's `caption_projection`), one (`context_embedder`,
    width -> hidden) for a joint one (FLUX, SD3; HunyuanVideo's token refiner is counted as its input layer only).
    None where the model reads the encoder's tokens at their own width (noor-tiny: 128 wide, its cross-attention's
    `cross_attention_dim`). Image-conditioning tokens' embedders are not counted."""
    width = max((e.hidden_size for e in model.text_encoders), default=0)
    d = model.hidden_size
    if not model.text_tokens or width in (0, d) or model.arch == "unet":
        return 0.0
    per_token = width * d + (d * d if model.arch == "dit" else 0)
    return 2.0 * batch * model.text_tokens * per_token


def _unet_pass(model: ModelArch, shape: Shape, batch: int) -> PassWork:
    """SDXL-style UNet: resnets (two 3x3 convs) and transformer blocks at each level; the mid block
    at the lowest level; up blocks hold one more layer than down blocks (diffusers UNet2DConditionModel)."""
    lat_h, lat_w = shape.height // model.vae.spatial, shape.width // model.vae.spatial
    lpb, ctx = model.unet_layers_per_block, model.text_tokens
    linear = attention = cross = conv = act = 0.0
    blocks = tblocks_total = 0
    for level, (c, depth) in enumerate(model.unet_levels):
        n = (lat_h >> level) * (lat_w >> level)
        resnets = lpb + (lpb + 1) + (2 if level == len(model.unet_levels) - 1 else 0)
        transformers = (lpb + (lpb + 1) + (1 if level == len(model.unet_levels) - 1 else 0)) if depth else 0
        conv += batch * resnets * 2 * (2.0 * 9 * c * c * n)
        tblocks = transformers * depth
        # per token per block: self q,k,v,o 4c^2; cross q,o 2c^2; GEGLU c->2x4c, 4c->c = 12c^2; + proj in/out
        linear += 2.0 * batch * n * c * c * (18 * tblocks + 2 * transformers)
        attention += 4.0 * batch * tblocks * n * n * c
        cross += 4.0 * batch * tblocks * n * ctx * c
        act += float(batch) * n * c * (tblocks + 2 * resnets)
        blocks += tblocks + resnets
        tblocks_total += tblocks
    n0 = lat_h * lat_w
    return PassWork(
        tokens=n0,
        video_tokens=n0,
        linear_flops=linear,
        attention_flops=attention,
        cross_flops=cross,
        conv_flops=conv,
        attention_keys=(lat_h >> 1) * (lat_w >> 1),
        activation_elems=act,
        hidden_size=model.hidden_size,
        layers=blocks,
        kernels=KERNELS_PER_BLOCK * blocks,
        host_ops=DISPATCHED_OPS_PER_BLOCK * blocks,
        self_attention_calls=int(tblocks_total),
        cross_attention_calls=int(tblocks_total),
    )


def text_encoder_flops(model: ModelArch, prompts: int) -> float:
    """2 x params x tokens per prompt (encoders are short sequences: attention is a few percent)."""
    tokens = max(model.text_tokens, 1)
    return sum(2.0 * e.params_b * 1e9 * tokens * prompts for e in model.text_encoders)


def text_encoder_params(model: ModelArch) -> float:
    return sum(e.params_b * 1e9 for e in model.text_encoders)


@dataclass
class VaeWork:
    flops: float
    largest_elems: float  # the largest live feature map (one causal chunk for video VAEs)
    activation_elems: float  # every conv's input feature map: GroupNorm + SiLU pass over each once
    conv_rows: list[tuple[float, int]]  # (FLOPs, channels) per decoder row: narrow convs run slower on a CPU


def vae_decode(model: ModelArch, shape: Shape) -> VaeWork:
    """The work of decoding the whole batch to pixels."""
    frames = shape.num_frames if model.kind == "video" else 1
    return decode_frames(model.vae, frames, shape.width, shape.height, shape.batch)


def decode_frames(vae: Vae, frames: int, width: int, height: int, batch: int = 1) -> VaeWork:
    """The work of decoding `batch` clips of `frames` frames at width x height (a world model's chunk too)."""
    kernel = 27 if vae.conv3d else 9
    flops, largest, elems = 0.0, 0.0, 0.0
    rows: list[tuple[float, int]] = []
    # video VAEs decode causally a few frames at a time: live activations cover one chunk
    chunk = vae.temporal if vae.conv3d and frames > 1 else 1
    for row, (channels, convs, t_div) in enumerate(vae.decoder):
        scale = vae.first_row_scale << row
        pixels = (height // scale) * (width // scale)
        row_frames = max(1, frames // t_div) if vae.conv3d else frames
        row_flops = batch * row_frames * pixels * convs * 2.0 * kernel * channels * channels
        flops += row_flops
        rows.append((row_flops, channels))
        elems += batch * row_frames * pixels * convs * channels
        largest = max(largest, chunk * pixels * channels)
    return VaeWork(flops, largest, elems, rows)

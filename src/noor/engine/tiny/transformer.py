"""noor-tiny's denoiser: a small video DiT on the VAE's latents that predicts the clean clip.

Design notes:
- 4x4 patches of the 4x16x16 latent of each 64x64 frame: a 16-frame clip is 16 x 16 tokens.
- Joint space-time self-attention over all of a clip's tokens with 3D rotary positions (time, row,
  column), as Wan, HunyuanVideo and CogVideoX do: attention depends on relative offsets, so "the
  object one frame later sits a little to the left" is one attention hop with a fixed query phase.
  At 16 frames x 16 tokens it costs about what the older factorised layout (within a frame, then
  across frames at each patch) cost, which had left the direction of motion at chance; that layout
  is kept (`attention="factorised"`) so older checkpoints still load.
- Each frame has its own timestep, so keyframes enter as clean frames at t=0 while the others are
  noised (the way LTX-Video and Wan 2.2 TI2V condition on frames).
- An optional conv stem and head at the latent's full 16x16 resolution (`conv_channels` > 0), with
  a skip from stem to head (as U-ViT and hourglass DiTs do), built from diffusers' `ResnetBlock2D`:
  the transformer decides layout, colour and motion on 4x4-latent-pixel tokens, and the convs may
  draw edges from the noisy input's own detail. Off in the shipped weights: a 2,000-step trial gave
  single, cleaner objects early but was no sharper at low noise (README, "What we know").
- Optionally (`input_skip`, set by training's second phase) the x0 estimate is blended, per frame
  and channel by a learnt gate that starts at zero, with the noisy input's own linear estimate of x0,
  c_skip(sigma) * x_t (EDM's skip connection, Karras et al. 2022): a network that predicts x0 outright
  cannot copy a nearly clean input exactly (the first training phase's weights miss it by 0.007 latent MSE
  at every noise level below 0.2), so each low-noise step softened edges and corners.
- It predicts x0, not noise or velocity: with 64-value patches and a 128-wide model, predicting
  the clean signal trains best (as Li & He 2025, "Back to Basics: Let Denoising Generative Models
  Denoise", found in pixel space). The pipeline turns x0 into the scheduler's velocity.
"""

from __future__ import annotations

from functools import cache

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention_processor import Attention
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, apply_rotary_emb, get_1d_rotary_pos_embed
from diffusers.models.resnet import ResnetBlock2D
from torch import nn
from torch.nn import functional as F

from noor.engine.tiny.text_encoder import sincos


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (tokens, head_dim)


class RotaryAttnProcessor:
    """Self-attention with rotary positions on queries and keys (diffusers' `apply_rotary_emb`), SDPA."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: Rope | None = None,
    ) -> torch.Tensor:
        B, N, _ = hidden_states.shape
        heads = attn.heads
        q, k, v = (
            proj(hidden_states).view(B, N, heads, -1).transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v)
        )
        if rotary_emb is not None:
            q, k = apply_rotary_emb(q, rotary_emb), apply_rotary_emb(k, rotary_emb)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, -1)
        return attn.to_out[1](attn.to_out[0](out))


@cache  # one per grid: the denoising loop asks for the same grid at every pass
def rope_3d(T: int, hp: int, wp: int, head_dim: int, theta: float = 100.0) -> Rope:
    """Rotary (cos, sin) for a T x hp x wp token grid: a quarter of each head's channels for time, the
    rest split between rows and columns (all even). theta 100, not 10,000: the grid is tens of tokens."""
    dt = 2 * (head_dim // 8)
    dh = 2 * ((head_dim - dt) // 4)
    dw = head_dim - dt - dh
    parts = [get_1d_rotary_pos_embed(d, n, theta=theta, use_real=True) for d, n in ((dt, T), (dh, hp), (dw, wp))]
    t, y, x = torch.meshgrid(torch.arange(T), torch.arange(hp), torch.arange(wp), indexing="ij")
    index = (t.flatten(), y.flatten(), x.flatten())
    cos = torch.cat([part[0][i] for part, i in zip(parts, index, strict=True)], dim=-1)
    sin = torch.cat([part[1][i] for part, i in zip(parts, index, strict=True)], dim=-1)
    return cos, sin


class TinyBlock(nn.Module):
    """Self-attention (joint over space and time, or spatial then temporal), cross-attention to the
    prompt, MLP; adaLN-Zero."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, text_dim: int, joint: bool = False):
        super().__init__()
        self.joint = joint
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        # in the joint layout this is the space-time attention; the name stays so checkpoints keep their keys
        self.attn_spatial = Attention(dim, heads=heads, dim_head=dim // heads, bias=True, out_bias=True)
        if joint:
            self.attn_spatial.set_processor(RotaryAttnProcessor())
        else:
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.attn_temporal = Attention(dim, heads=heads, dim_head=dim // heads, bias=True, out_bias=True)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.attn_cross = Attention(
            dim, cross_attention_dim=text_dim, heads=heads, dim_head=dim // heads, bias=True, out_bias=True
        )
        self.norm4 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * dim, dim)
        )
        self.modulation = nn.Linear(dim, (6 if joint else 9) * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        encoder_attention_bias: torch.Tensor,
        rotary_emb: Rope | None = None,
    ) -> torch.Tensor:
        x = hidden_states  # (B, T, S, D)
        B, T, S, D = x.shape
        mod = self.modulation(nn.functional.silu(temb))[:, :, None]  # (B, T, 1, 6D or 9D)
        if self.joint:
            sh1, sc1, g1, sh3, sc3, g3 = mod.chunk(6, dim=-1)
            h = _modulate(self.norm1(x), sh1, sc1).reshape(B, T * S, D)
            x = x + g1 * self.attn_spatial(h, rotary_emb=rotary_emb).reshape(B, T, S, D)
        else:
            sh1, sc1, g1, sh2, sc2, g2, sh3, sc3, g3 = mod.chunk(9, dim=-1)
            h = _modulate(self.norm1(x), sh1, sc1).reshape(B * T, S, D)
            x = x + g1 * self.attn_spatial(h).reshape(B, T, S, D)
            h = _modulate(self.norm2(x), sh2, sc2).transpose(1, 2).reshape(B * S, T, D)
            x = x + g2 * self.attn_temporal(h).reshape(B, S, T, D).transpose(1, 2)

        h = self.norm3(x).reshape(B, T * S, D)
        x = x + self.attn_cross(h, encoder_hidden_states, attention_mask=encoder_attention_bias).reshape(B, T, S, D)

        return x + g3 * self.mlp(_modulate(self.norm4(x), sh3, sc3))


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, T, S, C*p*p): each frame's p x p patches in row-major order."""
    B, C, T, H, W = x.shape
    return x.reshape(B, C, T, H // p, p, W // p, p).permute(0, 2, 3, 5, 1, 4, 6).reshape(B, T, -1, C * p * p)


class TinyVideoTransformer(ModelMixin, ConfigMixin, CacheMixin, PeftAdapterMixin):  # peft: trained concepts
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        patch_size: int = 8,
        hidden_size: int = 128,
        num_layers: int = 6,
        num_heads: int = 4,
        mlp_ratio: int = 3,
        text_dim: int = 128,
        attention: str = "factorised",
        conv_channels: int = 0,
        input_skip: bool = False,
        keyframe_concat: bool = False,
    ):
        super().__init__()
        p, D, c = patch_size, hidden_size, conv_channels
        if c:  # conv stem at full latent resolution; its features also skip to the head
            self.conv_in = nn.Conv2d(in_channels, c, 3, padding=1)
            self.res_in = ResnetBlock2D(in_channels=c, out_channels=c, temb_channels=D, groups=min(8, c))
            self.res_out = ResnetBlock2D(in_channels=2 * c, out_channels=c, temb_channels=D, groups=min(8, c))
            self.norm_conv_out = nn.GroupNorm(min(8, c), c, eps=1e-6)
            self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)  # type: ignore[arg-type]
        self.patch_embed = nn.Linear((c or in_channels) * p * p, D)
        self.time_proj = Timesteps(D, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(D, D)
        self.text_pool = nn.Sequential(nn.Linear(text_dim, D), nn.SiLU(), nn.Linear(D, D))
        if attention not in ("factorised", "joint"):
            raise ValueError(f"attention must be 'factorised' or 'joint', got {attention!r}")
        joint = attention == "joint"
        self.blocks = nn.ModuleList([TinyBlock(D, num_heads, mlp_ratio, text_dim, joint) for _ in range(num_layers)])
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.out_modulation = nn.Linear(D, 2 * D)
        self.proj_out = nn.Linear(D, (c or in_channels) * p * p)
        for layer in (self.out_modulation, self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if input_skip:  # per frame and channel, from the timestep and prompt; zero at first: x0 as before
            self.skip_gate = nn.Linear(D, in_channels)
            nn.init.zeros_(self.skip_gate.weight)
            nn.init.zeros_(self.skip_gate.bias)
        if keyframe_concat:  # every token also sees the given first and last frames' patch at its place; zero at first
            self.keyframe_embed = nn.Linear(2 * (in_channels * p * p + 1), D)
            nn.init.zeros_(self.keyframe_embed.weight)
            nn.init.zeros_(self.keyframe_embed.bias)
        self.gradient_checkpointing = False

    def with_input_skip(self) -> TinyVideoTransformer:
        """This denoiser with an input skip whose gate starts at zero: a copy that predicts what this one does."""
        return self._with(input_skip=True)

    def with_keyframe_concat(self) -> TinyVideoTransformer:
        """This denoiser with keyframe concatenation whose weights start at zero: a copy that predicts what this
        one does."""
        return self._with(keyframe_concat=True)

    def _with(self, **option: bool) -> TinyVideoTransformer:
        """A copy with an added, zero-initialised part (`option`), the other weights this one's."""
        settings = {key: value for key, value in self.config.items() if not key.startswith("_")}
        grown = TinyVideoTransformer(**{**settings, **option})
        missing, unexpected = grown.load_state_dict(self.state_dict(), strict=False)
        new = {"input_skip": "skip_gate.", "keyframe_concat": "keyframe_embed."}
        assert not unexpected and all(any(k.startswith(new[o]) for o in option) for k in missing), (missing, unexpected)
        return grown.to(self.device)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        return_dict: bool = False,
    ) -> tuple[torch.Tensor]:
        """hidden_states (B, C, T, H, W) noisy clip; timestep (B, T) per frame in [0, 1000];
        encoder_hidden_states (B, L, Dt) and mask (B, L) -> predicted clean clip (B, C, T, H, W)."""
        B, C, T, H, W = hidden_states.shape
        p, D, c = self.config.patch_size, self.config.hidden_size, self.config.conv_channels
        hp, wp = H // p, W // p

        # 1. conditioning: per-frame timestep plus the pooled prompt
        mask = encoder_attention_mask.to(encoder_hidden_states.dtype)
        pooled = (encoder_hidden_states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        # (B, T, D) into the embedding, not (B*T, D): its Linears then see one clip per leading index (batch invariance)
        temb = self.time_embed(self.time_proj(timestep.flatten()).to(hidden_states.dtype).reshape(B, T, D))
        temb = temb + self.text_pool(pooled)[:, None]
        bias = (1.0 - mask)[:, None, :] * -10000.0  # (B, 1, L), additive attention bias

        # 2. conv stem (optional), then patchify: (B, C', T, H, W) -> (B, T, S, C'*p*p)
        x, skip = hidden_states, None
        if c:
            frames = hidden_states.transpose(1, 2).reshape(B * T, C, H, W)
            skip = self.res_in(self.conv_in(frames), temb.reshape(B * T, D))  # (B*T, c, H, W)
            x = skip.reshape(B, T, c, H, W).transpose(1, 2)
        Cx = x.shape[1]
        x = self.patch_embed(patchify(x, p))
        if self.config.keyframe_concat:
            x = x + self.keyframe_embed(self._keyframes(hidden_states, timestep))[:, None]
        ys, xs = torch.meshgrid(torch.arange(hp, device=x.device), torch.arange(wp, device=x.device), indexing="ij")
        pos = torch.cat([sincos(ys.flatten(), D // 2), sincos(xs.flatten(), D // 2)], dim=-1)  # (S, D)
        x = x + pos[None, None].to(x.dtype) + sincos(torch.arange(T, device=x.device), D)[None, :, None].to(x.dtype)
        rope = None
        if self.config.attention == "joint":
            cos, sin = rope_3d(T, hp, wp, D // self.config.num_heads)
            rope = (cos.to(x.device, x.dtype), sin.to(x.device, x.dtype))

        # 3. blocks
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, encoder_hidden_states, temb, bias, rope)
            else:
                x = block(x, encoder_hidden_states, temb, bias, rope)

        # 4. unpatchify, then the conv head (optional) on the tokens' output and the stem's features
        shift, scale = self.out_modulation(nn.functional.silu(temb))[:, :, None].chunk(2, dim=-1)
        x = self.proj_out(_modulate(self.norm_out(x), shift, scale))  # (B, T, S, C'*p*p)
        x = x.reshape(B, T, hp, wp, Cx, p, p).permute(0, 4, 1, 2, 5, 3, 6).reshape(B, Cx, T, H, W)
        if skip is not None:
            frames = torch.cat([x.transpose(1, 2).reshape(B * T, Cx, H, W), skip], dim=1)
            frames = self.res_out(frames, temb.reshape(B * T, D))
            frames = self.conv_out(nn.functional.silu(self.norm_conv_out(frames)))
            x = frames.reshape(B, T, C, H, W).transpose(1, 2)
        if self.config.input_skip:  # blend toward the input's own best linear estimate of x0 (EDM's c_skip)
            sigma = (timestep.float() / 1000.0).clamp(0.0, 1.0)  # (B, T)
            c_skip = (1.0 - sigma) / ((1.0 - sigma) ** 2 + sigma**2)
            gate = self.skip_gate(nn.functional.silu(temb)).permute(0, 2, 1)[..., None, None]  # (B, C, T, 1, 1)
            estimate = c_skip[:, None, :, None, None].to(x.dtype) * hidden_states
            x = x + gate * (estimate - x)
        return (x,)

    def _keyframes(self, hidden_states: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The first and last frames' patches where those frames are given (timestep 0), else zeros, each with a
        given/not flag: (B, S, 2 * (C*p*p + 1)), the same for every frame (as SVD and Wan's image-to-video models
        concatenate the image latent to every frame's channels)."""
        B, T = hidden_states.shape[0], hidden_states.shape[2]
        parts = []
        for index in (0, T - 1):
            given = (timestep[:, index] == 0).to(hidden_states.dtype)  # (B,)
            frame = hidden_states[:, :, index : index + 1] * given[:, None, None, None, None]  # (B, C, 1, H, W)
            patches = patchify(frame, self.config.patch_size)[:, 0]  # (B, S, C*p*p)
            parts += [patches, given[:, None, None].expand(B, patches.shape[1], 1)]
        return torch.cat(parts, dim=-1)


# Tell diffusers' caching hooks (First Block Cache and friends) where a block's output is, so
# `transformer.enable_cache(FirstBlockCacheConfig(...))` works as on diffusers' own models.
TransformerBlockRegistry.register(
    TinyBlock, TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=None)
)

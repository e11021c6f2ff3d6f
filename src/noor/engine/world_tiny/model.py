"""noor-world-tiny's denoiser: a causal transformer over latent frames with a KV cache and a memory input.

Design (docs/world.md, "The model"):
- A frame is the VAE's 4x16x16 latent of a 64x64 view; a step of the player is one latent pixel. Its tokens
  are 2x2 latent patches: 64 a frame. Each token's input is the noisy latent of the new frame *and* the
  memory at the same place (the latent canvas cropped at the player's position, `memory.py`) with the mask
  of what the canvas has seen, so what the world already holds is spatially aligned with what is drawn.
- Attention is block-causal over frames: a frame's tokens see each other and the last `context_frames`
  frames' tokens, never a later frame. While playing, the earlier frames' keys and values are cached (computed
  once per frame with the frame clean, as CausVid and Self-Forcing do), so a new frame costs its own tokens
  only. Rotary positions over (frame, row, column), the rows and columns the world's (the view's place on the
  torus added, at whole turns around it), make "the same ground one frame ago" relative offset zero in space
  whichever way the player stepped: the model follows its own context without having to learn each shift.
- Every frame has its own noise level (Diffusion Forcing): in training the context frames are clean or noised
  independently of the frame being learnt; while playing they are clean. The noise level, the action that
  led to the frame and the caption's pooled state enter each block through adaLN-Zero, per frame.
- It predicts the clean latent (x0). A per-channel gate, starting at zero, adds the memory where the mask
  says it is known: copying what the world holds is one learnt scalar away, and the network learns the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_1d_rotary_pos_embed
from torch import nn
from torch.nn import functional as F

# Action ids: the five moves, then "start" (the opening frame, which no move led to).
ACTION_IDS = {"none": 0, "up": 1, "down": 2, "left": 3, "right": 4, "start": 5}

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (B, tokens, head_dim)
KV = tuple[torch.Tensor, torch.Tensor]  # one layer's cached keys and values, (B, heads, tokens, head_dim)


def _torus_angles(positions: torch.Tensor, pairs: int, period: float) -> torch.Tensor:
    """(..., N) positions -> (..., N, pairs) angles at whole numbers of turns around `period` (16 turns down to
    one, geometrically): the same place on the torus gets the same angle whichever way round it is reached."""
    turns = torch.logspace(4.0, 0.0, pairs, base=2.0).round()
    return positions[..., None] * (2 * math.pi * turns / period)


def rope(frames: torch.Tensor, grid: int, head_dim: int, theta: float, origin: torch.Tensor, period: float) -> Rope:
    """Rotary (cos, sin), each (B, T * grid * grid, head_dim), for the tokens of `frames` (absolute frame numbers,
    (T,)) on a grid x grid patch grid whose top-left patch is at `origin` (B, T, 2) (x, y, in patches) on a torus of
    `period` patches: a quarter of each head's channels for the frame, the rest split between rows and columns.

    Rows and columns are the world's, not the view's: the same ground has the same position in every frame, so
    what a frame held one step ago is at relative offset zero whichever way the player went."""
    B, T = origin.shape[:2]
    dt = 2 * (head_dim // 8)
    dh = 2 * ((head_dim - dt) // 4)
    dw = head_dim - dt - dh
    t = get_1d_rotary_pos_embed(dt, frames.float().repeat_interleave(grid * grid), theta=theta, use_real=True)
    cells = torch.arange(grid, dtype=torch.float32)
    rows = (origin[..., 1, None, None] + cells[:, None]).expand(B, T, grid, grid).reshape(B, -1)
    cols = (origin[..., 0, None, None] + cells[None, :]).expand(B, T, grid, grid).reshape(B, -1)
    angles = [_torus_angles(rows, dh // 2, period), _torus_angles(cols, dw // 2, period)]
    cos = [t[0].expand(B, -1, -1)] + [a.cos().repeat_interleave(2, dim=-1) for a in angles]
    sin = [t[1].expand(B, -1, -1)] + [a.sin().repeat_interleave(2, dim=-1) for a in angles]
    return torch.cat(cos, dim=-1), torch.cat(sin, dim=-1)


def rotate(x: torch.Tensor, rotary: Rope) -> torch.Tensor:
    """x (B, heads, N, head_dim) rotated by per-sample (cos, sin) (B, N, head_dim), channel pairs interleaved (as
    diffusers' `apply_rotary_emb` with real (cos, sin), which takes one rotation for the whole batch)."""
    cos, sin = (r[:, None].to(x.dtype) for r in rotary)
    real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    return x * cos + torch.stack([-imag, real], dim=-1).flatten(3) * sin


class WorldBlock(nn.Module):
    """Self-attention (over this chunk's tokens and the cached ones) and an MLP, both under adaLN-Zero."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * dim, dim)
        )
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, rotary: Rope, mask: torch.Tensor | None, past: KV | None
    ) -> tuple[torch.Tensor, KV]:
        """x (B, T, S, D), emb (B, T, D) per frame -> x and this chunk's (k, v) (rotated keys)."""
        B, T, S, D = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.modulation(F.silu(emb))[:, :, None].chunk(6, dim=-1)
        h = (self.norm1(x) * (1 + sc1) + sh1).reshape(B, T * S, D)
        q, k, v = self.qkv(h).view(B, T * S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, rotary), rotate(k, rotary)
        keys, values = (torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)) if past else (k, v)
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + g1 * self.out(o.transpose(1, 2).reshape(B, T, S, D))
        x = x + g2 * self.mlp(self.norm2(x) * (1 + sc2) + sh2)
        return x, (k, v)


@dataclass
class Cache:
    """The keys and values of the last frames, per layer, and their frame numbers (oldest first)."""

    layers: list[KV]
    frames: list[int]


class WorldTransformer(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        grid: int = 16,
        patch_size: int = 2,
        hidden_size: int = 128,
        num_layers: int = 6,
        num_heads: int = 4,
        mlp_ratio: int = 3,
        text_dim: int = 64,
        context_frames: int = 2,
        rope_theta: float = 100.0,
        world_size: int = 128,
    ):
        super().__init__()
        C, p, D = latent_channels, patch_size, hidden_size
        self.tokens_grid = grid // p
        self.proj_in = nn.Linear((2 * C + 1) * p * p, D)  # noisy latent, memory, memory mask
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, D)
        self.action_embed = nn.Embedding(len(ACTION_IDS), D)
        self.text_proj = nn.Linear(text_dim, D)
        self.blocks = nn.ModuleList(WorldBlock(D, num_heads, mlp_ratio) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.mod_out = nn.Linear(D, 2 * D)
        nn.init.zeros_(self.mod_out.weight)
        nn.init.zeros_(self.mod_out.bias)
        self.proj_out = nn.Linear(D, C * p * p)
        self.memory_gate = nn.Parameter(torch.zeros(C))

    # -- tokens ---------------------------------------------------------------------------------------------
    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T, S, C*p*p)."""
        B, T, C, H, W = x.shape
        p = self.config.patch_size
        x = x.reshape(B, T, C, H // p, p, W // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(B, T, (H // p) * (W // p), C * p * p)

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape[:2]
        p, C, g = self.config.patch_size, self.config.latent_channels, self.tokens_grid
        x = x.reshape(B, T, g, g, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(B, T, C, g * p, g * p)

    def frame_embedding(self, sigma: torch.Tensor, actions: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, T) noise levels, (B, T) action ids, (B, text_dim) pooled caption -> (B, T, D)."""
        B, T = sigma.shape
        t = self.time_embed(self.time_proj(sigma.reshape(-1) * 1000).to(self.proj_in.weight.dtype)).view(B, T, -1)
        return t + self.action_embed(actions) + self.text_proj(text)[:, None]

    def _run(
        self,
        noisy: torch.Tensor,
        memory: torch.Tensor,
        known: torch.Tensor,
        emb: torch.Tensor,
        frames: torch.Tensor,
        origin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None,
    ) -> tuple[torch.Tensor, list[KV]]:
        tokens = self.proj_in(torch.cat([self._patchify(noisy), self._patchify(memory), self._patchify(known)], -1))
        cfg = self.config
        p = cfg.patch_size
        rotary = rope(
            frames, self.tokens_grid, cfg.hidden_size // cfg.num_heads, cfg.rope_theta, origin / p, cfg.world_size / p
        )
        kv = []
        h = tokens
        for i, block in enumerate(self.blocks):
            h, layer_kv = block(h, emb, rotary, mask, cache.layers[i] if cache and cache.layers else None)
            kv.append(layer_kv)
        shift, scale = self.mod_out(F.silu(emb))[:, :, None].chunk(2, dim=-1)
        x0 = self._unpatchify(self.proj_out(self.norm_out(h) * (1 + scale) + shift))
        return x0 + self.memory_gate.view(1, 1, -1, 1, 1) * known * memory, kv

    # -- training: a window of frames at once, block-causal -------------------------------------------------
    def forward(
        self,
        noisy: torch.Tensor,
        memory: torch.Tensor,
        known: torch.Tensor,
        sigma: torch.Tensor,
        actions: torch.Tensor,
        text: torch.Tensor,
        origin: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A window of T frames: noisy/memory (B, T, C, H, W), known (B, T, 1, H, W), sigma (B, T), actions (B, T)
        ids, text (B, text_dim) pooled, origin (B, T, 2) each view's top-left latent pixel (x, y) on the world's
        torus, valid (B, T) bool (False: a frame before the walk began, seen by none) -> the clean latents x0
        (B, T, C, H, W). Frame i sees frames i - context_frames .. i."""
        B, T = sigma.shape
        S = self.tokens_grid**2
        i = torch.arange(T, device=noisy.device)
        frame_ok = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] <= self.config.context_frames)  # (Tq, Tk)
        allowed = frame_ok[None].expand(B, T, T)
        if valid is not None:
            allowed = allowed & valid[:, None, :]
            allowed = allowed | torch.eye(T, dtype=torch.bool, device=noisy.device)[None]  # a frame sees itself
        mask = allowed.repeat_interleave(S, dim=1).repeat_interleave(S, dim=2)[:, None]
        emb = self.frame_embedding(sigma, actions, text)
        x0, _ = self._run(noisy, memory, known, emb, i, origin.float(), mask, None)
        return x0

    # -- playing: one frame at a time against the cache ----------------------------------------------------
    def denoise(
        self,
        noisy: torch.Tensor,
        memory: torch.Tensor,
        known: torch.Tensor,
        sigma: float,
        action: int,
        text: torch.Tensor,
        frame: int,
        cache: Cache,
        origin: tuple[int, int] = (0, 0),
    ) -> tuple[torch.Tensor, list[KV]]:
        """One frame (B, C, H, W) at noise level `sigma` against the cached frames, its view's top-left latent pixel
        at `origin` (x, y) on the torus -> its x0 and its (k, v)."""
        B = noisy.shape[0]
        sig = torch.full((B, 1), float(sigma), device=noisy.device)
        act = torch.full((B, 1), action, dtype=torch.long, device=noisy.device)
        emb = self.frame_embedding(sig, act, text)
        frames = torch.tensor([frame], device=noisy.device)
        at = torch.tensor([[origin]], dtype=torch.float32, device=noisy.device).expand(B, 1, 2)
        x0, kv = self._run(noisy[:, None], memory[:, None], known[:, None], emb, frames, at, None, cache)
        return x0[:, 0], kv

    def remember(self, cache: Cache, kv: list[KV], frame: int) -> Cache:
        """The cache with a committed frame's (k, v) appended and frames beyond the context dropped."""
        keep = self.config.context_frames
        if keep == 0:
            return Cache([], [])
        S = self.tokens_grid**2
        layers = [
            (torch.cat([ck, k], 2)[:, :, -keep * S :], torch.cat([cv, v], 2)[:, :, -keep * S :])
            for (ck, cv), (k, v) in zip(cache.layers or [(k[:, :, :0], v[:, :, :0]) for k, v in kv], kv, strict=True)
        ]
        return Cache(layers, [*cache.frames, frame][-keep:])

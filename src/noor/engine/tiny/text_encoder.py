"""noor-tiny's text encoder: word embeddings and a two-layer transformer, vocabulary in its config.

The vocabulary lives in `config.json` beside the weights, so this one component is both the
tokenizer and the encoder and saves/loads in Hugging Face layout like any diffusers model.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from noor.engine.tiny.tokenizer import PAD, WordTokenizer


def sincos(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of float positions (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-torch.arange(half, dtype=torch.float32, device=positions.device) * (9.21 / half))  # 1/10000^k
    angles = positions.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TinyTextEncoder(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        vocab: list[str] | None = None,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        max_length: int = 32,
    ):
        super().__init__()
        self.tokenizer = WordTokenizer(vocab or ["<pad>", "<bos>"], max_length)
        self.embed = nn.Embedding(len(self.tokenizer.vocab), hidden_size, padding_idx=PAD)
        layer = nn.TransformerEncoderLayer(
            hidden_size, num_heads, 2 * hidden_size, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer(prompts)
        return torch.tensor(ids, device=self.device), torch.tensor(mask, device=self.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and (B, L) bool mask -> (B, L, D) token states (padding rows are zeros)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.embed(input_ids) + sincos(positions, self.config.hidden_size).to(self.embed.weight.dtype)
        h = self.encoder(h, src_key_padding_mask=~attention_mask)
        return self.norm(h) * attention_mask[..., None]

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) states and (B, L) mask, the prompts padded to the longest."""
        ids, mask = self.tokenize(prompts)
        return self(ids, mask), mask

    def encode_each(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """As `encode`, but each prompt encoded alone at its own length, then padded (zero states, masked) to
        `max_length`: a prompt's states and their length do not depend on the prompts beside it (batch
        invariance, see noor.engine.tiny.invariance)."""
        states = torch.zeros(len(prompts), self.config.max_length, self.config.hidden_size, device=self.device)
        mask = torch.zeros(len(prompts), self.config.max_length, dtype=torch.bool, device=self.device)
        for i, prompt in enumerate(prompts):
            one, one_mask = self.encode([prompt])  # (1, l, D), (1, l)
            states[i, : one.shape[1]], mask[i, : one.shape[1]] = one[0], one_mask[0]
        return states.to(self.dtype), mask

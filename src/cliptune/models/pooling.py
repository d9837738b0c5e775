"""Pooling a backbone's spatial features (or tokens) into one vector: the backbone's own, or attention pooling.

Attention pooling (a learned query attending over all positions, as in SigLIP's MAP head and CLIP's ResNet
attention pool) lets a frozen CNN's feature map be summarised by what the new task needs instead of a plain
average; it trains with the projection head.
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionPool(nn.Module):
    """One learned query, multi-head attention over the tokens, then LayerNorm: (B, N, C) → (B, C)."""

    def __init__(self, dim: int, heads: int | None = None):
        super().__init__()
        heads = heads or next(h for h in (8, 4, 2, 1) if dim % h == 0)
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(tokens)
        out, _ = self.attn(self.query.expand(tokens.shape[0], -1, -1), kv, kv, need_weights=False)
        return self.norm(out[:, 0])

"""Token projection: ``G`` ``[B, d]`` → M global pose tokens ``[B, M, C]`` at the generator's width.

C is the Wan transformer's inner width (``num_attention_heads * attention_head_dim``): 1536 for
Wan2.1 1.3B, 5120 for 14B. A layer norm first puts G on a fixed scale, whatever the dictionary
learned; flow matching (not InfoNCE) trains this projection.
"""

from __future__ import annotations

import torch
from torch import nn


class PoseTokenProjection(nn.Module):
    def __init__(self, dim: int, num_tokens: int, token_dim: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.token_dim = token_dim
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, num_tokens * token_dim)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(g)).unflatten(-1, (self.num_tokens, self.token_dim))

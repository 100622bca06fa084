"""The pose-shared dictionary: face embeddings ``E`` → dictionary weights ``w`` → ``G = w·D``.

Correlation ``E·Dᵀ`` ``[B, N, K]`` is max-pooled over the N face tokens and turned into a
probability vector over the K atoms by a softmax; the global facial pose representation is the
weighted sum of atoms. The correlation is scaled by ``1/√d`` (as in attention) so that the
softmax starts neither one-hot nor uniform; the softmax runs in float32 for bf16 models.
"""

from __future__ import annotations

import torch
from torch import nn


class PoseSharedDictionary(nn.Module):
    """``D`` ``[K, d]``, shared across all poses and identities."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.atoms = nn.Parameter(torch.randn(size, dim))

    def weights(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``E`` ``[B, N, d]`` → ``w`` ``[B, K]`` (float32, rows sum to 1)."""
        correlation = torch.matmul(embeddings, self.atoms.t())  # [B, N, K]
        pooled = correlation.amax(dim=1).float() * self.scale  # [B, K]
        return torch.softmax(pooled, dim=-1)

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``E`` ``[B, N, d]`` → ``(G [B, d], w [B, K])``; G in the atoms' dtype."""
        w = self.weights(embeddings)
        return torch.matmul(w.to(self.atoms.dtype), self.atoms), w

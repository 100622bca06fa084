"""Euler-angle embedding: pitch, yaw, roll (degrees) → one d-dimensional pose embedding.

The paper embeds each angle "with the sinusoidal timestep encoding used by diffusion models,
because angles are periodic". The diffusion encoding (diffusers' ``get_timestep_embedding``)
uses geometric frequencies ``exp(-ln(10000) i / half)``; those are not integer multiples of
``2π / 360°``, so θ and θ + 360° would embed differently. Here each angle gets the same
sin/cos form with *integer* harmonics k = 1..F of the angle in radians, which is exactly
360°-periodic, followed by the same Linear-SiLU-Linear MLP as diffusers' ``TimestepEmbedding``.
"""

from __future__ import annotations

import torch
from torch import nn


def euler_harmonics(euler: torch.Tensor, num_harmonics: int) -> torch.Tensor:
    """``[B, 3]`` degrees → ``[B, 3 * 2F]``: ``sin(kθ), cos(kθ)`` for k = 1..F, per angle.

    Angles are first wrapped into [0°, 360°) so that large inputs stay exact in float32.
    Computed in float32 whatever the input dtype.
    """
    theta = torch.deg2rad(torch.remainder(euler.float(), 360.0))  # [B, 3]
    k = torch.arange(1, num_harmonics + 1, device=euler.device, dtype=torch.float32)  # [F]
    phase = theta.unsqueeze(-1) * k  # [B, 3, F]
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1).flatten(1)


class EulerEmbedding(nn.Module):
    """``[B, 3]`` degrees (pitch, yaw, roll) → pose embedding ``[B, d]``, 360°-periodic per angle."""

    def __init__(self, num_harmonics: int, dim: int) -> None:
        super().__init__()
        self.num_harmonics = num_harmonics
        self.mlp = nn.Sequential(nn.Linear(3 * 2 * num_harmonics, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, euler: torch.Tensor) -> torch.Tensor:
        features = euler_harmonics(euler, self.num_harmonics)
        return self.mlp(features.to(self.mlp[0].weight.dtype))

"""Pose variation–identity invariance loss: CLIP's symmetric InfoNCE on cosine similarity.

Row i of ``g_a`` and row i of ``g_b`` are the same identity at two poses (positives on the
diagonal); every other pair in the batch is a negative. The temperature is learnable and kept
on CLIP's log scale: ``logits = exp(logit_scale) · cos``, ``logit_scale`` clamped to
``[0, log 100]`` as CLIP does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import FaithfulFacesError
from .config import CLIP_MAX_LOGIT_SCALE


def info_nce(
    g_a: torch.Tensor,
    g_b: torch.Tensor,
    logit_scale: torch.Tensor,
    max_logit_scale: float = CLIP_MAX_LOGIT_SCALE,
) -> torch.Tensor:
    """Symmetric InfoNCE of two views ``[B, d]``, ``[B, d]`` → scalar (float32).

    ``(CE(logits, diag) + CE(logitsᵀ, diag)) / 2`` with ``logits = exp(s)·â·b̂ᵀ``,
    ``s = clamp(logit_scale, 0, max_logit_scale)``; the gradient reaches ``logit_scale``
    while it lies inside that range.
    """
    if g_a.ndim != 2 or g_a.shape != g_b.shape or g_a.shape[0] < 1:
        raise FaithfulFacesError(
            f"info_nce needs two views of the same shape [B, d] with B >= 1, got {tuple(g_a.shape)} and "
            f"{tuple(g_b.shape)}; row i of both must be the same identity."
        )
    a = F.normalize(g_a.float(), dim=-1)
    b = F.normalize(g_b.float(), dim=-1)
    scale = logit_scale.float().clamp(0.0, max_logit_scale).exp()
    logits = scale * a @ b.t()  # [B, B]
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))

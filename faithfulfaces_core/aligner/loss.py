"""Pose variation–identity invariance loss: CLIP's symmetric InfoNCE on cosine similarity.

Row i of ``g_a`` and row i of ``g_b`` are the same identity at two poses (positives on the
diagonal); every other pair in the batch is a negative. The temperature is learnable and kept
on CLIP's log scale: ``logits = exp(logit_scale) · cos``, ``logit_scale`` clamped to
``[0, log 100]`` as CLIP does. ``multi_view_info_nce`` is the same loss for V ≥ 2 views of
every identity, averaged over every ordered pair of views; with two views it is ``info_nce``
bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def multi_view_info_nce(
    views: Sequence[torch.Tensor],
    logit_scale: torch.Tensor,
    max_logit_scale: float = CLIP_MAX_LOGIT_SCALE,
) -> torch.Tensor:
    """InfoNCE of V ≥ 2 views ``V × [B, d]`` (row i of every view: identity i) → scalar (float32).

    ``L = 1/(V(V−1)) · Σ_{u≠v} CE(s·Ĝ_u·Ĝ_vᵀ, diag)``: every ordered pair of views (u, v) is
    CLIP's one-directional loss, view u's face of identity i against view v's faces of all B
    identities (the positive is identity i's, the other B − 1 are negatives). Each row keeps B
    logits whatever V is, so the temperature means what it means for two views, and averaging
    the V(V−1)/2 symmetric pair losses is the same number. ``Ĝ_v`` is view v normalised, and
    ``s = exp(clamp(logit_scale, 0, max_logit_scale))``.

    Computed per unordered pair ``u < v`` as ``CE(L_uv) + CE(L_uvᵀ)`` with
    ``L_uv = (s·Ĝ_u)·Ĝ_vᵀ``, so that V = 2 performs exactly ``info_nce``'s operations and gives
    its value and gradients bit for bit (tested with ``torch.equal``).
    """
    shape = tuple(views[0].shape) if len(views) else ()
    if len(views) < 2 or len(shape) != 2 or shape[0] < 1 or any(tuple(v.shape) != shape for v in views):
        raise FaithfulFacesError(
            f"multi_view_info_nce needs at least 2 views of the same shape [B, d] with B >= 1, got "
            f"{[tuple(v.shape) for v in views]}; row i of every view must be the same identity."
        )
    unit = [F.normalize(v.float(), dim=-1) for v in views]
    scale = logit_scale.float().clamp(0.0, max_logit_scale).exp()
    labels = torch.arange(shape[0], device=unit[0].device)
    total = None
    for u in range(len(unit)):
        for v in range(u + 1, len(unit)):
            logits = scale * unit[u] @ unit[v].t()  # [B, B]
            pair = F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)
            total = pair if total is None else total + pair
    return (1.0 / (len(unit) * (len(unit) - 1))) * total

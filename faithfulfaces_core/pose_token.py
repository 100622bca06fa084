"""The global pose token of one reference face: what flows from the aligner to the generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .pose.types import FacePose


@dataclass(frozen=True)
class PoseToken:
    """Aligner output for the reference face(s), kept on the CPU in float32.

    ``tokens`` ``[B, M, C]`` (C = the generator's width), ``g`` ``[B, d]``, ``weights`` ``[B, K]``
    (B = 1 when several views were pooled), ``angles`` ``[V, 3]`` degrees of every view (pitch, yaw, roll) and the pose backend that measured them.
    """

    tokens: torch.Tensor
    g: torch.Tensor
    weights: torch.Tensor
    angles: np.ndarray
    backend: str

    @property
    def width(self) -> int:
        return int(self.tokens.shape[-1])


def pose_token_from_faces(aligner, poses: list[FacePose], *, pool: bool = False) -> PoseToken:
    """Crops and Euler angles of ``poses`` → the aligner's global pose tokens.

    ``pool=False``: one token set per face ``[B, M, C]``; ``pool=True``: the faces are views of
    one identity, pooled into one token set ``[1, M, C]`` (``angles`` keeps every view).
    """
    crops = torch.from_numpy(np.stack([p.crop for p in poses])).permute(0, 3, 1, 2).float() / 255.0
    angles = np.stack([p.angles.as_array() for p in poses]).astype(np.float32)
    out = (aligner.align_views if pool else aligner.align)(crops, torch.from_numpy(angles))
    return PoseToken(
        tokens=out.tokens.float().cpu(), g=out.g.float().cpu(), weights=out.weights.float().cpu(),
        angles=angles, backend=poses[0].backend,
    )

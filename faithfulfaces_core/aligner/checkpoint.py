"""Aligner files: one safetensors file (kind ``aligner``) with the aligner and its token
projection; the full ``AlignerConfig`` and the format version live in the metadata."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..checkpoints import check_finite, check_state_dict, load_checkpoint, save_checkpoint
from ..errors import CheckpointError, FaithfulFacesError
from .config import AlignerConfig
from .model import PoseSharedAligner

ALIGNER_KIND = "aligner"
ALIGNER_FORMAT = 1


def save_aligner(
    aligner: PoseSharedAligner, path: str | os.PathLike, *, extra_metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``aligner`` (all its weights, the projection included) atomically to ``path``."""
    return save_checkpoint(
        path, aligner.state_dict(), kind=ALIGNER_KIND, format=ALIGNER_FORMAT,
        config=aligner.config.to_dict(), extra_metadata=extra_metadata,
    )


def load_aligner(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    token_dim: int | None = None,
) -> PoseSharedAligner:
    """Rebuild the aligner from ``path`` (config from the metadata), in eval mode.

    Another kind of file, a damaged config, missing/unexpected keys or wrong shapes raise a
    ``CheckpointError`` that names the file, the key and what was expected. With ``token_dim``
    (the generator's width C) an aligner made for another generator size is refused too.
    """
    ckpt = load_checkpoint(path, kind=ALIGNER_KIND, max_format=ALIGNER_FORMAT)
    try:
        config = AlignerConfig.from_dict(ckpt.config)
    except FaithfulFacesError as exc:
        raise CheckpointError(f"{ckpt.path}: cannot rebuild the aligner from its metadata: {exc}") from exc
    if token_dim is not None and config.token_dim != token_dim:
        raise CheckpointError(
            f"{ckpt.path}: this aligner makes pose tokens of width {config.token_dim}, but the generator "
            f"needs width {token_dim} (1536 = Wan 1.3B, 5120 = Wan 14B). Pick the aligner file trained "
            "for this model."
        )
    try:
        with torch.device("meta"):  # no memory until the file's tensors are checked against it
            aligner = PoseSharedAligner(config)
    except (FaithfulFacesError, RuntimeError) as exc:
        raise CheckpointError(f"{ckpt.path}: cannot rebuild the aligner from its metadata: {exc}") from exc
    check_state_dict(ckpt.path, ckpt.tensors, aligner.state_dict(), what="aligner")
    check_finite(ckpt.path, ckpt.tensors, what="aligner")
    aligner.load_state_dict(ckpt.tensors, assign=True)
    aligner.pixel_mean = torch.tensor(config.pixel_mean)  # non-persistent buffers: not in the file
    aligner.pixel_std = torch.tensor(config.pixel_std)
    return aligner.to(device=device, dtype=dtype).eval()

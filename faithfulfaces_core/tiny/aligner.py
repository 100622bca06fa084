"""A tiny pose-shared aligner: the real classes at toy sizes, for tests and the demo.

Randomly initialised from a seed (the global RNG is left untouched), and written as a real
``aligner`` file so the same loading code serves it and trained weights.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..aligner import AlignerConfig, PoseSharedAligner, save_aligner


def tiny_aligner_config(**overrides: Any) -> AlignerConfig:
    """32×32 crops, 16 tokens of width 32, K = 64 atoms, 2 pose tokens of width 32.

    ``token_dim`` should match the tiny generator's ``num_attention_heads * attention_head_dim``.
    """
    base = AlignerConfig(
        image_size=32, patch_size=8, depth=1, num_heads=2, mlp_ratio=2.0, dim=32, num_harmonics=4,
        dictionary_size=64, num_tokens=2, token_dim=32,
    )
    return replace(base, **overrides)


def build_tiny_aligner(*, seed: int = 0, **overrides: Any) -> PoseSharedAligner:
    """A randomly initialised tiny aligner, identical for the same seed and overrides."""
    config = tiny_aligner_config(**overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PoseSharedAligner(config).eval()


def write_tiny_aligner(path: str | os.PathLike, *, seed: int = 0, **overrides: Any) -> Path:
    """Build a tiny aligner and save it as an ``aligner`` file at ``path``."""
    return save_aligner(
        build_tiny_aligner(seed=seed, **overrides), path, extra_metadata={"faithfulfaces.tiny": "1"}
    )

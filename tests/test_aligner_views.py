"""Global pose tokens from several views of one identity: pooled dictionary weights."""

from __future__ import annotations

import numpy as np
import torch

from faithfulfaces_core.pose.types import EulerAngles, FacePose
from faithfulfaces_core.pose_token import pose_token_from_faces
from faithfulfaces_core.tiny.aligner import build_tiny_aligner


def _views(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    crops = torch.rand(n, 3, 32, 32, generator=generator)
    euler = (torch.rand(n, 3, generator=generator) - 0.5) * 160.0
    return crops, euler


def _fresh() -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence().entropy) % 2**63)


def test_one_view_gives_exactly_todays_tokens():
    aligner = build_tiny_aligner(seed=31)
    crops, euler = _views(1, _fresh())
    single, pooled = aligner.align(crops, euler), aligner.align_views(crops, euler)
    for a, b in zip(single, pooled, strict=True):
        assert torch.equal(a, b)


def test_pooled_weights_are_the_mean_and_a_convex_combination():
    aligner = build_tiny_aligner(seed=32)
    crops, euler = _views(5, _fresh())
    separate, pooled = aligner.align(crops, euler), aligner.align_views(crops, euler)
    assert pooled.tokens.shape == (1, *separate.tokens.shape[1:])
    torch.testing.assert_close(pooled.weights, separate.weights.double().mean(0, keepdim=True).float())
    assert pooled.weights.min() >= 0 and abs(float(pooled.weights.sum()) - 1.0) < 1e-5
    atoms = aligner.dictionary.atoms.double()
    torch.testing.assert_close(pooled.g.double(), pooled.weights.double() @ atoms, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(pooled.tokens, separate.tokens[:1])  # several views do change the tokens


def test_pooling_does_not_depend_on_the_order_of_views():
    aligner = build_tiny_aligner(seed=33)
    generator = _fresh()
    crops, euler = _views(6, generator)
    perm = torch.randperm(6, generator=generator)
    a, b = aligner.align_views(crops, euler), aligner.align_views(crops[perm], euler[perm])
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def _pose(crop: np.ndarray, angles) -> FacePose:
    return FacePose(image_name="view", faces=[], chosen=0, crop_box=(0, 0, 1, 1), crop=crop,
                    angles=EulerAngles(*angles), backend="test")


def test_pose_token_from_faces_pools_on_request():
    aligner = build_tiny_aligner(seed=34)
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    poses = [_pose(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.uniform(-60, 60, 3)) for _ in range(3)]
    separate = pose_token_from_faces(aligner, poses)
    pooled = pose_token_from_faces(aligner, poses, pool=True)
    assert separate.tokens.shape[0] == 3 and pooled.tokens.shape[0] == 1
    assert pooled.angles.shape == (3, 3)
    assert torch.equal(pose_token_from_faces(aligner, poses[:1], pool=True).tokens,
                       pose_token_from_faces(aligner, poses[:1]).tokens)

"""Rotation maths of 6DRepNet against scipy: 6-D → matrix → Euler → matrix, gimbal lock, units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from faithfulfaces_core.pose.rotation import (
    angle_difference,
    angles_from_head_to_image,
    angles_from_insightface_pose,
    euler_from_rotation,
    head_to_image_rotation,
    rotation_from_6d,
    rotation_from_euler,
)


@pytest.fixture
def rng():
    seed = np.random.SeedSequence().entropy % 2**32
    print("seed", seed)
    return np.random.default_rng(seed)


def _random_rotations(rng, n=256):
    return Rotation.random(n, random_state=int(rng.integers(2**31))).as_matrix()


def test_6d_matrix_euler_round_trip(rng):
    matrices = _random_rotations(rng)
    # 6-D input as a network gives it: scaled first column, second column skewed towards the first
    scale = rng.uniform(0.2, 5.0, size=(len(matrices), 2))
    skew = rng.normal(size=(len(matrices), 1))
    a = matrices[:, :, 0] * scale[:, :1]
    b = matrices[:, :, 1] * scale[:, 1:] + skew * matrices[:, :, 0]
    recovered = rotation_from_6d(np.concatenate([a, b], axis=1))
    np.testing.assert_allclose(recovered, matrices, atol=1e-12)
    angles = euler_from_rotation(recovered)
    np.testing.assert_allclose(rotation_from_euler(angles), matrices, atol=1e-12)
    assert np.all(np.abs(angles[:, 1]) <= 90.0)


def test_euler_convention_matches_scipy(rng):
    matrices = _random_rotations(rng)
    ours = euler_from_rotation(matrices)
    # R = Rz(roll)·Ry(yaw)·Rx(pitch) is scipy's extrinsic "xyz" (= intrinsic "ZYX" reversed)
    np.testing.assert_allclose(ours, Rotation.from_matrix(matrices).as_euler("xyz", degrees=True), atol=1e-9)
    angles = rng.uniform([-180, -90, -180], [180, 90, 180], size=(64, 3))
    np.testing.assert_allclose(
        rotation_from_euler(angles), Rotation.from_euler("xyz", angles, degrees=True).as_matrix(), atol=1e-12
    )
    np.testing.assert_allclose(
        rotation_from_euler(angles),
        Rotation.from_euler("ZYX", angles[:, ::-1], degrees=True).as_matrix(),
        atol=1e-12,
    )


def test_single_axis_meaning():
    for axis, index in (("x", 0), ("y", 1), ("z", 2)):
        angles = np.zeros(3)
        angles[index] = 37.0
        expected = Rotation.from_euler(axis, 37.0, degrees=True).as_matrix()
        np.testing.assert_allclose(rotation_from_euler(angles), expected, atol=1e-12)
        np.testing.assert_allclose(euler_from_rotation(expected), angles, atol=1e-10)


@pytest.mark.parametrize("yaw", [90.0, -90.0])
def test_gimbal_lock_branch(rng, yaw):
    pitch, roll = rng.uniform(-170, 170, size=2)
    matrix = rotation_from_euler(np.array([pitch, yaw, roll]))
    p, y, r = euler_from_rotation(matrix)
    assert r == 0.0  # the singular branch folds roll into pitch
    assert y == pytest.approx(yaw, abs=1e-6)
    np.testing.assert_allclose(rotation_from_euler(np.array([p, y, r])), matrix, atol=1e-12)
    # only the in-plane combination is determined: pitch - roll (yaw +90) or pitch + roll (yaw -90)
    combo = pitch - roll if yaw > 0 else pitch + roll
    assert np.cos(np.radians(p - combo)) == pytest.approx(1.0, abs=1e-12)


def test_just_outside_gimbal_lock_uses_regular_branch():
    angles = np.array([20.0, 89.99, -35.0])
    np.testing.assert_allclose(euler_from_rotation(rotation_from_euler(angles)), angles, atol=1e-6)


def test_degrees_and_radians(rng):
    matrices = _random_rotations(rng, 32)
    deg = euler_from_rotation(matrices, degrees=True)
    rad = euler_from_rotation(matrices, degrees=False)
    np.testing.assert_allclose(np.radians(deg), rad, atol=1e-12)
    np.testing.assert_allclose(rotation_from_euler(rad, degrees=False), rotation_from_euler(deg), atol=1e-12)
    assert np.abs(rad).max() <= np.pi + 1e-12


def test_torch_path_matches_numpy_and_is_differentiable(rng):
    six = rng.normal(size=(16, 6))
    t = torch.tensor(six, dtype=torch.float64, requires_grad=True)
    matrices = rotation_from_6d(t)
    angles = euler_from_rotation(matrices)
    assert isinstance(angles, torch.Tensor)
    np.testing.assert_allclose(
        angles.detach().numpy(), euler_from_rotation(rotation_from_6d(six)), atol=1e-10
    )
    angles.sum().backward()
    assert t.grad is not None and torch.isfinite(t.grad).all()
    eye = matrices.transpose(-1, -2) @ matrices
    torch.testing.assert_close(eye, torch.eye(3, dtype=torch.float64).expand(16, 3, 3), atol=1e-12, rtol=0)
    assert torch.allclose(torch.linalg.det(matrices), torch.ones(16, dtype=torch.float64))


def test_shape_errors():
    with pytest.raises(ValueError, match=r"rotation_from_6d expects \[\.\.\., 6\]"):
        rotation_from_6d(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"euler_from_rotation expects \[\.\.\., 3, 3\]"):
        euler_from_rotation(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"rotation_from_euler expects \[\.\.\., 3\]"):
        rotation_from_euler(np.zeros(4))


def test_head_to_image_frame(rng):
    angles = np.column_stack([rng.uniform(-80, 80, 32), rng.uniform(-85, 85, 32), rng.uniform(-170, 170, 32)])
    axes = head_to_image_rotation(angles)
    np.testing.assert_allclose(angles_from_head_to_image(axes), angles, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(axes), 1.0, atol=1e-12)
    # frontal: head axes = image axes; nose (z) towards the viewer
    np.testing.assert_allclose(head_to_image_rotation(np.zeros(3)), np.eye(3), atol=1e-15)
    # positive yaw turns the nose (z axis) to the image's left, positive pitch up (y down)
    assert head_to_image_rotation(np.array([0.0, 30.0, 0.0]))[0, 2] == pytest.approx(-0.5)
    assert head_to_image_rotation(np.array([30.0, 0.0, 0.0]))[1, 2] == pytest.approx(-0.5)
    # positive roll turns the x axis clockwise on screen (its tip goes down)
    assert head_to_image_rotation(np.array([0.0, 0.0, 30.0]))[1, 0] == pytest.approx(0.5)
    # a horizontal flip of the image negates yaw and roll, keeps pitch (300W-LP's flip augmentation)
    flip = np.diag([-1.0, 1.0, 1.0])
    flipped = angles_from_head_to_image(flip @ axes @ flip)
    np.testing.assert_allclose(flipped, angles * np.array([1, -1, -1]), atol=1e-9)


def test_insightface_pose_conversion(rng):
    # InsightFace reads R = Rz(rz)·Ry(ry)·Rx(rx) of the head axes in the image frame
    angles = np.column_stack([rng.uniform(-60, 60, 32), rng.uniform(-80, 80, 32), rng.uniform(-60, 60, 32)])
    axes = head_to_image_rotation(angles)
    insightface = Rotation.from_matrix(axes).as_euler("xyz", degrees=True)
    np.testing.assert_allclose(angles_from_insightface_pose(insightface), angles, atol=1e-9)
    # small angles: same pitch and roll, opposite yaw
    small = np.array([1e-3, 2e-3, -1.5e-3])
    np.testing.assert_allclose(angles_from_insightface_pose(small), small * np.array([1, -1, 1]), atol=1e-6)


def test_angle_difference_is_circular_and_broadcasts():
    rng = np.random.default_rng()
    a, b = rng.uniform(-720, 720, size=(5, 1, 3)), rng.uniform(-720, 720, size=(1, 4, 3))
    d = angle_difference(a, b)
    assert d.shape == (5, 4, 3) and d.min() >= 0 and d.max() <= 180
    np.testing.assert_allclose(angle_difference(a + 360, b - 720), d, atol=1e-9)
    np.testing.assert_allclose(angle_difference(b, a), d, atol=0)
    assert angle_difference(-179.0, 179.0) == 2.0 and angle_difference(10.0, 190.0) == 180.0


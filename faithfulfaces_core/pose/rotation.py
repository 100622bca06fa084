"""Rotation maths of 6DRepNet: 6-D representation → matrix, matrix ↔ Euler angles.

The released 6DRepNet regresses two 3-vectors and turns them into a rotation matrix by
Gram–Schmidt (columns x, y, z). Its Euler read-out is ``R = Rz(roll) · Ry(yaw) · Rx(pitch)``
(pitch about x, yaw about y, roll about z, right-handed), with a separate branch at gimbal lock
(``|yaw| = 90°``) where roll is set to 0 and the whole in-plane rotation goes into pitch. In
scipy terms this is ``Rotation.from_euler("xyz", [pitch, yaw, roll])`` (extrinsic x, y, z).

Every function takes numpy arrays or torch tensors with any leading batch shape ``[...]`` and
returns the same kind. Numpy inputs are computed in float64 with numpy alone: this module never
imports torch, so the no-download (dlib) path and ``import faithfulfaces_core`` stay torch-free.
The torch path is differentiable and traceable (``torch.onnx.export``), so the exported model and
the torch model share it.
"""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np

from .preprocess import crops_to_input

Array = Any  # np.ndarray or torch.Tensor; the output is of the input's kind

GIMBAL_LOCK_EPS = 1e-6  # released threshold on sqrt(R00² + R10²) = |cos(yaw)|
_NORM_EPS = 1e-8

_NUMPY = SimpleNamespace(
    sqrt=np.sqrt,
    atan2=np.arctan2,
    cos=np.cos,
    sin=np.sin,
    where=np.where,
    zeros_like=np.zeros_like,
    stack=lambda xs, dim: np.stack(xs, axis=dim),
    norm=lambda v: np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), _NORM_EPS),
    swap=lambda m: np.swapaxes(m, -1, -2),
    const=lambda c, like: np.asarray(c, dtype=np.float64),
)


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported already
    return torch is not None and isinstance(x, torch.Tensor)


def _ops(x: Any) -> tuple[Any, SimpleNamespace]:
    """``x`` as an array of its kind (numpy → float64) and the functions that work on it."""
    if not _is_torch(x):
        return np.asarray(x, dtype=np.float64), _NUMPY
    import torch

    ops = SimpleNamespace(
        sqrt=torch.sqrt,
        atan2=torch.atan2,
        cos=torch.cos,
        sin=torch.sin,
        where=torch.where,
        zeros_like=torch.zeros_like,
        stack=lambda xs, dim: torch.stack(xs, dim=dim),
        norm=lambda v: v.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS),
        swap=lambda m: m.transpose(-1, -2),
        const=lambda c, like: torch.as_tensor(c, dtype=like.dtype, device=like.device),
    )
    return x, ops


def _cross(a: Array, b: Array, ops: SimpleNamespace) -> Array:
    """``a × b`` over the last axis, spelled out so the legacy ONNX exporter can trace it."""
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    return ops.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], -1)


def rotation_from_6d(x: Array) -> Array:
    """``[..., 6]`` (two raw 3-vectors a, b) → ``[..., 3, 3]`` rotation with columns x, y, z.

    ``x = a/|a|``, ``z = (x × b)/|x × b|``, ``y = z × x``: the released Gram–Schmidt order.
    """
    t, ops = _ops(x)
    if t.shape[-1] != 6:
        raise ValueError(f"rotation_from_6d expects [..., 6], got {tuple(t.shape)}")
    col_x = t[..., 0:3] / ops.norm(t[..., 0:3])
    z = _cross(col_x, t[..., 3:6], ops)
    col_z = z / ops.norm(z)
    col_y = _cross(col_z, col_x, ops)
    return ops.stack([col_x, col_y, col_z], -1)


def euler_from_rotation(matrix: Array, *, degrees: bool = True) -> Array:
    """``[..., 3, 3]`` → ``[..., 3]`` (pitch, yaw, roll) for ``R = Rz(roll)·Ry(yaw)·Rx(pitch)``.

    Yaw is in [-90°, 90°]. At gimbal lock (``sqrt(R00² + R10²) < 1e-6``) roll is 0 and pitch
    carries the remaining rotation, as in the released code.
    """
    r, ops = _ops(matrix)
    if tuple(r.shape[-2:]) != (3, 3):
        raise ValueError(f"euler_from_rotation expects [..., 3, 3], got {tuple(r.shape)}")
    sy = ops.sqrt(r[..., 0, 0] ** 2 + r[..., 1, 0] ** 2)
    singular = sy < GIMBAL_LOCK_EPS
    yaw = ops.atan2(-r[..., 2, 0], sy)
    pitch = ops.where(
        singular, ops.atan2(-r[..., 1, 2], r[..., 1, 1]), ops.atan2(r[..., 2, 1], r[..., 2, 2])
    )
    roll = ops.where(singular, ops.zeros_like(sy), ops.atan2(r[..., 1, 0], r[..., 0, 0]))
    out = ops.stack([pitch, yaw, roll], -1)
    return out * (180.0 / math.pi) if degrees else out


def rotation_from_euler(angles: Array, *, degrees: bool = True) -> Array:
    """``[..., 3]`` (pitch, yaw, roll) → ``[..., 3, 3]`` ``Rz(roll) · Ry(yaw) · Rx(pitch)``."""
    a, ops = _ops(angles)
    if a.shape[-1] != 3:
        raise ValueError(f"rotation_from_euler expects [..., 3], got {tuple(a.shape)}")
    if degrees:
        a = a * (math.pi / 180.0)
    cp, sp = ops.cos(a[..., 0]), ops.sin(a[..., 0])
    cy, sy = ops.cos(a[..., 1]), ops.sin(a[..., 1])
    cr, sr = ops.cos(a[..., 2]), ops.sin(a[..., 2])
    rows = [
        [cr * cy, cr * sy * sp - sr * cp, cr * sy * cp + sr * sp],
        [sr * cy, sr * sy * sp + cr * cp, sr * sy * cp - cr * sp],
        [-sy, cy * sp, cy * cp],
    ]
    return ops.stack([ops.stack(row, -1) for row in rows], -2)


# Q = diag(-1, 1, -1): 6DRepNet's R is camera→head in a frame Q·(image x right, y down, z toward
# the viewer); Q · Rᵀ · Q is the head→camera rotation in the image frame (see docs/pose.md).
_Q = np.diag([-1.0, 1.0, -1.0])
# The OpenCV camera frame (x right, y down, z away from the camera) is the image frame with z flipped.
_FLIP_Z = np.diag([1.0, 1.0, -1.0])


def _conjugate(matrix: Array, q: np.ndarray) -> Array:
    """``q · matrixᵀ · q`` over the last two axes (``q`` diagonal, its own inverse)."""
    m, ops = _ops(matrix)
    qq = ops.const(q, m)
    return qq @ ops.swap(m) @ qq


def head_to_image_rotation(angles: Array, *, degrees: bool = True) -> Array:
    """``[..., 3]`` 6DRepNet angles → ``[..., 3, 3]`` head axes (columns) in the image frame.

    Image frame: x right, y down, z toward the viewer. Column 0 is the head's x axis (towards the
    image's right for a frontal face), column 1 its y axis (down), column 2 its z axis (out of the
    face). This is the frame 6DRepNet's and Hopenet's own axis previews draw in: positive pitch
    turns the nose up, positive yaw turns it to the image's left, positive roll turns the face
    clockwise on screen.
    """
    return _conjugate(rotation_from_euler(angles, degrees=degrees), _Q)


def angles_from_head_to_image(matrix: Array, *, degrees: bool = True) -> Array:
    """Inverse of ``head_to_image_rotation``: head axes in the image frame → 6DRepNet angles."""
    return euler_from_rotation(_conjugate(matrix, _Q), degrees=degrees)


def camera_rotation_from_euler(angles: Array, *, degrees: bool = True) -> Array:
    """``[..., 3]`` 6DRepNet angles → ``[..., 3, 3]`` rotation taking a head model (x right, y down,
    z away from the viewer, i.e. OpenCV's frame) into the OpenCV camera frame:
    ``x_cam = R · x_model + t``, the rotation ``cv2.solvePnP`` returns."""
    r = head_to_image_rotation(angles, degrees=degrees)
    m, ops = _ops(r)
    f = ops.const(_FLIP_Z, m)
    return f @ m @ f


def euler_from_camera_rotation(matrix: Array, *, degrees: bool = True) -> Array:
    """Inverse of :func:`camera_rotation_from_euler`: model-to-camera rotation → 6DRepNet angles."""
    m, ops = _ops(matrix)
    f = ops.const(_FLIP_Z, m)
    return angles_from_head_to_image(f @ m @ f, degrees=degrees)


def angles_from_insightface_pose(pose: Array) -> Array:
    """InsightFace ``face.pose`` ``[..., 3]`` (degrees) → 6DRepNet (pitch, yaw, roll) degrees.

    InsightFace's 3-D landmark model fits ``landmarks ≈ s·R·meanshape + t`` in the image frame
    (x right, y down, z toward the viewer) and reads ``R = Rz(rz)·Ry(ry)·Rx(rx)`` as
    ``(rx, ry, rz)``; ``R`` holds the head axes in the image frame, so it converts with
    ``angles_from_head_to_image``. For small angles this is (pitch, -yaw, roll).
    """
    return angles_from_head_to_image(rotation_from_euler(pose, degrees=True), degrees=True)


class RotationPoseEstimator:
    """Base of estimators whose model predicts rotation matrices (6DRepNet on torch or ONNX).

    The shared part lives here: the released preprocessing, chunking into ``batch_size`` crops,
    and the Euler read-out (float64: the gimbal-lock branch needs the precision). Subclasses set
    ``input_size`` and ``batch_size`` and define ``run_batch(x [b, 3, S, S] float32) -> [b, 3, 3]``.
    """

    input_size: int
    batch_size: int

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def rotations(self, crops: np.ndarray) -> np.ndarray:
        """``[B, S, S, 3]`` uint8 RGB → ``[B, 3, 3]`` float32 rotation matrices."""
        x = crops_to_input(crops, self.input_size)
        out = [np.zeros((0, 3, 3), np.float32)]
        for start in range(0, len(x), self.batch_size):
            out.append(np.asarray(self.run_batch(x[start : start + self.batch_size]), np.float32))
        return np.concatenate(out)

    def estimate(self, crops: np.ndarray, faces=None, image_sizes=None) -> np.ndarray:
        """``[B, S, S, 3]`` uint8 RGB → ``[B, 3]`` float32 (pitch, yaw, roll) degrees."""
        return euler_from_rotation(self.rotations(crops).astype(np.float64)).astype(np.float32)


def angle_difference(a: Any, b: Any) -> np.ndarray:
    """Circular ``|a − b|`` in degrees, in [0, 180], elementwise with numpy broadcasting (numpy, float64).

    Angle error, pose distance: -179° and 179° are 2° apart.
    """
    diff = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) % 360.0
    return np.minimum(diff, 360.0 - diff)


"""The vocabulary of face detection and head pose, shared by every backend and consumer.

Images are ``numpy`` arrays ``[H, W, 3]`` uint8 RGB. Angles are degrees in 6DRepNet's
released convention ``R = Rz(roll) · Ry(yaw) · Rx(pitch)``; every backend reports in it, so
consumers (aligner, dataset pipeline, evaluation, nodes) never care which backend ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import FaithfulFacesError

# 6DRepNet on torch; bf16: ~1° mean from fp32, 2× faster on a free CPU core (bench_pose.py)
PRECISIONS = ("fp32", "bf16")


def as_rgb_uint8(image: object, what: str) -> np.ndarray:
    """``image`` as a contiguous ``[H, W, 3]`` uint8 array, or an error naming ``what`` and the fix."""
    if not isinstance(image, np.ndarray):
        raise FaithfulFacesError(
            f"{what}: expected an RGB image as a numpy array [H, W, 3], got {type(image).__name__}."
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise FaithfulFacesError(
            f"{what}: expected an RGB image [H, W, 3], got shape {tuple(image.shape)}. Drop an alpha channel "
            "or stack a grey image to 3 channels."
        )
    if image.dtype != np.uint8:
        raise FaithfulFacesError(
            f"{what}: expected uint8 pixels (0..255), got {image.dtype}. Convert floats in 0..1 with "
            "(image * 255).round().astype(np.uint8)."
        )
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class Face:
    """One detected face. ``box`` is ``(x1, y1, x2, y2)`` in pixels of the source image."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None = field(default=None, compare=False)  # [P, 2] pixels (5 or 68)
    embedding: np.ndarray | None = field(default=None, compare=False)  # identity vector, if any

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass(frozen=True)
class EulerAngles:
    """Head pose in degrees."""

    pitch: float
    yaw: float
    roll: float

    def as_array(self) -> np.ndarray:
        return np.array([self.pitch, self.yaw, self.roll], dtype=np.float32)


@dataclass
class FacePose:
    """Result of the one face/pose call for one image."""

    image_name: str
    faces: list[Face]  # every face found, largest first
    chosen: int  # index into ``faces`` of the face the pose belongs to
    crop_box: tuple[int, int, int, int]  # the enlarged, clipped box the crop was cut from
    crop: np.ndarray  # [S, S, 3] uint8 RGB at the estimator's input size
    angles: EulerAngles
    backend: str  # e.g. "insightface+6drepnet", "dlib-hog+pnp"
    extra: dict = field(default_factory=dict)  # second opinions etc. (e.g. {"insightface_pose": EulerAngles})

    @property
    def face(self) -> Face:
        return self.faces[self.chosen]


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in one RGB image."""

    name: str

    def detect(self, image: np.ndarray) -> list[Face]:
        """``image`` [H, W, 3] uint8 RGB -> faces (any order)."""
        ...


@runtime_checkable
class PoseEstimator(Protocol):
    """Head pose for a batch of faces.

    Crop-based estimators (6DRepNet) read ``crops``; landmark-based ones (dlib PnP) read
    ``faces[i].keypoints`` and ``image_sizes[i]`` ``(H, W)`` of the source image.
    """

    name: str
    input_size: int

    def estimate(
        self, crops: np.ndarray, faces: list[Face], image_sizes: list[tuple[int, int]]
    ) -> np.ndarray:
        """``crops`` [B, S, S, 3] uint8 RGB -> ``[B, 3]`` float (pitch, yaw, roll) degrees."""
        ...

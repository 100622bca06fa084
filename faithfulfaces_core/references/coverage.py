"""Choosing K head poses that cover the pose space: farthest-point sampling on the sphere.

Each pose becomes the unit vector its face looks along (roll turns the face about that axis,
so it does not move it). The first choice is the most frontal face (closest to the camera
axis); every next one is the face whose smallest angle to those already chosen is largest.
Ties go to the earlier face, so the choice depends only on the input order of equal poses.
"""

from __future__ import annotations

import numpy as np

from ..errors import FaithfulFacesError

MAX_REFERENCES = 8


def head_directions(angles: np.ndarray) -> np.ndarray:
    """``[N, 3]`` (pitch, yaw, roll) degrees → ``[N, 3]`` unit view directions (frontal = +z)."""
    a = np.radians(np.asarray(angles, np.float64).reshape(-1, 3))
    pitch, yaw = a[:, 0], a[:, 1]
    return np.stack([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)], axis=1)


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle angles in degrees between unit vectors ``[N, 3]`` and ``[M, 3]`` → ``[N, M]``."""
    return np.degrees(np.arccos(np.clip(a @ b.T, -1.0, 1.0)))


def farthest_poses(angles: np.ndarray, k: int) -> list[int]:
    """Indices of ``min(k, N)`` poses of ``angles`` ``[N, 3]``, in the order chosen."""
    if not 1 <= int(k) <= MAX_REFERENCES:
        raise FaithfulFacesError(f"K must be between 1 and {MAX_REFERENCES}, got {k}.")
    directions = head_directions(angles)
    if len(directions) == 0:
        return []
    chosen = [int(np.argmax(np.round(directions[:, 2], 12)))]
    nearest = angle_between(directions, directions[chosen])[:, 0]
    while len(chosen) < min(int(k), len(directions)):
        nearest[chosen] = -1.0
        best = int(np.argmax(np.round(nearest, 9)))
        chosen.append(best)
        nearest = np.minimum(nearest, angle_between(directions, directions[[best]])[:, 0])
    return chosen


def coverage_angle(angles: np.ndarray, chosen: list[int]) -> float:
    """The largest angle (degrees) from any pose of ``angles`` to its nearest chosen pose."""
    directions = head_directions(angles)
    return float(angle_between(directions, directions[chosen]).min(1).max())

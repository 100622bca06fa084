"""68 landmarks of a turned synthetic head whose jaw line is a silhouette, as on real faces.

On a photograph, dlib's 17 jaw points (0-16, chin 8) trace the *outline* of the face: as the head
turns, the outline is made of other points of the 3-D jaw. A synthetic face that moves fixed jaw
points (``pose.dlib_backend.project_mean_face``) hides that, so a PnP fit that trusts the jaw
looks right on it and shrinks turns on real faces. Here the jaw points are those of
``pose.dlib_backend.contour_model`` for the pose (each on a horizontal half-ellipse of the 3-D
head, at its outline), the other 51 the mean face's; used to measure pose read-outs.
"""

from __future__ import annotations

import numpy as np

from ..pose.dlib_backend import contour_model
from ..pose.rotation import camera_rotation_from_euler


def silhouette_landmarks(
    angles_deg: np.ndarray, image_size: tuple[int, int], distance_mm: float = 600.0
) -> np.ndarray:
    """(pitch, yaw, roll) degrees → ``[68, 2]`` pixels of an ``(H, W)`` image, face at the centre,
    principal point at the centre, focal length ``max(H, W)`` (as ``pose_from_landmarks`` assumes)."""
    height, width = image_size
    focal = float(max(height, width))
    rotation = camera_rotation_from_euler(np.asarray(angles_deg, dtype=np.float64))
    points = contour_model(rotation) @ rotation.T + np.array([0.0, 0.0, distance_mm])
    return np.stack([width / 2 + focal * points[:, 0] / points[:, 2], height / 2 + focal * points[:, 1] / points[:, 2]], 1)

"""Head-axes preview: the face box and the head's x (red), y (green), z (blue) axes on the image.

Axes are the columns of ``head_to_image_rotation(pitch, yaw, roll)`` projected orthographically
(x right, y down): the picture 6DRepNet's and Hopenet's own previews draw, so a frontal face shows
x to the right, y down and z as a dot; positive yaw swings z to the image's left, positive pitch
swings it up, positive roll turns x clockwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..deps import require
from .rotation import head_to_image_rotation
from .types import EulerAngles, FacePose

AXIS_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))  # RGB: x red, y green, z blue
BOX_COLOR = (255, 210, 0)
KEYPOINT_COLOR = (0, 255, 255)


def head_axes_2d(angles: EulerAngles | Sequence[float]) -> np.ndarray:
    """``[3, 2]``: image-plane (dx, dy) of the unit x, y, z head axes (pixels, y down)."""
    values = angles.as_array() if isinstance(angles, EulerAngles) else np.asarray(angles, dtype=np.float64)
    axes = head_to_image_rotation(values.astype(np.float64))
    return axes[:2, :].T.copy()


def pose_readout(pose: FacePose) -> dict:
    """What the web extension shows on the Face Pose node (JSON): the angles and the gizmo's axes.

    ``axes`` is ``head_axes_2d`` (``[3][2]``, image plane, y down), so the browser draws exactly the
    axes of the preview image and never recomputes a rotation.
    """
    angles = pose.angles
    return {"pitch": float(angles.pitch), "yaw": float(angles.yaw), "roll": float(angles.roll),
            "backend": pose.backend, "axes": head_axes_2d(angles).tolist()}


def draw_head_axes(
    image: np.ndarray,
    angles: EulerAngles | Sequence[float],
    center: tuple[float, float],
    length: float,
    *,
    thickness: int | None = None,
) -> np.ndarray:
    """A copy of ``image`` ``[H, W, 3]`` uint8 RGB with the three axes from ``center``."""
    cv2 = require("cv2", "The head-pose preview")
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    thickness = thickness or max(1, int(round(max(out.shape[:2]) / 250)))
    cx, cy = center
    start = (int(round(cx)), int(round(cy)))
    for (dx, dy), color in zip(head_axes_2d(angles), AXIS_COLORS, strict=True):
        end = (int(round(cx + dx * length)), int(round(cy + dy * length)))
        cv2.line(out, start, end, color, thickness, cv2.LINE_AA)
    return out


def draw_face_pose(
    image: np.ndarray,
    box: tuple[float, float, float, float],
    angles: EulerAngles | Sequence[float],
    *,
    keypoints: np.ndarray | None = None,
    label: bool = True,
) -> np.ndarray:
    """A copy of ``image`` with the face ``box``, its keypoints, head axes and the angles as text.

    The axes start at the box centre and are half the box width long.
    """
    cv2 = require("cv2", "The head-pose preview")
    x1, y1, x2, y2 = (float(v) for v in box)
    thickness = max(1, int(round(max(image.shape[:2]) / 250)))
    out = draw_head_axes(image, angles, ((x1 + x2) / 2, (y1 + y2) / 2), (x2 - x1) / 2, thickness=thickness)
    cv2.rectangle(
        out, (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2))), BOX_COLOR, thickness
    )
    if keypoints is not None:
        for x, y in np.asarray(keypoints).reshape(-1, 2):
            cv2.circle(out, (int(round(x)), int(round(y))), thickness + 1, KEYPOINT_COLOR, -1)
    if label:
        p, yw, r = angles.as_array() if isinstance(angles, EulerAngles) else angles
        text = f"pitch {p:.0f} yaw {yw:.0f} roll {r:.0f}"
        scale = max(0.4, max(image.shape[:2]) / 1000)
        cv2.putText(
            out,
            text,
            (int(round(x1)), max(int(round(y1)) - 6, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            BOX_COLOR,
            max(1, thickness // 2),
            cv2.LINE_AA,
        )
    return out


def draw_pose_preview(image: np.ndarray, pose: FacePose, *, min_side: int = 512) -> np.ndarray:
    """The preview of one ``estimate_face_poses`` result on its source image.

    Small images are enlarged first (long side at least ``min_side``) so the label stays legible.
    """
    cv2 = require("cv2", "The head-pose preview")
    face = pose.face
    scale = max(1.0, min_side / max(image.shape[:2]))
    if scale > 1.0:
        size = (int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale)))
        image = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_CUBIC)
    box = tuple(float(v) * scale for v in face.box)
    keypoints = None if face.keypoints is None else np.asarray(face.keypoints) * scale
    return draw_face_pose(image, box, pose.angles, keypoints=keypoints)

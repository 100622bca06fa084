"""The padded retry: a frame where the detector finds no face is tried once more on a larger canvas.

Detectors miss faces that fill the frame or touch its border (generated videos are often such
close-ups). Each side is padded so the canvas is ``factor`` (1.25) times the frame's width and
height; black padding by default (a clean border the detector reads as background; ``edge``
repeats the border pixels instead). A face found there is mapped back to frame coordinates for
the report, while its embedding and head pose are computed on the padded image it was found in.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import FaithfulFacesError
from ..numbers import finite_number
from ..pose.types import Face

PAD_FACTOR = 1.25
PAD_MODES = ("black", "edge")


def pad_amounts(size: int, factor: float) -> tuple[int, int]:
    """Pixels added before and after a side of ``size`` so it becomes ``round(size * factor)``."""
    total = math.floor(size * factor + 0.5) - size
    return total // 2, total - total // 2


def pad_image(
    image: np.ndarray, factor: float = PAD_FACTOR, mode: str = "black"
) -> tuple[np.ndarray, tuple[int, int]]:
    """``image`` ``[H, W, 3]`` uint8 → (padded ``[round(H·f), round(W·f), 3]``, offset ``(left, top)``)."""
    if mode not in PAD_MODES:
        raise FaithfulFacesError(f"Unknown padding mode '{mode}': use one of {', '.join(PAD_MODES)}.")
    factor = finite_number(factor, "The padding factor", low=1, hint="1.25 in the usual protocol")
    height, width = image.shape[:2]
    top, bottom = pad_amounts(height, factor)
    left, right = pad_amounts(width, factor)
    widths = ((top, bottom), (left, right), (0, 0))
    padded = np.pad(image, widths, mode="constant") if mode == "black" else np.pad(image, widths, mode="edge")
    return padded, (left, top)


def unpad_face(face: Face, offset: tuple[int, int], image_size: tuple[int, int]) -> Face:
    """``face`` found on a padded canvas → the same face in frame pixels (box clipped to ``(H, W)``).

    The subclass and its extra fields (embedding, InsightFace pose) are kept.
    """
    left, top = offset
    height, width = image_size
    x1, y1, x2, y2 = face.box
    box = (
        float(min(max(x1 - left, 0.0), width)),
        float(min(max(y1 - top, 0.0), height)),
        float(min(max(x2 - left, 0.0), width)),
        float(min(max(y2 - top, 0.0), height)),
    )
    keypoints = None if face.keypoints is None else np.asarray(face.keypoints) - np.array([left, top], np.float32)
    return dataclasses.replace(face, box=box, keypoints=keypoints)

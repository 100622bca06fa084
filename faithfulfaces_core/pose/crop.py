"""Face boxes → estimator crops: enlarge about the centre (×1.5 in the paper), clip, resize.

The enlarged box is clipped to the image (never padded), then cut out and brought to the
estimator's input size with the released ``Resize(S)`` + ``CenterCrop(S)``.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import FaithfulFacesError
from ..numbers import finite_number
from .preprocess import resize_center_crop


def _round(value: float) -> int:
    return math.floor(value + 0.5)


def check_enlarge(factor: float) -> float:
    """The face-box enlargement as a float, or the pack's error (it must be finite and > 0)."""
    factor = finite_number(factor, "The face-box enlargement", low=0, hint="the paper uses 1.5")
    if factor == 0:
        raise FaithfulFacesError("The face-box enlargement must be positive, got 0; the paper uses 1.5.")
    return factor


def enlarge_box(
    box: tuple[float, float, float, float], factor: float, image_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Scale ``(x1, y1, x2, y2)`` by ``factor`` about its centre, round, clip to ``(H, W)``.

    Width and height both grow by ``factor`` (rounding half up); the result is in whole pixels
    and lies inside the image, so ``image[y1:y2, x1:x2]`` is the crop.
    """
    factor = check_enlarge(factor)
    height, width = image_size
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    half_w, half_h = (x2 - x1) * factor / 2.0, (y2 - y1) * factor / 2.0
    return (
        min(max(_round(cx - half_w), 0), width),
        min(max(_round(cy - half_h), 0), height),
        min(max(_round(cx + half_w), 0), width),
        min(max(_round(cy + half_h), 0), height),
    )


def crop_face(
    image: np.ndarray, box: tuple[float, float, float, float], *, enlarge: float = 1.5, size: int = 224
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``image`` ``[H, W, 3]`` uint8 → (crop ``[size, size, 3]`` uint8, the clipped crop box)."""
    crop_box = enlarge_box(box, enlarge, image.shape[:2])
    x1, y1, x2, y2 = crop_box
    if x2 <= x1 or y2 <= y1:
        raise FaithfulFacesError(
            f"The face box {tuple(round(float(v), 1) for v in box)} lies outside the "
            f"{image.shape[1]}x{image.shape[0]} image; nothing to crop. Check that boxes and image belong together."
        )
    return resize_center_crop(image[y1:y2, x1:x2], size), crop_box

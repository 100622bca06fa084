"""The released 6DRepNet input pipeline, in numpy and PIL (no torchvision needed).

Released: ``Resize(224)`` (shorter side to 224, PIL bilinear), ``CenterCrop(224)``,
``ToTensor()`` (0..1, channels first) and ``Normalize(ImageNet mean, std)``. The torch and the
ONNX Runtime backends share this code, so they see bit-identical inputs.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import FaithfulFacesError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """``[H, W, 3]`` uint8 → ``[size, size, 3]`` uint8: torchvision's Resize(size)+CenterCrop(size).

    Output sizes follow torchvision: the shorter side becomes ``size``, the longer
    ``int(size * long / short)``; the crop offsets are ``int(round((side - size) / 2))``.
    """
    h, w = image.shape[:2]
    if h < 1 or w < 1:
        raise FaithfulFacesError(
            f"Cannot resize an empty face crop of {w}x{h} pixels; the face box lies outside the image."
        )
    if (h, w) == (size, size):
        return np.ascontiguousarray(image)
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), Image.BILINEAR))
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return np.ascontiguousarray(resized[top : top + size, left : left + size])


def crops_to_input(crops: np.ndarray, size: int) -> np.ndarray:
    """``[B, S, S, 3]`` uint8 RGB crops → ``[B, 3, size, size]`` float32, ImageNet-normalised.

    Crops of another size go through ``resize_center_crop`` first, as the released pipeline would.
    """
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise FaithfulFacesError(
            f"Face crops must be an array [B, S, S, 3] of RGB images, got shape {crops.shape}."
        )
    if crops.dtype != np.uint8:
        raise FaithfulFacesError(
            f"Face crops must be uint8 (0..255), got {crops.dtype}; convert with "
            "(crops * 255).round().astype(np.uint8) if they are floats in 0..1."
        )
    if crops.shape[1:3] != (size, size):
        crops = (
            np.stack([resize_center_crop(c, size) for c in crops])
            if len(crops)
            else crops.reshape(0, size, size, 3)
        )
    x = crops.astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

"""Aligner inputs: validation with clear messages, resizing and normalisation of face crops."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import FaithfulFacesError


def check_shapes(face_crops: torch.Tensor, euler: torch.Tensor) -> None:
    """Cheap shape/dtype checks (no device sync): ``[B, 3, H, W]`` float and ``[B, 3]``."""
    if not isinstance(face_crops, torch.Tensor) or face_crops.ndim != 4 or face_crops.shape[1] != 3:
        shape = tuple(face_crops.shape) if isinstance(face_crops, torch.Tensor) else type(face_crops).__name__
        raise FaithfulFacesError(
            f"face_crops must be a tensor [B, 3, H, W] (RGB, channels first), got {shape}. "
            "Convert a ComfyUI IMAGE [B, H, W, 3] with image.permute(0, 3, 1, 2)."
        )
    if not face_crops.is_floating_point():
        raise FaithfulFacesError(
            f"face_crops must be float in 0..1, got dtype {face_crops.dtype}; "
            "convert uint8 images with crops.float() / 255."
        )
    if not isinstance(euler, torch.Tensor) or euler.ndim != 2 or euler.shape[1] != 3:
        shape = tuple(euler.shape) if isinstance(euler, torch.Tensor) else type(euler).__name__
        raise FaithfulFacesError(
            f"euler must be a tensor [B, 3] of (pitch, yaw, roll) in degrees, got {shape}."
        )
    if euler.shape[0] != face_crops.shape[0]:
        raise FaithfulFacesError(
            f"face_crops has {face_crops.shape[0]} images but euler has {euler.shape[0]} rows; "
            "give one (pitch, yaw, roll) per face crop."
        )
    if face_crops.shape[0] == 0:
        raise FaithfulFacesError("face_crops is empty (B = 0); pass at least one face crop.")


def check_values(face_crops: torch.Tensor, euler: torch.Tensor) -> None:
    """Value checks (one device sync): finite angles, pixels in 0..1."""
    if not bool(torch.isfinite(euler).all()):
        raise FaithfulFacesError(
            "euler contains NaN or infinite angles; re-run pose estimation or drop those faces."
        )
    if not bool(torch.isfinite(face_crops).all()):
        raise FaithfulFacesError("face_crops contains NaN or infinite pixels; check the image source.")
    lo, hi = float(face_crops.min()), float(face_crops.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        hint = " It looks like 0..255 values: divide by 255." if hi > 2.0 else ""
        raise FaithfulFacesError(
            f"face_crops must be RGB in 0..1, got values in [{lo:.3g}, {hi:.3g}].{hint}"
        )


def preprocess(face_crops: torch.Tensor, image_size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` 0..1 → ``[B, 3, S, S]`` normalised, float32 (antialiased bilinear resize)."""
    x = face_crops.float()
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)

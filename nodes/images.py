"""Conversions between ComfyUI's IMAGE ([B, H, W, C] float 0..1) and the core's arrays."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8_list(image: torch.Tensor) -> list[np.ndarray]:
    """``[B, H, W, C]`` float 0..1 → ``B`` arrays ``[H, W, 3]`` uint8 RGB (alpha dropped)."""
    array = (image[..., :3].clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return list(array)


def from_uint8(images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 arrays (same size) → ``[B, H, W, 3]`` float 0..1."""
    stack = np.stack(list(images)) if isinstance(images, list) else images
    return torch.from_numpy(stack.astype(np.float32) / 255.0)

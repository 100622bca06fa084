"""FaithfulFaces on ComfyUI's native Wan model: one MODEL patch for KSampler workflows.

``patch_native_model`` takes a ComfyUI ``ModelPatcher`` holding a native Wan2.1(-VACE)
transformer (UNETLoader's output) and returns a patched clone: the FaithfulFaces LoRA through
ComfyUI's own LoRA loader (``lora.py``), the global pose tokens in every main block's
self-attention through ComfyUI's wrapper / block-replace / attention-override patch points
(``pose_patch.py``). Same contract as the diffusers path (docs/method.md), so one trained LoRA +
aligner serve both. This package never imports ComfyUI at module level: it receives ComfyUI
objects and imports ``comfy`` only inside functions that run inside ComfyUI.
"""

from __future__ import annotations

import os

import torch

from ..wan.injection import PoseTokenSettings
from .lora import apply_native_lora, check_native_lora_fits, native_lora_weights
from .pose_patch import check_pose_tokens, check_wan_model, install_pose_patch

__all__ = [
    "apply_native_lora",
    "check_native_lora_fits",
    "install_pose_patch",
    "native_lora_weights",
    "patch_native_model",
]


def patch_native_model(
    model,
    pose_tokens: torch.Tensor | None = None,
    *,
    lora_path: str | os.PathLike | None = None,
    lora_strength: float = 1.0,
    strength: float = 1.0,
    start: float = 0.0,
    end: float = 1.0,
    uncond: bool = False,
):
    """``model`` with the LoRA at ``lora_strength`` and the pose tokens ``[B, M, C]`` at ``strength``.

    ``start``/``end``: the part of the schedule (fractions, 0 = first step) in which the tokens
    act; ``uncond``: whether the negative pass sees them. No tokens (or strength 0) and no LoRA
    (or strength 0) install nothing: ``model`` itself comes back.
    """
    settings = PoseTokenSettings(float(strength), float(start), float(end), bool(uncond))
    settings.check()
    if pose_tokens is not None:
        check_pose_tokens(pose_tokens, check_wan_model(model.get_model_object("diffusion_model")))
    if lora_path is not None and lora_strength != 0:
        model = apply_native_lora(model, lora_path, lora_strength)
    if pose_tokens is not None and settings.strength > 0:
        model = install_pose_patch(model, pose_tokens, settings)
    return model

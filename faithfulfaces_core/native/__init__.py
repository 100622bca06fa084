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
import uuid

import torch

from ..numbers import finite_number
from ..wan.injection import PoseTokenSettings, check_pose_tokens
from .context import install_reference_frames
from .lora import apply_native_lora, check_native_lora_fits, native_lora_weights
from .pose_patch import TOKENS_FIX, check_wan_model, install_pose_patch

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
    pose_on_negative: bool = False,
    reference_frames: int = 1,
):
    """``model`` with the LoRA at ``lora_strength`` and the pose tokens ``[B, M, C]`` at ``strength``.

    ``start``/``end``: the part of the schedule (fractions, 0 = first step) in which the tokens
    act; ``pose_on_negative``: whether the negative pass sees them. No tokens (or strength 0) and no LoRA
    (or strength 0) install nothing: ``model`` itself comes back. ``reference_frames``: the VACE
    reference latents in front of the video (``WanVaceToVideo``'s ``trim_latent``), kept in front
    of every window when ComfyUI's context windows cut the video (``context.py``).
    """
    lora_strength = finite_number(lora_strength, "LoRA strength", hint="as for any LoRA in ComfyUI; 0 = off")
    settings = PoseTokenSettings(float(strength), float(start), float(end), bool(pose_on_negative))
    settings.check()
    original = model
    if pose_tokens is not None:
        check_pose_tokens(pose_tokens, check_wan_model(model.get_model_object("diffusion_model")), fix=TOKENS_FIX)
    if lora_path is not None and lora_strength != 0:
        model = apply_native_lora(model, lora_path, lora_strength)
    if pose_tokens is not None and settings.strength > 0:
        model = install_pose_patch(model, pose_tokens, settings)
    if model is not original:
        install_reference_frames(model, f"faithfulfaces_reference_{uuid.uuid4().hex[:12]}", reference_frames)
    return model

"""Device and dtype choices as users type them ("auto", "cuda", "bf16", ...)."""

from __future__ import annotations

import torch

from .errors import FaithfulFacesError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; an unavailable CUDA is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICES:
        raise FaithfulFacesError(
            f"Unknown device '{name}': use one of {', '.join(DEVICES)} (or cuda:N for one GPU of several)."
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FaithfulFacesError(
            f"Device '{name}' was asked for, but torch sees no CUDA GPU (torch {torch.__version__}). "
            "Pick 'cpu' or 'auto', or install a CUDA build of torch."
        )
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` → bf16 on a GPU that supports it, fp16 on older GPUs, fp32 on CPU."""
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in DTYPES:
        raise FaithfulFacesError(f"Unknown dtype '{name}': use one of auto, {', '.join(DTYPES)}.")
    return DTYPES[name]

"""The FaithfulFaces LoRA on ComfyUI's native Wan model, through ComfyUI's own LoRA loading.

A FaithfulFaces LoRA file of either layout is read with ``wan.lora.read_lora`` (kind and config
checked) and handed to ``comfy.sd.load_lora_for_models`` in the original Wan layout
(``diffusion_model.blocks.N.self_attn.q.lora_A.weight`` / ``lora_B`` / ``alpha``), the layout
ComfyUI's key map reads — so the strength means what it means for any LoRA in ComfyUI
(``W + strength · alpha/rank · B·A``, the same number as diffusers' ``lora_scale``), and the
patch lives in the ``ModelPatcher`` like any other weight patch. Before that, every adapted
module is checked against the model's weights, since ComfyUI would only log and skip a
LoRA made for another model size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..errors import CheckpointError
from ..wan.lora import ORIGINAL_PREFIX, read_lora, to_original_layout

_A, _B = ".lora_A.weight", ".lora_B.weight"


def native_lora_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A FaithfulFaces LoRA file (diffusers or original layout) as original-layout weights."""
    lora = read_lora(path)
    return to_original_layout(lora.state_dict, lora.lora_config)


def check_native_lora_fits(
    weights: Mapping[str, torch.Tensor], model_shapes: Mapping[str, tuple[int, ...]], path: str | os.PathLike
) -> None:
    """Every ``lora_A``/``lora_B`` pair names a linear weight of the model with matching widths.

    ``model_shapes``: the native diffusion model's parameter shapes under its own names
    (``blocks.0.self_attn.q.weight`` → ``(out, in)``).
    """
    blocks = sum(1 for name in model_shapes if name.startswith("blocks.") and name.endswith(".self_attn.q.weight"))
    for key, a in weights.items():
        if not key.endswith(_A):
            continue
        module = key[len(ORIGINAL_PREFIX):-len(_A)]
        b = weights[key[: -len(_A)] + _B]
        target = model_shapes.get(module + ".weight")
        if target is None:
            raise CheckpointError(
                f"{path}: LoRA key '{key}' names a module this Wan model does not have (it has {blocks} blocks): "
                "the LoRA was trained for another model."
            )
        if (b.shape[0], a.shape[1]) != tuple(target[:2]):
            raise CheckpointError(
                f"{path}: LoRA key '{key}' is for a {a.shape[1]}→{b.shape[0]} layer, but this model's "
                f"'{module}' is {target[1]}→{target[0]}: the LoRA was trained for another model size "
                "(1536 wide = Wan2.1-VACE-1.3B, 5120 = 14B)."
            )


def apply_native_lora(model, path: str | os.PathLike, strength: float):
    """A clone of ComfyUI ``ModelPatcher`` ``model`` with the LoRA at ``strength`` (ComfyUI's loader)."""
    import comfy.sd

    weights = native_lora_weights(path)
    diffusion_model = model.get_model_object("diffusion_model")
    shapes = {name: tuple(p.shape) for name, p in diffusion_model.state_dict().items()}
    check_native_lora_fits(weights, shapes, path)
    patched, _ = comfy.sd.load_lora_for_models(model, None, weights, float(strength), 0.0)
    return patched

"""Wan2.1 key layouts: the original names (official release, ComfyUI) ↔ diffusers names.

The original layout (``blocks.N.self_attn.q``, ``vace_blocks.N.before_proj``, ``head.head``, ...)
is what the official and ComfyUI-repackaged files use, sometimes behind a ``diffusion_model.`` or
``model.diffusion_model.`` prefix. Loading a full transformer goes through diffusers' own
converter (``convert_wan_transformer_to_diffusers``); the reverse direction (writing a
single-file transformer, exporting a LoRA for ComfyUI's LoraLoader) has no diffusers
counterpart, so it is here, module by module, exactly invertible and checked against the
diffusers converter in the tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

from ..errors import CheckpointError

ORIGINAL_PREFIXES = ("model.diffusion_model.", "diffusion_model.")

# diffusers module name (relative to the transformer) → original module name.
_TOP_LEVEL = {
    "patch_embedding": "patch_embedding",
    "vace_patch_embedding": "vace_patch_embedding",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
    # parameters that are not inside a submodule
    "scale_shift_table": "head.modulation",
}

# Inside ``blocks.N.`` and ``vace_blocks.N.``.
_IN_BLOCK = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn1.norm_q": "self_attn.norm_q",
    "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.norm_q": "cross_attn.norm_q",
    "attn2.norm_k": "cross_attn.norm_k",
    "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "attn2.norm_added_k": "cross_attn.norm_k_img",
    # the affine norm before cross-attention is norm3 in the original, norm2 in diffusers
    "norm2": "norm3",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
    "proj_in": "before_proj",
    "proj_out": "after_proj",
    "scale_shift_table": "modulation",
}

_TOP_LEVEL_INV = {v: k for k, v in _TOP_LEVEL.items()}
_IN_BLOCK_INV = {v: k for k, v in _IN_BLOCK.items()}
_BLOCK_RE = re.compile(r"^(blocks|vace_blocks)\.(\d+)\.(.+)$")
_PARAM_SUFFIXES = ("weight", "bias")

T = TypeVar("T")


def _map_module(name: str, top: Mapping[str, str], in_block: Mapping[str, str]) -> str | None:
    match = _BLOCK_RE.match(name)
    if match:
        group, index, rest = match.groups()
        mapped = in_block.get(rest)
        return None if mapped is None else f"{group}.{index}.{mapped}"
    return top.get(name)


def diffusers_to_original_module(name: str) -> str:
    """``blocks.3.attn1.to_q`` → ``blocks.3.self_attn.q`` (no prefix, no ``.weight``)."""
    mapped = _map_module(name, _TOP_LEVEL, _IN_BLOCK)
    if mapped is None:
        raise CheckpointError(
            f"The diffusers module '{name}' has no counterpart in the original Wan layout; only the "
            "Wan2.1 (VACE) transformer's own modules can be written in that layout."
        )
    return mapped


def original_to_diffusers_module(name: str) -> str:
    """``vace_blocks.0.before_proj`` → ``vace_blocks.0.proj_in`` (inverse of the above)."""
    mapped = _map_module(name, _TOP_LEVEL_INV, _IN_BLOCK_INV)
    if mapped is None:
        raise CheckpointError(
            f"'{name}' is not a module of the Wan2.1 transformer in the original layout "
            "(expected names like blocks.N.self_attn.q, vace_blocks.N.ffn.0, head.head)."
        )
    return mapped


def _split_param(key: str) -> tuple[str, str | None]:
    module, _, last = key.rpartition(".")
    if module and last in _PARAM_SUFFIXES:
        return module, last
    return key, None


def diffusers_to_original_key(key: str) -> str:
    """A transformer parameter name, diffusers → original (``scale_shift_table`` included)."""
    module, param = _split_param(key)
    mapped = diffusers_to_original_module(module)
    return mapped if param is None else f"{mapped}.{param}"


def to_original_state_dict(state_dict: Mapping[str, T], prefix: str = "") -> dict[str, T]:
    """A diffusers ``WanVACETransformer3DModel`` state dict in the original Wan key layout."""
    return {prefix + diffusers_to_original_key(k): v for k, v in state_dict.items()}


def split_original_prefix(keys: list[str]) -> str:
    """The prefix all keys share: ``model.diffusion_model.``, ``diffusion_model.`` or ``""``."""
    for prefix in ORIGINAL_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


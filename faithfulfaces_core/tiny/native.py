"""The tiny Wan2.1 VAE for ComfyUI's own ``VAELoader`` (the native KSampler path), and a random LoRA.

The transformer, LoRA and aligner are the model set's own (``tiny/wan.py``'s config follows
ComfyUI's detection rules, so ``UNETLoader`` takes the same single file). What stays native-only:

- **VAE** (``VAELoader``): ComfyUI's Wan2.1 VAE has a fixed structure (``dim_mult`` [1, 2, 4, 4],
  2 residual blocks per stage, temporal downsampling [no, yes, yes]) and reads only its base
  width from the file. A diffusers ``AutoencoderKLWan`` of that structure at base width 4 is
  written here to ``vae/`` in the original key layout — the inverse of diffusers'
  ``convert_wan_vae_to_diffusers``, checked against it in the tests.
- **no text encoder**: ComfyUI builds its Wan text encoder from a fixed UMT5-XXL config (24
  layers, 4096 wide, 256k vocabulary) whatever the file holds, so nothing tiny can load through
  ``CLIPLoader``; docs/native.md says how the tests feed conditioning instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

VAE_FILE = "wan2.1_vae_tiny.safetensors"
WAN_VAE_KIND = "wan_vae"
TINY_NATIVE_VAE_CONFIG: dict = {
    "base_dim": 4,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
}

T = TypeVar("T")

_RESNET = {
    "norm1.gamma": "residual.0.gamma",
    "conv1.weight": "residual.2.weight",
    "conv1.bias": "residual.2.bias",
    "norm2.gamma": "residual.3.gamma",
    "conv2.weight": "residual.6.weight",
    "conv2.bias": "residual.6.bias",
    "conv_shortcut.weight": "shortcut.weight",
    "conv_shortcut.bias": "shortcut.bias",
}
_FIXED = {
    "quant_conv": "conv1",
    "post_quant_conv": "conv2",
    "conv_in": "conv1",
    "norm_out": "head.0",
    "conv_out": "head.2",
    "mid_block.resnets.0": "middle.0",
    "mid_block.attentions.0": "middle.1",
    "mid_block.resnets.1": "middle.2",
}
_DOWN = re.compile(r"^encoder\.down_blocks\.(\d+)\.(.+)$")
_UP_RESNET = re.compile(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$")
_UP_SAMPLER = re.compile(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)$")


def wan_vae_key_to_original(key: str, num_res_blocks: int = 2) -> str:
    """A diffusers ``AutoencoderKLWan`` parameter name → the original Wan2.1 VAE name.

    ``decoder.up_blocks.1.resnets.0.conv1.weight`` → ``decoder.upsamples.4.residual.2.weight``: the
    original decoder is one flat list of ``num_res_blocks + 1`` residual blocks then a resample
    per stage; the encoder's list keeps its indices.
    """
    per_stage = num_res_blocks + 2
    if match := _DOWN.match(key):
        index, rest = match.groups()
        return f"encoder.downsamples.{index}.{_RESNET.get(rest, rest)}"
    if match := _UP_RESNET.match(key):
        stage, resnet, rest = match.groups()
        return f"decoder.upsamples.{int(stage) * per_stage + int(resnet)}.{_RESNET[rest]}"
    if match := _UP_SAMPLER.match(key):
        stage, rest = match.groups()
        return f"decoder.upsamples.{int(stage) * per_stage + per_stage - 1}.{rest}"
    side, _, rest = key.partition(".")
    if side not in ("encoder", "decoder"):
        side, rest = "", key
    for name, original in _FIXED.items():
        if rest.startswith(name + "."):
            tail = rest[len(name) + 1:]
            if name.startswith("mid_block.resnets."):
                tail = _RESNET[tail]
            return (f"{side}." if side else "") + f"{original}.{tail}"
    raise KeyError(f"'{key}' is not a parameter of diffusers' Wan2.1 VAE")


def wan_vae_to_original(state_dict: Mapping[str, T], num_res_blocks: int = 2) -> dict[str, T]:
    """A diffusers ``AutoencoderKLWan`` state dict in the original Wan2.1 VAE layout."""
    return {wan_vae_key_to_original(k, num_res_blocks): v for k, v in state_dict.items()}


def build_tiny_native_vae(seed: int = 0):
    """``AutoencoderKLWan`` with the structure ComfyUI's Wan2.1 VAE has, base width 4, random."""
    import torch
    from diffusers import AutoencoderKLWan

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**TINY_NATIVE_VAE_CONFIG).eval()
        # RMS-norm gains start at 1; random ones make every layer matter in the layout checks
        with torch.no_grad():
            for name, param in vae.named_parameters():
                if name.endswith("gamma"):
                    param.uniform_(0.5, 1.5)
    return vae


def add_random_lora(transformer, *, seed: int, rank: int = 4, adapter_name: str | None = None) -> None:
    """A FaithfulFaces LoRA adapter whose ``lora_B`` is random (a fresh one is a no-op)."""
    from ..wan.lora import ADAPTER_NAME, LoraSpec, add_lora

    name = adapter_name or ADAPTER_NAME
    add_lora(transformer, LoraSpec(rank=rank, alpha=rank), adapter_name=name)
    randomize_lora(transformer, seed=seed, std=0.02, match=f"lora_B.{name}.")


def randomize_lora(transformer, *, seed: int, std: float, match: str = "lora_") -> None:
    """Every parameter whose name holds ``match`` (default: all LoRA weights) drawn from N(0, std²),
    in ``named_parameters`` order from a generator seeded with ``seed``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in transformer.named_parameters():
            if match in key:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def write_tiny_vae(models_dir: str | Path, *, seed: int = 0) -> Path:
    """Write the tiny VAE to ``<models_dir>/vae/`` in the original Wan2.1 layout (rewrites it)."""
    from ..checkpoints import save_checkpoint

    return save_checkpoint(
        Path(models_dir) / "vae" / VAE_FILE,
        {k: v.contiguous() for k, v in wan_vae_to_original(build_tiny_native_vae(seed).state_dict()).items()},
        kind=WAN_VAE_KIND, format=1, config=TINY_NATIVE_VAE_CONFIG,
    )

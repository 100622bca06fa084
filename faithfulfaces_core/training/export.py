"""The run's products, in the files the nodes load unchanged.

- ``faithfulfaces_aligner.safetensors``: ``aligner.save_aligner`` (aligner + token projection)
- ``faithfulfaces_lora.safetensors``: the LoRA in diffusers' layout (``load_lora_weights``)
- ``faithfulfaces_lora_comfy.safetensors``: the same LoRA in the original Wan layout (ComfyUI's LoraLoader)

Each carries, in its safetensors metadata, the resolved training config
(``faithfulfaces.training_config``), the base model's identity (``faithfulfaces.base_model``:
name, transformer config hash, width, layers) and the steps trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALIGNER_FILE = "faithfulfaces_aligner.safetensors"
LORA_FILE = "faithfulfaces_lora.safetensors"
LORA_COMFY_FILE = "faithfulfaces_lora_comfy.safetensors"
TRAINING_CONFIG_KEY = "faithfulfaces.training_config"
BASE_MODEL_KEY = "faithfulfaces.base_model"
STEPS_KEY = "faithfulfaces.trained_steps"


@dataclass(frozen=True)
class TrainingOutputs:
    aligner: Path
    lora: Path
    lora_comfy: Path


def output_metadata(config_json: str, base: dict[str, Any], steps: int) -> dict[str, str]:
    return {TRAINING_CONFIG_KEY: config_json, BASE_MODEL_KEY: json.dumps(base, sort_keys=True), STEPS_KEY: str(steps)}


def export_outputs(output_dir: Path, *, transformer, aligner, metadata: dict[str, str]) -> TrainingOutputs:
    """Write the three files (atomically) from the unwrapped transformer and aligner."""
    from ..aligner import save_aligner
    from ..wan.lora import save_lora

    out = TrainingOutputs(output_dir / ALIGNER_FILE, output_dir / LORA_FILE, output_dir / LORA_COMFY_FILE)
    save_aligner(aligner, out.aligner, extra_metadata=metadata)
    save_lora(out.lora, transformer, layout="diffusers", extra_metadata=metadata)
    save_lora(out.lora_comfy, transformer, layout="original_wan", extra_metadata=metadata)
    return out

"""A test-only ComfyUI node: CONDITIONING read from a safetensors file of prompt embeddings.

ComfyUI builds its Wan text encoder from a fixed UMT5-XXL config (5.7 B parameters) whatever the
file holds, so nothing tiny loads through ``CLIPLoader``. The end-to-end tests feed the samplers
through this node instead. It uses only the legacy node API and CONDITIONING's long-standing form
``[[embeds [B, L, D], {}]]``, so it behaves the same on every ComfyUI the suite runs on.
"""

import os

import folder_paths
from safetensors.torch import load_file


class FFTestConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, file):
        embeds = load_file(os.path.join(folder_paths.get_input_directory(), file))["embeds"]
        return ([[embeds, {}]],)


NODE_CLASS_MAPPINGS = {"FFTestConditioning": FFTestConditioning}

"""FaithfulFaces for ComfyUI: pose-faithful facial identity preservation for Wan2.1-VACE.

ComfyUI entry point (V3 node API). Importing this is cheap: node schemas only; torch models,
diffusers, insightface and onnxruntime are imported when a node runs.
"""

import os
import sys

WEB_DIRECTORY = "./web"

# The library under the nodes is a top-level package (also used by training/ and plain Python).
_PACK_ROOT = os.path.dirname(os.path.abspath(__file__))
if _PACK_ROOT not in sys.path:
    sys.path.insert(0, _PACK_ROOT)

try:
    from comfy_api.latest import ComfyExtension
except ImportError:  # imported outside ComfyUI (e.g. by pytest collecting the repo root)
    ComfyExtension = None

if ComfyExtension is not None:
    from .nodes import NODES, register_model_folders

    class FaithfulFacesExtension(ComfyExtension):
        async def get_node_list(self):
            return list(NODES)

    async def comfy_entrypoint() -> FaithfulFacesExtension:
        register_model_folders()
        return FaithfulFacesExtension()

__all__ = ["WEB_DIRECTORY"]

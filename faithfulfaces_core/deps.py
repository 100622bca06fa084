"""Optional dependencies, imported on use, with install advice when they are missing.

Identity packs fail most often on insightface / onnxruntime / dlib installs; the pack must
still load without them, and the feature that needs one says exactly what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

INSTALL_HINTS: dict[str, str] = {
    "insightface": (
        "pip install insightface  (on Windows without a compiler use a prebuilt wheel; "
        "it also needs onnxruntime or onnxruntime-gpu)"
    ),
    "onnxruntime": "pip install onnxruntime-gpu  (NVIDIA GPU)  or  pip install onnxruntime  (CPU)",
    "onnx": "pip install onnx",
    "dlib": "pip install -r requirements-offline.txt  (dlib-bin and face-recognition-models)",
    "face_recognition_models": "pip install face-recognition-models",
    "cv2": "pip install opencv-python-headless",
    "av": "pip install av",
    "diffusers": "pip install -U diffusers  (0.35 or newer has WanVACEPipeline)",
    "peft": "pip install peft",
    "transformers": "pip install transformers",
    "matplotlib": "pip install matplotlib",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise a ``MissingDependencyError`` naming ``feature`` and the fix.

    A module that is installed but fails to import (a broken wheel, a missing shared library)
    is reported with the original error, which is what a user needs to search for.
    """
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, OSError from a broken shared library, ...
        hint = INSTALL_HINTS.get(module, f"pip install {module}")
        kind = "is not installed" if isinstance(exc, ModuleNotFoundError) else f"failed to import ({exc})"
        raise MissingDependencyError(
            f"{feature} needs the Python package '{module}', which {kind}. Install it with: {hint}"
        ) from exc

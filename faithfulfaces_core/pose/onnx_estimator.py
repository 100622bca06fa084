"""6DRepNet on ONNX Runtime: the CUDA execution provider where onnxruntime-gpu sees a GPU, else CPU.

The ONNX file is the one ``export_sixdrepnet_onnx`` writes (input ``image [B, 3, S, S]``,
output ``rotation [B, 3, 3]``); preprocessing and the Euler read-out are shared with the torch
backend, so both report the same angles up to float rounding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..deps import require
from ..errors import CheckpointError, FaithfulFacesError, MissingDependencyError, MissingModelError
from .rotation import RotationPoseEstimator
from .sixdrepnet import CHECKPOINT_KIND, ONNX_INPUT, ONNX_OUTPUT, RELEASE_SOURCE, RELEASED_FILENAME

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def _gpu_visible() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def onnx_providers(device: str = "auto") -> list[str]:
    """Execution providers for ``device`` (``auto``, ``cuda`` or ``cpu``), best first.

    ``auto`` picks CUDA only when onnxruntime-gpu offers it *and* a GPU is visible; ``cuda``
    without it is an error that says what to install, never a quiet CPU run.
    """
    ort = require("onnxruntime", "ONNX Runtime inference")
    available = ort.get_available_providers()
    has_cuda = CUDA_PROVIDER in available and _gpu_visible()
    if device == "cpu":
        return [CPU_PROVIDER]
    if device == "auto":
        return [CUDA_PROVIDER, CPU_PROVIDER] if has_cuda else [CPU_PROVIDER]
    if device.startswith("cuda"):
        if not has_cuda:
            raise MissingDependencyError(
                f"ONNX Runtime on '{device}' needs onnxruntime-gpu and a visible NVIDIA GPU; this install offers "
                f"{available} (GPU visible: {_gpu_visible()}). Install it with: pip uninstall -y onnxruntime && "
                "pip install onnxruntime-gpu, or choose device 'cpu'."
            )
        return [CUDA_PROVIDER, CPU_PROVIDER]
    raise FaithfulFacesError(f"Unknown ONNX Runtime device '{device}': use 'auto', 'cuda' or 'cpu'.")


class OnnxPoseEstimator(RotationPoseEstimator):
    """``PoseEstimator`` on ONNX Runtime: face crops → (pitch, yaw, roll) degrees."""

    name = "6drepnet-onnx"

    def __init__(self, path: str | os.PathLike, *, device: str = "auto", batch_size: int = 32):
        ort = require("onnxruntime", "The ONNX 6DRepNet backend")
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingModelError(
                f"6DRepNet ONNX file {self.path} does not exist. Convert {RELEASED_FILENAME} (from "
                f"{RELEASE_SOURCE}) with `python -m faithfulfaces_core.pose.convert`, or place the .pth instead."
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=onnx_providers(device))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise CheckpointError(
                f"{self.path} is not a loadable ONNX model ({str(exc).splitlines()[0]}). Re-export it with "
                "`python -m faithfulfaces_core.pose.convert`."
            ) from exc
        self._check_signature()
        self.batch_size = batch_size
        self.providers = self.session.get_providers()

    def _check_signature(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        meta = self.session.get_modelmeta().custom_metadata_map
        kind = meta.get("faithfulfaces.kind")
        shape = inputs[0].shape if len(inputs) == 1 else None
        ok = (
            kind == CHECKPOINT_KIND
            and inputs[0].name == ONNX_INPUT
            and len(outputs) == 1
            and outputs[0].name == ONNX_OUTPUT
            and shape is not None
            and len(shape) == 4
            and isinstance(shape[2], int)
            and shape[2] == shape[3]
        )
        if not ok:
            found = [(i.name, i.shape) for i in inputs], [(o.name, o.shape) for o in outputs]
            raise CheckpointError(
                f"{self.path} is not a FaithfulFaces 6DRepNet ONNX export (kind {kind!r}, inputs/outputs {found}; "
                f"expected kind '{CHECKPOINT_KIND}', input '{ONNX_INPUT}' [B, 3, S, S], output '{ONNX_OUTPUT}' "
                "[B, 3, 3]). Export it with `python -m faithfulfaces_core.pose.convert`."
            )
        self.input_size = int(shape[2])
        self.config = json.loads(meta.get("faithfulfaces.config", "{}"))

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        """``[b, 3, S, S]`` float32 (normalised) → ``[b, 3, 3]`` float32 rotation matrices."""
        return self.session.run([ONNX_OUTPUT], {ONNX_INPUT: x})[0]

"""Find the 6DRepNet weights in a folder the user gives and build the matching backend.

Looked for in ``models/faithfulfaces/`` (or any folder): the released
``6DRepNet_300W_LP_AFLW2000.pth`` or its ``.safetensors`` / ``.onnx`` conversion. Nothing is
downloaded; a missing or wrong file is an error naming the folder, the file names and the source.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FaithfulFacesError, MissingModelError
from .sixdrepnet import RELEASE_SOURCE, RELEASED_FILENAME
from .types import PRECISIONS, PoseEstimator

STEM = Path(RELEASED_FILENAME).stem
TORCH_FILES = (f"{STEM}.safetensors", RELEASED_FILENAME)
ONNX_FILES = (f"{STEM}.onnx",)
BACKENDS = ("auto", "torch", "onnx")


def _suffixes(backend: str) -> tuple[str, ...]:
    return {"torch": (".safetensors", ".pth"), "onnx": (".onnx",), "auto": (".safetensors", ".pth", ".onnx")}[
        backend
    ]


def find_pose_estimator_file(folder: str | os.PathLike, *, backend: str = "auto") -> Path:
    """The estimator file in ``folder`` for ``backend``.

    Preference: the exact names (``.safetensors``, then the released ``.pth``, then ``.onnx``),
    then any file whose name contains "6drepnet" with such a suffix. ``auto`` prefers torch files.
    """
    if backend not in BACKENDS:
        raise FaithfulFacesError(
            f"Unknown pose-estimator backend '{backend}': use one of {', '.join(BACKENDS)}."
        )
    folder = Path(folder).expanduser()
    wanted = {"torch": TORCH_FILES, "onnx": ONNX_FILES, "auto": TORCH_FILES + ONNX_FILES}[backend]
    expected = (
        f"Expected {' or '.join(wanted)}: {RELEASED_FILENAME} comes from {RELEASE_SOURCE}; the .safetensors and "
        f".onnx files are conversions of it (python -m faithfulfaces_core.pose.convert {RELEASED_FILENAME}). "
        "FaithfulFaces never downloads models."
    )
    if not folder.is_dir():
        raise MissingModelError(f"Pose-estimator folder {folder} does not exist. {expected}")
    for name in wanted:
        if (folder / name).is_file():
            return folder / name
    for suffix in _suffixes(backend):
        matches = sorted(p for p in folder.iterdir() if p.suffix == suffix and "6drepnet" in p.name.lower())
        if matches:
            return matches[0]
    present = sorted(p.name for p in folder.iterdir() if p.is_file())
    raise MissingModelError(
        f"No 6DRepNet weights for backend '{backend}' in {folder} (files there: {present or 'none'}). {expected}"
    )


def load_pose_estimator(
    path: str | os.PathLike, *, backend: str = "auto", device: str = "auto", batch_size: int = 32,
    precision: str = "fp32",
) -> PoseEstimator:
    """A ready ``PoseEstimator`` from a weights file or a folder holding one.

    ``.pth`` / ``.safetensors`` → ``SixDRepNetEstimator`` (torch, in ``precision``); ``.onnx`` →
    ``OnnxPoseEstimator`` (ONNX Runtime, CUDA provider when available, the file's own precision).
    """
    if precision not in PRECISIONS:
        raise FaithfulFacesError(f"Unknown pose-estimator precision '{precision}': use one of {', '.join(PRECISIONS)}.")
    path = Path(path).expanduser()
    file = find_pose_estimator_file(path, backend=backend) if path.is_dir() else path
    if not file.exists():
        raise MissingModelError(
            f"6DRepNet weight file {file} does not exist. Place {RELEASED_FILENAME} from {RELEASE_SOURCE} there, "
            "or a .safetensors/.onnx conversion of it."
        )
    if file.suffix not in _suffixes(backend):
        raise FaithfulFacesError(
            f"{file.name} is a {file.suffix} file, which the '{backend}' backend does not read; it reads "
            f"{', '.join(_suffixes(backend))}."
        )
    if file.suffix == ".onnx":
        from .onnx_estimator import OnnxPoseEstimator

        if precision != "fp32":
            raise FaithfulFacesError(
                f"{file.name} runs on ONNX Runtime in the precision it was exported in; {precision} is for the "
                f"torch files ({' or '.join(TORCH_FILES)}). Choose precision fp32, or a torch file."
            )
        return OnnxPoseEstimator(file, device=device, batch_size=batch_size)
    from ..devices import DTYPES
    from .sixdrepnet import SixDRepNetEstimator, load_sixdrepnet

    return SixDRepNetEstimator(load_sixdrepnet(file), device=device, dtype=DTYPES[precision], batch_size=batch_size)

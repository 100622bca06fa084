"""Face detection with ``insightface.app.FaceAnalysis`` on a model pack the user placed.

Nothing is downloaded: the pack folder is checked before InsightFace sees it (InsightFace itself
would try to fetch a missing pack) and opened by its absolute path. Detection runs at the first
``det_size`` and, when nothing is found, again at each smaller one (640 → 512 → 384 → 256 by
default), as other identity packs do: faces that fill the frame are often only found at a
smaller input. Works with insightface 0.7.3 and the 2.x releases.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..deps import require
from ..errors import CheckpointError, FaithfulFacesError, MissingModelError
from .onnx_estimator import CUDA_PROVIDER, onnx_providers
from .rotation import angles_from_insightface_pose
from .types import EulerAngles, Face

PACK_FILES: dict[str, tuple[str, ...]] = {
    "antelopev2": (
        "scrfd_10g_bnkps.onnx",
        "glintr100.onnx",
        "1k3d68.onnx",
        "2d106det.onnx",
        "genderage.onnx",
    ),
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx"),
}
PACK_SOURCE = (
    "InsightFace's model zoo (the deepinsight/insightface GitHub releases: antelopev2.zip, buffalo_l.zip); "
    "download and unzip it yourself into ComfyUI/models/insightface/models/<pack name>/"
)
DEFAULT_DET_SIZES = (640, 512, 384, 256)
DEFAULT_MODULES = ("detection", "recognition", "landmark_3d_68")


def retry_det_sizes(det_size: int) -> tuple[int, ...]:
    """``det_size`` first, then each smaller default size once: 512 → (512, 384, 256)."""
    return (int(det_size), *(s for s in DEFAULT_DET_SIZES if s < int(det_size)))


@dataclass(frozen=True)
class DetectedFace(Face):
    """A ``Face`` with what InsightFace adds: its own head pose (project convention) and det size.

    ``embedding`` is the L2-normalised identity vector of the pack's recognition model.
    """

    pose: EulerAngles | None = field(default=None, compare=False)
    det_size: int | None = None


def insightface_pack_dir(insightface_root: str | os.PathLike, name: str = "antelopev2") -> Path:
    """``<root>/models/<name>``: where ComfyUI identity packs expect a pack (root = models/insightface)."""
    return Path(insightface_root) / "models" / name


def _expected_files_text() -> str:
    return "; ".join(f"{name}: {', '.join(files)}" for name, files in PACK_FILES.items())


def check_insightface_pack(folder: str | os.PathLike) -> list[Path]:
    """The pack's ``.onnx`` files, or a ``MissingModelError`` naming the folder, files and source."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MissingModelError(
            f"InsightFace model pack folder {folder} does not exist. Expected files ({_expected_files_text()}) "
            f"from {PACK_SOURCE}. FaithfulFaces never downloads models."
        )
    files = sorted(folder.glob("*.onnx"))
    if not files:
        nested = [p for p in folder.iterdir() if p.is_dir() and any(p.glob("*.onnx"))]
        hint = (
            f" The .onnx files are in the sub-folder {nested[0]} (a zip unpacked one level too deep): move them up "
            f"into {folder}."
            if nested
            else ""
        )
        raise MissingModelError(
            f"InsightFace model pack folder {folder} has no .onnx files.{hint} Expected files "
            f"({_expected_files_text()}) from {PACK_SOURCE}."
        )
    return files


def _to_face(raw, det_size: int) -> DetectedFace:
    kps = getattr(raw, "kps", None)
    embedding = getattr(raw, "normed_embedding", None)
    pose = getattr(raw, "pose", None)
    converted = None
    if pose is not None:
        pitch, yaw, roll = (
            float(v) for v in angles_from_insightface_pose(np.asarray(pose, dtype=np.float64))
        )
        converted = EulerAngles(pitch=pitch, yaw=yaw, roll=roll)
    return DetectedFace(
        box=tuple(float(v) for v in raw.bbox[:4]),
        score=float(raw.det_score),
        keypoints=None if kps is None else np.asarray(kps, dtype=np.float32),
        embedding=None if embedding is None else np.asarray(embedding, dtype=np.float32),
        pose=converted,
        det_size=det_size,
    )


class InsightFaceDetector:
    """``FaceDetector`` on a user-placed InsightFace pack (antelopev2, buffalo_l, or any folder).

    ``modules``: InsightFace tasks to run per face (``recognition`` gives ``embedding``,
    ``landmark_3d_68`` gives ``pose``); those the pack lacks are simply not run.
    """

    name = "insightface"

    def __init__(
        self,
        pack_dir: str | os.PathLike,
        *,
        det_sizes: Sequence[int] = DEFAULT_DET_SIZES,
        det_thresh: float = 0.5,
        device: str = "auto",
        modules: Sequence[str] = DEFAULT_MODULES,
    ):
        files = check_insightface_pack(pack_dir)
        self.pack_dir = Path(pack_dir).expanduser().resolve()
        if not det_sizes or any(int(s) <= 0 or int(s) % 32 for s in det_sizes):
            raise FaithfulFacesError(
                f"Detection sizes must be positive multiples of 32, got {list(det_sizes)}."
            )
        self.det_sizes = tuple(dict.fromkeys(int(s) for s in det_sizes))  # each size tried once, in order
        require("insightface", "Face detection with InsightFace")
        from insightface.app import FaceAnalysis

        providers = onnx_providers(device)
        try:
            self.app = FaceAnalysis(
                name=str(self.pack_dir),
                root=str(self.pack_dir.parent.parent),
                allowed_modules=list(modules),
                providers=providers,
            )
        except AssertionError:
            raise CheckpointError(
                f"InsightFace found no face-detection model in {self.pack_dir} (files: {[f.name for f in files]}). "
                f"A pack needs an SCRFD detector such as det_10g.onnx or scrfd_10g_bnkps.onnx; get the whole pack from "
                f"{PACK_SOURCE}."
            ) from None
        self.app.prepare(
            ctx_id=0 if providers[0] == CUDA_PROVIDER else -1,
            det_thresh=det_thresh,
            det_size=(self.det_sizes[0], self.det_sizes[0]),
        )
        self.tasks = tuple(self.app.models)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """``image`` ``[H, W, 3]`` uint8 RGB → faces, trying each ``det_size`` until one finds some."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FaithfulFacesError(
                f"Face detection needs an RGB image [H, W, 3] uint8, got shape {image.shape} {image.dtype}."
            )
        from insightface.app.common import Face as InsightFace

        bgr = np.ascontiguousarray(image[:, :, ::-1])
        for size in self.det_sizes:
            boxes, kpss = self.app.det_model.detect(bgr, input_size=(size, size), max_num=0)
            if len(boxes):
                break
        else:
            return []
        faces = []
        for i in range(len(boxes)):
            raw = InsightFace(bbox=boxes[i, :4], kps=None if kpss is None else kpss[i], det_score=boxes[i, 4])
            for task, model in self.app.models.items():
                if task != "detection":
                    model.get(bgr, raw)
            faces.append(_to_face(raw, size))
        return faces

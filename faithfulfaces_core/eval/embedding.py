"""Which identity vector a face gets, and how two of them compare.

InsightFace faces carry the pack's ArcFace embedding (``Face.embedding``, L2-normalised); dlib
faces carry the 128-D ResNet descriptor when the detector was built ``with_embeddings``,
otherwise the dlib recognition model is loaded here (the same backend's own model, named in
the report). An explicit ``embedder`` (``embed(image, face) -> [D]``) overrides both. A face
with no vector from any of these is an error naming the missing recognition model: never a
silent zero.

Comparison: cosine similarity for every backend; for dlib also the Euclidean distance, whose
published threshold (0.6) is what dlib's descriptor was trained for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import FaithfulFacesError
from ..pose.types import Face, FaceDetector

ARCFACE = "arcface"
DLIB = "dlib"
OTHER = "other"
DLIB_SAME_PERSON_DISTANCE = 0.6


class FaceEmbedder(Protocol):
    """Identity vectors for faces found by some detector."""

    name: str

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """``image`` ``[H, W, 3]`` uint8 RGB and one face in it → ``[D]`` float vector."""
        ...


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors ``[D]`` (in float64); a zero vector is an error."""
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise FaithfulFacesError(
            f"Identity vectors of different sizes ({a.size} and {b.size}) cannot be compared: the reference "
            "and the frames must be embedded by the same recognition model."
        )
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if not norm > 0.0 or not np.isfinite(norm):
        raise FaithfulFacesError(
            "The recognition model returned a zero or non-finite identity vector; check the recognition "
            "model file (it may be damaged) and that the face crop is not empty."
        )
    return float(np.dot(a, b) / norm)


def euclidean(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two vectors ``[D]`` (dlib's identity distance)."""
    return float(np.linalg.norm(np.asarray(a, np.float64).reshape(-1) - np.asarray(b, np.float64).reshape(-1)))


def _recognition_file(detector: Any) -> str | None:
    model = getattr(getattr(detector, "app", None), "models", {}).get("recognition")
    file = getattr(model, "model_file", None)
    return Path(file).name if file else None


class EmbeddingSource:
    """The identity vector of a detected face, for one detector (and optional embedder).

    ``name`` (e.g. ``"insightface:glintr100.onnx"``, ``"dlib-resnet128"``) and ``kind``
    (``"arcface"``, ``"dlib"`` or ``"other"``) go into every report; ``kind == "dlib"`` adds the
    dlib distance to the comparison.
    """

    def __init__(self, detector: FaceDetector, embedder: FaceEmbedder | None = None) -> None:
        self.detector = detector
        self.embedder = embedder
        detector_name = str(getattr(detector, "name", type(detector).__name__))
        self._dlib_detector = detector_name.startswith("dlib-")
        if embedder is not None:
            self.name = str(getattr(embedder, "name", type(embedder).__name__))
            self.kind = DLIB if self.name.startswith("dlib") else OTHER
        elif self._dlib_detector:
            self.name = "dlib-resnet128"
            self.kind = DLIB
        elif detector_name == "insightface":
            file = _recognition_file(detector)
            self.name = f"insightface:{file}" if file else "insightface"
            self.kind = ARCFACE
        else:
            self.name = f"{detector_name} (face embeddings)"
            self.kind = OTHER

    def _dlib_embedder(self) -> FaceEmbedder:
        if self.embedder is None:
            own = getattr(self.detector, "embedder", None)
            if own is not None:
                self.embedder = own
            else:
                from ..pose.dlib_backend import DlibFaceEmbedder

                self.embedder = DlibFaceEmbedder()
        return self.embedder

    def __call__(self, image: np.ndarray, face: Face) -> np.ndarray:
        """``image`` ``[H, W, 3]`` uint8 and a face found in it → ``[D]`` float32 identity vector."""
        if self.embedder is not None:
            vector = self.embedder.embed(image, face)
        elif face.embedding is not None:
            vector = face.embedding
        elif self._dlib_detector:
            vector = self._dlib_embedder().embed(image, face)
        else:
            raise FaithfulFacesError(
                f"The face detector '{getattr(self.detector, 'name', '?')}' gave no identity embedding, which "
                "FaceSim needs. For InsightFace, the pack must hold its recognition model (glintr100.onnx in "
                "antelopev2, w600k_r50.onnx in buffalo_l) and the detector must run the 'recognition' module; "
                "or choose the dlib backend (dlib-hog / dlib-cnn), which brings its own 128-D recognition model."
            )
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if not np.isfinite(vector).all():
            raise FaithfulFacesError(
                f"The recognition model '{self.name}' returned NaN or infinite values; the model file is damaged "
                "or of another kind: replace it."
            )
        return vector

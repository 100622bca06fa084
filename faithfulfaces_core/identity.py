"""One person or several: clustering identity vectors and measuring how far they spread.

Pure numpy/scipy on vectors any face-recognition model produced (dlib's 128-D descriptor,
InsightFace's ArcFace embedding), so dataset curation and reference-face picking share it.
Distances are Euclidean on the vectors as the model returns them; what counts as "the same
person" depends on the model (``SAME_PERSON_DISTANCE``).
"""

from __future__ import annotations

import numpy as np

from .errors import FaithfulFacesError

# dlib: its published threshold for the ResNet descriptor (same person iff distance < 0.6).
# arcface: InsightFace's L2-normalised embedding; distance 1.1 is cosine similarity 0.395, between
# the same-person (> 0.5) and different-person (< 0.2) similarities ArcFace models give.
SAME_PERSON_DISTANCE: dict[str, float] = {"dlib": 0.6, "arcface": 1.1}


def embedding_kind(detector_name: str) -> str | None:
    """``"dlib"`` / ``"arcface"`` for the built-in detectors' embeddings, else None (unknown model)."""
    name = detector_name.lower()
    if name.startswith("dlib"):
        return "dlib"
    if name.startswith("insightface"):
        return "arcface"
    return None


def _as_matrix(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or not np.isfinite(x).all():
        raise FaithfulFacesError(
            f"Identity vectors must be a finite [N, D] array with N >= 1; got shape {x.shape}. Check that "
            "every face has an embedding from the same recognition model."
        )
    return x


def identity_clusters(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """``[N, D]`` vectors → ``[N]`` int labels, 0 = the largest cluster, 1 = the next, ...

    Average-linkage agglomerative clustering cut at ``threshold``: two groups merge when their
    mean pairwise distance is below it, so one odd frame does not chain two people together
    (single linkage would) and a whole person is not split by a few noisy frames (complete
    linkage would). Ties in size go to the cluster seen first.
    """
    x = _as_matrix(embeddings)
    if len(x) == 1:
        return np.zeros(1, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    raw = fcluster(linkage(x, method="average", metric="euclidean"), t=threshold, criterion="distance")
    order = sorted(set(raw.tolist()), key=lambda c: (-int((raw == c).sum()), int(np.argmax(raw == c))))
    rank = {c: i for i, c in enumerate(order)}
    return np.array([rank[c] for c in raw.tolist()], dtype=np.int64)


def identity_spread(embeddings: np.ndarray) -> float:
    """The largest distance of a vector ``[N, D]`` to their element-wise median (robust centre)."""
    x = _as_matrix(embeddings)
    return float(np.linalg.norm(x - np.median(x, axis=0), axis=1).max())

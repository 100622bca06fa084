"""Which faces show the same person: identity distances, the backend's threshold, the majority.

Identity vectors come from the detector's recognition model (``eval.embedding.EmbeddingSource``).
dlib's 128-D descriptor is compared by Euclidean distance with dlib's published threshold 0.6;
ArcFace vectors (InsightFace) by cosine distance ``1 − cos`` with InsightFace's usual verification
threshold ``cos ≥ 0.3`` (distance 0.7). The majority identity is the largest group of faces
around one medoid: the face with the most others within the threshold (ties: the smaller sum of
distances, then the earlier face), and every face within the threshold of it. Pure numpy and
deterministic for the same vectors in the same order.
"""

from __future__ import annotations

import numpy as np

from .errors import FaithfulFacesError

EUCLIDEAN = "euclidean"
COSINE = "cosine"
SAME_PERSON = {"dlib": (EUCLIDEAN, 0.6), "arcface": (COSINE, 0.7), "other": (COSINE, 0.5)}


def distance_matrix(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Pairwise identity distances ``[N, N]`` (float64) of ``vectors`` ``[N, D]``."""
    v = np.asarray(vectors, np.float64)
    if v.ndim != 2 or v.shape[0] == 0:
        raise FaithfulFacesError(f"Identity vectors must be a non-empty [N, D] array, got shape {v.shape}.")
    if metric == EUCLIDEAN:
        return np.sqrt(np.maximum(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1), 0.0))
    if metric == COSINE:
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        if not (norms > 0).all():
            raise FaithfulFacesError("A face has a zero identity vector; check the recognition model file.")
        unit = v / norms
        return np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    raise FaithfulFacesError(f"Unknown identity metric '{metric}': use '{EUCLIDEAN}' or '{COSINE}'.")


def same_person_rule(kind: str) -> tuple[str, float]:
    """``(metric, threshold)`` of an embedding kind (``"dlib"``, ``"arcface"``, ``"other"``)."""
    if kind not in SAME_PERSON:
        raise FaithfulFacesError(f"Unknown embedding kind '{kind}': use one of {', '.join(SAME_PERSON)}.")
    return SAME_PERSON[kind]


def majority_identity(vectors: np.ndarray, metric: str, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(members [N] bool, distance to the medoid [N])`` of the largest same-person group."""
    dist = distance_matrix(vectors, metric)
    close = dist <= threshold
    neighbours = close.sum(1)
    order = np.lexsort((np.arange(len(dist)), dist.sum(1), -neighbours))
    medoid = int(order[0])
    return close[medoid].copy(), dist[medoid].copy()

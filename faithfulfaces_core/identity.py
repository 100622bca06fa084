"""Which faces show the same person: identity distances, thresholds, clusters and the majority.

Pure numpy/scipy on vectors any face-recognition model produced (dlib's 128-D descriptor,
InsightFace's ArcFace embedding), shared by dataset curation (clusters and spread of a video's
faces) and reference-face picking (the majority identity of a photo set).

- dlib's descriptor is compared by Euclidean distance with dlib's published threshold 0.6.
- Curation compares ArcFace vectors by Euclidean distance (1.1, cosine 0.395); the picker by
  cosine distance ``1 − cos`` with InsightFace's usual verification threshold ``cos ≥ 0.3``.
- The majority identity is the largest group of faces around one medoid: the face with the
  most others within the threshold (ties: the smaller sum of distances, then the earlier face),
  and every face within the threshold of it. Deterministic for the same vectors in the same order.
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

"""FaceSim summaries over the sampled frames: mean, minimum, yaw bins, dlib distance statistics.

Inputs are per-frame arrays ``[F]`` over the *sampled* frames, NaN where a frame has no face.
The mean and minimum are over the frames with a face (the field's convention); frames without
one are counted, and ``mean_counting_misses`` scores them 0 for a stricter number. The yaw bins
are what "pose-faithful" means in numbers: similarity for |yaw| < 30°, 30° ≤ |yaw| ≤ 60° and
|yaw| > 60°. An empty bin or a video without faces has ``None`` (never NaN).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .embedding import DLIB_SAME_PERSON_DISTANCE

# (key, label, low, high): |yaw| < 30, 30 <= |yaw| <= 60, |yaw| > 60
YAW_BINS: tuple[tuple[str, str, float, float], ...] = (
    ("yaw_under_30", "|yaw| < 30°", 0.0, 30.0),
    ("yaw_30_60", "30° ≤ |yaw| ≤ 60°", 30.0, 60.0),
    ("yaw_over_60", "|yaw| > 60°", 60.0, math.inf),
)


@dataclass(frozen=True)
class YawBin:
    key: str
    label: str
    low: float
    high: float
    frames: int
    mean: float | None


@dataclass(frozen=True)
class DistanceSummary:
    """dlib Euclidean distances over the face frames; ``same_person`` counts distance < threshold."""

    mean: float | None
    max: float | None
    same_person_frames: int
    same_person_rate: float | None
    threshold: float = DLIB_SAME_PERSON_DISTANCE


@dataclass(frozen=True)
class Summary:
    frames_sampled: int
    face_frames: int
    no_face_frames: int
    multi_face_frames: int
    padded_frames: int
    mean: float | None
    min: float | None
    max: float | None
    mean_counting_misses: float | None
    yaw_bins: tuple[YawBin, ...]
    distance: DistanceSummary | None = None

    def bin(self, key: str) -> YawBin:
        for b in self.yaw_bins:
            if b.key == key:
                return b
        raise KeyError(f"no yaw bin {key!r}; bins: {[b.key for b in self.yaw_bins]}")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["yaw_bins"] = {b.key: {"label": b.label, "low": b.low, "high": None if math.isinf(b.high) else b.high,
                                   "frames": b.frames, "mean": b.mean} for b in self.yaw_bins}
        return out


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def yaw_bin_index(yaw: np.ndarray) -> np.ndarray:
    """``[F]`` yaw degrees → ``[F]`` bin index 0, 1, 2 (by |yaw|; 30 and 60 fall in the middle bin)."""
    magnitude = np.abs(np.asarray(yaw, np.float64))
    return np.where(magnitude < 30.0, 0, np.where(magnitude <= 60.0, 1, 2))


def summarize(
    similarity: np.ndarray,
    yaw: np.ndarray,
    faces: np.ndarray,
    padded: np.ndarray,
    distance: np.ndarray | None = None,
) -> Summary:
    """Summaries of ``F`` sampled frames.

    ``similarity`` ``[F]``: clipped cosine, NaN where no face; ``yaw`` ``[F]`` degrees (ignored
    where no face); ``faces`` ``[F]`` faces found per frame; ``padded`` ``[F]`` bool, found only
    after padding; ``distance`` ``[F]`` dlib distances (NaN where no face) or ``None``.
    """
    similarity = np.asarray(similarity, np.float64).reshape(-1)
    yaw = np.asarray(yaw, np.float64).reshape(-1)
    faces = np.asarray(faces).reshape(-1)
    padded = np.asarray(padded, bool).reshape(-1)
    if not (len(similarity) == len(yaw) == len(faces) == len(padded)):
        raise ValueError("similarity, yaw, faces and padded need one entry per sampled frame")
    has_face = ~np.isnan(similarity)
    if not np.array_equal(has_face, faces > 0):
        raise ValueError("a frame has a similarity exactly when it has a face")
    scored = similarity[has_face]
    bins_of = yaw_bin_index(yaw[has_face])
    bins = tuple(
        YawBin(key, label, low, high, int((bins_of == i).sum()), _mean(scored[bins_of == i]))
        for i, (key, label, low, high) in enumerate(YAW_BINS)
    )
    dist = None
    if distance is not None:
        d = np.asarray(distance, np.float64).reshape(-1)[has_face]
        same = int((d < DLIB_SAME_PERSON_DISTANCE).sum())
        dist = DistanceSummary(
            mean=_mean(d),
            max=float(d.max()) if d.size else None,
            same_person_frames=same,
            same_person_rate=same / d.size if d.size else None,
        )
    frames = len(similarity)
    return Summary(
        frames_sampled=frames,
        face_frames=int(has_face.sum()),
        no_face_frames=int((~has_face).sum()),
        multi_face_frames=int((faces > 1).sum()),
        padded_frames=int((padded & has_face).sum()),
        mean=_mean(scored),
        min=float(scored.min()) if scored.size else None,
        max=float(scored.max()) if scored.size else None,
        mean_counting_misses=float(np.where(has_face, similarity, 0.0).mean()) if frames else None,
        yaw_bins=bins,
        distance=dist,
    )

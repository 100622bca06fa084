"""Pose variation of a video: Δ = Σ over pitch, yaw, roll of each angle's range (degrees).

Angles are periodic, so "max − min" is taken on the circle: the range of a set of angles is
the length of the **smallest arc containing all of them**, i.e. 360° minus the largest gap
between neighbouring angles around the circle. Yaw samples at +179° and −179° therefore span
2°, not 358°. When the largest gap is the one that wraps past ±180° (always so when the angles
span less than 180° without crossing ±180°, e.g. pitch in [−90°, 90°]), the range is computed exactly as ``max − min`` of the angles taken in [−180°, 180°), so the
circular and the naive range agree bit for bit there. Ties between gaps go to that wrap gap.
"""

from __future__ import annotations

import numpy as np


def circular_range(angles: np.ndarray) -> float:
    """Smallest arc (degrees, 0..360) containing every angle of ``angles`` [N]; 0 for N ≤ 1."""
    a = np.asarray(angles, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"angles must be finite, got {a[~np.isfinite(a)][:3]}")
    if a.size <= 1:
        return 0.0
    s = np.sort((a + 180.0) % 360.0 - 180.0)
    linear = float(s[-1] - s[0])
    wrap_gap = 360.0 - linear
    gaps = np.diff(s)
    i = int(np.argmax(gaps))
    if gaps[i] <= wrap_gap:
        return linear
    return float(360.0 - gaps[i])


def pose_ranges(angles: np.ndarray) -> np.ndarray:
    """Per-axis circular ranges ``[3]`` (pitch, yaw, roll) of ``angles`` ``[N, 3]`` degrees."""
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim != 2 or angles.shape[1] != 3:
        raise ValueError(f"angles must be [N, 3] (pitch, yaw, roll), got shape {angles.shape}")
    return np.array([circular_range(angles[:, k]) for k in range(3)], dtype=np.float64)


def pose_variation(angles: np.ndarray) -> float:
    """Δ = Σ_{pitch, yaw, roll} range, for ``angles`` ``[N, 3]`` degrees (0 for N ≤ 1)."""
    return float(pose_ranges(angles).sum())

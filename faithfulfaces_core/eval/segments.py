"""Identity over time: FaceSim per segment of a long video, and its plot.

A long video made in context windows (``wan/windows.py``) can drift from one window to the
next. The video's frames are cut into segments the way the windows were laid
(``static_windows``: ``length`` frames each, a new one every ``length − overlap`` frames, the
last one moved back to end on the last frame), and each segment gets the mean and minimum
similarity of its sampled face frames. ``drift`` = last segment's mean − first segment's mean
(negative: the identity fades). The plot shows the per-frame similarity with each segment's
mean as a bar over its frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import FaithfulFacesError
from ..wan.windows import static_windows
from .facesim import VideoScore

DEFAULT_SEGMENT = 81  # Wan2.1's frame count: one context window


@dataclass(frozen=True)
class Segment:
    """Frames ``start``–``end`` (inclusive) and the similarity of the sampled face frames in them."""

    start: int
    end: int
    frames_sampled: int
    face_frames: int
    mean: float | None
    min: float | None


def segments(score: VideoScore, length: int = DEFAULT_SEGMENT, overlap: int = 0) -> list[Segment]:
    """``score``'s frames in segments of ``length`` frames overlapping by ``overlap``."""
    if length < 1 or not 0 <= overlap < length:
        raise FaithfulFacesError(
            f"Segments of {length} frames with overlap {overlap} are not possible: use a length ≥ 1 and an overlap "
            "≥ 0 shorter than it (e.g. 81 and 16, the context windows of the video)."
        )
    index = np.array([f.index for f in score.frames])
    similarity = score.series("similarity")
    out = []
    for window in static_windows(score.frames_total, length, overlap):
        inside = (index >= window[0]) & (index <= window[-1])
        faces = similarity[inside & ~np.isnan(similarity)]
        out.append(Segment(window[0], window[-1], int(inside.sum()), int(faces.size),
                           float(faces.mean()) if faces.size else None, float(faces.min()) if faces.size else None))
    return out


def drift(parts: list[Segment]) -> float | None:
    """Last segment's mean − first segment's mean (None when either has no face)."""
    if len(parts) < 2 or parts[0].mean is None or parts[-1].mean is None:
        return None
    return parts[-1].mean - parts[0].mean


def segments_dict(parts: list[Segment], length: int, overlap: int) -> dict:
    return {"length": length, "overlap": overlap, "drift": drift(parts), "segments": [asdict(p) for p in parts]}


def segment_report(score: VideoScore, length: int = DEFAULT_SEGMENT, overlap: int = 16) -> tuple[dict | None, list[Segment]]:
    """(the report's ``segments`` entry, the segments) — the entry is None for a video of one segment."""
    parts = segments(score, length, overlap)
    return (segments_dict(parts, length, overlap) if len(parts) > 1 else None), parts


def segments_text(entry: dict) -> str:
    """One line for people: each segment's mean and the drift."""
    means = ", ".join(f"{p['start']}–{p['end']}: " + ("–" if p["mean"] is None else f"{p['mean']:.4f}")
                      for p in entry["segments"])
    drift_value = "–" if entry["drift"] is None else f"{entry['drift']:+.4f}"
    return f"segments of {entry['length']} frames (overlap {entry['overlap']}): {means}; drift {drift_value}"


def plot_segments(score: VideoScore, parts: list[Segment], *, title: str | None = None) -> np.ndarray:
    """Per-frame similarity and each segment's mean over its frames → ``[H, W, 3]`` uint8."""
    from .plot import _axes, _figure, _fmt, _render

    fig, top, bottom = _figure()
    x = np.array([f.index for f in score.frames], dtype=np.float64)
    top.plot(x, score.series("similarity"), marker="o", markersize=3, linewidth=1.0, color="#1f5fa8",
             label="similarity per frame")
    for i, part in enumerate(parts):
        color = "#c0392b" if i % 2 else "#e67e22"
        if part.mean is not None:
            top.hlines(part.mean, part.start, part.end, colors=color, linewidth=3,
                       label=f"segment {i + 1}: {part.start}–{part.end}, mean {part.mean:.3f}")
        bottom.axvspan(part.start, part.end, color=color, alpha=0.12)
    bottom.plot(x, score.series("yaw"), marker=".", linewidth=1.0, color="#c0392b", label="yaw")
    _axes(top, bottom, degrees="yaw (degrees)", frames="frame (shaded: segments)", legends=(top, bottom))
    fig.suptitle(title or f"{score.name}: identity over time — drift (last − first segment) {_fmt(drift(parts))}",
                 fontsize=10)
    return _render(fig)

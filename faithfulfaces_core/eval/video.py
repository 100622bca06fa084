"""The sampled frames of a video file, decoded with PyAV (the dataset pipeline's streaming decoder).

Uniform sampling needs the frame count first; container headers are not trusted for it, so a
first pass counts the decoded frames (only frame 0 is converted) and a second pass keeps the
sampled ones. With ``count=None`` (all frames) one pass suffices.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from ..dataset.decode import FrameSampling, VideoReadError, VideoStream, warn_if_truncated
from ..errors import FaithfulFacesError
from .sampling import uniform_indices

_COUNT_ONLY = 1 << 62  # a stride no video reaches: decode everything, convert only frame 0


@dataclass(frozen=True)
class SampledVideo:
    """``images`` ``F`` × ``[H, W, 3]`` uint8 RGB at ``indices`` (ordinals) and ``times`` (seconds)."""

    path: Path
    frames_total: int
    fps: float | None
    indices: list[int]
    times: list[float]
    images: list[np.ndarray]
    frames_declared: int = 0  # what the container header says (0 = unknown); more than frames_total = truncated


def _check(path: Path) -> None:
    if not path.is_file():
        raise FaithfulFacesError(f"Video {path} does not exist (or is not a file); check the path.")


def count_frames(path: str | PathLike) -> int:
    """Number of decodable frames of the first video stream of ``path``."""
    path = Path(path)
    _check(path)
    with VideoStream(path, FrameSampling(every=_COUNT_ONLY)) as stream:
        for _ in stream:
            pass
        return stream.frames_decoded


def read_sampled_frames(path: str | PathLike, count: int | None) -> SampledVideo:
    """``count`` frames spread uniformly over the video at ``path`` (``None``: every frame)."""
    path = Path(path)
    _check(path)
    total = None if count is None else count_frames(path)
    wanted = None if total is None else set(uniform_indices(total, count))
    indices, times, images = [], [], []
    with VideoStream(path, FrameSampling(every=1)) as stream:
        fps, declared = stream.info.fps, stream.info.frames
        for frame in stream:
            if wanted is None or frame.index in wanted:
                indices.append(frame.index)
                times.append(frame.time)
                images.append(frame.image)
        decoded = stream.frames_decoded
    if total is not None and decoded != total:
        raise VideoReadError(f"Video {path} gave {total} frames on the first pass and {decoded} on the second; "
                             "it changed while being read. Evaluate a finished file.")
    if not images:
        raise VideoReadError(f"Video {path} has no decodable frames; re-encode it or remove it from the input.")
    warn_if_truncated(path, decoded, declared)
    return SampledVideo(path, decoded, fps, indices, times, images, declared)

"""Streaming video decoding with PyAV: one frame in memory at a time, sampled at a set rate.

A frame's *index* is its ordinal among the decoded frames of the first video stream (0-based,
in the order PyAV outputs them, i.e. presentation order). The trainer uses the same ordinal to
find a frame again, so it must not depend on the sampling.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from ..deps import require
from ..errors import FaithfulFacesError


class VideoReadError(FaithfulFacesError):
    """A video that cannot be opened or decoded (corrupt, truncated, not a video)."""


@dataclass(frozen=True)
class FrameSampling:
    """Which frames to look at: every ``every``-th frame, or ``fps`` frames per second of video.

    With ``fps`` the frame kept for each time-grid point ``k / fps`` is the first frame at or
    after it (frame times are relative to the first frame), so a 25 fps video sampled at 5 fps
    keeps frames 0, 5, 10, ...; a video slower than ``fps`` keeps every frame.
    """

    every: int | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        if (self.every is None) == (self.fps is None):
            raise FaithfulFacesError(
                f"Frame sampling needs exactly one of 'every' (every N-th frame) or 'fps' (frames per "
                f"second), got every={self.every}, fps={self.fps}."
            )
        if self.every is not None and (not isinstance(self.every, int) or self.every < 1):
            raise FaithfulFacesError(f"Frame sampling 'every' must be an integer >= 1, got {self.every!r}.")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise FaithfulFacesError(f"Frame sampling 'fps' must be a positive number, got {self.fps!r}.")

    def as_dict(self) -> dict:
        return {"every": self.every, "fps": self.fps}


class TruncatedVideoWarning(UserWarning):
    """A video decoded fewer frames than its container declares (a cut-off download or copy)."""


def warn_if_truncated(path: str | PathLike, decoded: int, declared: int) -> bool:
    """Warn (and return True) when ``decoded`` frames fall short of the ``declared`` count (0 = unknown)."""
    if declared <= 0 or decoded >= declared:
        return False
    warnings.warn(TruncatedVideoWarning(
        f"Video {path} is truncated: only {decoded} of the {declared} frames its header declares could be "
        "decoded, and only those are used. Download or copy the file again if the rest matters."
    ), stacklevel=2)
    return True


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the first video stream (``frames`` may be 0 = unknown)."""

    width: int
    height: int
    fps: float | None
    frames: int
    codec: str


@dataclass(frozen=True)
class SampledFrame:
    index: int
    time: float  # seconds from the first frame
    image: np.ndarray  # [H, W, 3] uint8 RGB


def _av():
    return require("av", "Video decoding for the dataset builder")


def _fail(path: Path, exc: BaseException, when: str) -> VideoReadError:
    return VideoReadError(
        f"Cannot {when} video {path}: {exc}. The file is corrupt, truncated or not a video; "
        "re-encode it (e.g. ffmpeg -i in.mp4 -c:v libx264 out.mp4) or remove it from the input."
    )


class VideoStream:
    """Context manager over one video file: ``info`` and an iterator of sampled RGB frames.

    Decoding errors (PyAV / FFmpeg) surface as ``VideoReadError`` naming the file.
    """

    def __init__(
        self, path: str | PathLike, sampling: FrameSampling, frames: tuple[int, int] | None = None
    ) -> None:
        self.path = Path(path)
        self.sampling = sampling
        self.frames = frames  # (start, end) ordinals of one shot, end exclusive; None = all
        self.frames_decoded = 0
        self._container = None

    def __enter__(self) -> VideoStream:
        av = _av()
        try:
            self._container = av.open(str(self.path), "r")
            streams = self._container.streams.video
            if not streams:
                raise VideoReadError(f"it has no video stream (streams: {list(self._container.streams)})")
            self._stream = streams[0]
            self._stream.thread_type = "AUTO"
            ctx = self._stream.codec_context
            rate = self._stream.average_rate
            self.info = VideoInfo(
                width=int(ctx.width or 0),
                height=int(ctx.height or 0),
                fps=float(rate) if rate else None,
                frames=int(self._stream.frames or 0),
                codec=str(ctx.name),
            )
        except BaseException as exc:
            self.close()
            if isinstance(exc, (av.FFmpegError, VideoReadError, OSError, UnicodeDecodeError)):
                raise _fail(self.path, exc, "open") from exc
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _time(self, frame, index: int, start: float | None) -> tuple[float, float | None]:
        if frame.pts is not None and frame.time_base is not None:
            t = float(frame.pts * frame.time_base)
        elif self.info.fps:
            t = index / self.info.fps
        else:
            t = float(index)
        if start is None:
            start = t
        return t - start, start

    def __iter__(self) -> Iterator[SampledFrame]:
        if self._container is None:
            raise RuntimeError("use VideoStream as a context manager")
        av = _av()
        every, fps = self.sampling.every, self.sampling.fps
        next_time = 0.0
        start: float | None = None
        eps = 1e-6
        decoder = self._container.decode(self._stream)
        index = -1
        while True:
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except (av.FFmpegError, OSError) as exc:
                raise _fail(self.path, exc, f"decode frame {index + 1} of") from exc
            index += 1
            self.frames_decoded = index + 1
            if self.frames is not None and index < self.frames[0]:
                continue
            if self.frames is not None and index >= self.frames[1]:
                break
            t, start = self._time(frame, index, start)
            offset = 0 if self.frames is None else self.frames[0]
            if every is not None:
                keep = (index - offset) % every == 0
            else:
                keep = t >= next_time - eps
                if keep:
                    next_time = (math.floor(t * fps + eps) + 1) / fps
            if keep:
                yield SampledFrame(index=index, time=t, image=frame.to_ndarray(format="rgb24"))


def read_frames(path: str | PathLike, indices: Sequence[int]) -> list[np.ndarray]:
    """The RGB frames at ``indices`` (ordinals, any order, duplicates allowed), decoding one pass.

    Stops decoding after the largest index; raises ``VideoReadError`` if the video is shorter.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return []
    found: dict[int, np.ndarray] = {}
    with VideoStream(path, FrameSampling(every=1)) as stream:
        for frame in stream:
            if frame.index in wanted:
                found[frame.index] = frame.image
            if frame.index >= wanted[-1]:
                break
    missing = [i for i in wanted if i not in found]
    if missing:
        raise VideoReadError(
            f"Video {path} has {stream.frames_decoded} frames, but frame {missing[0]} was asked for; "
            "the file changed since the manifest was written, rebuild the dataset entry."
        )
    return [found[int(i)] for i in indices]

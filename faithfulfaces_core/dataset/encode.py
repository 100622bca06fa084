"""Frames → a video file with PyAV (test corpora, synthetic datasets), streamed frame by frame."""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from pathlib import Path

import numpy as np

from ..deps import require


def write_video(
    path: str | PathLike, frames: Iterable[np.ndarray], *, fps: int = 8, crf: int = 0, codec: str = "libx264"
) -> Path:
    """Encode ``[H, W, 3]`` uint8 RGB frames (all one size) into ``path``; returns ``path``.

    H.264 at CRF 0 (the default) is near-lossless, so pixel values survive within ±1.
    """
    av = require("av", "Writing videos")
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = None
        for frame in frames:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            if stream is None:
                stream = container.add_stream(codec, rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    stream.options = {"crf": str(crf), "preset": "ultrafast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"no frames to write to {path}")
        for packet in stream.encode():
            container.mux(packet)
    return path

"""Frames → a video file with PyAV (test corpora, synthetic datasets), streamed frame by frame."""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from pathlib import Path

import numpy as np

from ..deps import require


def write_video(
    path: str | PathLike,
    frames: Iterable[np.ndarray],
    *,
    fps: int = 8,
    crf: int = 0,
    codec: str = "libx264",
    lossless: bool = False,
) -> Path:
    """Encode ``[H, W, 3]`` uint8 RGB frames (all one size) into ``path``; returns ``path``.

    Default: H.264 in ``yuv420p`` (what every player reads). CRF 0 makes the *YUV* coding lossless,
    but the RGB → YUV conversion rounds and 4:2:0 keeps one colour sample per 2×2 pixels: gray
    levels come back within ±1, a smooth colour gradient within about ±6, and pixel-level colour
    noise by up to ~200. ``lossless=True`` encodes RGB itself (``libx264rgb``, ``rgb24``, CRF 0):
    the decoded frames equal the input exactly (fewer players read it).
    """
    av = require("av", "Writing videos")
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = None
        for frame in frames:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            if stream is None:
                stream = container.add_stream("libx264rgb" if lossless else codec, rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "rgb24" if lossless else "yuv420p"
                if lossless:
                    stream.options = {"crf": "0", "preset": "ultrafast"}
                elif codec == "libx264":
                    stream.options = {"crf": str(crf), "preset": "ultrafast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"no frames to write to {path}")
        for packet in stream.encode():
            container.mux(packet)
    return path

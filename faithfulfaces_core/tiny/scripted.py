"""Scripted face detector and pose estimator for tests: their output is a table keyed by gray level.

Test videos are sequences of solid gray frames (``write_gray_video``), one gray level per
frame, so a model can read which frame it sees from the pixels, even after lossy encoding
(H.264 moves a solid level by at most ±1). The detector maps a frame's level to scripted face
boxes; the estimator maps a crop's level (a crop of a solid frame has the same level) to
scripted Euler angles. Both are plain picklable classes in an importable module, so worker
processes started with ``spawn`` can rebuild them, and they satisfy the ``FaceDetector`` /
``PoseEstimator`` protocols of ``faithfulfaces_core.pose.types``.

Levels a script does not know raise ``LookupError``: a test that shows a model an unplanned
frame is a broken test, never a silent "no face".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike

import numpy as np

from ..pose.types import Face


def gray_level(image: np.ndarray) -> int:
    """The gray level of a solid image ``[H, W, 3]`` uint8: the median of its central quarter.

    The centre is used so a crop padded at the image border still reads its frame's level.
    """
    image = np.asarray(image)
    h, w = image.shape[:2]
    centre = image[h // 4 : h - h // 4 or h, w // 4 : w - w // 4 or w]
    return int(round(float(np.median(centre))))


def _int_keys(table: Mapping) -> dict[int, object]:
    return {int(k): v for k, v in table.items()}


def _lookup(table: dict[int, object], level: int, tolerance: int, what: str) -> object:
    hits = [k for k in table if abs(k - level) <= tolerance]
    if len(hits) != 1:
        known = ", ".join(str(k) for k in sorted(table))
        found = "no entry" if not hits else f"several entries {sorted(hits)}"
        raise LookupError(
            f"{what}: gray level {level} matches {found} within ±{tolerance} (script levels: {known}). "
            "Space the script's levels more than twice the tolerance apart and only show it scripted frames."
        )
    return table[hits[0]]


class ScriptedDetector:
    """``FaceDetector`` whose faces per frame come from ``faces[level]`` (boxes ``(x1, y1, x2, y2)``,
    or ``(x1, y1, x2, y2, score)``; the score is 1 otherwise).

    ``faces`` maps gray level → list of boxes; keys may be strings (JSON), they are read as ints.
    ``embeddings`` (optional) maps gray level → the identity vector every face of that frame gets.
    """

    def __init__(
        self,
        faces: Mapping[int | str, Sequence[Sequence[float]]],
        *,
        embeddings: Mapping[int | str, Sequence[float]] | None = None,
        tolerance: int = 3,
        name: str = "scripted-detector",
        delay: float = 0.0,
    ) -> None:
        self.faces = {
            k: [tuple(float(c) for c in box) for box in boxes] for k, boxes in _int_keys(faces).items()
        }
        for level, boxes in self.faces.items():
            for box in boxes:
                if len(box) not in (4, 5):
                    raise ValueError(
                        f"ScriptedDetector: level {level} has box {box}; boxes are (x1, y1, x2, y2[, score])."
                    )
        self.embeddings = (
            None if embeddings is None else {k: np.asarray(v, np.float32) for k, v in _int_keys(embeddings).items()}
        )
        self.tolerance = tolerance
        self.name = name
        self.delay = float(delay)  # seconds per call: keeps work in flight for kill/interrupt tests
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Face]:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        level = gray_level(image)
        boxes = _lookup(self.faces, level, self.tolerance, self.name)
        vector = None if self.embeddings is None else _lookup(self.embeddings, level, self.tolerance, self.name)
        return [
            Face(box=tuple(box[:4]), score=box[4] if len(box) == 5 else 1.0, embedding=vector)  # type: ignore[arg-type]
            for box in boxes
        ]


class ScriptedPoseEstimator:
    """``PoseEstimator`` returning ``angles[level]`` = (pitch, yaw, roll) degrees for each crop."""

    def __init__(
        self,
        angles: Mapping[int | str, Sequence[float]],
        *,
        tolerance: int = 3,
        input_size: int = 32,
        name: str = "scripted-pose",
    ) -> None:
        self.angles = {k: tuple(float(a) for a in v) for k, v in _int_keys(angles).items()}
        for level, triple in self.angles.items():
            if len(triple) != 3:
                raise ValueError(
                    f"ScriptedPoseEstimator: level {level} has {triple}; give (pitch, yaw, roll)."
                )
        self.tolerance = tolerance
        self.input_size = input_size
        self.name = name
        self.batches: list[int] = []

    def estimate(
        self, crops: np.ndarray, faces: list[Face], image_sizes: list[tuple[int, int]]
    ) -> np.ndarray:
        """``crops`` [B, S, S, 3] uint8 → ``[B, 3]`` float32 degrees."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or len(crops) != len(faces) or len(faces) != len(image_sizes):
            raise ValueError(
                f"{self.name}: got crops {crops.shape}, {len(faces)} faces and {len(image_sizes)} sizes; "
                "expected [B, S, S, 3] with B faces and B sizes."
            )
        self.batches.append(len(crops))
        rows = [_lookup(self.angles, gray_level(c), self.tolerance, self.name) for c in crops]
        return np.asarray(rows, dtype=np.float32).reshape(len(crops), 3)


def write_gray_video(
    path: str | PathLike,
    levels: Iterable[int],
    *,
    size: int | tuple[int, int] = 64,
    fps: int = 8,
    codec: str = "libx264",
) -> None:
    """Encode one solid gray frame per level (0..255) into ``path`` with PyAV (streamed).

    ``size`` is the side (or ``(width, height)``); H.264 (yuv420p, CRF 0) keeps gray levels within ±1 (``write_video``).
    """
    from ..dataset.encode import write_video

    width, height = (size, size) if isinstance(size, int) else size

    def frames():
        for level in levels:
            if not 0 <= int(level) <= 255:
                raise ValueError(f"gray level {level} is outside 0..255")
            yield np.full((height, width, 3), int(level), np.uint8)

    write_video(path, frames(), fps=fps, codec=codec)


class ScriptedEmbedder:
    """Face embedder (``embed(image, face)``) returning scripted identity vectors by gray level.

    ``embeddings[level]`` is one vector for every face in such a frame, or a mapping from a box
    ``(x1, y1, x2, y2)`` (as ``ScriptedDetector`` scripts it) to that face's vector. A ``name``
    starting with ``"dlib"`` makes the evaluation treat the vectors as dlib descriptors.
    """

    def __init__(
        self,
        embeddings: Mapping[int | str, Sequence[float] | Mapping[Sequence[float], Sequence[float]]],
        *,
        tolerance: int = 3,
        name: str = "scripted-embedder",
    ) -> None:
        self.embeddings: dict[int, object] = {}
        for level, value in _int_keys(embeddings).items():
            if isinstance(value, Mapping):
                self.embeddings[level] = {
                    tuple(float(c) for c in box): np.asarray(v, np.float32) for box, v in value.items()
                }
            else:
                self.embeddings[level] = np.asarray(value, np.float32)
        self.tolerance = tolerance
        self.name = name
        self.calls = 0

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        self.calls += 1
        value = _lookup(self.embeddings, gray_level(image), self.tolerance, self.name)
        if isinstance(value, dict):
            box = tuple(float(c) for c in face.box)
            if box not in value:
                raise LookupError(f"{self.name}: no scripted embedding for box {box} (boxes: {list(value)}).")
            value = value[box]
        return np.array(value, dtype=np.float32, copy=True)

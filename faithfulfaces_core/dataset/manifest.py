"""The dataset manifest: one JSON line per kept video, and the loader the trainer uses.

Layout of a dataset directory::

    manifest.jsonl      one VideoRecord per line (kept videos), sorted by key once a run completes
    crops/<slug>/f<frame:06d>.png   face crops (box ×1.5, clipped, Resize + CenterCrop to the estimator input)
    done.jsonl          one DoneRecord per processed video (kept, rejected, error): resume + report
    build.json          the settings and backends the directory was built with
    report.json, delta_histogram.png   the last run's report

A record's ``frame_indices``, ``crops``, ``boxes``, ``crop_boxes`` and ``angles`` are aligned:
entry *i* of each belongs to sampled frame ``frame_indices[i]`` (frames without a face have no
entry). ``crops`` are relative to the dataset directory.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import FaithfulFacesError
from . import journal
from .variation import pose_ranges

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.jsonl"
DONE_NAME = "done.jsonl"
BUILD_NAME = "build.json"
CROPS_DIR = "crops"


class ManifestError(FaithfulFacesError):
    """A manifest line that is not a valid record; ``line`` is its 1-based number."""

    def __init__(self, message: str, *, path: Path | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class ManifestWarning(UserWarning):
    """A bad manifest line that was skipped (``load_manifest(..., on_error="skip")``)."""


class Backends(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: str
    pose: str
    captioner: str


class VideoRecord(BaseModel):
    """One training sample: a video, its prompt, its face crops and their Euler angles (degrees)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int
    key: str = Field(min_length=1)
    video: str  # the video's absolute path on the machine that built the record
    prompt: str = Field(min_length=1)
    frame_indices: list[int]
    crops: list[str]
    angles: list[tuple[float, float, float]]  # (pitch, yaw, roll) per crop
    boxes: list[tuple[float, float, float, float]]  # detected face box in frame pixels
    crop_boxes: list[tuple[int, int, int, int]]  # enlarged, clipped box the crop was cut from
    ranges: tuple[float, float, float]  # circular range of pitch, yaw, roll
    delta: float
    frames_decoded: int = Field(ge=1)
    frames_sampled: int = Field(ge=1)
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    fps: float | None
    backends: Backends
    thresholds: dict[str, float | None] = Field(default_factory=dict)  # what counted as a face / a person
    identity_spread: float | None = None  # max distance of a crop's identity vector to their median
    identity_dropped: list[int] = Field(default_factory=list)  # frames of other people left out
    frame_range: tuple[int, int] | None = None  # the shot (start, end exclusive) this sample is; None = all

    @model_validator(mode="after")
    def _consistent(self) -> VideoRecord:
        if self.format != FORMAT_VERSION:
            raise ValueError(
                f"format {self.format} is not the format this code reads ({FORMAT_VERSION}); rebuild the "
                "dataset with this version of training/build_dataset.py"
            )
        n = len(self.frame_indices)
        if n == 0:
            raise ValueError("a kept video needs at least one face crop")
        lengths = {
            "crops": len(self.crops),
            "angles": len(self.angles),
            "boxes": len(self.boxes),
            "crop_boxes": len(self.crop_boxes),
        }
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise ValueError(f"{bad} do not match the {n} frame_indices")
        self._check_frame_indices()
        self._check_crops_and_angles()
        return self

    def _check_frame_indices(self) -> None:
        """Frame indices increase, lie in the shot and within the decoded and sampled frames."""
        n = len(self.frame_indices)
        if (
            any(b <= a for a, b in zip(self.frame_indices, self.frame_indices[1:], strict=False))
            or self.frame_indices[0] < 0
        ):
            raise ValueError("frame_indices must be non-negative and strictly increasing")
        if self.frame_range is not None and not (
            self.frame_range[0] <= self.frame_indices[0] and self.frame_indices[-1] < self.frame_range[1]
        ):
            raise ValueError(f"frame_indices lie outside the shot {self.frame_range}")
        if self.frame_indices[-1] >= self.frames_decoded or n > self.frames_sampled:
            raise ValueError(
                f"frame_indices go up to {self.frame_indices[-1]} with {n} crops, but only "
                f"{self.frames_decoded} frames were decoded and {self.frames_sampled} sampled"
            )

    def _check_crops_and_angles(self) -> None:
        """Crop paths stay inside the dataset directory; ranges and Δ are finite and follow from the angles."""
        for crop in self.crops:
            p = PurePosixPath(crop)
            if p.is_absolute() or ".." in p.parts or not crop:
                raise ValueError(f"crop path '{crop}' must be relative to the dataset directory")
        flat = [a for triple in self.angles for a in triple] + list(self.ranges) + [self.delta]
        if not all(math.isfinite(v) for v in flat):
            raise ValueError("angles, ranges and delta must be finite")
        expect = pose_ranges(np.asarray(self.angles, dtype=np.float64))
        if not np.allclose(expect, self.ranges, atol=1e-6) or abs(float(expect.sum()) - self.delta) > 1e-6:
            raise ValueError(
                f"ranges {self.ranges} / delta {self.delta} do not match the angles "
                f"(expected ranges {expect.tolist()}, delta {float(expect.sum())})"
            )

    def crop_paths(self, dataset_dir: str | PathLike) -> list[Path]:
        """Absolute paths of the crop images."""
        return [Path(dataset_dir) / crop for crop in self.crops]

    @property
    def first_frame(self) -> int:
        """The ordinal of the sample's first frame in the video (its shot's start, else 0)."""
        return 0 if self.frame_range is None else self.frame_range[0]

    @property
    def length(self) -> int:
        """Frames of the video that belong to this sample (its shot, else the whole video)."""
        return self.frames_decoded if self.frame_range is None else self.frame_range[1] - self.frame_range[0]

    def angles_array(self) -> np.ndarray:
        """``[N, 3]`` float32 (pitch, yaw, roll) degrees, one row per crop."""
        return np.asarray(self.angles, dtype=np.float32).reshape(-1, 3)

    def video_path(self, corpus_root: str | PathLike | None = None) -> Path:
        """The video file: ``corpus_root / key`` when the corpus moved, else the recorded path."""
        return Path(corpus_root) / self.key if corpus_root is not None else Path(self.video)

    def line(self) -> str:
        """The record as its canonical manifest line (no newline)."""
        return self.model_dump_json()


@dataclass(frozen=True)
class ManifestProblem:
    line: int
    message: str


def read_manifest(
    path: str | PathLike, *, check_files: bool = True
) -> tuple[list[VideoRecord], list[ManifestProblem]]:
    """Parse a ``manifest.jsonl`` file: the valid records and a problem per bad line.

    A line is bad when it is not JSON, not a valid ``VideoRecord``, repeats an earlier key, is
    the truncated tail of an interrupted run, or (``check_files``) names a crop file that is missing.
    """
    path = Path(path)
    root = path.parent
    records: list[VideoRecord] = []
    problems: list[ManifestProblem] = []
    seen: dict[str, int] = {}
    for number, text, complete in journal.iter_lines(path):
        if not complete:
            problems.append(
                ManifestProblem(
                    number,
                    "truncated last line (the build was interrupted; rerun "
                    "training/build_dataset.py build with the same --out to finish it)",
                )
            )
            continue
        try:
            record = VideoRecord.model_validate(json.loads(text))
        except json.JSONDecodeError as exc:
            problems.append(ManifestProblem(number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "record"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            problems.append(ManifestProblem(number, f"invalid record: {where}: {first['msg']}{more}"))
            continue
        if record.key in seen:
            problems.append(
                ManifestProblem(number, f"duplicate key '{record.key}' (first on line {seen[record.key]})")
            )
            continue
        if check_files:
            missing = [c for c in record.crops if not (root / c).is_file()]
            if missing:
                problems.append(
                    ManifestProblem(
                        number,
                        f"crop file '{missing[0]}' is missing"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                    )
                )
                continue
        seen[record.key] = number
        records.append(record)
    return records, problems


def load_manifest(
    dataset_dir: str | PathLike,
    *,
    on_error: Literal["raise", "skip"] = "raise",
    check_files: bool = True,
) -> list[VideoRecord]:
    """The kept videos of a dataset directory, validated, in manifest order.

    ``on_error="raise"``: the first bad line raises a ``ManifestError`` naming the file and line
    number. ``on_error="skip"``: each bad line is reported as a ``ManifestWarning`` (with its line
    number) and left out.
    """
    if on_error not in ("raise", "skip"):
        raise FaithfulFacesError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / MANIFEST_NAME if dataset_dir.is_dir() or not dataset_dir.suffix else dataset_dir
    if not path.is_file():
        raise ManifestError(
            f"No manifest at {path}. Build the dataset first: "
            f"python training/build_dataset.py build VIDEOS... --out {dataset_dir}",
            path=path,
        )
    records, problems = read_manifest(path, check_files=check_files)
    for problem in problems:
        message = f"{path}, line {problem.line}: {problem.message}."
        if on_error == "raise":
            raise ManifestError(
                message + " Fix or delete that line, or load with on_error='skip' to leave it out.",
                path=path,
                line=problem.line,
            )
        warnings.warn(message + " Line skipped.", ManifestWarning, stacklevel=2)
    return records

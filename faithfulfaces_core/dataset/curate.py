"""Curation of one video (paper §3.4): faces per sampled frame, head pose per face, keep or reject.

Per sampled frame: ``detector.detect`` → more than one face rejects the video at once
(``multiple_faces``); one face → crop (``pose.crop.crop_face``: box ×``enlarge``, clipped, the
released Resize + CenterCrop to the estimator's input size), queued; crops go through ``estimator.estimate`` in batches of ``batch_size`` and are written to
the video's staging folder as they are estimated, so memory does not grow with video length.
At the end: no face in any frame → ``no_face``; else Δ (circular ranges, see ``variation``)
≥ ``threshold`` → kept, otherwise ``low_pose_variation``. A file that cannot be opened or
decoded is an ``error`` outcome, not an exception: one bad file must not stop a corpus run.
Model failures do raise: they are set-up problems that would hit every video.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from ..errors import FaithfulFacesError
from ..pose.crop import crop_face
from ..pose.types import Face, FaceDetector, PoseEstimator
from . import outcomes as oc
from .decode import FrameSampling, VideoInfo, VideoReadError, VideoStream, warn_if_truncated
from .manifest import CROPS_DIR, FORMAT_VERSION, Backends, VideoRecord
from .outcomes import DoneRecord
from .sources import VideoRef
from .variation import pose_ranges

STAGING_SUFFIX = ".partial"


@dataclass(frozen=True)
class CurationSettings:
    """Everything that decides what a video becomes (stored in ``build.json``; a resumed run must match)."""

    sampling: FrameSampling = field(default_factory=lambda: FrameSampling(fps=4.0))
    threshold: float = 120.0
    enlarge: float = 1.5
    batch_size: int = 16
    crop_format: Literal["png", "jpg"] = "png"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise FaithfulFacesError(f"The Δ threshold must be a number >= 0 degrees, got {self.threshold}.")
        if not (math.isfinite(self.enlarge) and self.enlarge >= 1.0):
            raise FaithfulFacesError(
                f"The box enlargement must be >= 1 (the paper uses 1.5), got {self.enlarge}."
            )
        if self.batch_size < 1:
            raise FaithfulFacesError(f"The pose batch size must be >= 1, got {self.batch_size}.")
        if self.crop_format not in ("png", "jpg"):
            raise FaithfulFacesError(f"Crop format must be 'png' or 'jpg', got {self.crop_format!r}.")
        if not 1 <= self.jpeg_quality <= 100:
            raise FaithfulFacesError(f"JPEG quality must be 1..100, got {self.jpeg_quality}.")

    def as_dict(self) -> dict:
        return {
            "sampling": self.sampling.as_dict(),
            "threshold": self.threshold,
            "enlarge": self.enlarge,
            "crop_format": self.crop_format,
            "jpeg_quality": self.jpeg_quality,
        }


@dataclass(frozen=True)
class FaceFrame:
    """One sampled frame with exactly one face."""

    index: int
    box: tuple[float, float, float, float]
    crop_box: tuple[int, int, int, int]
    angles: tuple[float, float, float]
    crop: str  # path relative to the dataset directory


@dataclass
class VideoCuration:
    """What curation (and captioning) made of one video."""

    ref: VideoRef
    outcome: str = oc.ERROR
    reason: str = oc.UNREADABLE
    detail: str = ""
    frames: list[FaceFrame] = field(default_factory=list)
    frames_decoded: int = 0
    frames_sampled: int = 0
    info: VideoInfo | None = None
    ranges: tuple[float, float, float] | None = None
    delta: float | None = None
    prompt: str | None = None
    seconds: float = 0.0

    @property
    def kept(self) -> bool:
        return self.outcome == oc.KEPT

    def reject(self, reason: str, detail: str) -> None:
        self.outcome, self.reason, self.detail = oc.REJECTED, reason, detail

    def done_record(self) -> DoneRecord:
        return DoneRecord(
            key=self.ref.key,
            video=str(self.ref.path.resolve()),
            outcome=self.outcome,
            reason=self.reason,
            detail=self.detail,
            frames_decoded=self.frames_decoded,
            frames_declared=self.info.frames if self.info else 0,
            frames_sampled=self.frames_sampled,
            frames_with_face=len(self.frames),
            delta=self.delta,
            seconds=round(self.seconds, 4),
        )

    def video_record(self, backends: Backends) -> VideoRecord:
        if (
            not self.kept
            or self.prompt is None
            or self.info is None
            or self.ranges is None
            or self.delta is None
        ):
            raise ValueError(f"video '{self.ref.key}' is not a kept, captioned video")
        return VideoRecord(
            format=FORMAT_VERSION,
            key=self.ref.key,
            video=str(self.ref.path.resolve()),
            prompt=self.prompt,
            frame_indices=[f.index for f in self.frames],
            crops=[f.crop for f in self.frames],
            angles=[f.angles for f in self.frames],
            boxes=[f.box for f in self.frames],
            crop_boxes=[f.crop_box for f in self.frames],
            ranges=self.ranges,
            delta=self.delta,
            frames_decoded=self.frames_decoded,
            frames_sampled=self.frames_sampled,
            width=self.info.width,
            height=self.info.height,
            fps=self.info.fps,
            backends=backends,
        )


def crop_folder(dataset_dir: Path, ref: VideoRef) -> Path:
    """Where a kept video's crops live: ``<dataset>/crops/<slug>``."""
    return dataset_dir / CROPS_DIR / ref.slug


def staging_folder(dataset_dir: Path, ref: VideoRef) -> Path:
    """Where crops are written while the video is in flight: ``<dataset>/crops/<slug>.partial``."""
    return dataset_dir / CROPS_DIR / (ref.slug + STAGING_SUFFIX)


def _write_crop(path: Path, crop: np.ndarray, settings: CurationSettings) -> None:
    image = Image.fromarray(crop)
    if settings.crop_format == "png":
        image.save(path, format="PNG", compress_level=1)
    else:
        image.save(path, format="JPEG", quality=settings.jpeg_quality)


def _estimate(
    estimator: PoseEstimator, crops: list[np.ndarray], faces: list[Face], sizes: list[tuple[int, int]]
) -> np.ndarray:
    angles = np.asarray(estimator.estimate(np.stack(crops), faces, sizes), dtype=np.float32)
    if angles.shape != (len(crops), 3) or not np.all(np.isfinite(angles)):
        raise FaithfulFacesError(
            f"Pose estimator '{estimator.name}' returned {angles.shape} "
            f"{'non-finite values' if angles.shape == (len(crops), 3) else ''} for {len(crops)} crops; expected "
            f"finite [{len(crops)}, 3] (pitch, yaw, roll) degrees. Check the estimator's weights."
        )
    return angles


def curate_video(
    ref: VideoRef,
    detector: FaceDetector,
    estimator: PoseEstimator,
    settings: CurationSettings,
    dataset_dir: Path,
) -> VideoCuration:
    """Decide one video; a kept video's crops are left in ``staging_folder(dataset_dir, ref)``.

    A rejected or failed video leaves no files behind.
    """
    start = time.perf_counter()
    result = VideoCuration(ref=ref)
    staging = staging_folder(dataset_dir, ref)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ext = settings.crop_format
    size = int(estimator.input_size)
    pending: list[tuple[int, Face, tuple[int, int, int, int], np.ndarray, tuple[int, int]]] = []
    angle_rows: list[np.ndarray] = []

    def flush() -> None:
        if not pending:
            return
        angles = _estimate(
            estimator, [p[3] for p in pending], [p[1] for p in pending], [p[4] for p in pending]
        )
        for (index, face, crop_box, crop, _), row in zip(pending, angles, strict=True):
            name = f"f{index:06d}.{ext}"
            _write_crop(staging / name, crop, settings)
            result.frames.append(
                FaceFrame(
                    index=index,
                    box=tuple(float(c) for c in face.box),
                    crop_box=crop_box,
                    angles=(float(row[0]), float(row[1]), float(row[2])),
                    crop=f"{CROPS_DIR}/{ref.slug}/{name}",
                )
            )
            angle_rows.append(row)
        pending.clear()

    multiple: str | None = None
    try:
        with VideoStream(ref.path, settings.sampling) as stream:
            result.info = stream.info
            try:
                for frame in stream:
                    result.frames_sampled += 1
                    faces = detector.detect(frame.image)
                    if len(faces) > 1:
                        multiple = f"frame {frame.index} has {len(faces)} faces"
                        break
                    if faces:
                        crop, crop_box = crop_face(
                            frame.image, faces[0].box, enlarge=settings.enlarge, size=size
                        )
                        pending.append((frame.index, faces[0], crop_box, crop, frame.image.shape[:2]))
                        if len(pending) >= settings.batch_size:
                            flush()
                flush()
            finally:
                result.frames_decoded = stream.frames_decoded
    except VideoReadError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        result.reason = oc.DECODE_FAILED if result.frames_decoded else oc.UNREADABLE
        result.detail = str(exc)
        result.seconds = time.perf_counter() - start
        return result
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    if multiple is None and result.info is not None:
        warn_if_truncated(ref.path, result.frames_decoded, result.info.frames)
    if result.frames_decoded == 0:
        result.detail = f"{ref.path} has no decodable frames"
    elif multiple is not None:
        result.reject(oc.MULTIPLE_FACES, multiple)
    elif not result.frames:
        result.reject(oc.NO_FACE, f"none of {result.frames_sampled} sampled frames has a face")
    else:
        ranges = pose_ranges(np.stack(angle_rows))
        result.ranges = (float(ranges[0]), float(ranges[1]), float(ranges[2]))
        result.delta = float(ranges.sum())
        if result.delta >= settings.threshold:
            result.outcome, result.reason = oc.KEPT, oc.POSE_VARIATION_OK
            result.detail = f"Δ = {result.delta:.2f} ≥ {settings.threshold:g}"
        else:
            result.reject(oc.LOW_POSE_VARIATION, f"Δ = {result.delta:.2f} < {settings.threshold:g}")
    if not result.kept:
        shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.perf_counter() - start
    return result

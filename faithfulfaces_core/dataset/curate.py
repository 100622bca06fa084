"""Curation of one video (paper §3.4): faces per sampled frame, head pose per face, keep or reject.

Per sampled frame: ``detector.detect`` → more than one face rejects the video at once
(``multiple_faces``); one face → crop (``pose.crop.crop_face``: box ×``enlarge``, clipped, the
released Resize + CenterCrop to the estimator's input size), queued; crops go through ``estimator.estimate`` in batches of ``batch_size`` and are written to
the video's staging folder as they are estimated, so memory does not grow with video length.
Steps beyond the paper (each can be turned off; ``CurationSettings.paper()`` is the paper's rule
exactly): faces scoring below ``min_face_score`` do not count (a per-detector default), a second
face smaller than ``min_face_size`` × the main face's height does not count for the multi-face
rule, detection may run on frames scaled to ``det_size`` (boxes mapped back, crops cut from the
full frame), and the identity step clusters the kept faces' identity vectors (``identity``:
``reject`` a video with more than one person, or keep the ``dominant`` person's frames only).
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
from ..identity import SAME_PERSON_DISTANCE, embedding_kind, identity_clusters, identity_spread
from ..pose.crop import crop_face
from ..pose.types import Face, FaceDetector, PoseEstimator
from . import outcomes as oc
from .decode import FrameSampling, VideoInfo, VideoReadError, VideoStream, warn_if_truncated
from .manifest import CROPS_DIR, FORMAT_VERSION, Backends, VideoRecord
from .outcomes import DoneRecord
from .sources import VideoRef
from .variation import pose_ranges

STAGING_SUFFIX = ".partial"
IdentityMode = Literal["off", "reject", "dominant"]

# Score below which a detection is not a face, per detector (Face.score scales differ): dlib's HOG
# fires at scores near 0 on background texture (0.007 on a crowd), 0.25 is the score the dlib
# backend's docs recommend; dlib's CNN and InsightFace already apply their own thresholds, and
# "dlib-hog+cnn" mixes two score scales, so its HOG threshold is the detector's own min_score.
MIN_FACE_SCORE: dict[str, float] = {"dlib-hog": 0.25, "dlib-hog+cnn": 0.0, "dlib-cnn": 0.0, "insightface": 0.5}


def default_min_face_score(detector_name: str) -> float:
    """The ``MIN_FACE_SCORE`` of a detector by name (0 for detectors without one)."""
    return MIN_FACE_SCORE.get(detector_name, 0.0)


@dataclass(frozen=True)
class CurationSettings:
    """Everything that decides what a video becomes (stored in ``build.json``; a resumed run must match)."""

    sampling: FrameSampling = field(default_factory=lambda: FrameSampling(fps=4.0))
    threshold: float = 120.0
    enlarge: float = 1.5
    batch_size: int = 16
    crop_format: Literal["png", "jpg"] = "png"
    jpeg_quality: int = 95
    min_face_score: float | None = None  # None: the detector's MIN_FACE_SCORE
    min_face_size: float = 0.25  # a second face counts if its height >= this × the main face's
    det_size: int | None = None  # detect on frames whose longer side is scaled down to this
    identity: IdentityMode = "dominant"
    identity_threshold: float | None = None  # None: SAME_PERSON_DISTANCE of the detector's embeddings
    identity_min_share: float = 0.5  # "dominant": the person must own at least this share of frames
    shots: bool = False  # split videos at cuts first; each shot is a sample
    shot_threshold: float = 27.0  # PySceneDetect ContentDetector threshold
    shot_min_frames: int = 15

    @classmethod
    def paper(cls, **overrides) -> CurationSettings:
        """The paper's rule exactly: every detected face counts, full-size detection, no identity step."""
        base = {"min_face_score": 0.0, "min_face_size": 0.0, "det_size": None, "identity": "off", "shots": False}
        return cls(**{**base, **overrides})

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
        self._check_extra_steps()

    def _check_extra_steps(self) -> None:
        if not 0.0 <= self.min_face_size <= 1.0:
            raise FaithfulFacesError(
                f"min_face_size is a fraction of the main face's height in 0..1 (0 = every face counts, as in "
                f"the paper), got {self.min_face_size}."
            )
        if self.det_size is not None and self.det_size < 32:
            raise FaithfulFacesError(f"det_size must be at least 32 pixels or None (full frames), got {self.det_size}.")
        if self.identity not in ("off", "reject", "dominant"):
            raise FaithfulFacesError(f"identity must be 'off', 'reject' or 'dominant', got {self.identity!r}.")
        if self.identity_threshold is not None and not self.identity_threshold > 0:
            raise FaithfulFacesError(f"identity_threshold must be > 0, got {self.identity_threshold}.")
        if self.shot_min_frames < 1 or not self.shot_threshold > 0:
            raise FaithfulFacesError(
                f"shot_min_frames must be >= 1 and shot_threshold > 0, got {self.shot_min_frames}, {self.shot_threshold}."
            )
        if not 0.0 < self.identity_min_share <= 1.0:
            raise FaithfulFacesError(f"identity_min_share must be in (0, 1], got {self.identity_min_share}.")

    def as_dict(self) -> dict:
        return {
            "sampling": self.sampling.as_dict(),
            "threshold": self.threshold,
            "enlarge": self.enlarge,
            "crop_format": self.crop_format,
            "jpeg_quality": self.jpeg_quality,
            "min_face_score": self.min_face_score,
            "min_face_size": self.min_face_size,
            "det_size": self.det_size,
            "identity": self.identity,
            "identity_threshold": self.identity_threshold,
            "identity_min_share": self.identity_min_share,
            "shots": self.shots,
            "shot_threshold": self.shot_threshold,
            "shot_min_frames": self.shot_min_frames,
        }

    def thresholds(self, detector_name: str) -> dict[str, float | None]:
        """The thresholds this detector runs under (defaults resolved): recorded per video."""
        score = self.min_face_score
        distance = None if self.identity == "off" else self.identity_threshold
        if distance is None and self.identity != "off":
            kind = embedding_kind(detector_name)
            distance = SAME_PERSON_DISTANCE.get(kind) if kind else None
            if distance is None:
                raise FaithfulFacesError(
                    f"The identity step has no same-person distance for detector '{detector_name}': set "
                    "identity_threshold (--identity-threshold) for its embeddings, or turn the step off (--identity off)."
                )
        return {
            "min_face_score": default_min_face_score(detector_name) if score is None else score,
            "min_face_size": self.min_face_size,
            "identity_distance": distance,
        }


@dataclass(frozen=True)
class FaceFrame:
    """One sampled frame with exactly one face."""

    index: int
    box: tuple[float, float, float, float]
    crop_box: tuple[int, int, int, int]
    angles: tuple[float, float, float]
    crop: str  # path relative to the dataset directory
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)  # identity vector


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
    thresholds: dict = field(default_factory=dict)
    identity_spread: float | None = None
    identity_dropped: list[int] = field(default_factory=list)  # frames of other people ("dominant")
    source: str | None = None  # the video's key, when this sample is one of its shots
    shots: int | None = None  # how many shots that video has

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
            ranges=self.ranges,
            identity_spread=self.identity_spread,
            source=self.source,
            shots=self.shots,
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
            thresholds=self.thresholds,
            identity_spread=self.identity_spread,
            identity_dropped=self.identity_dropped,
            frame_range=self.ref.frames,
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


def _detect(detector: FaceDetector, image: np.ndarray, det_size: int | None) -> list[Face]:
    """Faces of ``image`` [H, W, 3], found on a copy whose longer side is ``det_size`` (never
    enlarged); boxes and keypoints come back in full-frame pixels, so crops keep full resolution."""
    height, width = image.shape[:2]
    scale = 1.0 if det_size is None else min(1.0, det_size / max(height, width))
    if scale >= 1.0:
        return list(detector.detect(image))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    sx, sy = width / size[0], height / size[1]
    faces = []
    for face in detector.detect(small):
        x1, y1, x2, y2 = face.box
        points = None if face.keypoints is None else np.asarray(face.keypoints) * np.array([sx, sy], np.float32)
        faces.append(Face((x1 * sx, y1 * sy, x2 * sx, y2 * sy), face.score, points, face.embedding))
    return faces


def _height(face: Face) -> float:
    return face.box[3] - face.box[1]


def counted_faces(faces: list[Face], min_score: float, min_size: float) -> list[Face]:
    """The faces the multi-face rule counts, main (largest) face first: score >= ``min_score``, and
    (besides the main face) a height >= ``min_size`` × the main face's height."""
    scored = sorted((f for f in faces if f.score >= min_score), key=lambda f: f.area, reverse=True)
    if not scored:
        return []
    floor = min_size * _height(scored[0])
    return [scored[0]] + [f for f in scored[1:] if _height(f) >= floor]


def _multiple_detail(index: int, faces: list[Face], thresholds: dict) -> str:
    scores = ", ".join(f"{f.score:.3f}" for f in faces)
    heights = ", ".join(f"{_height(f):.0f}" for f in faces)
    return (
        f"frame {index} has {len(faces)} faces (scores {scores}; heights {heights} px) at "
        f"min_face_score {thresholds['min_face_score']:g}, min_face_size {thresholds['min_face_size']:g}"
    )


def _identity_step(result: VideoCuration, settings: CurationSettings, staging: Path) -> str | None:
    """Cluster the kept frames' identity vectors; returns a rejection detail, or None (kept so far).

    ``dominant`` drops the other people's frames (and their crops) and records their indices."""
    if settings.identity == "off" or not result.frames:
        return None
    missing = [f.index for f in result.frames if f.embedding is None]
    if missing:
        raise FaithfulFacesError(
            f"The identity step needs an identity vector per face, and the detector gave none (frame {missing[0]}). "
            "Build the detector with embeddings (dlib: with_embeddings=True; InsightFace: modules "
            "['detection', 'recognition']), or turn the step off (--identity off)."
        )
    limit = float(result.thresholds["identity_distance"])
    vectors = np.stack([f.embedding for f in result.frames])
    labels = identity_clusters(vectors, limit)
    sizes = np.bincount(labels).tolist()
    share = sizes[0] / len(labels)
    if len(sizes) > 1 and (settings.identity == "reject" or share < settings.identity_min_share):
        result.identity_spread = identity_spread(vectors)
        return (
            f"{len(sizes)} people among {len(labels)} face frames (frames per person {sizes}; identity spread "
            f"{result.identity_spread:.3f}, same person below {limit:g})"
        )
    for frame, label in zip(list(result.frames), labels.tolist(), strict=True):
        if label:
            result.identity_dropped.append(frame.index)
            (staging / Path(frame.crop).name).unlink()
    result.frames = [f for f, label in zip(result.frames, labels.tolist(), strict=True) if not label]
    result.identity_spread = identity_spread(vectors[labels == 0])
    return None


def _decide(result: VideoCuration, settings: CurationSettings, multiple: str | None, staging: Path) -> None:
    """The outcome of a fully read video (see the module docstring for the order of the rules)."""
    if result.frames_decoded == 0:
        result.detail = f"{result.ref.path} has no decodable frames"
        return
    if multiple is not None:
        result.reject(oc.MULTIPLE_FACES, multiple)
        return
    if not result.frames:
        result.reject(oc.NO_FACE, f"none of {result.frames_sampled} sampled frames has a face")
        return
    mixed = _identity_step(result, settings, staging)
    if mixed is not None:
        result.reject(oc.MIXED_IDENTITY, mixed)
        return
    ranges = pose_ranges(np.stack([f.angles for f in result.frames]))
    result.ranges = (float(ranges[0]), float(ranges[1]), float(ranges[2]))
    result.delta = float(ranges.sum())
    axes = f"pitch {ranges[0]:.1f} + yaw {ranges[1]:.1f} + roll {ranges[2]:.1f}"
    if result.delta >= settings.threshold:
        result.outcome, result.reason = oc.KEPT, oc.POSE_VARIATION_OK
        result.detail = f"Δ = {axes} = {result.delta:.2f} ≥ {settings.threshold:g}"
    else:
        result.reject(oc.LOW_POSE_VARIATION, f"Δ = {axes} = {result.delta:.2f} < {settings.threshold:g}")


def _estimate_and_write(pending: list, estimator: PoseEstimator, staging: Path, ref: VideoRef,
                        settings: CurationSettings, result: VideoCuration) -> None:
    """Pose of the ``pending`` crops in one estimator call; each crop written and recorded, then cleared.

    ``pending`` holds ``(frame index, face, crop box, crop [S, S, 3], frame (H, W))`` tuples.
    """
    if not pending:
        return
    angles = _estimate(estimator, [p[3] for p in pending], [p[1] for p in pending], [p[4] for p in pending])
    for (index, face, crop_box, crop, _), row in zip(pending, angles, strict=True):
        name = f"f{index:06d}.{settings.crop_format}"
        _write_crop(staging / name, crop, settings)
        result.frames.append(
            FaceFrame(
                index=index,
                box=tuple(float(c) for c in face.box),
                crop_box=crop_box,
                angles=(float(row[0]), float(row[1]), float(row[2])),
                crop=f"{CROPS_DIR}/{ref.slug}/{name}",
                embedding=face.embedding,
            )
        )
    pending.clear()


def _scan_stream(stream: VideoStream, detector: FaceDetector, estimator: PoseEstimator,
                 settings: CurationSettings, staging: Path, result: VideoCuration) -> str | None:
    """Detect every sampled frame; a frame's one face is cropped, posed and written in batches of
    ``settings.batch_size``. Stops at the first frame with several faces and returns its detail
    (the crops pending by then are still written), else None."""
    size = int(estimator.input_size)
    pending: list[tuple[int, Face, tuple[int, int, int, int], np.ndarray, tuple[int, int]]] = []
    multiple: str | None = None
    for frame in stream:
        result.frames_sampled += 1
        faces = counted_faces(
            _detect(detector, frame.image, settings.det_size), result.thresholds["min_face_score"],
            settings.min_face_size,
        )
        if len(faces) > 1:
            multiple = _multiple_detail(frame.index, faces, result.thresholds)
            break
        if faces:
            crop, crop_box = crop_face(frame.image, faces[0].box, enlarge=settings.enlarge, size=size)
            pending.append((frame.index, faces[0], crop_box, crop, frame.image.shape[:2]))
            if len(pending) >= settings.batch_size:
                _estimate_and_write(pending, estimator, staging, result.ref, settings, result)
    _estimate_and_write(pending, estimator, staging, result.ref, settings, result)
    return multiple


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
    result.thresholds = settings.thresholds(str(getattr(detector, "name", "")))
    staging = staging_folder(dataset_dir, ref)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    multiple: str | None = None
    try:
        with VideoStream(ref.path, settings.sampling, ref.frames) as stream:
            result.info = stream.info
            try:
                multiple = _scan_stream(stream, detector, estimator, settings, staging, result)
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
    try:
        _decide(result, settings, multiple, staging)
    finally:
        if not result.kept:
            shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.perf_counter() - start
    return result

"""``pick_reference_faces``: from photos or frames of one person, K faces that cover the head poses.

Per image: detect the faces; each becomes a candidate (``multiple_faces="identity"``: every face,
the identity filter keeps the person's; ``"largest"``: the largest face; ``"skip"``: an image with
several faces is dropped). Each candidate is cropped (box ×``enlarge``), its pose estimated, its
sharpness measured (variance of the Laplacian of the tight box at 112×112 grey: blur removes the
high frequencies it measures, and the fixed size makes it independent of the photo's
resolution). Faces too small or too blurred are dropped first, so they cannot sway the identity;
then faces of another identity than the majority (``identity.majority_identity`` with the
backend's threshold); from the rest, farthest-point sampling on the sphere of head directions
(``coverage.farthest_poses``) chooses K. Deterministic for the same inputs in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from dataclasses import replace as _with

import numpy as np

from ..errors import FaithfulFacesError
from ..eval.embedding import EmbeddingSource
from ..identity import majority_identity, same_person_rule
from ..pose.crop import crop_face
from ..pose.preprocess import resize_center_crop
from ..pose.types import EulerAngles, Face, FaceDetector, FacePose, PoseEstimator, as_rgb_uint8
from .coverage import coverage_angle, farthest_poses

POLICIES = ("identity", "largest", "skip")
NO_FACE, SEVERAL, SMALL, BLURRED, OTHER = "no face", "several faces", "too small", "too blurred", "other identity"
REASONS = (NO_FACE, SEVERAL, SMALL, BLURRED, OTHER)
SHARPNESS_SIZE = 112
POSE_BATCH = 64


@dataclass(frozen=True)
class PickSettings:
    """The picker's knobs; the defaults are the node's (see docs/references.md for why)."""

    k: int = 4
    multiple_faces: str = "identity"
    min_face: int = 48  # pixels, the shorter side of the detector box
    min_sharpness: float = 30.0  # variance of the Laplacian at 112×112
    enlarge: float = 1.5
    crop_size: int = 512
    identity_threshold: float | None = None  # None: the backend's


@dataclass(frozen=True)
class Candidate:
    """One detected face: its pose (with the estimator-size crop), reference crop and verdict."""

    image: int
    pose: FacePose
    reference: np.ndarray  # [crop_size, crop_size, 3] uint8
    sharpness: float
    identity_distance: float | None = None
    reason: str | None = None  # None: accepted


@dataclass
class PickResult:
    """``chosen`` in the order picked; ``candidates`` every face; ``dropped`` image index → reason."""

    chosen: list[Candidate]
    candidates: list[Candidate]
    dropped: dict[int, str]
    images: int
    embedding: str
    metric: str
    threshold: float
    coverage: float  # degrees: the farthest accepted pose from its nearest chosen one
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many images / faces each reason dropped."""
        reasons = list(self.dropped.values()) + [c.reason for c in self.candidates if c.reason]
        return {r: reasons.count(r) for r in REASONS}

    def summary(self) -> str:
        lines = [f"{len(self.chosen)} reference faces chosen from {self.images} images "
                 f"({len(self.candidates)} faces; identity: {self.embedding}, {self.metric} ≤ {self.threshold:g})."]
        lines += [f"  {i + 1}. {c.pose.image_name}: pitch {c.pose.angles.pitch:+.1f}°, yaw {c.pose.angles.yaw:+.1f}°, "
                  f"roll {c.pose.angles.roll:+.1f}°" for i, c in enumerate(self.chosen)]
        lines.append(f"every accepted pose lies within {self.coverage:.1f}° of a chosen one")
        lines += [f"dropped for {r}: {n}" for r, n in self.counts().items() if n]
        return "\n".join(lines + self.notes)


def laplacian_variance(image: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Sharpness of the face in ``box`` of ``image`` ``[H, W, 3]`` uint8 (see the module docstring)."""
    import cv2

    x1, y1, x2, y2 = (int(round(v)) for v in box)
    patch = image[max(y1, 0):max(y2, y1 + 1), max(x1, 0):max(x2, x1 + 1)]
    grey = cv2.cvtColor(cv2.resize(patch, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _faces(image: np.ndarray, detector: FaceDetector, policy: str) -> tuple[list[Face], list[int] | str]:
    faces = sorted(detector.detect(image), key=lambda f: (-f.area, -f.score))
    if not faces:
        return faces, NO_FACE
    if len(faces) > 1 and policy == "skip":
        return faces, SEVERAL
    return faces, [0] if policy == "largest" else list(range(len(faces)))


def _candidate(i: int, name: str, image: np.ndarray, faces: list[Face], j: int, settings: PickSettings,
               size: int, backend: str) -> tuple[Candidate, np.ndarray]:
    box = faces[j].box
    crop, crop_box = crop_face(image, box, enlarge=settings.enlarge, size=size)
    x1, y1, x2, y2 = crop_box
    pose = FacePose(image_name=name if len(faces) == 1 else f"{name}, face {j + 1}", faces=faces, chosen=j,
                    crop_box=crop_box, crop=crop, angles=EulerAngles(0.0, 0.0, 0.0), backend=backend)
    sharp = laplacian_variance(image, box)
    small = min(box[2] - box[0], box[3] - box[1]) < settings.min_face
    reason = SMALL if small else BLURRED if sharp < settings.min_sharpness else None
    reference = resize_center_crop(image[y1:y2, x1:x2], settings.crop_size)
    return Candidate(i, pose, reference, sharp, None, reason), crop


def _check(settings: PickSettings) -> None:
    if settings.multiple_faces not in POLICIES:
        raise FaithfulFacesError(f"Unknown multiple-faces policy '{settings.multiple_faces}': use one of "
                                 f"{', '.join(POLICIES)}.")
    farthest_poses(np.zeros((0, 3)), settings.k)  # validates K


def _estimate(estimator: PoseEstimator, found: list[tuple[Candidate, np.ndarray, tuple[int, int]]]) -> list:
    out = []
    for s in range(0, len(found), POSE_BATCH):
        chunk = found[s:s + POSE_BATCH]
        angles = np.asarray(estimator.estimate(np.stack([c for _, c, _ in chunk]),
                                               [f.pose.face for f, _, _ in chunk], [h for _, _, h in chunk]))
        if angles.shape != (len(chunk), 3):
            raise FaithfulFacesError(f"Pose estimator {estimator.name} returned shape {angles.shape}, "
                                     f"expected ({len(chunk)}, 3).")
        out += [EulerAngles(*(float(v) for v in row)) for row in angles]
    return out


def _identity(candidates: list[Candidate], images: list[np.ndarray], source: EmbeddingSource,
              settings: PickSettings) -> tuple[list[Candidate], str, float]:
    metric, threshold = same_person_rule(source.kind)
    threshold = threshold if settings.identity_threshold is None else float(settings.identity_threshold)
    good = [n for n, c in enumerate(candidates) if c.reason is None]
    if not good:
        return candidates, metric, threshold
    vectors = np.stack([source(images[candidates[n].image], candidates[n].pose.face) for n in good])
    members, distance = majority_identity(vectors, metric, threshold)
    out = list(candidates)
    for n, member, d in zip(good, members, distance, strict=True):
        out[n] = _with(candidates[n], identity_distance=float(d), reason=None if member else OTHER)
    return out, metric, threshold


def _no_choice_error(result: PickResult) -> FaithfulFacesError:
    counts = ", ".join(f"{r}: {n}" for r, n in result.counts().items() if n)
    return FaithfulFacesError(
        f"No usable reference face among {result.images} images ({counts}). Use sharper photos where the face "
        "is at least the 'min_face' size, or lower 'min_face' / 'min_sharpness'."
    )


def _found_faces(images: list[np.ndarray], names: list[str], detector: FaceDetector, estimator: PoseEstimator,
                 settings: PickSettings, progress: bool) -> tuple[list, dict[int, str]]:
    """Every face kept by the multiple-faces policy as (candidate, crop ``[S, S, 3]``, image (H, W)),
    and per dropped image its reason."""
    from tqdm.auto import tqdm

    backend = f"{detector.name}+{estimator.name}"
    found, dropped = [], {}
    for i, image in tqdm(enumerate(images), total=len(images), desc="reference faces", unit="image",
                         disable=not progress):
        faces, picked = _faces(image, detector, settings.multiple_faces)
        if isinstance(picked, str):
            dropped[i] = picked
            continue
        for j in picked:
            cand, crop = _candidate(i, names[i], image, faces, j, settings, estimator.input_size, backend)
            found.append((cand, crop, image.shape[:2]))
    return found, dropped


def pick_reference_faces(
    images: np.ndarray | Sequence[np.ndarray],
    detector: FaceDetector,
    estimator: PoseEstimator,
    settings: PickSettings = PickSettings(),
    *,
    names: Sequence[str] | None = None,
    embedder=None,
    progress: bool = False,
) -> PickResult:
    """K faces of ``images`` (``[B, H, W, 3]`` uint8 or a list) covering the head poses; see the module."""
    _check(settings)
    images = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
    names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
    images = [as_rgb_uint8(np.asarray(im), names[i]) for i, im in enumerate(images)]
    found, dropped = _found_faces(images, names, detector, estimator, settings, progress)
    candidates = [_with(c, pose=_with(c.pose, angles=a)) for (c, _, _), a in zip(found, _estimate(estimator, found),
                                                                               strict=True)]
    source = EmbeddingSource(detector, embedder)
    candidates, metric, threshold = _identity(candidates, images, source, settings)
    accepted = [n for n, c in enumerate(candidates) if c.reason is None]
    angles = np.array([candidates[n].pose.angles.as_array() for n in accepted]).reshape(-1, 3)
    order = farthest_poses(angles, settings.k)
    result = PickResult(chosen=[candidates[accepted[n]] for n in order], candidates=candidates, dropped=dropped,
                        images=len(images), embedding=source.name, metric=metric, threshold=threshold,
                        coverage=coverage_angle(angles, order) if order else float("nan"))
    if not order:
        raise _no_choice_error(result)
    if len(order) < settings.k:
        result.notes.append(f"note: K is {settings.k} but only {len(order)} faces passed the filters; all are used.")
    return result

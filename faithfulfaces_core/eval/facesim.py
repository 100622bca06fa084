"""FaceSim: identity similarity between a reference face and the frames of a video, with head pose.

Per frame: detect faces (retrying once on the ×1.25 padded canvas when none is found), take the
largest, embed it with the backend's recognition model, compare with the reference embedding
(cosine, clipped at 0; dlib also reports the Euclidean distance), and estimate its head pose
(pitch, yaw, roll) from the ×1.5 crop. The pose estimator runs once per batch of face frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import FaithfulFacesError, NoFaceError
from ..pose.crop import check_enlarge, crop_face
from ..pose.types import EulerAngles, Face, FaceDetector, PoseEstimator, as_rgb_uint8
from .embedding import DLIB, EmbeddingSource, FaceEmbedder, cosine, euclidean
from .padding import PAD_FACTOR, pad_image, unpad_face
from .summary import Summary, summarize

POSE_BATCH = 64


@dataclass(frozen=True)
class Found:
    """The faces of one image (largest first), in pixels of ``image``: the frame, or its padded canvas."""

    faces: list[Face]
    image: np.ndarray
    offset: tuple[int, int] | None  # (left, top) of the frame inside the padded canvas; None: not padded

    @property
    def padded(self) -> bool:
        return self.offset is not None


@dataclass(frozen=True)
class FrameScore:
    """One sampled frame. Without a face, ``box``, ``cosine``, ``similarity``, ``distance``, ``angles`` are None."""

    index: int
    time: float | None
    faces: int
    padded: bool
    box: tuple[float, float, float, float] | None
    cosine: float | None
    similarity: float | None
    distance: float | None
    angles: EulerAngles | None
    references: int = 1  # with several: cosine/similarity/distance are the best match
    best_reference: int | None = None
    similarity_mean: float | None = None  # mean over the references of the clipped cosines

    def as_dict(self) -> dict:
        angles = self.angles
        several = {} if self.references == 1 else {"best_reference": self.best_reference,
                                                   "similarity_mean": self.similarity_mean}
        return several | {
            "index": self.index,
            "time": self.time,
            "faces": self.faces,
            "padded": self.padded,
            "box": None if self.box is None else [round(v, 2) for v in self.box],
            "cosine": self.cosine,
            "similarity": self.similarity,
            "distance": self.distance,
            "pitch": None if angles is None else angles.pitch,
            "yaw": None if angles is None else angles.yaw,
            "roll": None if angles is None else angles.roll,
        }


@dataclass(frozen=True)
class ReferenceFace:
    """The reference identity: the largest face of the reference image, its vector and pose."""

    embedding: np.ndarray
    box: tuple[float, float, float, float]
    faces: int
    padded: bool
    angles: EulerAngles
    image_size: tuple[int, int]

    def as_dict(self) -> dict:
        return {
            "faces": self.faces,
            "padded": self.padded,
            "box": [round(v, 2) for v in self.box],
            "image_size": list(self.image_size),
            "pitch": self.angles.pitch,
            "yaw": self.angles.yaw,
            "roll": self.angles.roll,
        }


@dataclass(frozen=True)
class VideoScore:
    """All sampled frames of one video and their summary. ``frames_total``: frames in the video."""

    name: str
    frames_total: int
    frames: list[FrameScore]
    summary: Summary  # of the best match per frame
    summary_mean: Summary | None = None  # several references: of the mean over references per frame

    def series(self, field: str) -> np.ndarray:
        """``[F]`` float array of a per-frame field (``similarity``, ``yaw``, ...), NaN where no face."""
        return np.array(
            [np.nan if (v := f.as_dict()[field]) is None else float(v) for f in self.frames], dtype=np.float64
        )


def _score_inputs(reference: ReferenceFace | Sequence[ReferenceFace], frames: np.ndarray | Sequence[np.ndarray],
                  indices: Sequence[int] | None, times: Sequence[float] | None) -> tuple[list, list, list[int]]:
    """``FaceSim.score``'s arguments as lists (references, frames, one index per frame), or an error
    naming what is missing or miscounted."""
    references = [reference] if isinstance(reference, ReferenceFace) else list(reference)
    if not references:
        raise FaithfulFacesError("FaceSim needs at least one reference face.")
    frames = list(frames) if not isinstance(frames, np.ndarray) or frames.ndim == 4 else [frames]
    indices = list(range(len(frames))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(frames) or (times is not None and len(times) != len(frames)):
        raise FaithfulFacesError(
            f"Got {len(frames)} frames but {len(indices)} indices"
            f"{'' if times is None else f' and {len(times)} times'}; give one per frame."
        )
    return references, frames, indices


class FaceSimEvaluator:
    """FaceSim with one detector, pose estimator and recognition model.

    ``embedder``: optional explicit ``FaceEmbedder`` (see ``embedding.EmbeddingSource`` for the
    default). ``pad_factor`` / ``pad_mode``: the retry canvas (1.25, ``"black"`` or ``"edge"``).
    ``enlarge``: face-box enlargement for the pose crop (1.5, as the paper).
    """

    def __init__(
        self,
        detector: FaceDetector,
        estimator: PoseEstimator,
        *,
        embedder: FaceEmbedder | None = None,
        pad_factor: float = PAD_FACTOR,
        pad_mode: str = "black",
        enlarge: float = 1.5,
    ) -> None:
        pad_image(np.zeros((2, 2, 3), np.uint8), pad_factor, pad_mode)  # validates both
        self.detector = detector
        self.estimator = estimator
        self.embedding = EmbeddingSource(detector, embedder)
        self.pad_factor = float(pad_factor)
        self.pad_mode = pad_mode
        self.enlarge = check_enlarge(enlarge)

    @property
    def backend(self) -> str:
        return f"{self.detector.name}+{self.estimator.name}"

    @property
    def reports_distance(self) -> bool:
        return self.embedding.kind == DLIB

    def find(self, image: np.ndarray) -> Found:
        """Faces of ``image`` ``[H, W, 3]`` uint8, largest first; retried on the padded canvas if none."""
        faces = self.detector.detect(image)
        if faces:
            return Found(sorted(faces, key=lambda f: (-f.area, -f.score)), image, None)
        padded, offset = pad_image(image, self.pad_factor, self.pad_mode)
        faces = self.detector.detect(padded)
        return Found(sorted(faces, key=lambda f: (-f.area, -f.score)), padded, offset if faces else None)

    def _poses(self, found: list[Found]) -> list[EulerAngles]:
        angles: list[EulerAngles] = []
        size = self.estimator.input_size
        for start in range(0, len(found), POSE_BATCH):
            chunk = found[start : start + POSE_BATCH]
            crops = np.stack([crop_face(f.image, f.faces[0].box, enlarge=self.enlarge, size=size)[0] for f in chunk])
            out = np.asarray(
                self.estimator.estimate(crops, [f.faces[0] for f in chunk], [f.image.shape[:2] for f in chunk])
            )
            if out.shape != (len(chunk), 3):
                raise FaithfulFacesError(
                    f"Pose estimator {self.estimator.name} returned shape {out.shape}, expected ({len(chunk)}, 3)."
                )
            angles += [EulerAngles(*(float(v) for v in row)) for row in out]
        return angles

    def _frame_box(self, found: Found, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
        face = found.faces[0]
        return face.box if found.offset is None else unpad_face(face, found.offset, image_size).box

    def reference(self, image: np.ndarray, name: str = "the reference image") -> ReferenceFace:
        """The reference face of ``image`` ``[H, W, 3]`` uint8 (the largest; the count is reported)."""
        image = as_rgb_uint8(np.asarray(image), name)
        found = self.find(image)
        if not found.faces:
            raise NoFaceError(
                f"No face found in {name} (detector: {self.detector.name}), not even on the ×{self.pad_factor:g} "
                "padded image. Use a reference photo where the face is clearly visible and at least about "
                "40 pixels across, or crop it closer around the face."
            )
        return ReferenceFace(
            embedding=self.embedding(found.image, found.faces[0]),
            box=self._frame_box(found, image.shape[:2]),
            faces=len(found.faces),
            padded=found.padded,
            angles=self._poses([found])[0],
            image_size=tuple(image.shape[:2]),
        )

    def _compare(self, references: list[ReferenceFace], vector: np.ndarray) -> dict:
        """Best match (cosine, clipped similarity, dlib distance) and the mean over ``references``."""
        cosines = np.array([cosine(r.embedding, vector) for r in references])
        best = int(np.argmax(cosines))
        distance = min(euclidean(r.embedding, vector) for r in references) if self.reports_distance else None
        return {"cosine": float(cosines[best]), "similarity": max(float(cosines[best]), 0.0), "distance": distance,
                "best_reference": best, "similarity_mean": float(np.clip(cosines, 0.0, None).mean())}

    def _find_all(self, frames: list, indices: list[int], name: str,
                  progress: bool) -> tuple[list[Found], list[np.ndarray | None]]:
        """Per frame the faces found and the chosen face's embedding (None where no face was found)."""
        from tqdm.auto import tqdm

        found_all: list[Found] = []
        vectors: list[np.ndarray | None] = []
        for k, frame in tqdm(enumerate(frames), total=len(frames), desc=f"FaceSim {name}", unit="frame",
                             disable=not progress):
            frame = as_rgb_uint8(np.asarray(frame), f"frame {indices[k]} of {name}")
            found = self.find(frame)
            found_all.append(found)
            vectors.append(self.embedding(found.image, found.faces[0]) if found.faces else None)
        return found_all, vectors

    def _frame_score(self, references: list[ReferenceFace], found: Found, vector: np.ndarray | None,
                     frame_size: tuple[int, int], *, index: int, time: float | None,
                     angles: EulerAngles | None) -> FrameScore:
        """One frame's row: its match against ``references`` (empty where no face was found)."""
        match = {} if vector is None else self._compare(references, vector)
        return FrameScore(
            index=index,
            time=time,
            faces=len(found.faces),
            padded=found.padded,
            box=None if vector is None else self._frame_box(found, frame_size),
            cosine=match.get("cosine"),
            similarity=match.get("similarity"),
            distance=match.get("distance"),
            angles=angles,
            references=len(references),
            best_reference=match.get("best_reference"),
            similarity_mean=match.get("similarity_mean"),
        )

    def score(
        self,
        reference: ReferenceFace | Sequence[ReferenceFace],
        frames: np.ndarray | Sequence[np.ndarray],
        *,
        indices: Sequence[int] | None = None,
        times: Sequence[float] | None = None,
        frames_total: int | None = None,
        name: str = "video",
        progress: bool = False,
    ) -> VideoScore:
        """Score the sampled ``frames`` (``[F, H, W, 3]`` uint8 or a list) against ``reference``.

        Several references: per frame the best match (cosine, similarity, smallest dlib distance)
        feeds ``summary``, the mean over references of the clipped cosines ``summary_mean``.

        ``indices`` / ``times``: the frames' positions in the video (default ``0..F-1`` / None);
        ``frames_total``: the video's length (default ``F``).
        """
        references, frames, indices = _score_inputs(reference, frames, indices, times)
        found_all, vectors = self._find_all(frames, indices, name, progress)
        with_face = [k for k, f in enumerate(found_all) if f.faces]
        angles = dict(zip(with_face, self._poses([found_all[k] for k in with_face]), strict=True))
        scores = [
            self._frame_score(references, found, vector, frames[k].shape[:2], index=indices[k], angles=angles.get(k),
                              time=None if times is None else float(times[k]))
            for k, (found, vector) in enumerate(zip(found_all, vectors, strict=True))
        ]
        return VideoScore(
            name=name,
            frames_total=len(frames) if frames_total is None else int(frames_total),
            frames=scores,
            summary=self._summary(scores, "similarity"),
            summary_mean=self._summary(scores, "similarity_mean") if len(references) > 1 else None,
        )

    def _summary(self, scores: list[FrameScore], field: str) -> Summary:
        values = [getattr(s, field) for s in scores]
        return summarize(
            np.array([np.nan if v is None else v for v in values]),
            np.array([np.nan if s.angles is None else s.angles.yaw for s in scores]),
            np.array([s.faces for s in scores]),
            np.array([s.padded for s in scores], bool),
            np.array([np.nan if s.distance is None else s.distance for s in scores])
            if self.reports_distance and field == "similarity"
            else None,
        )

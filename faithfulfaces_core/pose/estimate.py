"""``estimate_face_poses``: the one face/pose call for the rest of the project.

Per image: detect faces, pick one by ``policy``, crop its enlarged box; then one batched
estimator call for all crops. Works with any ``FaceDetector`` / ``PoseEstimator`` pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import FaithfulFacesError, MultipleFacesError, NoFaceError
from .crop import check_enlarge, crop_face
from .types import EulerAngles, Face, FaceDetector, FacePose, PoseEstimator, as_rgb_uint8

POLICIES = ("largest", "error")


def _as_image_list(images: np.ndarray | Sequence[np.ndarray], names: list[str] | None) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        images = [images] if images.ndim == 3 else list(images)
    return [
        as_rgb_uint8(np.asarray(image), names[i] if names and i < len(names) else f"image {i}")
        for i, image in enumerate(images)
    ]


def _choose(faces: list[Face], name: str, policy: str, detector: str) -> int:
    if not faces:
        raise NoFaceError(
            f"No face found in {name} (detector: {detector}). Use an image where the face is clearly visible and "
            "not tiny (at least about 40 pixels across), or crop the image closer around the face."
        )
    if policy == "error" and len(faces) > 1:
        raise MultipleFacesError(
            f"{name} shows {len(faces)} faces, but exactly one is required here. Use an image of a single person "
            "(crop it to one face), or choose the face policy 'largest' to use the largest face."
        )
    return 0


def _image_names(names: Sequence[str] | None, count: int) -> list[str]:
    """``names`` as a list of one name per image (default ``"image i"``), or an error on a count mismatch."""
    if names is not None and len(names) != count:
        raise FaithfulFacesError(f"Got {len(names)} names for {count} images; give one name per image.")
    return list(names) if names else [f"image {i}" for i in range(count)]


def _detect_and_crop(image: np.ndarray, name: str, detector: FaceDetector, policy: str, enlarge: float,
                     size: int) -> tuple[list[Face], int, np.ndarray, tuple[int, int, int, int]]:
    """(faces sorted largest first, the chosen one's index, its crop ``[S, S, 3]``, the crop box) of one image."""
    faces = sorted(detector.detect(image), key=lambda f: (-f.area, -f.score))
    chosen = _choose(faces, name, policy, detector.name)
    crop, crop_box = crop_face(image, faces[chosen].box, enlarge=enlarge, size=size)
    return faces, chosen, crop, crop_box


def _face_pose(name: str, found: tuple, row: np.ndarray, detector: FaceDetector,
               estimator: PoseEstimator) -> FacePose:
    """One image's ``FacePose`` from its ``_detect_and_crop`` result and its estimated ``row`` (pitch, yaw, roll)."""
    faces, chosen, crop, crop_box = found
    pitch, yaw, roll = (float(v) for v in row)
    second = getattr(faces[chosen], "pose", None)
    return FacePose(
        image_name=name,
        faces=faces,
        chosen=chosen,
        crop_box=crop_box,
        crop=crop,
        angles=EulerAngles(pitch=pitch, yaw=yaw, roll=roll),
        backend=f"{detector.name}+{estimator.name}",
        extra={} if second is None else {f"{detector.name}_pose": second},
    )


def estimate_face_poses(
    images: np.ndarray | Sequence[np.ndarray],
    detector: FaceDetector,
    estimator: PoseEstimator,
    *,
    policy: str = "largest",
    enlarge: float = 1.5,
    names: Sequence[str] | None = None,
    progress: bool = False,
) -> list[FacePose]:
    """Faces, the chosen face, its crop and its (pitch, yaw, roll) for each image.

    ``images``: ``[B, H, W, 3]`` uint8 RGB or a list of ``[H, W, 3]``. ``policy``: ``"largest"``
    takes the face with the largest box; ``"error"`` raises ``MultipleFacesError`` when an image
    has several. An image without a face raises ``NoFaceError``; both name the image (from
    ``names``, else ``"image i"``). ``FacePose.faces`` are sorted largest first; a detector face
    that carries its own ``pose`` (InsightFace's 3-D landmarks) lands in
    ``FacePose.extra["<detector name>_pose"]``.
    """
    from tqdm.auto import tqdm

    if policy not in POLICIES:
        raise FaithfulFacesError(f"Unknown face policy '{policy}': use one of {', '.join(POLICIES)}.")
    check_enlarge(enlarge)
    names = list(names) if names is not None else None
    image_list = _as_image_list(images, names)
    names = _image_names(names, len(image_list))
    found = [
        _detect_and_crop(image, names[i], detector, policy, enlarge, estimator.input_size)
        for i, image in tqdm(enumerate(image_list), total=len(image_list), desc="face detection", unit="image",
                             disable=not progress)
    ]
    if not found:
        return []
    crops = np.stack([crop for _, _, crop, _ in found])
    angles = np.asarray(
        estimator.estimate(crops, [faces[c] for faces, c, _, _ in found], [im.shape[:2] for im in image_list])
    )
    if angles.shape != (len(found), 3):
        raise FaithfulFacesError(
            f"Pose estimator {estimator.name} returned shape {angles.shape}, expected ({len(found)}, 3)."
        )
    return [_face_pose(names[i], f, angles[i], detector, estimator) for i, f in enumerate(found)]

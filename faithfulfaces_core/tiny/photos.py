"""The real photographs installed packages ship: the only real faces on a machine without downloads.

The demo, the tests and the benchmarks read them here, so a missing package gives one message.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError

PORTRAIT = ("insightface", "data/images/Tom_Hanks_54745.png")  # one frontal face, 112 × 112
GROUP = ("insightface", "data/images/t1.jpg")  # six faces, some turned
ASTRONAUT = ("skimage", "data/astronaut.png")  # one face, 512 × 512
FACE_PHOTOS = (PORTRAIT, GROUP, ASTRONAUT)
_PIP = {"insightface": "insightface", "skimage": "scikit-image"}


def photo_path(package: str, relative: str) -> Path:
    """Where ``package`` keeps the photograph ``relative``."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"The photograph {relative} ships with {package}: pip install {_PIP[package]}")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def load_photo(package: str, relative: str) -> np.ndarray:
    """The photograph as RGB ``[H, W, 3]`` uint8."""
    from PIL import Image

    return np.asarray(Image.open(photo_path(package, relative)).convert("RGB"))


def photo_face_crops(limit: int | None = None, size: int = 224) -> np.ndarray:
    """Face crops ``[F, size, size, 3]`` uint8 of ``FACE_PHOTOS`` (dlib HOG boxes × 1.5), in photo order."""
    from ..pose.crop import crop_face
    from ..pose.dlib_backend import DlibFaceDetector

    detector, crops = DlibFaceDetector(), []
    for package, relative in FACE_PHOTOS:
        image = load_photo(package, relative)
        crops += [crop_face(image, face.box, size=size)[0] for face in detector.detect(image)]
    return np.stack(crops[:limit])

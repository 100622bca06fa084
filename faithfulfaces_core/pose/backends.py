"""Face and pose backends by the names users pick (nodes, CLIs, the dataset builder).

Names map to factories written as ``"package.module:callable"`` so that worker processes can
rebuild them from a picklable spec (``dataset.backends.ModelSpec``); :func:`build_backend`
builds one here and now. The dlib backend is only ever used when asked for by name.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import FaithfulFacesError

DETECTORS = {
    "insightface": "faithfulfaces_core.pose.insightface_detector:InsightFaceDetector",
    "dlib-hog": "faithfulfaces_core.pose.dlib_backend:DlibFaceDetector",
    "dlib-cnn": "faithfulfaces_core.pose.dlib_backend:DlibFaceDetector",
    "dlib-hog+cnn": "faithfulfaces_core.pose.dlib_backend:DlibFaceDetector",
}
DETECTOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "dlib-hog": {"model": "hog"},
    "dlib-cnn": {"model": "cnn"},
    "dlib-hog+cnn": {"model": "hog", "cnn_retry": True, "min_score": 0.25},  # CNN only on face-less frames
}
ESTIMATORS = {
    "6drepnet": "faithfulfaces_core.pose.loading:load_pose_estimator",
    "pnp": "faithfulfaces_core.pose.dlib_backend:LandmarkPoseEstimator",
}


def resolve_factory(factory: str) -> Any:
    """The callable named ``"package.module:callable"``, or an error naming what is wrong."""
    module_name, _, attr = factory.partition(":")
    if not module_name or not attr:
        raise FaithfulFacesError(f"Model factory '{factory}' is not of the form 'package.module:callable'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FaithfulFacesError(
            f"Cannot import '{module_name}' for model factory '{factory}' ({exc}); check the name "
            "and that the package is installed."
        ) from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise FaithfulFacesError(f"Module '{module_name}' has no '{attr}' (model factory '{factory}').")
        target = getattr(target, part)
    if not callable(target):
        raise FaithfulFacesError(f"Model factory '{factory}' is not callable.")
    return target


def build_backend(kind: str, name: str, **kwargs: Any) -> Any:
    """A face detector (``kind="detector"``) or pose estimator (``kind="pose"``) by name."""
    table, defaults = {"detector": (DETECTORS, DETECTOR_DEFAULTS), "pose": (ESTIMATORS, {})}[kind]
    if name not in table:
        raise FaithfulFacesError(f"Unknown {kind} backend '{name}': use one of {', '.join(table)}.")
    return resolve_factory(table[name])(**{**defaults.get(name, {}), **kwargs})

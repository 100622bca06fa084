"""The models a dataset build runs, as picklable specs that each worker process builds itself.

A ``ModelSpec`` is a factory named ``"package.module:callable"`` plus JSON-able keyword
arguments: it pickles as two small values, so ``spawn`` workers rebuild their own detector,
estimator and captioner (models are never sent between processes). Built-in names:

- detectors: ``insightface`` (``pack_dir=`` a user-placed pack; detection module only), ``dlib-hog``, ``dlib-cnn``
- pose estimators: ``6drepnet`` (``path=`` a file or folder: ``.pth`` / ``.safetensors`` on torch, ``.onnx`` on
  ONNX Runtime; ``pose.loading.load_pose_estimator``), ``pnp`` (dlib landmarks; needs a dlib detector)
- captioners: ``sidecar``, ``table``, ``qwen2.5-vl``

Any other ``module:callable`` works the same way (``faithfulfaces_core.tiny.scripted:ScriptedDetector``
in the tests). An already built object may be passed instead of a spec; it is pickled as is.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from typing import Any

from ..errors import FaithfulFacesError
from ..pose.backends import DETECTOR_DEFAULTS as POSE_DETECTOR_DEFAULTS
from ..pose.backends import DETECTORS, ESTIMATORS, resolve_factory

DETECTOR_DEFAULTS: dict[str, dict[str, Any]] = {
    **POSE_DETECTOR_DEFAULTS,
    "insightface": {"modules": ["detection"]},  # boxes are all curation needs
}
CAPTIONERS = {
    "sidecar": "faithfulfaces_core.dataset.captions:SidecarCaptioner",
    "table": "faithfulfaces_core.dataset.captions:TableCaptioner",
    "qwen2.5-vl": "faithfulfaces_core.dataset.captions:QwenVLCaptioner",
}
KINDS = {"detector": DETECTORS, "pose": ESTIMATORS, "captioner": CAPTIONERS}
DEFAULTS = {"detector": DETECTOR_DEFAULTS, "pose": {}, "captioner": {}}


@dataclass(frozen=True)
class ModelSpec:
    """``factory`` = ``"package.module:callable"``; ``build()`` calls it with ``kwargs``."""

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        module, _, attr = self.factory.partition(":")
        if not module or not attr:
            raise FaithfulFacesError(
                f"Model factory '{self.factory}' is not of the form 'package.module:callable' "
                "(or one of the built-in names)."
            )

    def resolve(self) -> Any:
        return resolve_factory(self.factory)

    def build(self) -> Any:
        return self.resolve()(**self.kwargs)

    def describe(self) -> str:
        return f"{self.factory}({json.dumps(self.kwargs, sort_keys=True, default=str)})"


def model_spec(kind: str, name: str, kwargs: dict[str, Any] | None = None) -> ModelSpec:
    """A spec from a built-in ``name`` of ``kind`` (``detector``/``pose``/``captioner``) or a ``module:callable``."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    table = KINDS[kind]
    if name in table:
        return ModelSpec(table[name], {**DEFAULTS[kind].get(name, {}), **(kwargs or {})})
    if ":" in name:
        return ModelSpec(name, dict(kwargs or {}))
    raise FaithfulFacesError(
        f"Unknown {kind} '{name}': use one of {', '.join(table)} or a factory 'package.module:callable'."
    )


def describe(source: Any) -> str:
    """A stable description of a spec or a built object (stored in ``build.json``)."""
    if isinstance(source, ModelSpec):
        return source.describe()
    return f"{type(source).__module__}.{type(source).__qualname__}:{getattr(source, 'name', '?')}"


def build(source: Any) -> Any:
    """The model for ``source``: ``source.build()`` for a spec, the object itself otherwise."""
    return source.build() if isinstance(source, ModelSpec) else source


def check_picklable(source: Any, what: str) -> None:
    """Workers get their models by pickling; say which model cannot be, and what to do."""
    try:
        pickle.dumps(source)
    except Exception as exc:
        raise FaithfulFacesError(
            f"The {what} {describe(source)} cannot be sent to worker processes ({exc}). Pass a ModelSpec "
            "('package.module:callable' + keyword arguments) so each worker builds its own, or use workers=1."
        ) from exc

"""User-facing errors.

Every error the pack raises for bad input or a missing model is a ``FaithfulFacesError``: its
message names the problem *and* the fix, so ComfyUI can show it as is instead of a traceback
from deep inside torch.
"""

from __future__ import annotations


class FaithfulFacesError(ValueError):
    """Bad input or environment, with a message that says what to change."""


class MissingModelError(FaithfulFacesError, FileNotFoundError):
    """A model file the user must place is not where it should be."""


class MissingDependencyError(FaithfulFacesError, ImportError):
    """An optional Python package a feature needs is missing or broken."""


class CheckpointError(FaithfulFacesError):
    """A checkpoint file is of the wrong kind, has wrong shapes or misses keys."""


class NoFaceError(FaithfulFacesError):
    """No face was found where one was required."""


class MultipleFacesError(FaithfulFacesError):
    """Several faces were found where exactly one was required."""

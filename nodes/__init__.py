"""The pack's ComfyUI nodes (V3 schema, ``comfy_api.latest``), in the order the menu shows them."""

from .aligner import EncodePoseToken, LoadAligner
from .evaluation import FaceSimEvaluate
from .models import register_model_folders
from .native import NativeWanPatch, WanVaceToVideoReferences
from .pose import FacePoseEstimate, LoadFaceDetector, LoadPoseEstimator
from .references import PickReferenceFaces
from .sampler import ApplyLoRA, LoadVACEPipeline, VACESampler

NODES = [
    LoadFaceDetector,
    LoadPoseEstimator,
    FacePoseEstimate,
    PickReferenceFaces,
    LoadAligner,
    EncodePoseToken,
    LoadVACEPipeline,
    ApplyLoRA,
    VACESampler,
    NativeWanPatch,
    WanVaceToVideoReferences,
    FaceSimEvaluate,
]

__all__ = ["NODES", "register_model_folders"]

"""The pack's ComfyUI nodes (V3 schema, ``comfy_api.latest``), in the order the menu shows them."""

from .aligner import EncodePoseToken, LoadAligner
from .evaluation import FaceSimEvaluate
from .models import register_model_folders
from .native import NativeWanPatch
from .pose import FacePoseEstimate, LoadFaceDetector, LoadPoseEstimator
from .sampler import ApplyLoRA, LoadVACEPipeline, VACESampler

NODES = [
    LoadFaceDetector,
    LoadPoseEstimator,
    FacePoseEstimate,
    LoadAligner,
    EncodePoseToken,
    LoadVACEPipeline,
    ApplyLoRA,
    VACESampler,
    NativeWanPatch,
    FaceSimEvaluate,
]

__all__ = ["NODES", "register_model_folders"]

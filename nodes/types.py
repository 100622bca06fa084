"""The pack's own socket types (objects passed between FaithfulFaces nodes)."""

from comfy_api.latest import io

FaceDetector = io.Custom("FF_FACE_DETECTOR")  # faithfulfaces_core.pose.types.FaceDetector
PoseEstimator = io.Custom("FF_POSE_ESTIMATOR")  # faithfulfaces_core.pose.types.PoseEstimator
FacePose = io.Custom("FF_FACE_POSE")  # faithfulfaces_core.pose.types.FacePose
Aligner = io.Custom("FF_ALIGNER")  # faithfulfaces_core.aligner module, eval mode
PoseToken = io.Custom("FF_POSE_TOKEN")  # faithfulfaces_core.aligner output for one face
VacePipeline = io.Custom("FF_VACE_PIPELINE")  # a loaded diffusers WanVACEPipeline (+ injection)

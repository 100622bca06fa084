"""The pack's own socket types, and the pose-token controls that two nodes share."""

from comfy_api.latest import io

FaceDetector = io.Custom("FF_FACE_DETECTOR")  # faithfulfaces_core.pose.types.FaceDetector
PoseEstimator = io.Custom("FF_POSE_ESTIMATOR")  # faithfulfaces_core.pose.types.PoseEstimator
FacePose = io.Custom("FF_FACE_POSE")  # faithfulfaces_core.pose.types.FacePose
Aligner = io.Custom("FF_ALIGNER")  # faithfulfaces_core.aligner module, eval mode
PoseToken = io.Custom("FF_POSE_TOKEN")  # faithfulfaces_core.pose_token.PoseToken: tokens [B, M, C] + poses
VacePipeline = io.Custom("FF_VACE_PIPELINE")  # nodes.sampler.PipelineAndLora: WanVACEPipeline + LoRA path, scale


def pose_token_controls(window_of: str) -> list:
    """Strength, start/end window and negative-pass switch of the pose tokens.

    ``window_of`` says what start/end are fractions of ("the steps" on diffusers, "the schedule"
    on ComfyUI's native model).
    """
    return [
        io.Float.Input("pose_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                       tooltip="Weight of the global pose tokens in attention (0 = off)."),
        io.Float.Input("pose_start", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip=f"Fraction of {window_of} after which the pose tokens act."),
        io.Float.Input("pose_end", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip=f"Fraction of {window_of} after which the pose tokens stop."),
        io.Boolean.Input("pose_on_negative", default=False,
                         tooltip="Whether the negative (unconditional) pass also sees the pose tokens."),
    ]

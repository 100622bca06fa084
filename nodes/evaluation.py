"""Identity-fidelity evaluation: FaceSim of generated frames against the reference face, with head pose."""

from __future__ import annotations

from comfy_api.latest import io

from . import types
from .images import from_uint8, to_uint8_list

CATEGORY = "FaithfulFaces/evaluation"
EMPTY = -1.0


class FaceSimEvaluate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulFacesFaceSim",
            display_name="Identity Fidelity / FaceSim (FaithfulFaces)",
            category=CATEGORY,
            description=(
                "FaceSim: cosine similarity (clipped at 0) between the reference face and the largest face of "
                "each sampled frame, with the head pose of every frame and the similarity binned by |yaw| "
                "(< 30°, 30–60°, > 60°). Frames without a face are retried on a ×1.25 padded canvas and "
                f"counted, never averaged in silently. A value that does not exist (an empty bin) is {EMPTY:g}. "
                "Batches longer than 81 frames also get FaceSim per 81-frame segment (overlap 16) and the drift."
            ),
            inputs=[
                io.Image.Input("reference", tooltip="The reference face, or several (a batch): each frame is then scored "
                                                    "by its best match, and the mean over references is reported."),
                io.Image.Input("frames", tooltip="The generated video frames."),
                types.FaceDetector.Input("face_detector"),
                types.PoseEstimator.Input("pose_estimator"),
                io.Int.Input("sample_frames", default=16, min=0, max=100000,
                             tooltip="Frames sampled uniformly (16 is the usual protocol); 0 = all frames."),
                io.Combo.Input("padding", options=["black", "edge"], default="black",
                               tooltip="Padding of the ×1.25 canvas a face-less frame is retried on."),
            ],
            outputs=[
                io.Float.Output(display_name="mean"),
                io.Float.Output(display_name="min"),
                io.Float.Output(display_name="yaw_under_30"),
                io.Float.Output(display_name="yaw_30_60"),
                io.Float.Output(display_name="yaw_over_60"),
                io.String.Output(display_name="summary"),
                io.String.Output(display_name="report_json"),
                io.Image.Output(display_name="plot"),
            ],
        )

    @classmethod
    def execute(cls, reference, frames, face_detector, pose_estimator, sample_frames, padding) -> io.NodeOutput:
        import json

        from faithfulfaces_core.eval.facesim import FaceSimEvaluator
        from faithfulfaces_core.eval.plot import plot_video
        from faithfulfaces_core.eval.report import headline_numbers, report_for_frames, summary_text

        evaluator = FaceSimEvaluator(face_detector, pose_estimator, pad_mode=padding)
        report, score = report_for_frames(
            evaluator, to_uint8_list(reference), to_uint8_list(frames),
            count=sample_frames or None, name="frames",
        )
        text = summary_text(report, empty_value=EMPTY)
        return io.NodeOutput(
            *headline_numbers(report, empty=EMPTY),
            text,
            json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False),
            from_uint8([plot_video(score)]),
        )

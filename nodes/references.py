"""Pick Reference Faces: the photos or frames of one person that cover the head poses best."""

from __future__ import annotations

from comfy_api.latest import io

from . import types
from .images import from_uint8, to_uint8_list

CATEGORY = "FaithfulFaces/pose"


class PickReferenceFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulFacesPickReferenceFaces",
            display_name="Pick Reference Faces (FaithfulFaces)",
            category=CATEGORY,
            description=(
                "From photos or video frames of one person: detect, crop (box ×enlarge) and estimate each face's "
                "pose; drop faces that are too small, too blurred (variance of the Laplacian) or of another person "
                "than the majority; then choose K faces that cover the head poses (farthest-point sampling on the "
                "sphere of head directions, starting from the most frontal face)."
            ),
            inputs=[
                io.Image.Input("images"),
                types.FaceDetector.Input("face_detector"),
                types.PoseEstimator.Input("pose_estimator"),
                io.Int.Input("k", default=4, min=1, max=8, tooltip="How many reference faces to choose."),
                io.Combo.Input("multiple_faces", options=["identity", "largest", "skip"], default="identity",
                               tooltip="identity: every face is a candidate and the identity filter keeps the "
                                       "person's; largest: the largest face of each image; skip: drop such images."),
                io.Int.Input("min_face", default=48, min=8, max=2048,
                             tooltip="Smallest face (shorter side of the detector box, pixels) to keep."),
                io.Float.Input("min_sharpness", default=30.0, min=0.0, max=10000.0, step=1.0,
                               tooltip="Smallest variance of the Laplacian of the face at 112×112 (sharp photos "
                                       "≥ 100, a Gaussian blur of σ 2 px ≈ 7)."),
                io.Float.Input("enlarge", default=1.5, min=1.0, max=3.0, step=0.05,
                               tooltip="Face box enlargement before cropping (the paper uses 1.5)."),
                io.Int.Input("crop_size", default=512, min=64, max=2048, step=16,
                             tooltip="Side of the reference crops."),
            ],
            outputs=[
                io.Image.Output(display_name="reference_faces"),
                types.FacePose.Output(display_name="face_pose"),
                io.Image.Output(display_name="coverage"),
                io.String.Output(display_name="summary"),
            ],
        )

    @classmethod
    def execute(cls, images, face_detector, pose_estimator, k, multiple_faces, min_face, min_sharpness, enlarge,
                crop_size) -> io.NodeOutput:
        from faithfulfaces_core.references import PickSettings, pick_reference_faces
        from faithfulfaces_core.references.plot import plot_coverage

        frames = to_uint8_list(images)
        settings = PickSettings(k=k, multiple_faces=multiple_faces, min_face=min_face, min_sharpness=min_sharpness,
                                enlarge=enlarge, crop_size=crop_size)
        result = pick_reference_faces(frames, face_detector, pose_estimator, settings,
                                      names=[f"input image {i + 1} of {len(frames)}" for i in range(len(frames))])
        return io.NodeOutput(
            from_uint8([c.reference for c in result.chosen]),
            [c.pose for c in result.chosen],
            from_uint8([plot_coverage(result)]),
            result.summary(),
        )

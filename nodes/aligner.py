"""The pose-shared identity aligner: its loader and the global pose token."""

from __future__ import annotations

from comfy_api.latest import io

from . import models, types

CATEGORY = "FaithfulFaces/aligner"


class LoadAligner(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulFacesLoadAligner",
            display_name="Load Pose Aligner (FaithfulFaces)",
            category=CATEGORY,
            description="A FaithfulFaces aligner file (.safetensors from training/train_lora.py) in models/faithfulfaces/.",
            inputs=[
                io.Combo.Input("aligner", options=models.aligner_files()),
                io.Combo.Input("device", options=["auto", "cpu", "cuda"], default="auto"),
            ],
            outputs=[types.Aligner.Output(display_name="aligner")],
        )

    @classmethod
    def execute(cls, aligner, device) -> io.NodeOutput:
        from faithfulfaces_core.aligner import load_aligner
        from faithfulfaces_core.devices import resolve_device

        return io.NodeOutput(load_aligner(models.resolve("faithfulfaces", aligner), device=resolve_device(device)))


class EncodePoseToken(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulFacesPoseToken",
            display_name="Global Pose Token (FaithfulFaces)",
            category=CATEGORY,
            description=(
                "Face crop + Euler angles → pose-shared dictionary → the global pose tokens the "
                "sampler injects into every transformer block."
            ),
            inputs=[types.FacePose.Input("face_pose"), types.Aligner.Input("aligner")],
            outputs=[types.PoseToken.Output(display_name="pose_token")],
        )

    @classmethod
    def execute(cls, face_pose, aligner) -> io.NodeOutput:
        from faithfulfaces_core.pose_token import pose_token_from_faces

        return io.NodeOutput(pose_token_from_faces(aligner, face_pose))

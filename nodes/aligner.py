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
    def validate_inputs(cls, aligner):
        """The pack's missing-file message at queue time on every ComfyUI (0.33 would answer "Value not in list")."""
        return models.check_model("faithfulfaces", aligner)

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
                "sampler injects into every transformer block. Several faces of one person are pooled "
                "(the mean of their dictionary weights) into one token set."
            ),
            inputs=[
                types.FacePose.Input("face_pose"),
                types.Aligner.Input("aligner"),
                io.Combo.Input("several_faces", options=["pool", "one per face"], default="pool", optional=True,
                               tooltip="pool: the faces are views of one person (e.g. from Pick Reference Faces), "
                                       "their dictionary weights are averaged into one token set; one per face: "
                                       "a token set for each face."),
            ],
            outputs=[types.PoseToken.Output(display_name="pose_token")],
        )

    @classmethod
    def execute(cls, face_pose, aligner, several_faces="pool") -> io.NodeOutput:
        from faithfulfaces_core.pose_token import pose_token_from_faces

        return io.NodeOutput(pose_token_from_faces(aligner, face_pose, pool=several_faces == "pool"))

"""FaithfulFaces on ComfyUI's native Wan model: one MODEL patch for KSampler workflows."""

from __future__ import annotations

from comfy_api.latest import io

from . import models, types

CATEGORY = "FaithfulFaces/native"
NO_LORA = "none"


def _lora_options() -> list[str]:
    """"none" first (the default), then FaithfulFaces LoRAs (by their metadata), then the other LoRAs."""
    return [NO_LORA] + models.faithfulfaces_loras_first()


class NativeWanPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        options = _lora_options()
        return io.Schema(
            node_id="FaithfulFacesNativeWanPatch",
            display_name="FaithfulFaces Patch (native Wan model)",
            category=CATEGORY,
            description=(
                "Patches a native Wan2.1-VACE MODEL (Load Diffusion Model) for any sampler: the FaithfulFaces "
                "LoRA through ComfyUI's LoRA loader, and the global pose tokens in every block's self-attention."
            ),
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("lora", options=options, default=NO_LORA,
                               tooltip="A FaithfulFaces LoRA from models/loras/ (either layout); none: pose tokens only."),
                io.Float.Input("lora_strength", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="As for any LoRA in ComfyUI (0 = off)."),
                *types.pose_token_controls("the schedule"),
                types.PoseToken.Input("pose_token", optional=True),
                io.Int.Input("reference_frames", default=1, min=0, max=64, optional=True,
                             tooltip="Latent frames the VACE reference image adds in front of the video (WanVaceToVideo's "
                                     "trim_latent: 1 with a reference image, 0 without). Under context windows they are "
                                     "kept in front of every window."),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, lora):
        return True if lora == NO_LORA else models.check_model("loras", lora)

    @classmethod
    def execute(cls, model, lora, lora_strength, pose_strength, pose_start, pose_end, pose_on_negative,
                pose_token=None, reference_frames=1) -> io.NodeOutput:
        from faithfulfaces_core.native import patch_native_model

        patched = patch_native_model(
            model, None if pose_token is None else pose_token.tokens,
            lora_path=None if lora == NO_LORA else models.resolve("loras", lora), lora_strength=lora_strength,
            strength=pose_strength, start=pose_start, end=pose_end, pose_on_negative=pose_on_negative,
            reference_frames=reference_frames,
        )
        return io.NodeOutput(patched)

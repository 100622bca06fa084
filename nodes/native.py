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


class WanVaceToVideoReferences(io.ComfyNode):
    """ComfyUI's ``WanVaceToVideo`` with an IMAGE batch of references instead of its first image only."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulFacesWanVaceToVideoReferences",
            display_name="WanVaceToVideo, several references (FaithfulFaces)",
            category=CATEGORY,
            description=(
                "What ComfyUI's WanVaceToVideo does, but every image of the reference batch becomes its own "
                "latent frame in front of the control video (in WanVACEPipeline's layout); mask and trim_latent "
                "count them. With one reference it is exactly WanVaceToVideo."
            ),
            inputs=[
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Vae.Input("vae"),
                io.Int.Input("width", default=832, min=16, max=4096, step=16),
                io.Int.Input("height", default=480, min=16, max=4096, step=16),
                io.Int.Input("length", default=81, min=1, max=4096, step=4),
                io.Int.Input("batch_size", default=1, min=1, max=4096),
                io.Float.Input("strength", default=1.0, min=0.0, max=1000.0, step=0.01),
                io.Image.Input("control_video", optional=True),
                io.Mask.Input("control_masks", optional=True),
                io.Image.Input("reference_images", optional=True,
                               tooltip="One or several reference images (e.g. from Pick Reference Faces)."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive"),
                io.Conditioning.Output(display_name="negative"),
                io.Latent.Output(display_name="latent"),
                io.Int.Output(display_name="trim_latent"),
            ],
        )

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, strength, control_video=None,
                control_masks=None, reference_images=None) -> io.NodeOutput:
        import comfy.latent_formats
        import comfy.model_management
        import comfy.utils
        import node_helpers
        import torch
        from comfy_extras.nodes_wan import WanVaceToVideo

        from faithfulfaces_core.native.references import with_references

        blank = [[torch.zeros(1, 1, 1), {}]]
        control = WanVaceToVideo.execute(blank, blank, vae, width, height, length, batch_size, strength,
                                         control_video, control_masks, None).args[0][0][1]
        references = []
        for image in [] if reference_images is None else reference_images.split(1):
            image = comfy.utils.common_upscale(image.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)
            latent = vae.encode(image[:, :, :, :3])
            references.append(torch.cat([latent, comfy.latent_formats.Wan21().process_out(torch.zeros_like(latent))],
                                        dim=1))
        frames, mask, trim = with_references(control["vace_frames"][-1], control["vace_mask"][-1], references)
        values = {"vace_frames": [frames], "vace_mask": [mask], "vace_strength": [strength]}
        positive = node_helpers.conditioning_set_values(positive, values, append=True)
        negative = node_helpers.conditioning_set_values(negative, values, append=True)
        latent = torch.zeros([batch_size, 16, frames.shape[2], height // 8, width // 8],
                             device=comfy.model_management.intermediate_device())
        return io.NodeOutput(positive, negative, {"samples": latent}, trim)

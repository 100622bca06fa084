"""Wan2.1-VACE on diffusers: pipeline loader, LoRA, and the sampler with pose-token injection."""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from comfy_api.latest import InputImpl, Types, io

from faithfulfaces_core.errors import FaithfulFacesError

from . import models, types

CATEGORY = "FaithfulFaces/generation"
MAX_SIDE = 4096
DEFAULT_NEGATIVE = "low quality, blurry, static, still picture, worst quality, subtitles, overexposed"


@dataclass(frozen=True)
class PipelineAndLora:
    """What flows on a ``FF_VACE_PIPELINE`` socket: the loaded pipeline and the LoRA to apply to it.

    ApplyLoRA returns a copy with its LoRA set (it never mutates the upstream pipeline), so a
    cached loader output can feed several branches with different LoRAs or strengths.
    """

    pipe: object
    name: str
    lora_path: str | None = None
    lora_scale: float = 1.0


class LoadVACEPipeline(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulFacesLoadVACEPipeline",
            display_name="Load Wan2.1-VACE Pipeline (FaithfulFaces)",
            category=CATEGORY,
            description=(
                "A diffusers Wan2.1-VACE folder from models/diffusers/ (1.3B or 14B), or a single-file VACE "
                "transformer from models/diffusion_models/ (the other components then come from text_encoder_vae)."
            ),
            inputs=[
                io.Combo.Input("model", options=models.vace_models()),
                io.Combo.Input("components_from", options=models.vace_models(),
                               tooltip="For a single-file transformer: the diffusers folder whose VAE, text encoder "
                                       "and tokenizer to use. Ignored for a diffusers folder."),
                io.Combo.Input("dtype", options=["auto", "bf16", "fp16", "fp32"], default="auto",
                               tooltip="auto: bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU."),
                io.Combo.Input("device", options=["auto", "cuda", "cpu"], default="auto"),
                io.Combo.Input("offload", options=["none", "model", "sequential"], default="none",
                               tooltip="model: whole models move to the GPU when used (14B on 24 GB); "
                                       "sequential: layer by layer (least VRAM, slowest)."),
                io.Boolean.Input("vae_tiling", default=False, tooltip="Decode in tiles: less VRAM at high resolutions."),
                io.Combo.Input("attention", options=["default", "native", "flash", "sage", "xformers"],
                               default="default", tooltip="diffusers attention backend (the package must be installed)."),
            ],
            outputs=[types.VacePipeline.Output(display_name="vace_pipeline")],
        )

    @classmethod
    def validate_inputs(cls, model, components_from):
        """components_from matters only for a single-file transformer, so the node checks both itself."""
        try:
            _model_paths(model, components_from)
        except FaithfulFacesError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, model, components_from, dtype, device, offload, vae_tiling, attention) -> io.NodeOutput:
        from faithfulfaces_core.wan.loading import load_pipeline

        folder, transformer_file = _model_paths(model, components_from)
        pipe = load_pipeline(
            folder, transformer_file=transformer_file, dtype=dtype, device=device, offload=offload,
            vae_tiling=vae_tiling, attention_backend=None if attention == "default" else attention,
        )
        return io.NodeOutput(PipelineAndLora(pipe=pipe, name=model))


def _model_paths(model: str, components_from: str) -> tuple:
    """(diffusers folder, single-file transformer or None) for the loader's two dropdowns.

    A value is ``diffusers/<folder>`` or ``diffusion_models/<file>``, as ``models.vace_models``
    lists them; the "(none found)" entry gets the missing-model message.
    """
    if model.startswith(models.MISSING_PREFIX):
        models.resolve("diffusers", model)
    kind, _, name = model.partition("/")
    if kind == "diffusers":
        return models.resolve("diffusers", name), None
    if kind != "diffusion_models":
        models.resolve("diffusion_models", model)
    base_kind, _, base = components_from.partition("/")
    if base_kind != "diffusers":
        raise FaithfulFacesError(
            f"'{model}' is a single-file transformer: set components_from to a diffusers Wan2.1-VACE folder "
            f"(models/diffusers/) for its VAE, text encoder and tokenizer (got '{components_from}')."
        )
    return models.resolve("diffusers", base), models.resolve("diffusion_models", name)


class ApplyLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulFacesApplyLoRA",
            display_name="Apply FaithfulFaces LoRA",
            category=CATEGORY,
            description="A FaithfulFaces LoRA from models/loras/ (diffusers or original Wan layout).",
            inputs=[
                types.VacePipeline.Input("vace_pipeline"),
                io.Combo.Input("lora", options=models.lora_files()),
                io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.05),
            ],
            outputs=[types.VacePipeline.Output(display_name="vace_pipeline")],
        )

    @classmethod
    def validate_inputs(cls, lora):
        return models.check_model("loras", lora)

    @classmethod
    def execute(cls, vace_pipeline, lora, strength) -> io.NodeOutput:
        from faithfulfaces_core.numbers import finite_number

        scale = finite_number(strength, "LoRA strength", low=0, high=2, hint="1 = as trained, 0 = off")
        path = str(models.resolve("loras", lora))
        return io.NodeOutput(replace(vace_pipeline, lora_path=path, lora_scale=scale))


class VACESampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulFacesVACESampler",
            display_name="FaithfulFaces VACE Sampler",
            category=CATEGORY,
            description=(
                "Text-to-video with the reference face as the VACE reference image and the global pose token "
                "injected into every transformer block's self-attention."
            ),
            inputs=[
                types.VacePipeline.Input("vace_pipeline"),
                io.String.Input("prompt", multiline=True, default="a person slowly turns their head to the left"),
                io.String.Input("negative_prompt", multiline=True, default=DEFAULT_NEGATIVE),
                io.Int.Input("width", default=832, min=16, max=MAX_SIDE, step=16),
                io.Int.Input("height", default=480, min=16, max=MAX_SIDE, step=16),
                io.Int.Input("length", default=81, min=1, max=1001, step=4, tooltip="Frames: 4k+1."),
                io.Int.Input("steps", default=30, min=1, max=200),
                io.Float.Input("cfg", default=5.0, min=0.0, max=30.0, step=0.1),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Float.Input("reference_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="VACE conditioning scale of the reference face."),
                *types.pose_token_controls("the steps"),
                io.Image.Input("reference_face", optional=True,
                               tooltip="One or several reference faces (an IMAGE batch, e.g. from Pick Reference "
                                       "Faces): each image becomes one VACE reference."),
                types.PoseToken.Input("pose_token", optional=True),
                io.Int.Input("context_frames", default=0, min=0, max=1001, optional=True,
                             tooltip="Long videos: frames per context window (4k+1, e.g. 81); 0 = one window."),
                io.Int.Input("context_overlap", default=16, min=0, max=1000, optional=True,
                             tooltip="Frames two context windows share (fused with pyramid weights)."),
            ],
            outputs=[io.Image.Output(display_name="frames"), io.Video.Output(display_name="video"),
                     io.String.Output(display_name="notes", tooltip="What the sampler used and what it dropped.")],
        )

    @classmethod
    def execute(cls, vace_pipeline, prompt, negative_prompt, width, height, length, steps, cfg, seed,
                reference_strength, pose_strength, pose_start, pose_end, pose_on_negative,
                reference_face=None, pose_token=None, context_frames=0, context_overlap=16) -> io.NodeOutput:
        import logging

        import comfy.model_management
        import comfy.utils
        import torch

        from faithfulfaces_core.wan.generate import first_token_set, generate
        from faithfulfaces_core.wan.lora import use_lora

        bar = comfy.utils.ProgressBar(steps)

        def cancel() -> bool:
            comfy.model_management.throw_exception_if_processing_interrupted()
            return False

        pipe = vace_pipeline.pipe
        use_lora(pipe, vace_pipeline.lora_path)
        tokens, notes = first_token_set(None if pose_token is None else pose_token.tokens)
        for note in notes:
            logging.warning("FaithfulFaces VACE Sampler: %s", note)
        references = 0 if reference_face is None else reference_face.shape[0]
        notes.insert(0, f"{references} reference image(s); "
                        f"{'no pose tokens' if tokens is None else f'{tokens.shape[1]} pose tokens'}.")
        video = generate(
            pipe, prompt=prompt, negative_prompt=negative_prompt,
            reference_images=None if reference_face is None else reference_face.cpu().numpy(),
            pose_tokens=tokens,
            width=width, height=height, num_frames=length, steps=steps, guidance_scale=cfg,
            conditioning_scale=reference_strength, lora_scale=vace_pipeline.lora_scale, seed=seed,
            pose_strength=pose_strength, pose_start=pose_start, pose_end=pose_end, pose_on_negative=pose_on_negative,
            context_frames=context_frames or None, context_overlap=context_overlap,
            progress=lambda step, total: bar.update_absolute(step, total), cancel=cancel,
        )
        frames = torch.from_numpy(video.frames)
        components = Types.VideoComponents(images=frames, audio=None, frame_rate=Fraction(video.fps))
        return io.NodeOutput(frames, InputImpl.VideoFromComponents(components), "\n".join(notes))

"""``generate()``: one Wan2.1-VACE video from a prompt, a reference face and the pose tokens.

Checks every size up front (frames 4k+1, sides multiples of 16, batch 1) with the nearest valid
values in the message, then runs ``WanVACEPipeline`` unchanged: the reference image goes in as
the VACE reference image, the pose tokens through the injection (installed for the call if it
is not already), the LoRA scale through diffusers' ``attention_kwargs["scale"]``. Progress is
reported after every step through ``callback_on_step_end``; ``cancel()`` is asked there too and
a True answer raises ``GenerationCancelled`` between steps. Anything the callbacks raise (e.g.
ComfyUI's own interrupt exception) propagates unchanged.

Longer videos than the model was trained for: ``context_frames`` (e.g. 81) turns on context
windows over the latent frames (``windows.py``): every transformer call runs per window, each
with the reference image(s) in front and the same pose tokens, and the outputs are fused over
the overlaps as ComfyUI's context windows fuse them. Progress and cancel then come per window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import FaithfulFacesError
from ..numbers import finite_number
from .injection import PoseTokenSettings, get_pose_injection, install_pose_injection
from .windows import ContextWindows, latent_frames, windowed_transformer

WAN_FPS = 16


class GenerationCancelled(Exception):
    """The ``cancel`` callback asked to stop; raised between two denoising steps."""


class GeneratedVideo(NamedTuple):
    frames: np.ndarray  # [T, H, W, 3] float32 in 0..1
    fps: int


def _nearest_multiples(value: int, multiple: int, minimum: int) -> list[int]:
    lower = max(minimum, value // multiple * multiple)
    upper = max(minimum, lower + multiple if value > lower else lower)
    return sorted({lower, upper})


def _or(values: list[int]) -> str:
    return " or ".join(str(v) for v in values)


def check_video_size(
    width: int, height: int, num_frames: int, *, spatial: int = 16, temporal: int = 4, max_side: int | None = None
) -> None:
    """Raise a ``FaithfulFacesError`` with the nearest valid values for a size the model cannot take.

    Sides must be multiples of ``spatial`` (VAE ×8 · patch ×2 = 16 for Wan), frame counts of the
    form ``temporal·k + 1`` (4k+1: 1, 5, ..., 81).
    """
    for name, side in (("width", width), ("height", height)):
        if side < spatial or side % spatial:
            raise FaithfulFacesError(
                f"{name} {side} is not a multiple of {spatial} (at least {spatial}), which Wan2.1 needs: "
                f"use {_or(_nearest_multiples(side, spatial, spatial))}."
            )
        if max_side is not None and side > max_side:
            raise FaithfulFacesError(f"{name} {side} is larger than this model's {max_side}: use {max_side} or less.")
    if num_frames < 1 or (num_frames - 1) % temporal:
        k = max(0, (num_frames - 1) // temporal)
        options = sorted({temporal * k + 1, temporal * (k + 1) + 1}) if num_frames > 1 else [1, temporal + 1]
        raise FaithfulFacesError(
            f"num_frames {num_frames} is not of the form {temporal}k+1 (1, 5, 9, ..., 81), which Wan2.1 needs: "
            f"use {_or(options)}."
        )


def reference_to_pil(image: Any):
    """PIL image | numpy [H, W, 3] / [1, H, W, 3] (uint8 or float 0..1) | torch [3, H, W] / [1, 3, H, W]
    float 0..1 → an RGB PIL image, which is what ``WanVACEPipeline`` takes as a reference."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        if t.ndim == 4:
            _check_batch(t.shape[0], "reference image")
            t = t[0]
        if t.ndim != 3 or t.shape[0] != 3:
            raise FaithfulFacesError(
                f"A torch reference image must be [3, H, W] or [1, 3, H, W] float 0..1; got {tuple(image.shape)}."
            )
        image = t.permute(1, 2, 0).numpy()
    if not isinstance(image, np.ndarray):
        raise FaithfulFacesError(f"The reference image must be a PIL image, numpy array or torch tensor, not {type(image).__name__}.")
    arr = image
    if arr.ndim == 4:
        _check_batch(arr.shape[0], "reference image")
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise FaithfulFacesError(f"The reference image must be [H, W, 3] RGB; got shape {tuple(image.shape)}.")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def _check_batch(batch: int, what: str) -> None:
    if batch != 1:
        raise FaithfulFacesError(
            f"The {what} has batch {batch}, but WanVACEPipeline makes one video per call: pass batch 1 "
            "(run once per item)."
        )


def reference_list(references: Any) -> list:
    """One reference image, a list of them, or a batch ``[R, H, W, 3]`` → a list of RGB PIL images.

    ``WanVACEPipeline`` takes a list of reference images per video and encodes each into its own
    latent frame in front of the video; a batch is read the same way (one reference per item).
    """
    if references is None:
        return []
    if isinstance(references, (np.ndarray, torch.Tensor)) and references.ndim == 4:
        references = list(references)
    elif not isinstance(references, (list, tuple)):
        references = [references]
    return [reference_to_pil(r) for r in references]


def _check_reference_count(count: int, num_frames: int, temporal: int) -> None:
    """``WanVACEPipeline`` pads its mask by slicing the video's latent frames, so it breaks with more
    references than latent frames ``(num_frames − 1) / 4 + 1``; say so before it does."""
    latent_frames = (num_frames - 1) // temporal + 1
    if count > latent_frames:
        raise FaithfulFacesError(
            f"{count} reference images but only {latent_frames} latent frames ({num_frames} frames): "
            f"WanVACEPipeline takes at most one reference per latent frame. Use at most {latent_frames} "
            f"references, or at least {(count - 1) * temporal + 1} frames."
        )


def first_token_set(pose_tokens: torch.Tensor | None) -> tuple[torch.Tensor | None, list[str]]:
    """Pose tokens ``[B, M, C]`` → ``[1, M, C]`` for one video, and a note when sets were dropped."""
    if pose_tokens is None or pose_tokens.shape[0] <= 1:
        return pose_tokens, []
    return pose_tokens[:1], [
        f"The pose token holds {pose_tokens.shape[0]} token sets (one per face); this video used the first. "
        "Set Global Pose Token's several_faces to 'pool' to use every face."
    ]


def _check_args(steps: int, guidance_scale: float, conditioning_scale: float | Sequence[float], num_vace: int) -> None:
    if int(steps) != steps or steps < 1:
        raise FaithfulFacesError(f"steps {steps} is not allowed: use a whole number ≥ 1 (Wan: 20–50).")
    finite_number(guidance_scale, "guidance_scale (cfg)", low=0, hint="> 1 turns CFG on; Wan: 5")
    if isinstance(conditioning_scale, Sequence) and len(conditioning_scale) != num_vace:
        raise FaithfulFacesError(
            f"conditioning_scale has {len(conditioning_scale)} values but the model has {num_vace} VACE layers: "
            "give one number, or one per VACE layer."
        )
    for scale in conditioning_scale if isinstance(conditioning_scale, Sequence) else [conditioning_scale]:
        finite_number(scale, "conditioning_scale (reference strength)", hint="1 = as trained, 0 = no reference")


def context_windows(num_frames: int, context_frames: int | None, context_overlap: int, fuse: str,
                    temporal: int = 4) -> ContextWindows | None:
    """The latent-frame windows for ``num_frames`` video frames, or None when windows are off."""
    if context_frames is None:
        return None
    if context_frames < 1 or (context_frames - 1) % temporal or context_overlap < 0:
        raise FaithfulFacesError(
            f"context_frames {context_frames} / context_overlap {context_overlap} are not allowed: use a window of "
            f"{temporal}k+1 video frames (e.g. 81) and an overlap ≥ 0 (e.g. 16), or context_frames None for one window."
        )
    spec = ContextWindows(latent_frames(context_frames, temporal), latent_frames(context_overlap, temporal), fuse)
    spec.check()
    return spec


class WindowProgress:
    """Progress and cancel per window call: ``steps × passes × windows`` units in all."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | None, cancel: Callable[[], bool] | None):
        self.total, self.done = total, 0
        self.progress, self.cancel = progress, cancel

    def __call__(self, window: int, count: int) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)
        if self.cancel is not None and self.cancel():
            raise GenerationCancelled(f"Generation cancelled after window {window + 1} of {count} "
                                      f"(call {self.done} of {self.total}).")


def check_inputs(pipe, *, prompt, pose_tokens, width: int, height: int, num_frames: int, steps: int,
                 guidance_scale: float, conditioning_scale, lora_scale: float, pose: PoseTokenSettings) -> None:
    """Every check of a ``generate()`` call, before anything runs (as diffusers' ``check_inputs``)."""
    from .lora import has_lora, lora_is_fused

    if not isinstance(prompt, str):
        raise FaithfulFacesError(
            f"prompt must be one string (got {type(prompt).__name__}): WanVACEPipeline makes one video per call."
        )
    transformer = pipe.transformer
    spatial = pipe.vae_scale_factor_spatial * transformer.config.patch_size[1]
    check_video_size(
        width, height, num_frames, spatial=spatial, temporal=pipe.vae_scale_factor_temporal,
        max_side=transformer.config.rope_max_seq_len * spatial,
    )
    _check_args(steps, guidance_scale, conditioning_scale, len(transformer.config.vace_layers))
    finite_number(lora_scale, "lora_scale (LoRA strength)", hint="1 = as trained, 0 = off")
    pose.check()
    if pose_tokens is not None:
        if not isinstance(pose_tokens, torch.Tensor) or pose_tokens.ndim != 3:
            raise FaithfulFacesError("pose_tokens must be a [1, M, C] tensor (the aligner's pose tokens) or None.")
        _check_batch(pose_tokens.shape[0], "pose-token set")
    if has_lora(transformer) and lora_is_fused(transformer) and lora_scale != 1.0:
        raise FaithfulFacesError(
            f"The LoRA is fused into the weights, so lora_scale {lora_scale} cannot act: unfuse it first "
            "(faithfulfaces_core.wan.lora.unfuse_lora) or fuse it at that scale and pass lora_scale 1."
        )


def _references(reference_image: Any, reference_images: Any, num_frames: int, temporal: int) -> list:
    """The call's reference images as the list of PIL images ``WanVACEPipeline`` takes (maybe empty)."""
    if reference_image is not None and reference_images is not None:
        raise FaithfulFacesError("Give reference_image (one) or reference_images (several), not both.")
    references = [reference_to_pil(reference_image)] if reference_image is not None else reference_list(
        reference_images)
    _check_reference_count(len(references), num_frames, temporal)
    return references


def _enter_injection(stack: ExitStack, transformer, pose_tokens, pose: PoseTokenSettings, steps: int,
                     guidance_scale: float):
    """The LoRA scaling kept as it is, and the pose-token injection for this call (installed for it
    if the model has none); returns the injection, or None."""
    from .lora import kept_lora_scaling

    stack.enter_context(kept_lora_scaling(transformer))
    injection = get_pose_injection(transformer)
    if injection is None and pose_tokens is not None:
        injection = install_pose_injection(transformer)
        stack.callback(injection.remove)
    if injection is not None:
        stack.enter_context(injection.use(
            pose_tokens, strength=pose.strength, start=pose.start, end=pose.end, pose_on_negative=pose.pose_on_negative
        ))
        stack.enter_context(injection.sampling(steps, cfg=guidance_scale > 1.0))
    return injection


def _enter_windows(stack: ExitStack, pipe, windows: ContextWindows, num_frames: int, steps: int,
                   guidance_scale: float, progress: Callable[[int, int], None] | None,
                   cancel: Callable[[], bool] | None) -> None:
    """Run every transformer call per context window for this call, with progress and cancel per
    window call (``steps × passes × windows`` of them)."""
    video_frames = latent_frames(num_frames, pipe.vae_scale_factor_temporal)
    calls = int(steps) * (2 if guidance_scale > 1.0 else 1) * len(windows.windows(video_frames))
    stack.enter_context(windowed_transformer(
        pipe.transformer, windows, video_frames, on_window=WindowProgress(calls, progress, cancel),
    ))


def _step_callback(injection, steps: int, progress: Callable[[int, int], None] | None,
                   cancel: Callable[[], bool] | None) -> Callable:
    """diffusers' ``callback_on_step_end``: advance the injection's schedule, report, honour cancel."""

    def on_step_end(_pipe, step: int, _timestep, _tensors: dict) -> dict:
        if injection is not None:
            injection.step_finished(step)
        if progress is not None:
            progress(step + 1, steps)
        if cancel is not None and cancel():
            raise GenerationCancelled(f"Generation cancelled after step {step + 1} of {steps}.")
        return {}

    return on_step_end


def _run_pipeline(pipe, *, references: list, conditioning_scale, steps: int, seed: int, lora_scale: float,
                  **kwargs) -> np.ndarray:
    """One ``WanVACEPipeline`` call (a seeded CPU generator, the LoRA scale through ``attention_kwargs``)
    → its video ``[T, H, W, 3]`` float32 0..1; when it raises (a cancel included) the model hooks are
    freed first."""
    try:
        out = pipe(
            reference_images=references or None,
            conditioning_scale=list(conditioning_scale) if isinstance(conditioning_scale, Sequence)
            else conditioning_scale,
            num_inference_steps=int(steps), generator=torch.Generator(device="cpu").manual_seed(int(seed)),
            output_type="np", attention_kwargs=None if lora_scale == 1.0 else {"scale": float(lora_scale)}, **kwargs,
        )
    except BaseException:
        pipe.maybe_free_model_hooks()
        raise
    return np.asarray(out.frames[0], dtype=np.float32)


def generate(
    pipe,
    *,
    prompt: str,
    negative_prompt: str = "",
    reference_image: Any = None,
    reference_images: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
    pose_tokens: torch.Tensor | None = None,
    width: int = 832,
    height: int = 480,
    num_frames: int = 81,
    steps: int = 30,
    guidance_scale: float = 5.0,
    conditioning_scale: float | Sequence[float] = 1.0,
    lora_scale: float = 1.0,
    seed: int = 0,
    pose_strength: float = 1.0,
    pose_start: float = 0.0,
    pose_end: float = 1.0,
    pose_on_negative: bool = False,
    context_frames: int | None = None,
    context_overlap: int = 16,
    context_fuse: str = "pyramid",
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> GeneratedVideo:
    """Frames ``[T, H, W, 3]`` float 0..1 and fps (16) of one video; see the module docstring.

    ``reference_image``: one reference (a batch of one at most); ``reference_images``: several
    (a list or an ``[R, H, W, 3]`` batch), each its own VACE reference as in ``WanVACEPipeline``.

    ``pose_tokens`` ``[1, M, C]`` or None (no injection). ``pose_strength`` ≥ 0 (0 = off),
    ``pose_start``/``pose_end`` the fraction window of the steps that see the tokens,
    ``pose_on_negative`` whether the negative pass sees them too. ``lora_scale`` multiplies an
    unfused LoRA (0 = off). ``seed`` seeds a CPU generator, so results do not depend on the device.
    ``context_frames`` (video frames per window, 4k+1; None = one window), ``context_overlap``
    (video frames) and ``context_fuse`` (pyramid, flat, overlap-linear) window a long video.
    """
    pose = PoseTokenSettings(pose_strength, pose_start, pose_end, bool(pose_on_negative))
    check_inputs(
        pipe, prompt=prompt, pose_tokens=pose_tokens, width=width, height=height, num_frames=num_frames, steps=steps,
        guidance_scale=guidance_scale, conditioning_scale=conditioning_scale, lora_scale=lora_scale, pose=pose,
    )
    windows = context_windows(num_frames, context_frames, context_overlap, context_fuse, pipe.vae_scale_factor_temporal)
    references = _references(reference_image, reference_images, num_frames, pipe.vae_scale_factor_temporal)
    if cancel is not None and cancel():
        raise GenerationCancelled("Generation cancelled before the first step.")

    with ExitStack() as stack:
        injection = _enter_injection(stack, pipe.transformer, pose_tokens, pose, steps, guidance_scale)
        if windows is not None:
            _enter_windows(stack, pipe, windows, num_frames, steps, guidance_scale, progress, cancel)
        on_step_end = _step_callback(injection, steps, None if windows is not None else progress, cancel)
        frames = _run_pipeline(
            pipe, prompt=prompt, negative_prompt=negative_prompt, references=references,
            conditioning_scale=conditioning_scale, height=height, width=width, num_frames=num_frames, steps=steps,
            guidance_scale=guidance_scale, seed=seed, lora_scale=lora_scale, callback_on_step_end=on_step_end,
        )
    check_decoded_frames(frames)
    return GeneratedVideo(frames=frames, fps=WAN_FPS)


def check_decoded_frames(frames: np.ndarray) -> None:
    """Refuse a decoded video ``[T, H, W, 3]`` that holds no picture: non-finite or one constant value.

    Such a video is never a result (NaN weights, a NaN scale, or an fp16 overflow made it), so it
    must not be saved as a success.
    """
    if not np.isfinite(frames).all():
        raise FaithfulFacesError(
            f"The generated video holds non-finite pixels ({int((~np.isfinite(frames)).sum())} of {frames.size}): "
            "the model overflowed or a weight file holds NaN. Use dtype bf16 or fp32 instead of fp16, and check "
            "the LoRA and aligner files (re-export or re-train them)."
        )
    if frames.size and float(frames.max()) == float(frames.min()):
        raise FaithfulFacesError(
            f"The generated video is one constant value ({float(frames.min()):g}) in every pixel of every frame: "
            "the model produced no picture. Check the LoRA, aligner and model files, and the strengths (try 1)."
        )

"""The VACE reference frame(s) in every context window of ComfyUI's context windows.

``WanVaceToVideo`` puts the reference image's latent in front of the video latent (``R`` =
``trim_latent`` frames, mask 0) and in front of the VACE control latents. ComfyUI's context
windows (``WanContextWindowsManual`` / ``ContextWindowsManual``, an ``IndexListContextHandler``
in ``model_options["context_handler"]``) cut the whole latent into windows, so:

- the reference sits in the first window only — later windows never see the face;
- ComfyUI 0.3.75 does not cut ``vace_context`` at all (its check for conds to slice looks at
  tensors with fewer dimensions than the window dim), so a VACE model under context windows
  fails with a size mismatch in the first VACE block; later versions slice it like the latent.

:class:`ReferenceFrameHandler` wraps the handler for one sampling run (an ``outer_sample``
wrapper swaps it into that run's ``model_options``): the windows are laid over the video
frames only, and each window's model call gets the ``R`` reference latents in front of its
frames, ``vace_context`` cut to the same frames — so every window looks like a one-window
video. Fusion stays ComfyUI's; the reference frames' outputs are averaged over the windows
(``TrimVideoLatent`` drops them). The pose tokens need nothing: the ``diffusion_model``
wrapper runs per window call and reads that call's sigmas and cond/uncond rows.
"""

from __future__ import annotations

import torch

from ..errors import FaithfulFacesError

OUTER_SAMPLE_WRAPPER = "outer_sample"  # comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
VACE_KEY = "vace_context"  # [B, N, 96, F, h, w]: 16 + 16 latent channels, 64 mask channels
VACE_FRAME_DIM = 3
VACE_MASK = slice(32, None)


def window_frames(window, frames: int) -> list[int]:
    """Video-frame indices of one window call: the window's ``index_list`` (after a causal anchor
    frame where ComfyUI adds one), checked against the ``frames`` the call got."""
    indices = list(window.index_list)
    anchor = getattr(window, "causal_anchor_index", None)
    if anchor is not None and anchor >= 0:
        indices = [anchor] + indices
    if len(indices) != frames:
        raise RuntimeError(f"A context window of {len(indices)} frames got {frames} latent frames.")
    return indices


def check_reference_frames(conds: list, reference_frames: int, total: int) -> None:
    """The first ``reference_frames`` latent frames must be VACE reference frames (mask 0)."""
    for cond in conds or []:
        for item in cond or []:
            vace = item.get("model_conds", {}).get(VACE_KEY)
            if vace is None:
                raise FaithfulFacesError(
                    f"reference_frames is {reference_frames} but the conditioning has no VACE latents: set it to 0, "
                    "or condition with WanVaceToVideo and a reference_image."
                )
            if vace.cond.shape[VACE_FRAME_DIM] != total:
                raise RuntimeError(f"VACE latents have {vace.cond.shape[VACE_FRAME_DIM]} frames, the latent {total}.")
            if vace.cond[:, :, VACE_MASK, :reference_frames].abs().max() != 0:
                raise FaithfulFacesError(
                    f"reference_frames is {reference_frames} but those first latent frames are not VACE reference "
                    "frames (their mask is not 0): connect WanVaceToVideo's trim_latent to reference_frames "
                    "(0 without a reference_image)."
                )


def with_vace_frames(conds: list, frames: list[int]) -> list:
    """``conds`` with each ``vace_context`` cut to the latent ``frames`` (shallow copies)."""
    out = []
    for cond in conds:
        if cond is None:
            out.append(None)
            continue
        items = []
        for item in cond:
            model_conds = dict(item.get("model_conds", {}))
            vace = model_conds[VACE_KEY]
            index = torch.tensor(frames, device=vace.cond.device)
            model_conds[VACE_KEY] = vace._copy_with(vace.cond.index_select(VACE_FRAME_DIM, index))
            items.append({**item, "model_conds": model_conds})
        out.append(items)
    return out


class ReferenceFrameHandler:
    """ComfyUI's context handler with the ``R`` reference frames in front of every window."""

    def __init__(self, inner, reference_frames: int) -> None:
        self.inner = inner
        self.reference_frames = reference_frames

    def __getattr__(self, name: str):
        if name == "inner":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _video(self, x_in: torch.Tensor) -> torch.Tensor:
        dim = self.inner.dim
        return x_in.narrow(dim, self.reference_frames, x_in.size(dim) - self.reference_frames)

    def _apply_freenoise(self, noise: torch.Tensor, conds: list, seed: int) -> torch.Tensor:
        """FreeNoise (ComfyUI 0.33+, called by its ``sampler_sample`` wrapper) over the video frames only.

        ComfyUI copies noise between frames by window position; over the whole latent it would copy the
        reference frames' noise into the video and lay its windows one frame off ours.
        """
        dim, count = self.inner.dim, self.reference_frames
        video = self.inner._apply_freenoise(self._video(noise).clone(), conds, seed)
        return torch.cat([noise.narrow(dim, 0, count), video], dim=dim)

    def should_use_context(self, model, conds, x_in, timestep, model_options) -> bool:
        return self.inner.should_use_context(model, conds, self._video(x_in), timestep, model_options)

    def execute(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        dim, count = self.inner.dim, self.reference_frames
        check_reference_frames(conds, count, x_in.size(dim))
        refs = x_in.narrow(dim, 0, count)
        ref_outputs: list[list[torch.Tensor]] = []

        def per_window(model_, sub_conds, sub_x, sub_timestep, options):
            window = options["transformer_options"]["context_window"]
            frames = list(range(count)) + [count + f for f in window_frames(window, sub_x.size(dim))]
            x = torch.cat([refs.to(sub_x), sub_x], dim=dim)
            outs = calc_cond_batch(model_, with_vace_frames(sub_conds, frames), x, sub_timestep, options)
            ref_outputs.append([out.narrow(dim, 0, count) for out in outs])
            return [out.narrow(dim, count, out.size(dim) - count) for out in outs]

        fused = self.inner.execute(per_window, model, conds, self._video(x_in), timestep, model_options)
        refs_out = [torch.stack([outs[i] for outs in ref_outputs]).mean(0) for i in range(len(fused))]
        return [torch.cat([ref.to(video), video], dim=dim) for ref, video in zip(refs_out, fused, strict=True)]


class ReferenceFramesWrapper:
    """``outer_sample`` wrapper: wraps the run's context handler (if any) for ``reference_frames``."""

    def __init__(self, reference_frames: int) -> None:
        self.reference_frames = reference_frames

    def __call__(self, executor, *args, **kwargs):
        options = executor.class_obj.model_options
        handler = options.get("context_handler")
        if handler is None or isinstance(handler, ReferenceFrameHandler):
            return executor(*args, **kwargs)
        options["context_handler"] = ReferenceFrameHandler(handler, self.reference_frames)
        try:
            return executor(*args, **kwargs)
        finally:
            options["context_handler"] = handler


def install_reference_frames(model, key: str, reference_frames: int) -> None:
    """Keep ``reference_frames`` VACE reference latents in front of every context window of ``model``."""
    if int(reference_frames) != reference_frames or reference_frames < 0:
        raise FaithfulFacesError(f"reference_frames {reference_frames} is not allowed: use WanVaceToVideo's trim_latent (0 or more).")
    if reference_frames:
        model.add_wrapper_with_key(OUTER_SAMPLE_WRAPPER, key, ReferenceFramesWrapper(int(reference_frames)))

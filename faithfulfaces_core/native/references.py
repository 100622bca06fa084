"""Several VACE reference images on the native path: their latent frames in front of the control video.

``WanVACEPipeline`` encodes each reference image to one latent frame (the 16 image channels, then
16 zero channels where the control video has its "reactive" half) and puts each in front of the
video in turn, so the references end up in reverse order: ``[ref_R-1, …, ref_0, control…]``. The
VACE mask gets one all-zero frame per reference and the sampled latent one extra frame per
reference, which is trimmed after sampling. ComfyUI's ``WanVaceToVideo`` does the same for one
reference; this is the same layout for R of them.
"""

from __future__ import annotations

import torch

from ..errors import FaithfulFacesError


def with_references(
    control: torch.Tensor, mask: torch.Tensor, references: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Control latents ``[B, 32, T, h, w]`` and VACE mask ``[1, 64, T, h, w]``, reference latents
    ``[B, 32, 1, h, w]`` each (in the user's order) → ``(frames [B, 32, R+T, h, w], mask
    [1, 64, R+T, h, w], trim_latent R)``."""
    for n, ref in enumerate(references):
        if ref.ndim != 5 or ref.shape[2] != 1 or ref.shape[:2] != control.shape[:2] or ref.shape[3:] != control.shape[3:]:
            raise FaithfulFacesError(
                f"Reference latent {n + 1} has shape {tuple(ref.shape)}; expected one latent frame "
                f"{(control.shape[0], control.shape[1], 1, *control.shape[3:])} like the control video's."
            )
    if not references:
        return control, mask, 0
    frames = torch.cat([*reversed(references), control], dim=2)
    pad = torch.zeros_like(mask[:, :, :1]).expand(-1, -1, len(references), -1, -1)
    return frames, torch.cat([pad, mask], dim=2), len(references)

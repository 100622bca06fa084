"""Model inputs from clips, reference faces and prompts, built with ``WanVACEPipeline``'s own methods.

The VACE context of identity-preserving text-to-video (what ``WanVACEPipeline.__call__`` builds
for ``reference_images=[face]`` and no control video) is, along time::

    context = [ [ref_latent; 0] | zero-video latents ]  (32 channels)  ⊕  masks (64 channels)
    latents = [ ref slot        | video latents      ]  (16 channels)

Only the reference slot depends on the sample. So the context is built from two parts, each by
the pipeline's methods: the *reference part* ``[B, 32, 1, h, w]`` (``preprocess_conditions`` +
``prepare_video_latents`` on a one-frame blank video, keeping the reference slot) and the
*constant part* (``prepare_video_latents`` of the blank clip, ``prepare_masks``), computed once.
``tests/test_training_encoding`` checks the assembly equals the pipeline's full call exactly.

Training targets: the clean latents ``x0 = [ref_latent | video latents]``, the reference slot
holding the reference face's own latent (as DiffSynth-Studio trains VACE references).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def latent_frames(num_frames: int, temporal: int) -> int:
    """Latent frames of a clip of ``num_frames`` (4k+1 → k+1 for Wan)."""
    return (num_frames - 1) // temporal + 1


class Conditioner:
    """The frozen text encoder and VAE of a ``WanVACEPipeline``, turned into training inputs.

    ``pipe`` needs ``tokenizer``, ``text_encoder``, ``vae`` and a ``transformer`` whose config
    gives the patch size (a meta-device copy is enough). Every method runs without gradients on
    ``device`` and returns float32 tensors on ``device``.
    """

    def __init__(self, pipe, *, device: torch.device, height: int, width: int, num_frames: int,
                 max_sequence_length: int) -> None:
        self.pipe = pipe
        self.device = torch.device(device)
        self.height, self.width, self.num_frames = height, width, num_frames
        self.max_sequence_length = max_sequence_length
        self._constant: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def prompt_embeds(self, prompts: Sequence[str]) -> torch.Tensor:
        """``[B, max_sequence_length, D]``: UMT5 states, zero-padded as the pipeline pads them."""
        embeds, _ = self.pipe.encode_prompt(
            prompt=list(prompts), do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length, device=self.device,
        )
        return embeds.float()

    @torch.no_grad()
    def video_latents(self, clips: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` in [-1, 1] → normalised VAE latents ``[B, 16, T', H/8, W/8]`` (posterior mode).

        The same encoding and normalisation as ``prepare_video_latents`` (whose no-mask branch
        cannot run in diffusers 0.35–0.42), one clip at a time to bound the VAE's memory.
        """
        from diffusers.pipelines.wan.pipeline_wan_vace import retrieve_latents

        vae = self.pipe.vae
        z = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean, device=self.device, dtype=torch.float32).view(1, z, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std, device=self.device, dtype=torch.float32).view(1, z, 1, 1, 1)
        out = []
        for clip in clips:
            latent = retrieve_latents(vae.encode(clip[None].to(self.device, vae.dtype)), sample_mode="argmax")
            out.append(((latent.float() - mean) * inv_std).to(vae.dtype).float())
        return torch.cat(out)

    @torch.no_grad()
    def reference_parts(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Reference faces (``[h, w, 3]`` uint8) → their VACE reference slots ``[B, 32, 1, H/8, W/8]``."""
        from PIL import Image

        pipe = self.pipe
        parts = []
        for image in images:
            video, mask, refs = pipe.preprocess_conditions(
                None, None, [[Image.fromarray(np.asarray(image))]], 1, self.height, self.width, 1,
                torch.float32, self.device,
            )
            latents = pipe.prepare_video_latents(video, mask, refs, None, self.device)  # [1, 32, 1 + 1, h, w]
            parts.append(latents[:, :, : len(refs[0])].float())
        return torch.cat(parts)

    @torch.no_grad()
    def constant_parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(blank-clip latents [32, T', h, w], masks [64, 1 + T', h, w])``, the same for every sample."""
        if self._constant is None:
            pipe = self.pipe
            video, mask, _ = pipe.preprocess_conditions(
                None, None, None, 1, self.height, self.width, self.num_frames, torch.float32, self.device,
            )
            blank = pipe.prepare_video_latents(video, mask, [[]], None, self.device)[0].float()
            one_reference = [[torch.zeros(3, self.height, self.width, device=self.device)]]
            masks = pipe.prepare_masks(mask, one_reference, None)[0].float()
            self._constant = (blank, masks)
        return self._constant


def vace_context(reference_parts: torch.Tensor, blank: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``[B, 32, 1, h, w]``, ``[32, T', h, w]``, ``[64, 1 + T', h, w]`` → the context ``[B, 96, 1 + T', h, w]``."""
    batch = reference_parts.shape[0]
    video = torch.cat([reference_parts, blank.to(reference_parts)[None].expand(batch, -1, -1, -1, -1)], dim=2)
    return torch.cat([video, masks.to(reference_parts)[None].expand(batch, -1, -1, -1, -1)], dim=1)


def clean_latents(reference_parts: torch.Tensor, video_latents: torch.Tensor) -> torch.Tensor:
    """``x0 = [reference latent | video latents]`` ``[B, 16, 1 + T', h, w]`` (the reference part's first 16 channels)."""
    z = video_latents.shape[1]
    return torch.cat([reference_parts[:, :z].to(video_latents), video_latents], dim=2)

"""The pose-shared identity aligner: face crop + Euler angles → G, global pose tokens, weights.

``forward`` is the differentiable training path; ``align`` is the plain-Python inference call
(validation, batching, device/dtype handling, no gradients).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

from ..errors import FaithfulFacesError
from .config import AlignerConfig
from .dictionary import PoseSharedDictionary
from .euler import EulerEmbedding
from .inputs import check_shapes, check_values, preprocess
from .loss import multi_view_info_nce
from .projection import PoseTokenProjection
from .tokenizer import build_tokenizer

ALIGN_CHUNK = 32  # faces per chunk in align(): the smallest of the fastest sizes in bench_aligner.py (32–256, CPU)


class AlignerOutput(NamedTuple):
    """``g`` ``[B, d]``, ``tokens`` ``[B, M, C]``, ``weights`` ``[B, K]`` (float32, rows sum to 1)."""

    g: torch.Tensor
    tokens: torch.Tensor
    weights: torch.Tensor


class PoseSharedAligner(nn.Module):
    """Face tokenizer + Euler embedding (added to every token) + dictionary + token projection.

    Trainable parts: ``aligner_parameters()`` (tokenizer, pose embedding, dictionary, the
    InfoNCE temperature ``logit_scale``), trained by ``contrastive_loss``; and
    ``projection_parameters()`` (the token projection), trained through the generator.
    """

    def __init__(self, config: AlignerConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = build_tokenizer(config)
        self.pose_embedding = EulerEmbedding(config.num_harmonics, config.dim)
        self.dictionary = PoseSharedDictionary(config.dictionary_size, config.dim)
        self.projection = PoseTokenProjection(config.dim, config.num_tokens, config.token_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.dictionary.atoms.device

    @property
    def dtype(self) -> torch.dtype:
        return self.dictionary.atoms.dtype

    def embed(self, face_crops: torch.Tensor, euler: torch.Tensor) -> torch.Tensor:
        """Pose-conditioned face embeddings ``E + pose`` ``[B, N, d]`` from ``[B, 3, H, W]``, ``[B, 3]``."""
        check_shapes(face_crops, euler)
        pixels = preprocess(face_crops.to(self.device), self.config.image_size, self.pixel_mean.float(),
                            self.pixel_std.float())
        faces = self.tokenizer(pixels.to(self.dtype))  # [B, N, d]
        if faces.ndim != 3 or faces.shape[-1] != self.config.dim:
            raise FaithfulFacesError(
                f"The face tokenizer '{self.config.tokenizer}' returned shape {tuple(faces.shape)}; "
                f"the aligner needs [B, N, {self.config.dim}] (config.dim)."
            )
        return faces + self.pose_embedding(euler.to(self.device)).unsqueeze(1)

    def forward(self, face_crops: torch.Tensor, euler: torch.Tensor) -> AlignerOutput:
        """Differentiable path: ``[B, 3, H, W]`` 0..1 RGB, ``[B, 3]`` degrees → ``AlignerOutput``."""
        g, weights = self.dictionary(self.embed(face_crops, euler))
        return AlignerOutput(g=g, tokens=self.projection(g), weights=weights)

    def contrastive_loss(self, *views: torch.Tensor) -> torch.Tensor:
        """InfoNCE of V ≥ 2 views ``[B, d]`` each with this aligner's learnable temperature
        (``multi_view_info_nce``; two views give ``info_nce`` bit for bit)."""
        return multi_view_info_nce(views, self.logit_scale, self.config.logit_scale_max)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Trade compute for memory in training: recompute tokenizer activations in backward."""
        if not hasattr(self.tokenizer, "gradient_checkpointing"):
            raise FaithfulFacesError(
                f"The face tokenizer '{self.config.tokenizer}' does not support gradient checkpointing "
                "(it has no 'gradient_checkpointing' attribute); train without it or add it there."
            )
        self.tokenizer.gradient_checkpointing = enabled

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the temperature parameter in place to [0, log 100] (call after optimizer steps)."""
        self.logit_scale.clamp_(0.0, self.config.logit_scale_max)

    def aligner_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters InfoNCE trains (frozen tokenizer parts excluded)."""
        for name, p in self.named_parameters():
            if p.requires_grad and not name.startswith("projection."):
                yield p

    def projection_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the token projection (trained through the generator's loss)."""
        return (p for p in self.projection.parameters() if p.requires_grad)

    @torch.inference_mode()
    def align_views(self, face_crops: torch.Tensor, euler: torch.Tensor) -> AlignerOutput:
        """Several views ``[V, 3, H, W]``, ``[V, 3]`` of one identity → one token set (batch 1).

        The views' dictionary weights are pooled (``PoseSharedDictionary.pool``: their mean) and
        projected once; one view gives exactly ``align``'s output.
        """
        g, weights = self.dictionary.pool(self.align(face_crops, euler).weights.to(self.device))
        return AlignerOutput(g=g, tokens=self.projection(g), weights=weights)

    @torch.inference_mode()
    def align(self, face_crops: torch.Tensor, euler: torch.Tensor, *, batch_size: int | None = None) -> AlignerOutput:
        """Inference on any number of faces: ``[B, 3, H, W]`` 0..1 RGB, ``[B, 3]`` degrees.

        Inputs are moved to the aligner's device; runs in eval mode, in chunks of ``batch_size``
        faces (``ALIGN_CHUNK`` when None: one huge batch runs slower per face than chunks that
        stay in cache, see benchmarks/bench_aligner.py). Returns ``g`` and ``tokens`` in the aligner's dtype and
        ``weights`` in float32, on the aligner's device.
        """
        if isinstance(euler, torch.Tensor) and euler.ndim == 1 and euler.shape[0] == 3:
            euler = euler.unsqueeze(0)
        check_shapes(face_crops, euler)
        check_values(face_crops, euler)
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise FaithfulFacesError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
        was_training = self.training
        self.eval()
        try:
            step = batch_size or ALIGN_CHUNK
            parts = [
                self(face_crops[i : i + step].to(self.device), euler[i : i + step].to(self.device))
                for i in range(0, face_crops.shape[0], step)
            ]
        finally:
            self.train(was_training)
        return AlignerOutput(*(torch.cat(tensors) for tensors in zip(*parts, strict=True)))

"""Face tokenizers: a normalised face crop ``[B, 3, S, S]`` → face embeddings ``E`` ``[B, N, d]``.

The default is a small ViT-style encoder (patch embedding, learned positions, pre-norm
transformer layers from ``torch.nn``). Any module with the same call contract can replace it:
add its class (with a ``from_config(config)`` classmethod) to ``TOKENIZERS`` under a name and
set ``AlignerConfig.tokenizer`` to that name. ``FrozenFeatureTokenizer`` wraps a frozen backbone (e.g. a face-recognition
network) whose feature map becomes the token sequence through a trainable linear map.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import FaithfulFacesError
from .config import AlignerConfig


def build_tokenizer(config: AlignerConfig) -> nn.Module:
    """The tokenizer class ``TOKENIZERS[config.tokenizer]`` built from ``config``.

    A name not in ``TOKENIZERS`` says which names exist and how to add one.
    """
    cls = TOKENIZERS.get(config.tokenizer)
    if cls is None:
        raise FaithfulFacesError(
            f"Unknown face tokenizer '{config.tokenizer}' (known: {sorted(TOKENIZERS)}). Add its class to "
            "faithfulfaces_core.aligner.TOKENIZERS (name -> class with from_config(config)) before "
            "building or loading this aligner."
        )
    return cls.from_config(config)


class PatchTransformerTokenizer(nn.Module):
    """Patch embedding + learned positions + ``depth`` pre-norm transformer layers.

    ``[B, 3, S, S]`` → ``[B, N, d]`` with ``N = (S / patch_size)²``. With
    ``gradient_checkpointing`` set, training recomputes each layer's activations in the backward
    pass instead of storing them (about 2 MiB less per face at the default size).
    """

    gradient_checkpointing: bool = False

    def __init__(self, image_size: int, patch_size: int, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float) -> None:
        super().__init__()
        if image_size % patch_size:
            raise FaithfulFacesError(
                f"image_size {image_size} is not a multiple of patch_size {patch_size}; pick sizes "
                "with image_size % patch_size == 0 (e.g. 112 and 16)."
            )
        if dim % num_heads:
            raise FaithfulFacesError(
                f"dim {dim} is not divisible by num_heads {num_heads}; pick e.g. dim=256, num_heads=4."
            )
        self.num_tokens = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.randn(1, self.num_tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=round(dim * mlp_ratio), dropout=0.0,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    @classmethod
    def from_config(cls, c: AlignerConfig) -> PatchTransformerTokenizer:
        return cls(c.image_size, c.patch_size, c.dim, c.depth, c.num_heads, c.mlp_ratio)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2) + self.position  # [B, N, d]
        if self.gradient_checkpointing and torch.is_grad_enabled():
            for layer in self.encoder.layers:
                x = checkpoint(layer, x, use_reentrant=False)
        else:
            x = self.encoder(x)
        return self.norm(x)


class FrozenFeatureTokenizer(nn.Module):
    """A frozen backbone's features as tokens: ``[B, C, h, w]`` or ``[B, N, C]`` → ``[B, N, d]``.

    The backbone never trains and stays in eval mode (batch-norm statistics untouched); only
    the linear map and layer norm after it are trainable.
    """

    gradient_checkpointing: bool = False  # nothing to recompute: the frozen backbone stores no activations

    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.proj = nn.Linear(feature_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def train(self, mode: bool = True) -> FrozenFeatureTokenizer:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.backbone(pixels)
        if features.ndim == 4:
            features = features.flatten(2).transpose(1, 2)  # [B, h*w, C]
        if features.ndim != 3:
            raise FaithfulFacesError(
                f"The frozen tokenizer backbone returned shape {tuple(features.shape)}; it must return "
                "a feature map [B, C, h, w] or a token sequence [B, N, C]."
            )
        return self.norm(self.proj(features))


# Names a config's ``tokenizer`` field may take (saved in every aligner file's metadata).
TOKENIZERS: dict[str, type[nn.Module]] = {"patch_transformer": PatchTransformerTokenizer}

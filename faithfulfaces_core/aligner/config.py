"""The aligner's configuration: one JSON-serialisable dataclass, stored in every aligner file.

A checkpoint carries this config in its metadata, so ``load_aligner`` rebuilds the module with
no side files. Field names are the paper's symbols where it has them (d, K, M, C).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import FaithfulFacesError

CLIP_INIT_TEMPERATURE = 0.07
CLIP_INIT_LOGIT_SCALE = math.log(1.0 / CLIP_INIT_TEMPERATURE)
CLIP_MAX_LOGIT_SCALE = math.log(100.0)

WAN_1_3B_WIDTH = 1536  # 12 heads x 128
WAN_14B_WIDTH = 5120  # 40 heads x 128

# Upper bounds far above any sane aligner: a file's metadata is untrusted, and these sizes decide
# how much memory building the module takes before its tensors are checked.
MAX_SIZES = {"image_size": 1024, "patch_size": 256, "depth": 64, "num_heads": 128, "dim": 8192,
             "num_harmonics": 64, "dictionary_size": 65536, "num_tokens": 1024, "token_dim": 16384}
MAX_MLP_RATIO = 16.0
MAX_LOGIT_SCALE = 20.0


@dataclass(frozen=True)
class AlignerConfig:
    """Shapes and constants of the pose-shared identity aligner.

    - ``image_size``: face crops are resized to ``image_size x image_size`` inside the aligner.
    - ``pixel_mean`` / ``pixel_std``: per-channel normalisation of 0..1 RGB (ArcFace's 0.5/0.5).
    - ``tokenizer``: face-tokenizer name, a key of ``aligner.TOKENIZERS``; the
      ``patch_*``/``depth``/``num_heads``/``mlp_ratio`` fields belong to the default one.
    - ``dim``: d, width of face embeddings, pose embedding, dictionary atoms and G.
    - ``num_harmonics``: F, integer harmonics per Euler angle (sin kθ, cos kθ, k = 1..F).
    - ``dictionary_size``: K, atoms in the pose-shared dictionary (4096 in the paper).
    - ``num_tokens`` / ``token_dim``: M global pose tokens of width C (the generator's
      ``num_attention_heads * attention_head_dim``: 1536 for Wan 1.3B, 5120 for 14B).
    - ``logit_scale_init`` / ``logit_scale_max``: CLIP's learnable temperature, log scale.
    """

    image_size: int = 112
    pixel_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pixel_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    tokenizer: str = "patch_transformer"
    patch_size: int = 16
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dim: int = 256
    num_harmonics: int = 8
    dictionary_size: int = 4096
    num_tokens: int = 4
    token_dim: int = WAN_14B_WIDTH
    logit_scale_init: float = CLIP_INIT_LOGIT_SCALE
    logit_scale_max: float = CLIP_MAX_LOGIT_SCALE

    def __post_init__(self) -> None:
        self._check_sizes()
        self._check_pixel_statistics()
        self._check_scales()

    def _check_sizes(self) -> None:
        """Every size a whole number from 1 to its ``MAX_SIZES`` bound."""
        for name, most in MAX_SIZES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise FaithfulFacesError(
                    f"AlignerConfig.{name} must be a positive integer of at most {most}, got {value!r}; set it to e.g. "
                    f"{getattr(AlignerConfig, name)}."
                )

    def _check_pixel_statistics(self) -> None:
        """``pixel_mean`` / ``pixel_std``: three finite numbers each (stored as float tuples), the std positive."""
        for name in ("pixel_mean", "pixel_std"):
            value = tuple(getattr(self, name))
            if len(value) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
                raise FaithfulFacesError(
                    f"AlignerConfig.{name} must hold 3 numbers (R, G, B), all finite, got {value!r}."
                )
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if min(self.pixel_std) <= 0:
            raise FaithfulFacesError(f"AlignerConfig.pixel_std must be positive, got {self.pixel_std}.")

    def _check_scales(self) -> None:
        """The MLP ratio and the CLIP logit scales: finite and inside their ranges."""
        for name in ("mlp_ratio", "logit_scale_init", "logit_scale_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise FaithfulFacesError(f"AlignerConfig.{name} must be a finite number, got {value!r}.")
        if not 0 < self.mlp_ratio <= MAX_MLP_RATIO:
            raise FaithfulFacesError(
                f"AlignerConfig.mlp_ratio must lie in (0, {MAX_MLP_RATIO:g}], got {self.mlp_ratio!r}; 4 is usual."
            )
        if not 0.0 <= self.logit_scale_init <= self.logit_scale_max <= MAX_LOGIT_SCALE:
            raise FaithfulFacesError(
                f"AlignerConfig.logit_scale_init ({self.logit_scale_init}) must lie in "
                f"[0, logit_scale_max={self.logit_scale_max}], and logit_scale_max at most {MAX_LOGIT_SCALE:g}; "
                "CLIP uses log(1/0.07) and log(100)."
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlignerConfig:
        """Rebuild from ``to_dict`` output; unknown or missing fields are named in the error."""
        if not isinstance(data, dict):
            raise FaithfulFacesError(f"An aligner config must be a JSON object, got {type(data).__name__}.")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = [n for n in names if n not in data]
        if unknown:
            raise FaithfulFacesError(
                f"Unknown aligner config field(s) {unknown}; expected only {names}. The file was written "
                "by a newer or different version: update the pack or re-export the aligner."
            )
        if missing:
            raise FaithfulFacesError(
                f"Aligner config lacks field(s) {missing}; expected all of {names}. Re-export the aligner."
            )
        return cls(**data)

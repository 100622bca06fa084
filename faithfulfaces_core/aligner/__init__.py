"""The pose-shared identity aligner (paper §3.2–3.3): face tokenizer, Euler-angle embedding,
pose-shared dictionary, InfoNCE pose-invariance loss, global pose-token projection, and its
checkpoint I/O. Imports torch: import this package lazily. See docs/aligner.md."""

from .checkpoint import ALIGNER_FORMAT, ALIGNER_KIND, load_aligner, save_aligner
from .config import (
    CLIP_INIT_LOGIT_SCALE,
    CLIP_MAX_LOGIT_SCALE,
    WAN_1_3B_WIDTH,
    WAN_14B_WIDTH,
    AlignerConfig,
)
from .dictionary import PoseSharedDictionary
from .euler import EulerEmbedding, euler_harmonics
from .loss import info_nce, multi_view_info_nce
from .model import AlignerOutput, PoseSharedAligner
from .projection import PoseTokenProjection
from .tokenizer import (
    TOKENIZERS,
    FrozenFeatureTokenizer,
    PatchTransformerTokenizer,
    build_tokenizer,
)

__all__ = [
    "ALIGNER_FORMAT",
    "ALIGNER_KIND",
    "CLIP_INIT_LOGIT_SCALE",
    "CLIP_MAX_LOGIT_SCALE",
    "WAN_14B_WIDTH",
    "WAN_1_3B_WIDTH",
    "AlignerConfig",
    "AlignerOutput",
    "EulerEmbedding",
    "FrozenFeatureTokenizer",
    "PatchTransformerTokenizer",
    "PoseSharedAligner",
    "PoseSharedDictionary",
    "PoseTokenProjection",
    "TOKENIZERS",
    "build_tokenizer",
    "euler_harmonics",
    "info_nce",
    "load_aligner",
    "multi_view_info_nce",
    "save_aligner",
]

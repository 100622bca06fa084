"""A tiny, randomly initialised Wan2.1-VACE pipeline written in the real file layouts.

Built from the real classes (``WanVACETransformer3DModel`` with VACE layers, ``AutoencoderKLWan``,
``UMT5EncoderModel``, a word-level tokenizer made with the ``tokenizers`` library and wrapped as a
transformers fast tokenizer, ``UniPCMultistepScheduler`` with flow sigmas) and saved as

- ``<out_dir>/diffusers/<TINY_FOLDER>/``: a diffusers folder, as ``models/diffusers/`` holds it;
- ``<out_dir>/diffusion_models/<TINY_FILE>``: the transformer alone in the original Wan key layout,
  as ``models/diffusion_models/`` holds the official / ComfyUI files,

so tests and the demo run the same loading code as the real weights. The one tiny config serves
both the diffusers path and ComfyUI's ``UNETLoader``, which reads a Wan config from the weights'
shapes with two fixed rules: ``num_heads = dim // 128`` and a 4096-wide text input (UMT5-XXL's,
never read from the file). So the transformer has one 128-wide head and ``text_dim`` 4096, and
the tiny UMT5 encoder is 4096 wide with a 32-wide attention / feed-forward inside. 4 blocks with
VACE layers [0, 2]: evenly spaced, as ComfyUI's native VACE model places them (1.3B: every 2nd
of 30). A 2-step call at 32×32, 5 frames runs in well under a second on a CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

TINY_FOLDER = "Wan2.1-VACE-tiny-diffusers"
TINY_FILE = "wan2.1_vace_tiny.safetensors"
WAN_TRANSFORMER_KIND = "wan_transformer"

TINY_TRANSFORMER_CONFIG: dict = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 1,
    "attention_head_dim": 128,  # ComfyUI's model detection: num_heads = dim // 128
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,  # ComfyUI's WanModel default (UMT5-XXL's width), not read from the file
    "freq_dim": 256,
    "ffn_dim": 32,
    "num_layers": 4,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 32,
    "pos_embed_seq_len": None,
    "vace_layers": [0, 2],
    "vace_in_channels": 96,
}
TINY_WIDTH: int = TINY_TRANSFORMER_CONFIG["num_attention_heads"] * TINY_TRANSFORMER_CONFIG["attention_head_dim"]
"""The transformer's hidden width: the pose tokens' (aligner ``token_dim``) and the LoRA's."""

TINY_VAE_CONFIG: dict = {
    "base_dim": 3,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}

TINY_TEXT_ENCODER_CONFIG: dict = {
    "d_model": TINY_TRANSFORMER_CONFIG["text_dim"],
    "d_kv": 8,
    "d_ff": 32,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 16,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
}

_SPECIAL = ["<pad>", "</s>", "<unk>"]
_WORDS = (
    "a an the and of in on with to at by from is are his her their its this that person man woman "
    "child face head eyes hair smile smiles looks turns turning left right up down slowly quickly "
    "camera portrait video walks street room light dark red blue green white black young old "
    "talking laughing standing sitting close shot wide background blurry low quality bad "
    "worst static still frame picture overexposed subtitles"
).split()


@dataclass(frozen=True)
class TinyWanPaths:
    """Where ``build_tiny_pipeline`` wrote the model, laid out like ComfyUI's ``models/``."""

    models_dir: Path
    diffusers_dir: Path
    transformer_file: Path


def tiny_tokenizer():
    """A word-level T5-style tokenizer (lower-case, whitespace split, ``</s>`` appended)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_SPECIAL + _WORDS)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def build_tiny_components(seed: int) -> dict:
    """The five pipeline components, randomly initialised from ``seed``."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    transformer = WanVACETransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()
    vae = AutoencoderKLWan(**TINY_VAE_CONFIG).eval()
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, **TINY_TEXT_ENCODER_CONFIG)
    ).eval()
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "scheduler": scheduler,
        "transformer": transformer,
    }


def build_tiny_transformer(seed: int = 0):
    """The tiny ``WanVACETransformer3DModel`` alone, randomly initialised from ``seed`` (global RNG untouched)."""
    from diffusers import WanVACETransformer3DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanVACETransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()


def transformer_config_dict(transformer) -> dict:
    """The model's diffusers config without the private ``_``-entries, JSON-ready."""
    return json.loads(json.dumps({k: v for k, v in transformer.config.items() if not k.startswith("_")}))


def save_original_layout(transformer, path: str | Path, prefix: str = "") -> Path:
    """Write ``transformer`` as one safetensors file in the original Wan key layout.

    The file also carries its diffusers config in the FaithfulFaces metadata, so the loader needs
    no shipped config for it (real official files carry none and are matched by shape).
    """
    from ..checkpoints import save_checkpoint
    from ..wan.keys import to_original_state_dict

    return save_checkpoint(
        path,
        to_original_state_dict(transformer.state_dict(), prefix=prefix),
        kind=WAN_TRANSFORMER_KIND,
        format=1,
        config=transformer_config_dict(transformer),
    )


def build_tiny_pipeline(out_dir: str | Path, seed: int = 0) -> TinyWanPaths:
    """Build the tiny pipeline from ``seed`` and write both layouts under ``out_dir``."""
    from diffusers import WanVACEPipeline

    models = Path(out_dir)
    paths = TinyWanPaths(models, models / "diffusers" / TINY_FOLDER, models / "diffusion_models" / TINY_FILE)
    components = build_tiny_components(seed)
    WanVACEPipeline(**components).save_pretrained(paths.diffusers_dir, safe_serialization=True)
    save_original_layout(components["transformer"], paths.transformer_file)
    return paths

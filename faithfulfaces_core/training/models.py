"""The models of a training run: frozen encoders, the frozen base transformer with the LoRA and
the pose-token injection, and the aligner.

The encoders (UMT5 + VAE) are loaded on their own, beside a *meta-device* copy of the
transformer (no memory; the pipeline's methods only read its config), so with latent caching
they can be freed before the real transformer is loaded. Everything is read from what the user
placed (``wan.loading``'s checks and messages); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import FaithfulFacesError
from ..wan import loading


def transformer_config(model_cfg) -> dict[str, Any]:
    """The diffusers config of the transformer the run will load, without loading its weights."""
    if model_cfg.transformer_config:
        return loading.load_config_file(model_cfg.transformer_config)
    if model_cfg.transformer_file:
        return _single_file_config(Path(model_cfg.transformer_file))
    folder = loading.check_diffusers_folder(model_cfg.diffusers_dir, need_transformer=True)
    return loading.load_config_file(folder / "transformer" / "config.json")


def _single_file_config(path: Path) -> dict[str, Any]:
    """Config of a single-file transformer: its FaithfulFaces metadata, else the shipped config matching its shapes."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    from safetensors import safe_open

    from ..checkpoints import CONFIG_KEY, KIND_KEY, read_metadata
    from ..errors import MissingModelError
    from ..wan.keys import split_original_prefix

    if not path.is_file():
        raise MissingModelError(
            f"The Wan2.1-VACE transformer file is missing: folder {path.parent}, file {path.name} not found. "
            f"It comes from {loading.FILE_SOURCE}.")
    metadata = read_metadata(path)
    if metadata.get(KIND_KEY) == loading.WAN_TRANSFORMER_KIND and CONFIG_KEY in metadata:
        return json.loads(metadata[CONFIG_KEY])
    with safe_open(str(path), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    prefix = split_original_prefix(list(shapes))
    shapes = {k[len(prefix):]: v for k, v in shapes.items()}
    if "condition_embedder.time_proj.weight" not in shapes:
        shapes = convert_wan_transformer_to_diffusers(dict(shapes))
    return loading.detect_config(shapes, path)[1]


def config_sha256(config: dict[str, Any]) -> str:
    public = {k: v for k, v in config.items() if not k.startswith("_")}
    return hashlib.sha256(json.dumps(public, sort_keys=True).encode()).hexdigest()


def base_identity(model_cfg, config: dict[str, Any]) -> dict[str, Any]:
    """What the outputs were trained on: the base model's name and config hash, written into their metadata."""
    source = Path(model_cfg.transformer_file or model_cfg.diffusers_dir)
    return {
        "class": "WanVACETransformer3DModel",
        "source": source.name,
        "diffusers_dir": Path(model_cfg.diffusers_dir).name,
        "config_sha256": config_sha256(config),
        "width": int(config["num_attention_heads"] * config["attention_head_dim"]),
        "num_layers": int(config["num_layers"]),
        "vace_layers": list(config["vace_layers"]),
    }


def encoder_identity(model_cfg, pipe, dtype: torch.dtype) -> dict[str, Any]:
    """What cached latents and text embeddings depend on: the encoders' configs, weight files and dtype."""
    folder = Path(model_cfg.diffusers_dir)
    files = sorted((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                   for sub in ("vae", "text_encoder", "tokenizer") for p in (folder / sub).glob("*") if p.is_file())
    return {
        "diffusers_dir": folder.name, "files": files, "dtype": str(dtype),
        "vae": config_sha256(dict(pipe.vae.config)), "text_encoder": config_sha256(pipe.text_encoder.config.to_dict()),
    }


def vae_scale_factors(model_cfg) -> tuple[int, int]:
    """(spatial, temporal) downsampling of the folder's VAE, read from its config (no weights)."""
    folder = loading.check_diffusers_folder(model_cfg.diffusers_dir, need_transformer=not model_cfg.transformer_file)
    vae = json.loads((folder / "vae" / "config.json").read_text())
    down = list(vae.get("temperal_downsample", [False, True, True]))
    return 2 ** len(down), 2 ** sum(bool(d) for d in down)


def load_encoders(model_cfg, config: dict[str, Any], *, device: torch.device, dtype: torch.dtype):
    """A ``WanVACEPipeline`` with the real tokenizer, text encoder and VAE (frozen, on ``device``) and a
    meta-device transformer built from ``config``."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan, WanVACEPipeline, WanVACETransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    folder = loading.check_diffusers_folder(model_cfg.diffusers_dir, need_transformer=not model_cfg.transformer_file)
    text_encoder = UMT5EncoderModel.from_pretrained(
        folder / "text_encoder", local_files_only=True,
        **loading._transformers_dtype_kwarg(loading.text_encoder_dtype_for(dtype)),
    )
    vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32, local_files_only=True)
    with init_empty_weights():
        meta = WanVACETransformer3DModel.from_config(config)
    for module in (text_encoder, vae):
        module.requires_grad_(False).eval().to(device)
    return WanVACEPipeline(
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
        text_encoder=text_encoder, vae=vae, scheduler=None, transformer=meta,
    )


def load_transformer(model_cfg, *, dtype: torch.dtype):
    """The frozen base ``WanVACETransformer3DModel`` (CPU, ``dtype``) from the folder or the single file."""
    from diffusers import WanVACETransformer3DModel

    if model_cfg.transformer_file:
        transformer = loading.load_transformer_file(model_cfg.transformer_file, dtype=dtype,
                                                    config=model_cfg.transformer_config)
    else:
        folder = loading.check_diffusers_folder(model_cfg.diffusers_dir, need_transformer=True)
        transformer = WanVACETransformer3DModel.from_pretrained(
            folder, subfolder="transformer", torch_dtype=dtype, local_files_only=True)
    return transformer.requires_grad_(False)


@dataclass
class TrainableTransformer:
    transformer: Any
    injection: Any


def prepare_transformer(transformer, lora_cfg, *, gradient_checkpointing: bool,
                        attention_backend: str | None) -> TrainableTransformer:
    """Add the LoRA (float32 weights, the base frozen), the pose-token injection and the memory options."""
    from ..wan.injection import install_pose_injection
    from ..wan.lora import LoraSpec, add_lora

    transformer.requires_grad_(False)
    add_lora(transformer, LoraSpec(rank=lora_cfg.rank, alpha=lora_cfg.alpha,
                                   include_vace_blocks=lora_cfg.include_vace_blocks, dropout=lora_cfg.dropout))
    for param in transformer.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    if gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    loading.set_attention_backend(transformer, attention_backend)
    transformer.train()
    return TrainableTransformer(transformer, install_pose_injection(transformer))


def build_aligner(aligner_cfg, width: int):
    """The aligner to train: from ``init_from`` or a fresh ``AlignerConfig(**config, token_dim=width)``, float32."""
    from ..aligner import AlignerConfig, PoseSharedAligner, load_aligner

    if aligner_cfg.init_from:
        aligner = load_aligner(aligner_cfg.init_from)
        if aligner.config.token_dim != width:
            raise FaithfulFacesError(
                f"The aligner {aligner_cfg.init_from} makes pose tokens {aligner.config.token_dim} wide, but the "
                f"transformer is {width} wide (1536 = 1.3B, 5120 = 14B): start from an aligner for this model size or "
                "leave aligner.init_from empty.")
    else:
        fields = dict(aligner_cfg.config)
        if fields.get("token_dim", width) != width:
            raise FaithfulFacesError(
                f"aligner.config.token_dim={fields['token_dim']} differs from the transformer's width {width}; "
                "leave token_dim out (it is set from the transformer).")
        try:
            config = AlignerConfig(**{**fields, "token_dim": width})
        except TypeError as exc:
            raise FaithfulFacesError(
                f"aligner.config has an unknown field ({exc}); the fields are those of AlignerConfig "
                "(faithfulfaces_core/aligner/config.py).") from exc
        aligner = PoseSharedAligner(config)
    if aligner_cfg.gradient_checkpointing:
        aligner.enable_gradient_checkpointing()
    return aligner.float().train()

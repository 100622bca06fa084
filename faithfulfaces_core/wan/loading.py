"""Load a Wan2.1-VACE pipeline from what a ComfyUI user places, never from the hub.

Two sources, both checked before anything heavy is read:

- a diffusers-format folder in ``models/diffusers/`` (``Wan-AI/Wan2.1-VACE-{1.3B,14B}-diffusers``):
  tokenizer, UMT5 text encoder, VAE, scheduler and (unless a single file replaces it) the
  VACE transformer;
- a single-file VACE transformer in ``models/diffusion_models/`` in the original Wan key layout
  (the official / ComfyUI-repackaged ``wan2.1_vace_*.safetensors``, bare or behind a
  ``diffusion_model.`` / ``model.diffusion_model.`` prefix). Its diffusers config is one the
  pack ships (``configs/*.json``), picked by matching every tensor shape, so diffusers never
  has to fetch one; the key conversion is diffusers' own ``convert_wan_transformer_to_diffusers``.

VRAM options: dtype (bf16 / fp16 / fp32; the VAE stays fp32 as Wan recommends), model or
sequential CPU offload, VAE tiling / slicing, and diffusers' attention backend.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from ..checkpoints import CONFIG_KEY, KIND_KEY, check_state_dict, read_metadata
from ..deps import require
from ..devices import resolve_device, resolve_dtype
from ..errors import CheckpointError, FaithfulFacesError, MissingModelError
from .keys import split_original_prefix, to_original_state_dict

CONFIG_DIR = Path(__file__).with_name("configs")
SHIPPED_CONFIGS = {
    "Wan2.1-VACE-1.3B": CONFIG_DIR / "wan2.1_vace_1.3b.json",
    "Wan2.1-VACE-14B": CONFIG_DIR / "wan2.1_vace_14b.json",
}
WAN_TRANSFORMER_KIND = "wan_transformer"

FOLDER_SOURCE = (
    "the Hugging Face repo Wan-AI/Wan2.1-VACE-14B-diffusers (or Wan-AI/Wan2.1-VACE-1.3B-diffusers), "
    "downloaded whole into ComfyUI/models/diffusers/, e.g. `huggingface-cli download "
    "Wan-AI/Wan2.1-VACE-14B-diffusers --local-dir ComfyUI/models/diffusers/Wan2.1-VACE-14B-diffusers`"
)
FILE_SOURCE = (
    "wan2.1_vace_14B_fp16.safetensors or wan2.1_vace_1.3B_fp16.safetensors from the Hugging Face repo "
    "Comfy-Org/Wan_2.1_ComfyUI_repackaged (split_files/diffusion_models/), placed in "
    "ComfyUI/models/diffusion_models/"
)

Offload = Literal["none", "model", "sequential"]
OFFLOAD_CHOICES = ("none", "model", "sequential")

# subfolder → (what it is, files of which at least one must exist)
_COMPONENTS = {
    "tokenizer": ("the UMT5 tokenizer", ("tokenizer.json", "spiece.model")),
    "text_encoder": ("the UMT5 text encoder", ("config.json",)),
    "vae": ("the Wan VAE", ("config.json",)),
    "scheduler": ("the scheduler", ("scheduler_config.json",)),
    "transformer": ("the VACE transformer", ("config.json",)),
}
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


# --- checks on what the user placed -----------------------------------------------------------

def _missing(folder: Path, name: str, what: str, source: str) -> MissingModelError:
    return MissingModelError(
        f"{what} is missing: folder {folder}, file {name} not found. It comes from {source}."
    )


def _check_weights(folder: Path, what: str) -> None:
    """At least one weight file, and every shard a ``*.index.json`` lists (partial downloads)."""
    for index in folder.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{index} is damaged ({exc}); download it again from {FOLDER_SOURCE}.") from exc
        for shard in sorted(shards):
            if not (folder / shard).is_file():
                raise _missing(folder, shard, f"A weight shard of {what}", FOLDER_SOURCE + " (the download is incomplete)")
    if not any(p for pattern in _WEIGHT_PATTERNS for p in folder.glob(pattern)):
        raise _missing(folder, "diffusion_pytorch_model.safetensors / model.safetensors", f"The weight file of {what}", FOLDER_SOURCE)


def check_diffusers_folder(folder: str | os.PathLike, *, need_transformer: bool = True) -> Path:
    """Raise a ``MissingModelError`` naming the first missing piece of a Wan2.1-VACE diffusers folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingModelError(
            f"The Wan2.1-VACE diffusers folder {folder} does not exist (looked in {folder.parent} for "
            f"the folder {folder.name}). It comes from {FOLDER_SOURCE}."
        )
    if (folder / "Wan2.1_VAE.pth").exists() or (folder / "models_t5_umt5-xxl-enc-bf16.pth").exists():
        raise CheckpointError(
            f"{folder} is the original (non-diffusers) Wan release; FaithfulFaces loads the diffusers "
            f"format. Download {FOLDER_SOURCE}."
        )
    for sub, (what, markers) in _COMPONENTS.items():
        if sub == "transformer" and not need_transformer:
            continue
        path = folder / sub
        if not path.is_dir():
            raise _missing(folder, f"{sub}/", f"{what[0].upper()}{what[1:]}", FOLDER_SOURCE)
        if not any((path / m).is_file() for m in markers):
            raise _missing(path, " or ".join(markers), f"{what[0].upper()}{what[1:]}", FOLDER_SOURCE)
        if sub in ("text_encoder", "vae", "transformer"):
            _check_weights(path, what)
    if need_transformer:
        cls = json.loads((folder / "transformer" / "config.json").read_text()).get("_class_name")
        if cls != "WanVACETransformer3DModel":
            raise CheckpointError(
                f"{folder / 'transformer'} holds a {cls}, not a WanVACETransformer3DModel: this is not a "
                "Wan2.1-VACE folder. Use a VACE folder, or give a single-file VACE transformer "
                f"({FILE_SOURCE}) beside this folder."
            )
    return folder


def _file_kind(keys: list[str]) -> str:
    """What a safetensors file holds, judged by its (prefix-stripped) key names."""
    if any("lora_" in k or k.endswith(".alpha") for k in keys):
        return "lora"
    if "vace_patch_embedding.weight" in keys:
        return "vace_transformer"
    if "patch_embedding.weight" in keys:
        return "wan_transformer_without_vace"
    if any(k.startswith(("encoder.downsamples.", "decoder.upsamples.", "encoder.down_blocks.", "decoder.up_blocks.")) for k in keys):
        return "vae"
    if "shared.weight" in keys or any(k.startswith("encoder.block.") for k in keys):
        return "text_encoder"
    return "unknown"


_WRONG_KIND = {
    "lora": "a LoRA, not a transformer: put it in ComfyUI/models/loras/ and pick it as the LoRA",
    "wan_transformer_without_vace": (
        "a Wan2.1 transformer without VACE blocks (text-to-video or image-to-video); FaithfulFaces "
        "needs the VACE model"
    ),
    "vae": "the Wan VAE (it belongs in ComfyUI/models/vae/); FaithfulFaces takes the VAE from the diffusers folder",
    "text_encoder": "a UMT5 text encoder; FaithfulFaces takes the text encoder from the diffusers folder",
    "unknown": "not a Wan2.1-VACE transformer",
}


# --- configs -------------------------------------------------------------------------------------

def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A transformer config JSON (shipped or user-given), without diffusers' private entries."""
    return {k: v for k, v in json.loads(Path(path).read_text()).items() if not k.startswith("_")}


@functools.lru_cache(maxsize=8)
def _expected_shapes_cached(config_json: str) -> dict[str, tuple[int, ...]]:
    from accelerate import init_empty_weights
    from diffusers import WanVACETransformer3DModel

    with init_empty_weights():
        model = WanVACETransformer3DModel.from_config(json.loads(config_json))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def expected_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Parameter name → shape of the diffusers transformer ``config`` builds (no memory used)."""
    return dict(_expected_shapes_cached(json.dumps(dict(config), sort_keys=True)))


def _to_diffusers_keys(state: dict[str, Any]) -> dict[str, Any]:
    """Prefix-stripped original keys → diffusers keys, with diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    if "condition_embedder.time_proj.weight" in state:  # already diffusers layout
        return state
    return convert_wan_transformer_to_diffusers(dict(state))


def _signature(shapes: Mapping[str, tuple[int, ...]]) -> tuple:
    """(patch-embedding shape, #blocks, #VACE blocks): what tells the released sizes apart."""
    blocks = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    vace = len({k.split(".")[1] for k in shapes if k.startswith("vace_blocks.")})
    return tuple(shapes.get("patch_embedding.weight", ())), blocks, vace


def _summary(shapes: Mapping[str, tuple[int, ...]]) -> str:
    patch, blocks, vace = _signature(shapes)
    return f"width {patch[0] if patch else '?'}, {blocks} blocks, {vace} VACE blocks"


def detect_config(shapes: Mapping[str, tuple[int, ...]], path: str | os.PathLike = "") -> tuple[str, dict]:
    """The shipped config of the released size whose width and block counts ``shapes`` has
    (diffusers key names); the caller then checks every key and shape against it."""
    found = _signature(shapes)
    for name, config_path in SHIPPED_CONFIGS.items():
        config = load_config_file(config_path)
        if _signature(expected_shapes(config)) == found:
            return name, config
    known = "; ".join(f"{n}: {_summary(expected_shapes(load_config_file(p)))}" for n, p in SHIPPED_CONFIGS.items())
    raise CheckpointError(
        f"{path}: a Wan2.1-VACE transformer of an unknown size ({_summary(shapes)}); FaithfulFaces ships "
        f"configs for {known}. Use one of those files ({FILE_SOURCE}) or pass its diffusers config.json."
    )


# --- the single-file transformer -------------------------------------------------------------------

def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}


def _load_tensors(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The file's tensors as stored, with ``prefix`` removed."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {key[len(prefix):]: fh.get_tensor(key) for key in fh.keys()}


def _cast_like_from_pretrained(state: dict[str, torch.Tensor], dtype: torch.dtype, keep_fp32: list[str]) -> dict[str, torch.Tensor]:
    """Cast tensor by tensor (peak memory near one copy), keeping diffusers' fp32 modules in fp32.

    Same rule as diffusers' ``from_pretrained`` (``_keep_in_fp32_modules``: norms, time embedder,
    modulation tables), so the single file and the diffusers folder give the same weights.
    """
    out = {}
    for name in list(state):
        tensor = state.pop(name)
        if tensor.is_floating_point():
            keep = dtype != torch.float32 and any(m in name.split(".") for m in keep_fp32)
            tensor = tensor.to(torch.float32 if keep else dtype)
        out[name] = tensor
    return out


def _check_transformer_path(path: Path) -> Path:
    """``path`` if it is a safetensors file; else a missing-model or wrong-format error naming the source."""
    if not path.is_file():
        raise MissingModelError(
            f"The Wan2.1-VACE transformer file is missing: folder {path.parent}, file {path.name} not found. "
            f"It comes from {FILE_SOURCE}."
        )
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(
            f"{path} is a '{path.suffix}' file; FaithfulFaces loads single-file transformers as .safetensors "
            f"only (pickled files can run code, GGUF is quantised). Use {FILE_SOURCE}."
        )
    return path


def _transformer_config(config: str | os.PathLike | Mapping[str, Any] | None, metadata: Mapping[str, str],
                        diffusers_shapes: dict[str, tuple[int, ...]], path: Path) -> tuple[dict, str]:
    """(the transformer's diffusers config, what to call it in errors): from ``config``, else the file's
    own metadata, else the shipped config whose shapes match ``diffusers_shapes``."""
    what = "Wan2.1-VACE transformer"
    if config is not None:
        cfg = dict(config) if isinstance(config, Mapping) else load_config_file(config)
        return {k: v for k, v in cfg.items() if not k.startswith("_")}, what
    if metadata.get(KIND_KEY) == WAN_TRANSFORMER_KIND and CONFIG_KEY in metadata:
        return json.loads(metadata[CONFIG_KEY]), what
    name, cfg = detect_config(diffusers_shapes, path)
    return cfg, f"{what} ({name})"


def load_transformer_file(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.bfloat16,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
):
    """A ``WanVACETransformer3DModel`` from one safetensors file in the original (or diffusers) layout.

    The config comes from, in order: ``config`` (a dict or a config.json path), the file's own
    FaithfulFaces metadata (files the pack writes), or the shipped config whose shapes match.
    """
    for module in ("diffusers", "accelerate"):
        require(module, "Loading a single-file Wan2.1-VACE transformer")
    from accelerate import init_empty_weights
    from diffusers import WanVACETransformer3DModel

    path = _check_transformer_path(Path(path))
    metadata = read_metadata(path)
    shapes = _file_shapes(path)
    prefix = split_original_prefix(list(shapes))
    shapes = {k[len(prefix):]: v for k, v in shapes.items()}
    kind = _file_kind(list(shapes))
    if kind != "vace_transformer":
        raise CheckpointError(f"{path} is {_WRONG_KIND[kind]}. Use {FILE_SOURCE}.")
    diffusers_shapes = _to_diffusers_keys(shapes)

    cfg, what = _transformer_config(config, metadata, diffusers_shapes, path)
    expected = expected_shapes(cfg)
    if diffusers_shapes is not shapes:  # name keys as the file does: original layout, its prefix
        expected = to_original_state_dict(expected)
    check_state_dict(
        path,
        {prefix + k: torch.empty(v, device="meta") for k, v in shapes.items()},
        {prefix + k: torch.empty(v, device="meta") for k, v in expected.items()},
        what=what,
    )

    state = _to_diffusers_keys(_load_tensors(path, prefix))
    state = _cast_like_from_pretrained(state, dtype, WanVACETransformer3DModel._keep_in_fp32_modules or [])
    with init_empty_weights():
        model = WanVACETransformer3DModel.from_config(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


# --- the pipeline ------------------------------------------------------------------------------------

def _transformers_dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _load_scheduler(folder: Path):
    import diffusers

    name = json.loads((folder / "scheduler" / "scheduler_config.json").read_text()).get("_class_name", "")
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise CheckpointError(
            f"{folder / 'scheduler' / 'scheduler_config.json'} names the scheduler class '{name}', which this "
            f"diffusers {diffusers.__version__} does not have. Update diffusers or re-download {FOLDER_SOURCE}."
        )
    return cls.from_pretrained(folder, subfolder="scheduler", local_files_only=True)


def text_encoder_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """UMT5 overflows in fp16, so an fp16 run encodes the prompt in fp32 (once per prompt)."""
    return torch.float32 if dtype == torch.float16 else dtype


def set_attention_backend(transformer, backend: str | None) -> None:
    """diffusers' attention backend by name (``native``, ``flash``, ``sage``, ``xformers``, ...).

    Backends whose name ends in ``_hub`` download kernels at run time and are refused.
    """
    from diffusers.models.attention_dispatch import AttentionBackendName

    if backend is None:
        return
    names = sorted(b.value for b in AttentionBackendName if not b.value.startswith("_") and not b.value.endswith("_hub"))
    if backend.endswith("_hub"):
        raise FaithfulFacesError(
            f"Attention backend '{backend}' downloads its kernel from the Hugging Face hub at run time, which "
            f"FaithfulFaces never does. Pick one of: {', '.join(names)}."
        )
    if backend not in {b.value for b in AttentionBackendName}:
        raise FaithfulFacesError(f"Unknown attention backend '{backend}'. Pick one of: {', '.join(names)}.")
    try:
        transformer.set_attention_backend(backend)
    except (ImportError, RuntimeError, ValueError) as exc:
        raise FaithfulFacesError(
            f"Attention backend '{backend}' cannot run here ({exc}). Install its package (flash-attn, "
            "sageattention, xformers) or pick 'native' (PyTorch SDPA, always available)."
        ) from exc


def load_pipeline(
    diffusers_dir: str | os.PathLike,
    *,
    transformer_file: str | os.PathLike | None = None,
    transformer_config: str | os.PathLike | Mapping[str, Any] | None = None,
    dtype: str = "auto",
    device: str = "auto",
    offload: Offload = "none",
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    attention_backend: str | None = None,
):
    """A ready ``WanVACEPipeline``: components from ``diffusers_dir``, the transformer from there or
    from ``transformer_file``; placed on ``device`` (or CPU-offloaded to it), VRAM options applied.

    ``dtype``: ``auto`` | ``bf16`` | ``fp16`` | ``fp32`` for the transformer and text encoder
    (UMT5 in fp32 when fp16 is asked); the VAE is always fp32.
    """
    for module in ("diffusers", "transformers", "accelerate", "ftfy"):  # ftfy: the pipeline's prompt cleaning
        require(module, "Wan2.1-VACE generation")
    from diffusers import AutoencoderKLWan, WanVACEPipeline, WanVACETransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    if offload not in OFFLOAD_CHOICES:
        raise FaithfulFacesError(f"Unknown offload mode '{offload}'. Pick one of: {', '.join(OFFLOAD_CHOICES)}.")
    torch_device = resolve_device(device)
    if offload != "none" and torch_device.type == "cpu":
        raise FaithfulFacesError(
            f"CPU offload ('{offload}') moves models between the CPU and a GPU, but the device is the CPU. "
            "Pick offload 'none' on the CPU, or a GPU device."
        )
    torch_dtype = resolve_dtype(dtype, torch_device)
    folder = check_diffusers_folder(diffusers_dir, need_transformer=transformer_file is None)

    if transformer_file is not None:
        transformer = load_transformer_file(transformer_file, dtype=torch_dtype, config=transformer_config)
    else:
        transformer = WanVACETransformer3DModel.from_pretrained(
            folder, subfolder="transformer", torch_dtype=torch_dtype, local_files_only=True
        ).eval()
    text_encoder = UMT5EncoderModel.from_pretrained(
        folder / "text_encoder", local_files_only=True, **_transformers_dtype_kwarg(text_encoder_dtype_for(torch_dtype))
    ).eval()
    pipe = WanVACEPipeline(
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
        text_encoder=text_encoder,
        vae=AutoencoderKLWan.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32, local_files_only=True).eval(),
        scheduler=_load_scheduler(folder),
        transformer=transformer,
    )
    _place(pipe, torch_device, offload, vae_tiling=vae_tiling, vae_slicing=vae_slicing,
           attention_backend=attention_backend)
    return pipe


def _place(pipe, torch_device: torch.device, offload: Offload, *, vae_tiling: bool, vae_slicing: bool,
           attention_backend: str | None) -> None:
    """The VRAM options and the attention backend, then the pipeline on ``torch_device`` (or offloaded to it)."""
    if vae_tiling:
        pipe.vae.enable_tiling()
    if vae_slicing:
        pipe.vae.enable_slicing()
    set_attention_backend(pipe.transformer, attention_backend)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=torch_device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=torch_device)
    else:
        pipe.to(torch_device)

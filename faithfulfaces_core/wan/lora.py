"""The FaithfulFaces LoRA on the Wan2.1-VACE transformer (peft), and its two file layouts.

Which modules: in every main block (``blocks.N``) and, by default, every VACE block
(``vace_blocks.N``): the self- and cross-attention projections ``attn1/attn2.to_q, to_k, to_v,
to_out.0`` and the feed-forward ``ffn.net.0.proj, ffn.net.2``. Rank 128 by default (the paper's),
alpha = rank (scale 1). Not the patch/condition embeddings, the VACE ``proj_in/proj_out`` or the head.

Files (safetensors, FaithfulFaces metadata ``faithfulfaces.kind = lora`` + config):

- diffusers layout: ``transformer.blocks.0.attn1.to_q.lora_A.weight`` ..., with diffusers' own
  ``lora_adapter_metadata`` (the peft ``LoraConfig``), so ``WanVACEPipeline.load_lora_weights``
  loads the file as is;
- original Wan layout, for ComfyUI's LoraLoader: ``diffusion_model.blocks.0.self_attn.q.lora_A.weight``,
  ``...lora_B.weight`` and ``...alpha`` (``diffusion_model.vace_blocks.N.*`` too). diffusers'
  converter rejects ``vace_blocks``, so the mapping is ``keys.py``'s, and export ↔ import is
  exactly invertible.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..checkpoints import load_checkpoint, save_checkpoint
from ..deps import require
from ..errors import CheckpointError, FaithfulFacesError, MissingModelError
from .keys import ORIGINAL_PREFIXES, diffusers_to_original_module, original_to_diffusers_module

LORA_KIND = "lora"
LORA_FORMAT = 1
ADAPTER_NAME = "faithfulfaces"
DEFAULT_RANK = 128
ATTENTION_MODULES = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
)
FFN_MODULES = ("ffn.net.0.proj", "ffn.net.2")
DIFFUSERS_PREFIX = "transformer."
ORIGINAL_PREFIX = "diffusion_model."
LORA_METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
# LoraConfig fields written to / read from files: the ones every peft ≥ 0.15 understands.
_CONFIG_FIELDS = ("r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern", "lora_dropout",
                  "use_dora", "use_rslora", "lora_bias", "bias")

Layout = Literal["diffusers", "original_wan"]


@dataclass(frozen=True)
class LoraSpec:
    """What to adapt: rank, alpha (``None`` = rank), block-relative module names, VACE blocks or not."""

    rank: int = DEFAULT_RANK
    alpha: float | None = None
    modules: tuple[str, ...] = ATTENTION_MODULES + FFN_MODULES
    include_vace_blocks: bool = True
    dropout: float = 0.0


@dataclass
class LoraFile:
    """A LoRA read from disk, always in diffusers keys (``transformer.``-prefixed) + peft config kwargs."""

    path: Path
    layout: Layout
    state_dict: dict[str, torch.Tensor]
    lora_config: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)


# --- creating -----------------------------------------------------------------------------------

def target_module_names(transformer, spec: LoraSpec = LoraSpec()) -> list[str]:
    """Full module names (``blocks.3.attn1.to_q``, ``vace_blocks.0.ffn.net.2``) the LoRA adapts."""
    groups = [("blocks", len(transformer.blocks))]
    if spec.include_vace_blocks:
        groups.append(("vace_blocks", len(getattr(transformer, "vace_blocks", []))))
    names = [f"{group}.{i}.{m}" for group, n in groups for i in range(n) for m in spec.modules]
    modules = dict(transformer.named_modules())
    for name in names:
        if name not in modules:
            raise FaithfulFacesError(f"LoRA target '{name}' is not a module of this transformer; check LoraSpec.modules.")
    return names


def lora_config(transformer, spec: LoraSpec = LoraSpec()):
    """The peft ``LoraConfig`` for ``spec`` on ``transformer`` (explicit full module names)."""
    LoraConfig = require("peft", "The FaithfulFaces LoRA").LoraConfig

    if spec.rank < 1:
        raise FaithfulFacesError(f"LoRA rank {spec.rank} is not allowed: use 1 or more (the paper uses 128).")
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.rank if spec.alpha is None else spec.alpha,
        target_modules=target_module_names(transformer, spec),
        lora_dropout=spec.dropout,
        init_lora_weights=True,
    )


def add_lora(transformer, spec: LoraSpec = LoraSpec(), adapter_name: str = ADAPTER_NAME):
    """Add a fresh (B = 0, so a no-op until trained) LoRA adapter to ``transformer``; returns its config."""
    config = lora_config(transformer, spec)
    transformer.add_adapter(config, adapter_name=adapter_name)
    return config


def lora_state_dict(transformer, adapter_name: str = ADAPTER_NAME) -> dict[str, torch.Tensor]:
    """The adapter's weights under diffusers' keys (``transformer.blocks.0.attn1.to_q.lora_A.weight``)."""
    from peft import get_peft_model_state_dict

    _require_adapter(transformer, adapter_name)
    state = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    return {DIFFUSERS_PREFIX + k: v.detach() for k, v in state.items()}


def lora_config_kwargs(transformer, adapter_name: str = ADAPTER_NAME) -> dict[str, Any]:
    """The adapter's ``LoraConfig`` as plain JSON-able kwargs (the portable subset)."""
    _require_adapter(transformer, adapter_name)
    full = transformer.peft_config[adapter_name].to_dict()
    out = {}
    for key in _CONFIG_FIELDS:
        value = full.get(key)
        if isinstance(value, (set, frozenset, list, tuple)):
            value = sorted(value)
        out[key] = value
    return out


def _require_adapter(transformer, adapter_name: str) -> None:
    if adapter_name not in getattr(transformer, "peft_config", {}):
        have = sorted(getattr(transformer, "peft_config", {})) or "none"
        raise FaithfulFacesError(f"The transformer has no LoRA adapter '{adapter_name}' (adapters: {have}).")


# --- the original Wan layout ---------------------------------------------------------------------

def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """peft's rank/alpha pattern rule: a pattern matches a module name ending in it."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _modules_of(state_dict: Mapping[str, torch.Tensor], prefix: str) -> list[str]:
    mods = []
    for key in state_dict:
        if not key.startswith(prefix):
            raise CheckpointError(f"LoRA key '{key}' does not start with '{prefix}'.")
        body = key[len(prefix):]
        for tail in (".lora_A.weight", ".lora_B.weight"):
            if body.endswith(tail):
                mods.append(body[: -len(tail)])
                break
        else:
            raise CheckpointError(f"LoRA key '{key}' is neither a lora_A nor a lora_B weight.")
    return sorted(set(mods))


def to_original_layout(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """diffusers keys + LoraConfig kwargs → ``diffusion_model.<original module>.lora_A/lora_B/alpha``.

    ComfyUI scales by ``alpha / rank``, peft by ``lora_alpha / r``: the same number, so the alpha
    written per module is peft's (rsLoRA and DoRA have no ComfyUI counterpart and are refused).
    """
    if config.get("use_rslora") or config.get("use_dora"):
        raise FaithfulFacesError("rsLoRA / DoRA adapters cannot be written in the original Wan LoRA layout.")
    out: dict[str, torch.Tensor] = {}
    for module in _modules_of(state_dict, DIFFUSERS_PREFIX):
        a = state_dict[f"{DIFFUSERS_PREFIX}{module}.lora_A.weight"]
        b = state_dict[f"{DIFFUSERS_PREFIX}{module}.lora_B.weight"]
        alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config["lora_alpha"])
        name = ORIGINAL_PREFIX + diffusers_to_original_module(module)
        out[f"{name}.lora_A.weight"] = a
        out[f"{name}.lora_B.weight"] = b
        out[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    return out


def _original_modules(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, dict[str, torch.Tensor]]]:
    """(the keys' common prefix, per original module name its ``A`` / ``B`` / ``alpha`` tensors)."""
    keys = list(state_dict)
    prefix = next((p for p in ORIGINAL_PREFIXES if keys and all(k.startswith(p) for k in keys)), "")
    groups: dict[str, dict[str, torch.Tensor]] = collections.defaultdict(dict)
    for key, value in state_dict.items():
        body = key[len(prefix):]
        for tail, part in ((".lora_A.weight", "A"), (".lora_down.weight", "A"),
                           (".lora_B.weight", "B"), (".lora_up.weight", "B"), (".alpha", "alpha")):
            if body.endswith(tail):
                groups[body[: -len(tail)]][part] = value
                break
        else:
            raise CheckpointError(
                f"LoRA key '{key}' is not a lora_A / lora_B / alpha entry of the original Wan layout "
                "(full-weight diffs and other LoRA variants are not supported)."
            )
    return prefix, groups


def from_original_layout(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of ``to_original_layout``: (diffusers-keyed weights, LoraConfig kwargs).

    Accepts the ``diffusion_model.`` / ``model.diffusion_model.`` / no prefix, and ``lora_down/up``
    names; a missing ``alpha`` means alpha = rank (scale 1), as ComfyUI reads it.
    """
    prefix, groups = _original_modules(state_dict)
    out: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    for original in sorted(groups):
        parts = groups[original]
        if "A" not in parts or "B" not in parts:
            missing = "lora_A" if "A" not in parts else "lora_B"
            raise CheckpointError(f"LoRA module '{prefix}{original}' has no {missing} weight.")
        module = original_to_diffusers_module(original)
        out[f"{DIFFUSERS_PREFIX}{module}.lora_A.weight"] = parts["A"]
        out[f"{DIFFUSERS_PREFIX}{module}.lora_B.weight"] = parts["B"]
        ranks[module] = int(parts["A"].shape[0])
        alphas[module] = float(parts["alpha"]) if "alpha" in parts else float(ranks[module])
    if not out:
        raise CheckpointError("The LoRA file holds no weights.")
    r = collections.Counter(ranks.values()).most_common(1)[0][0]
    alpha = collections.Counter(alphas.values()).most_common(1)[0][0]
    config = {
        "r": r,
        "lora_alpha": alpha,
        "target_modules": sorted(ranks),
        "rank_pattern": {m: v for m, v in ranks.items() if v != r},
        "alpha_pattern": {m: v for m, v in alphas.items() if v != alpha},
        "lora_dropout": 0.0,
        "use_dora": False,
        "use_rslora": False,
        "lora_bias": False,
        "bias": "none",
    }
    return out, config


# --- files -------------------------------------------------------------------------------------------

def _file_config(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    modules = _modules_of(state_dict, DIFFUSERS_PREFIX)
    width = int(state_dict[f"{DIFFUSERS_PREFIX}{modules[0]}.lora_A.weight"].shape[1])
    return {
        "layout": layout,
        "rank": config["r"],
        "alpha": config["lora_alpha"],
        "width": width,
        "vace_blocks": any(m.startswith("vace_blocks.") for m in modules),
        "modules": len(modules),
    }


def save_lora_file(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    layout: Layout = "diffusers",
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write diffusers-keyed LoRA weights + LoraConfig kwargs in ``layout``, atomically."""
    config = {k: config.get(k) for k in _CONFIG_FIELDS}
    meta = dict(extra_metadata or {})
    if layout == "diffusers":
        tensors = dict(state_dict)
        meta["format"] = "pt"
        meta[LORA_METADATA_KEY] = json.dumps({DIFFUSERS_PREFIX + k: v for k, v in config.items()}, sort_keys=True)
    elif layout == "original_wan":
        tensors = to_original_layout(state_dict, config)
    else:
        raise FaithfulFacesError(f"Unknown LoRA layout '{layout}': use 'diffusers' or 'original_wan'.")
    return save_checkpoint(
        path, tensors, kind=LORA_KIND, format=LORA_FORMAT, config=_file_config(state_dict, config, layout),
        extra_metadata=meta,
    )


def save_lora(
    path: str | os.PathLike,
    transformer,
    adapter_name: str = ADAPTER_NAME,
    *,
    layout: Layout = "diffusers",
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save the transformer's adapter (diffusers layout by default; ``original_wan`` for ComfyUI)."""
    return save_lora_file(
        path, lora_state_dict(transformer, adapter_name), lora_config_kwargs(transformer, adapter_name),
        layout=layout, extra_metadata=extra_metadata,
    )


def read_lora(path: str | os.PathLike) -> LoraFile:
    """A FaithfulFaces LoRA file of either layout, as diffusers-keyed weights + LoraConfig kwargs."""
    ckpt = load_checkpoint(path, kind=LORA_KIND, max_format=LORA_FORMAT)
    keys = list(ckpt.tensors)
    if keys and all(k.startswith(DIFFUSERS_PREFIX) for k in keys):
        raw = ckpt.metadata.get(LORA_METADATA_KEY)
        if raw is None:
            raise CheckpointError(f"{ckpt.path}: the diffusers-layout LoRA has no '{LORA_METADATA_KEY}' metadata; re-save it.")
        packed = json.loads(raw)
        config = {k[len(DIFFUSERS_PREFIX):]: v for k, v in packed.items() if k.startswith(DIFFUSERS_PREFIX)}
        _modules_of(ckpt.tensors, DIFFUSERS_PREFIX)
        return LoraFile(ckpt.path, "diffusers", ckpt.tensors, config, ckpt.config)
    try:
        state, config = from_original_layout(ckpt.tensors)
    except CheckpointError as exc:
        raise CheckpointError(f"{ckpt.path}: {exc}") from exc
    return LoraFile(ckpt.path, "original_wan", state, config, ckpt.config)


def convert_lora_file(src: str | os.PathLike, dst: str | os.PathLike, layout: Layout) -> Path:
    """Re-write a FaithfulFaces LoRA file in the other layout (export for ComfyUI, or back)."""
    lora = read_lora(src)
    return save_lora_file(dst, lora.state_dict, lora.lora_config, layout=layout)


def check_lora_fits(transformer, lora: LoraFile) -> None:
    """Every adapted module exists in ``transformer`` with the LoRA's input/output widths."""
    modules = dict(transformer.named_modules())
    for module in _modules_of(lora.state_dict, DIFFUSERS_PREFIX):
        a = lora.state_dict[f"{DIFFUSERS_PREFIX}{module}.lora_A.weight"]
        b = lora.state_dict[f"{DIFFUSERS_PREFIX}{module}.lora_B.weight"]
        target = modules.get(module)
        if target is None:
            raise CheckpointError(
                f"{lora.path}: LoRA key '{DIFFUSERS_PREFIX}{module}.lora_A.weight' names a module this transformer "
                f"does not have (it has {len(transformer.blocks)} blocks): the LoRA was trained for another model."
            )
        base = getattr(target, "base_layer", target)
        if (a.shape[1], b.shape[0]) != (base.in_features, base.out_features):
            raise CheckpointError(
                f"{lora.path}: LoRA key '{DIFFUSERS_PREFIX}{module}.lora_A.weight' is for a {a.shape[1]}→{b.shape[0]} "
                f"layer, but this transformer's is {base.in_features}→{base.out_features}: the LoRA was trained "
                "for another model size (1536 wide = Wan2.1-VACE-1.3B, 5120 = 14B)."
            )


def load_lora(pipe, path: str | os.PathLike, *, adapter_name: str = ADAPTER_NAME) -> LoraFile:
    """Load a FaithfulFaces LoRA file (either layout) into ``pipe``'s transformer as ``adapter_name``.

    A diffusers-layout file goes through ``pipe.load_lora_weights`` unchanged; an original-layout
    file is converted and handed to ``pipe.load_lora_into_transformer``. An adapter of the same
    name is replaced.
    """
    require("peft", "Loading the FaithfulFaces LoRA")
    lora = read_lora(path)
    check_lora_fits(pipe.transformer, lora)
    if adapter_name in getattr(pipe.transformer, "peft_config", {}):
        unload_lora(pipe, adapter_name)
    if lora.layout == "diffusers":
        pipe.load_lora_weights(str(lora.path), adapter_name=adapter_name)
    else:
        pipe.load_lora_into_transformer(
            dict(lora.state_dict), transformer=pipe.transformer, adapter_name=adapter_name,
            metadata={DIFFUSERS_PREFIX + k: v for k, v in lora.lora_config.items()}, _pipeline=pipe,
        )
    return lora


# --- scale, fuse, unload -------------------------------------------------------------------------------

def lora_is_fused(transformer) -> bool:
    """True when some LoRA layer of ``transformer`` is merged into its base weight."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) and m.merged for m in transformer.modules())


def has_lora(transformer) -> bool:
    return bool(getattr(transformer, "peft_config", None))


def fuse_lora(pipe, scale: float = 1.0, adapter_name: str = ADAPTER_NAME) -> None:
    """Merge the adapter into the transformer weights at ``scale`` (faster steps; unfuse to change it)."""
    _require_adapter(pipe.transformer, adapter_name)
    pipe.fuse_lora(components=["transformer"], lora_scale=scale, adapter_names=[adapter_name])


def unfuse_lora(pipe) -> None:
    """Take merged LoRA weights back out of the transformer.

    peft subtracts the merged update again, so the weights come back equal up to rounding (about
    2e-7 in the tiny model's frames), not bit for bit; the unfused path (``lora_scale``) is exact.
    """
    pipe.unfuse_lora(components=["transformer"])


def unload_lora(pipe, adapter_name: str = ADAPTER_NAME) -> None:
    """Remove the adapter (unfusing first if needed)."""
    if lora_is_fused(pipe.transformer):
        unfuse_lora(pipe)
    pipe.delete_adapters(adapter_name)


@contextlib.contextmanager
def kept_lora_scaling(transformer) -> Iterator[None]:
    """Put every LoRA layer's scaling back exactly as it was when the block ends, however it ends.

    diffusers multiplies the scalings by ``lora_scale`` for each forward and divides afterwards;
    the round trip is not exact in floating point (and a failed call may stop between), so a
    cached pipeline would drift from run to run. The snapshot makes every call start equal.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    saved = [(m, dict(m.scaling)) for m in transformer.modules() if isinstance(m, BaseTunerLayer)]
    try:
        yield
    finally:
        for module, scaling in saved:
            module.scaling.clear()
            module.scaling.update(scaling)


def use_lora(pipe, path: str | os.PathLike | None, *, adapter_name: str = ADAPTER_NAME) -> None:
    """Make ``pipe`` carry exactly the LoRA at ``path`` (or none), loading only when it changed.

    For node graphs that share one cached pipeline between branches with different LoRAs: the
    adapter is keyed by its file path and modification time, so a re-trained file reloads.
    """
    if path is not None and not Path(path).is_file():
        raise MissingModelError(
            f"The FaithfulFaces LoRA is missing: folder {Path(path).parent}, file {Path(path).name} not found. It "
            "comes from training/train_lora.py (or a released FaithfulFaces LoRA), placed in ComfyUI/models/loras/."
        )
    wanted = None if path is None else (str(Path(path).resolve()), Path(path).stat().st_mtime_ns)
    current = getattr(pipe, "_faithfulfaces_lora", None)
    if wanted == current:
        return
    if current is not None and adapter_name in getattr(pipe.transformer, "peft_config", {}):
        unload_lora(pipe, adapter_name)
    pipe._faithfulfaces_lora = None
    if wanted is not None:
        load_lora(pipe, wanted[0], adapter_name=adapter_name)
        pipe._faithfulfaces_lora = wanted

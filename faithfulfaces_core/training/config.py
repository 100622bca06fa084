"""The training configuration: one pydantic model, a config file plus ``--set key=value`` overrides.

Sections (``model``, ``lora``, ``aligner``, ``data``, ``objective``, ``optim``, ``run``) hold
fields that each have a default and a description; ``options_help()`` lists them all for
``--help``. Files may be YAML, TOML or JSON. The resolved config is written next to the
outputs (``config.json``) and into every checkpoint; a resumed run must agree with it except
for the fields in ``RESUME_MAY_CHANGE``. Imports no torch, so ``--help`` is instant.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import FaithfulFacesError

CONFIG_NAME = "config.json"

# Fields a resumed run may change: they do not alter the weights a step produces.
RESUME_MAY_CHANGE = frozenset({
    "run.max_steps", "run.checkpoint_every", "run.keep_checkpoints", "run.log_every", "run.tensorboard",
    "run.stop_after_step", "run.output_dir", "data.num_workers", "data.cache_dir",
})


class _Section(BaseModel):
    # NaN and Infinity parse from JSON/YAML and pass gt/ge bounds: refuse them for every float field.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSection(_Section):
    diffusers_dir: str | None = Field(
        None, description="Wan2.1-VACE diffusers folder (tokenizer, text encoder, VAE, and the transformer "
        "unless transformer_file is set). Required.")
    transformer_file: str | None = Field(
        None, description="single-file VACE transformer (original Wan layout, e.g. wan2.1_vace_14B_fp16.safetensors) "
        "used instead of the folder's transformer")
    transformer_config: str | None = Field(
        None, description="diffusers config.json for transformer_file (default: the file's metadata or the shipped "
        "config whose shapes match)")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="dtype of the frozen base transformer and text encoder (auto: bf16 on CUDA, fp32 on CPU)")
    attention_backend: str | None = Field(
        None, description="diffusers attention backend (native, flash, sage, xformers, ...); None keeps the default")


class LoraSection(_Section):
    rank: int = Field(128, ge=1, description="LoRA rank (the paper uses 128)")
    alpha: float | None = Field(None, gt=0, description="LoRA alpha; None means alpha = rank (scale 1)")
    include_vace_blocks: bool = Field(True, description="also adapt the VACE blocks, not only the main blocks")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA input")


class AlignerSection(_Section):
    init_from: str | None = Field(
        None, description="aligner .safetensors to start from (its config is kept); None builds a fresh one")
    config: dict[str, Any] = Field(
        default_factory=dict, description="AlignerConfig fields for a fresh aligner, e.g. {dictionary_size: 4096, "
        "dim: 256}; token_dim is always the transformer's width")
    gradient_checkpointing: bool = Field(False, description="recompute the face tokenizer's activations in backward")


class DataSection(_Section):
    dataset_dir: str | None = Field(
        None, description="dataset directory written by training/build_dataset.py (manifest.jsonl, crops/). Required.")
    corpus_root: str | None = Field(
        None, description="folder the videos moved to (video = corpus_root/key); None uses the recorded paths")
    height: int = Field(480, ge=16, description="training video height in pixels (multiple of 16)")
    width: int = Field(832, ge=16, description="training video width in pixels (multiple of 16)")
    num_frames: int = Field(81, ge=1, description="frames per training clip, of the form 4k+1")
    frame_stride: int = Field(1, ge=1, description="take every n-th frame of the video for the clip")
    batch_size: int = Field(1, ge=1, description="videos per micro-batch per process (flow matching)")
    aligner_batch_size: int = Field(
        1024, ge=2, description="identities per micro-batch per process for InfoNCE (the paper: 1024 pairs); the other "
        "identities of the batch are the negatives")
    views_per_identity: int = Field(
        2, ge=2, le=8, description="crops of each identity in the aligner batch, at pairwise different poses (the "
        "paper: 2). More views give each identity more positives per step (every ordered pair of its views), which "
        "helps when videos hold many poses and identities are few; the aligner batch grows views/2 times. Videos "
        "with fewer such crops are left out of InfoNCE (reported)")
    min_pose_difference: float = Field(
        15.0, ge=0.0, le=540.0, description="two crops are positives only if sum |Δpitch|+|Δyaw|+|Δroll| (circular, "
        "degrees) is at least this (with more than 2 views: every two of them)")
    reference_candidates: int = Field(
        8, ge=1, description="face crops per video (evenly spread) that may serve as the VACE reference / pose-token "
        "face; one is drawn per step")
    max_sequence_length: int = Field(512, ge=1, description="text tokens (Wan: 512)")
    on_bad_line: Literal["skip", "raise"] = Field(
        "skip", description="a bad manifest line (invalid record, missing crop file): skip it (counted and "
        "reported) or stop with its line number")
    num_workers: int = Field(2, ge=0, description="data-loading worker processes (0: load in the main process)")
    cache_latents: bool = Field(
        False, description="encode every clip, reference and prompt once to disk, then free the VAE and text encoder")
    cache_dir: str | None = Field(None, description="where the cache lives (default: <output_dir>/cache)")
    cache_dtype: Literal["fp32", "bf16"] = Field("fp32", description="dtype of cached latents and text embeddings")


class ObjectiveSection(_Section):
    flow_shift: float = Field(
        5.0, gt=0.0, le=100.0, description="timestep shift σ' = shift·σ/(1+(shift-1)·σ) (Wan: 5.0 at 480p, 3.0 is common at 720p)")
    num_train_timesteps: int = Field(1000, ge=1, description="timestep = σ' × this (Wan: 1000)")
    infonce_weight: float = Field(1.0, ge=0.0, description="λ in L = L_flow + λ·L_InfoNCE")
    reference_frame_loss: bool = Field(
        True, description="include the reference latent frame (the VACE reference slot) in the flow-matching loss")


class OptimSection(_Section):
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0, description="AdamW learning rate of the LoRA and the token projection")
    aligner_learning_rate: float | None = Field(
        None, gt=0.0, le=1.0, description="learning rate of the aligner (tokenizer, pose embedding, dictionary, temperature); "
        "None = learning_rate")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW β1")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="AdamW β2")
    eps: float = Field(1e-8, gt=0.0, le=1.0, description="AdamW ε")
    max_grad_norm: float = Field(1.0, ge=0.0, description="clip the global gradient norm to this (0: no clipping)")
    lr_scheduler: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
    ] = Field("constant_with_warmup", description="learning-rate schedule (diffusers.optimization.get_scheduler)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps of the schedule")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")


class RunSection(_Section):
    output_dir: str = Field("faithfulfaces_training", description="where checkpoints, logs and the outputs go")
    max_steps: int = Field(1000, ge=1, description="optimizer steps to train")
    seed: int = Field(0, ge=0, description="seed of every random draw (data order, pairs, noise, timesteps)")
    device: str = Field("auto", description="auto | cpu | cuda (multi-GPU: launch with `accelerate launch`)")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="autocast precision (auto: bf16 on CUDA, no on CPU)")
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        "auto", description="recompute transformer activations in backward (auto: on with CUDA)")
    checkpoint_every: int = Field(500, ge=1, description="write a resumable checkpoint every N optimizer steps")
    keep_checkpoints: int = Field(2, ge=1, description="keep the newest N checkpoints")
    log_every: int = Field(10, ge=1, description="write a log line every N steps (every step goes to metrics.jsonl)")
    tensorboard: bool = Field(False, description="also log to TensorBoard (needs `pip install tensorboard`)")
    overfit_one_batch: bool = Field(
        False, description="debugging: train on the first micro-batch (same data, noise and timesteps) every step")
    stop_after_step: int | None = Field(
        None, ge=1, description="testing: stop abruptly after this step, as a kill would (no outputs written)")


class TrainConfig(BaseModel):
    """Everything a training run needs; see ``options_help()`` for each field."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: ModelSection = Field(default_factory=ModelSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    aligner: AlignerSection = Field(default_factory=AlignerSection)
    data: DataSection = Field(default_factory=DataSection)
    objective: ObjectiveSection = Field(default_factory=ObjectiveSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    run: RunSection = Field(default_factory=RunSection)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        problems = []
        if self.data.num_frames % 4 != 1:
            k = (self.data.num_frames - 1) // 4
            problems.append(f"data.num_frames={self.data.num_frames} is not of the form 4k+1 (Wan's VAE needs it): "
                            f"use {4 * k + 1} or {4 * k + 5}")
        for name in ("height", "width"):
            value = getattr(self.data, name)
            if value % 16:
                problems.append(f"data.{name}={value} is not a multiple of 16: use {value // 16 * 16 or 16} or "
                                f"{value // 16 * 16 + 16}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def require_paths(self) -> None:
        """The two fields without a usable default must be set before a run."""
        missing = [n for n, v in (("model.diffusers_dir", self.model.diffusers_dir),
                                  ("data.dataset_dir", self.data.dataset_dir)) if not v]
        if missing:
            raise FaithfulFacesError(
                f"{' and '.join(missing)} must be set: put them in the config file or pass "
                + " ".join(f"--set {m}=PATH" for m in missing) + "."
            )

    def flat(self) -> dict[str, Any]:
        """``{"data.batch_size": 1, ...}`` (JSON values)."""
        return {f"{section}.{key}": value for section, fields in self.model_dump(mode="json").items()
                for key, value in fields.items()}

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)

    def fingerprint(self) -> str:
        """sha256 of the fields a resumed run must keep (everything but ``RESUME_MAY_CHANGE``)."""
        kept = {k: v for k, v in self.flat().items() if k not in RESUME_MAY_CHANGE}
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def _friendly(exc: ValidationError, where: str) -> FaithfulFacesError:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            section = err["loc"][0] if len(err["loc"]) > 1 else None
            known = sorted(SECTIONS[section].model_fields) if section in SECTIONS else sorted(SECTIONS)
            msg = f"unknown option; known {'options in ' + str(section) if section in SECTIONS else 'sections'}: " \
                  f"{', '.join(known)}"
        lines.append(f"  {loc or 'config'}: {msg}")
    return FaithfulFacesError(f"Invalid training config ({where}):\n" + "\n".join(lines)
                              + "\nFix these keys; `train_lora.py --help` lists every option.")


SECTIONS: dict[str, type[_Section]] = {
    name: field.annotation for name, field in TrainConfig.model_fields.items()  # type: ignore[misc]
}


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file → nested dict."""
    path = Path(path)
    if not path.is_file():
        raise FaithfulFacesError(f"Config file {path} does not exist; pass an existing .yaml, .toml or .json file.")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                from ..deps import require

                tomllib = require("tomli", "Reading TOML config files on Python 3.10")
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise FaithfulFacesError(f"Config file {path} has suffix '{suffix}'; use .yaml, .yml, .toml or .json.")
    except FaithfulFacesError:
        raise
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError
        raise FaithfulFacesError(f"Config file {path} cannot be parsed: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FaithfulFacesError(f"Config file {path} must hold a mapping of sections, got {type(data).__name__}.")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``data.batch_size=2`` → (["data", "batch_size"], 2): values parse as JSON when they can, else text."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise FaithfulFacesError(f"--set expects SECTION.KEY=VALUE (e.g. data.batch_size=2), got '{text}'.")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``a.b.c=value`` in a copy of the nested dict ``data``."""
    out = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise FaithfulFacesError(f"--set {text}: '{part}' is a value, not a section.")
            node = child
        node[path[-1]] = value
    return out


def build_config(data: dict[str, Any], *, where: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise _friendly(exc, where) from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults ← the file at ``path`` ← ``overrides`` (``section.key=value``), validated."""
    data = read_config_file(path) if path is not None else {}
    where = f"{path} with --set overrides" if path and overrides else str(path) if path else "--set overrides"
    return build_config(apply_overrides(data, overrides or []), where=where)


def options_help() -> str:
    """Every option as ``section.key = default`` and its description, for ``--help``."""
    lines = []
    for section, cls in SECTIONS.items():
        lines.append(f"[{section}]")
        for name, field in cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            lines.append(f"  {section}.{name} = {json.dumps(default)}")
            lines.append(f"      {field.description}")
    return "\n".join(lines)


def resume_differences(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Fields that differ between a checkpoint's config and this run's and may not change on resume."""
    a, b = saved.flat(), current.flat()
    return sorted(k for k in a.keys() | b.keys() if k not in RESUME_MAY_CHANGE and a.get(k) != b.get(k))

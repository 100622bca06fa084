"""Resumable training checkpoints: safetensors and JSON only, written atomically as a directory.

``<output_dir>/checkpoints/step-00000120/`` holds

- ``model.safetensors``       the trainable state (LoRA weights, the whole aligner), float32
- ``optimizer.safetensors``   the optimizer state flattened to ``state.<param>.<name>`` tensors;
                              param groups and non-tensor entries as JSON in the metadata (FSDP:
                              ``optimizer.rank<r>.safetensors``, each process's shards)
- ``rng.rank<r>.safetensors`` torch CPU / CUDA generator states of each process; Python's and
                              NumPy's global states as JSON in the metadata
- ``state.json``              step, micro-step (the data position), world size, the LR
                              scheduler's state, the resolved config

The directory is written under a temporary name and renamed into place (atomic on POSIX and
NTFS), so a kill at any moment leaves either the previous checkpoints or the complete new one.
Leftover temporary directories are removed at the next start.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import atomic_write, check_state_dict, load_checkpoint, save_checkpoint
from ..errors import CheckpointError, FaithfulFacesError

CHECKPOINTS_DIR = "checkpoints"
STATE_NAME = "state.json"
MODEL_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
STATE_FORMAT = 1
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / f"step-{step:08d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints ``[(step, path)]``, oldest first (temporary directories are not listed)."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and (path / STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def remove_leftovers(output_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary checkpoint directories a killed run left behind; returns them."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    gone = [p for p in root.glob(".step-*") if p.is_dir()] if root.is_dir() else []
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


# --- optimizer -----------------------------------------------------------------------------------


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``optimizer.state_dict()`` → (tensors ``state.<i>.<name>``, string metadata) for safetensors."""
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value.to_local() if hasattr(value, "to_local") else value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars)}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, Any]:
    """Inverse of ``flatten_optimizer`` (sharded states come back as local shards, see ``reshard``)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in json.loads(metadata["scalars"]).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = json.loads(metadata["param_groups"])
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


# --- RNG -----------------------------------------------------------------------------------------


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """This process's global RNG states: (tensors, JSON metadata)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": json.dumps([version, list(internal), gauss]),
        "numpy": json.dumps([name, keys.tolist(), int(pos), int(has_gauss), float(cached)]),
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    version, internal, gauss = json.loads(metadata["python"])
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = json.loads(metadata["numpy"])
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda:
        if not torch.cuda.is_available():
            raise FaithfulFacesError("This checkpoint was written on a CUDA machine; resume it on one.")
        torch.cuda.set_rng_state_all(cuda)


# --- save / load ----------------------------------------------------------------------------------


@dataclass
class Resumed:
    step: int
    micro_step: int
    config: dict[str, Any]
    path: Path
    extra: dict[str, Any]


def save_training_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    *,
    micro_step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler_state: dict[str, Any],
    config: dict[str, Any],
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    keep: int = 2,
    sharded_optimizer: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of ``step`` atomically (every process calls this; process 0 renames).

    ``model_state`` need only be complete on process 0. The optimizer state is written by process
    0 (DDP keeps it identical everywhere) or, with ``sharded_optimizer`` (FSDP), by every process
    as ``optimizer.rank<r>.safetensors``. Each process writes its own RNG file.
    """
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    tensors, meta = rng_state()
    save_checkpoint(tmp / f"rng.rank{rank}.safetensors", tensors, kind="training_rng", format=STATE_FORMAT,
                    config={"rank": rank}, extra_metadata=meta)
    if sharded_optimizer or rank == 0:
        opt_tensors, opt_meta = flatten_optimizer(optimizer_state)
        save_checkpoint(tmp / _optimizer_name(rank, sharded_optimizer), opt_tensors, kind="training_optimizer",
                        format=STATE_FORMAT, config={"rank": rank, "sharded": sharded_optimizer},
                        extra_metadata=opt_meta)
    if rank == 0:
        save_checkpoint(tmp / MODEL_NAME, model_state, kind="training_model", format=STATE_FORMAT, config=config)
    barrier()
    if rank == 0:
        state = {"format": STATE_FORMAT, "step": step, "micro_step": micro_step, "world_size": world_size,
                 "sharded_optimizer": sharded_optimizer, "scheduler": scheduler_state, "config": config,
                 "extra": extra or {}}
        atomic_write(tmp / STATE_NAME, lambda p: Path(p).write_text(json.dumps(state, indent=1), encoding="utf-8"))
        _replace_dir(tmp, final)
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def _optimizer_name(rank: int, sharded: bool) -> str:
    return f"optimizer.rank{rank}.safetensors" if sharded else OPTIMIZER_NAME


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` (a re-run step) is moved aside first."""
    _fsync_dir(tmp)
    if final.exists():
        aside = final.with_name(f".{final.name}.old")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
        os.replace(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    file = path / STATE_NAME
    if not file.is_file():
        raise CheckpointError(
            f"{path} is not a training checkpoint (no {STATE_NAME}); pass a checkpoints/step-NNNNNNNN directory.")
    state = json.loads(file.read_text(encoding="utf-8"))
    if state.get("format", 0) > STATE_FORMAT:
        raise CheckpointError(f"{path} was written by a newer FaithfulFaces (format {state['format']}); update the pack.")
    return state


def _checked_state(path: Path, world_size: int) -> dict[str, Any]:
    state = read_state(path)
    if state["world_size"] != world_size:
        raise FaithfulFacesError(
            f"{path} was written by {state['world_size']} processes but this run has {world_size}; the data order "
            f"and RNG streams depend on it. Resume with {state['world_size']} processes (accelerate launch "
            f"--num_processes {state['world_size']}).")
    return state


def load_model_state(path: str | os.PathLike, model_state: dict[str, torch.Tensor], *, world_size: int = 1) -> None:
    """Copy the checkpoint's trainable weights into the live tensors of ``model_state`` (key and shape checked)."""
    path = Path(path)
    _checked_state(path, world_size)
    saved = load_checkpoint(path / MODEL_NAME, kind="training_model", max_format=STATE_FORMAT)
    check_state_dict(saved.path, saved.tensors, model_state, what="training state")
    with torch.no_grad():
        for key, tensor in model_state.items():
            tensor.copy_(saved.tensors[key])


def reshard(state: dict[str, Any], optimizer) -> dict[str, Any]:
    """FSDP2: turn local optimizer-state shards back into DTensors laid out like their parameters."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, entries in state["state"].items():
        param = params[index]
        if not hasattr(param, "device_mesh"):
            continue
        from torch.distributed.tensor import DTensor

        for name, value in entries.items():
            if torch.is_tensor(value) and value.shape == param.to_local().shape:
                entries[name] = DTensor.from_local(value.to(param.to_local().device), param.device_mesh,
                                                   param.placements, run_check=False)
    return state


def load_training_state(path: str | os.PathLike, *, optimizer, scheduler, rank: int = 0, world_size: int = 1,
                        sharded: bool = False) -> Resumed:
    """Restore the optimizer and the LR schedule; return the step and the data position."""
    path = Path(path)
    state = _checked_state(path, world_size)
    if bool(state.get("sharded_optimizer", False)) != sharded:
        raise FaithfulFacesError(
            f"{path} holds a {'sharded (FSDP)' if state.get('sharded_optimizer') else 'single'} optimizer state but "
            f"this run is {'FSDP' if sharded else 'not FSDP'}; resume with the accelerate configuration it was "
            "written with.")
    opt = load_checkpoint(path / _optimizer_name(rank, sharded), kind="training_optimizer", max_format=STATE_FORMAT)
    saved = unflatten_optimizer(opt.tensors, opt.metadata)
    optimizer.load_state_dict(reshard(saved, optimizer) if sharded else saved)
    scheduler.load_state_dict(state["scheduler"])
    return Resumed(step=state["step"], micro_step=state["micro_step"], config=state["config"], path=path,
                   extra=state.get("extra", {}))


def load_rng(path: str | os.PathLike, *, rank: int = 0) -> None:
    """Put this process's global RNGs (Python, NumPy, torch CPU/CUDA) back as they were at the checkpoint."""
    rng = load_checkpoint(Path(path) / f"rng.rank{rank}.safetensors", kind="training_rng", max_format=STATE_FORMAT)
    set_rng_state(rng.tensors, rng.metadata)

"""Checkpoint I/O: safetensors only, config in the metadata, atomic writes, clear errors.

Every file the project writes carries in its safetensors metadata (all values are strings):

- ``faithfulfaces.kind``:    what the file is (``aligner``, ``lora``, ``pose_estimator``, ...)
- ``faithfulfaces.format``:  the format version of that kind, an integer
- ``faithfulfaces.config``:  the JSON config needed to rebuild the module (no side files)
- any extra string entries the writer adds (training config, base-model identity, ...)

A loader that gets the wrong kind of file, a wrong shape or missing keys says which file,
which key and what was expected; a writer never leaves a half-written file behind.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from .errors import CheckpointError, MissingModelError

if TYPE_CHECKING:  # torch is imported where tensors are written, not to write a JSON file atomically
    import torch

KIND_KEY = "faithfulfaces.kind"
FORMAT_KEY = "faithfulfaces.format"
CONFIG_KEY = "faithfulfaces.config"
TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"  # atomic_write's temporary files: .<name>.<random>.tmp


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors, its parsed config and the raw metadata."""

    path: Path
    kind: str
    format: int
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the old file's, else 0o666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would race other threads' file creation)
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Umask:")).split()[1], 8)
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
        return umask


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename over ``path``: a kill leaves the old file intact.

    The file gets the mode an ordinary write would (the umask, or the replaced file's mode), not
    the 0600 of a temporary file.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from exc
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode(path))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, (OSError, SafetensorError)):
            raise write_error(path, exc) from exc
        raise
    return path


def write_error(path: Path, exc: BaseException) -> CheckpointError:
    """The pack's message for a failed write: which file, why, and that the old files are intact."""
    text = str(exc)
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "StorageFull" in text:
        why = "the disk is full (no space left on device)"
        fix = "free some space or choose an output folder on another disk, then run again"
    elif isinstance(exc, PermissionError) or "Permission denied" in text:
        why = "permission denied"
        fix = "make the folder writable or choose another output folder"
    else:
        why = text
        fix = "check the output folder, then run again"
    return CheckpointError(
        f"Could not write {path}: {why}. Nothing already written was changed (files are written to a temporary "
        f"file and renamed); {fix} (a training run continues with --resume from its last checkpoint)."
    )


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed; a path under a file or an unwritable folder is the pack's error."""
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise CheckpointError(
            f"Cannot use {folder} as an output folder: {blocker} is a file, not a folder. Choose another output "
            "folder, or move that file away."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(
            f"Cannot create the output folder {folder}: {exc.strerror or exc}. Choose an output folder you can "
            "write to, or fix the permissions of its parent."
        ) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CheckpointError(
            f"The output folder {folder} is not writable (permission denied). Make it writable "
            f"(chmod u+w {folder}) or choose another output folder."
        )
    return folder


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed ``atomic_write`` left in ``folder`` (the real files are intact)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}") if p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    format: int,
    config: Mapping[str, Any],
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` with kind/format/config metadata, atomically."""
    metadata = {KIND_KEY: kind, FORMAT_KEY: str(format), CONFIG_KEY: json.dumps(dict(config), sort_keys=True)}
    for key, value in (extra_metadata or {}).items():
        if not isinstance(value, str):
            raise TypeError(f"metadata value for {key!r} must be a string, got {type(value).__name__}")
        metadata[key] = value
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(clean, tmp, metadata=metadata))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors metadata of ``path``; a file that is not safetensors is a ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise MissingModelError(f"Checkpoint file {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}). FaithfulFaces writes and reads "
            "safetensors only; re-export the file or pick another one."
        ) from exc


def load_checkpoint(path: str | os.PathLike, *, kind: str, max_format: int) -> Checkpoint:
    """Load a checkpoint of ``kind`` whose format this code understands (``<= max_format``)."""
    path = Path(path)
    metadata = read_metadata(path)
    found = metadata.get(KIND_KEY)
    if found is None:
        raise CheckpointError(
            f"{path} is a safetensors file but not a FaithfulFaces {kind} file: its metadata has no "
            f"'{KIND_KEY}' entry (keys found: {sorted(metadata) or 'none'}). Pick a file written by "
            "FaithfulFaces (training/train_lora.py or the tiny-model builder)."
        )
    if found != kind:
        raise CheckpointError(
            f"{path} is a FaithfulFaces '{found}' file, but a '{kind}' file was expected here."
        )
    try:
        fmt = int(metadata.get(FORMAT_KEY, ""))
        config = json.loads(metadata.get(CONFIG_KEY, ""))
    except (ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: the '{kind}' metadata is damaged ({exc}); re-export the file.") from exc
    if fmt > max_format:
        raise CheckpointError(
            f"{path} has {kind} format {fmt}, newer than this version of FaithfulFaces understands "
            f"(up to {max_format}). Update the pack."
        )
    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    return Checkpoint(path=path, kind=kind, format=fmt, config=config, tensors=tensors, metadata=metadata)


def check_state_dict(
    path: str | os.PathLike,
    found: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    *,
    what: str,
) -> None:
    """Raise a ``CheckpointError`` naming the first missing/unexpected key or wrong shape."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: {what} key '{missing[0]}' is missing{more}.")
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{path}: unexpected {what} key '{unexpected[0]}'{more}.")
    for key, ref in expected.items():
        if tuple(found[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{path}: {what} key '{key}' has shape {tuple(found[key].shape)}, "
                f"expected {tuple(ref.shape)}."
            )


def check_finite(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Raise a ``CheckpointError`` naming the first floating tensor that holds NaN or ±Infinity.

    Such a file would load and then make every output NaN (a black video), far from its cause.
    """
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            bad = int((~tensor.isfinite()).sum())
            raise CheckpointError(
                f"{path}: {what} key '{key}' holds {bad} NaN or infinite value(s) of {tensor.numel()}: the file is "
                "damaged or came from a diverged training run. Use an earlier checkpoint or re-train."
            )

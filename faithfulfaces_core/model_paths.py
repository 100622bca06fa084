"""Dropdown names of model files, turned into paths that stay inside the model folders.

A prompt is data from whoever can reach the server, and ComfyUI 0.3.x does not check V3
dropdown values against their lists. So a name is used only when the folder's own listing
holds it *and* it stays inside one of the folder's roots; every refusal carries the same
message, so the answer never tells a caller whether some other path exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath


def safe_parts(name: str) -> tuple[str, ...] | None:
    """The parts of a relative model name, or None when it is absolute or climbs out (``..``)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return None
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive or name.startswith("\\"):
        return None
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if not parts or ".." in parts:
        return None
    return parts


def inside(roots: Iterable[Path], name: str) -> Path | None:
    """The existing file or folder ``name`` names below one of ``roots`` (first root wins).

    Symbolic links inside a root are followed, as ComfyUI's own listing does; a dangling link
    counts as absent.
    """
    parts = safe_parts(name)
    if parts is None:
        return None
    for root in roots:
        candidate = Path(root).joinpath(*parts)
        if candidate.exists():
            return candidate
    return None


def not_listed_message(name: str, what: str, where: str) -> str:
    """The one message for a name that is not a listed model (whatever else it may point to)."""
    return (
        f"'{name}' is not one of the {what} ComfyUI lists in {where}. Pick an entry from the dropdown; "
        f"a file placed in {where} appears after refreshing ComfyUI (press R)."
    )


MAX_HEADER_BYTES = 64 * 1024 * 1024


def safetensors_kind(path: Path) -> str | None:
    """The ``faithfulfaces.kind`` of a safetensors file from its header alone, or None.

    Reads the 8-byte length and the JSON header only (no torch, no tensor data), so a dropdown
    can sort hundreds of LoRA files cheaply when ComfyUI builds the node list.
    """
    import json

    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 0 < size <= MAX_HEADER_BYTES:
                return None
            header = json.loads(fh.read(size))
    except (OSError, ValueError):
        return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    kind = metadata.get("faithfulfaces.kind") if isinstance(metadata, dict) else None
    return kind if isinstance(kind, str) else None

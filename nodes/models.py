"""Where the pack finds the models a user places, through ComfyUI's ``folder_paths``.

| folder (under ComfyUI/models)   | what                                                       |
|---------------------------------|------------------------------------------------------------|
| insightface/models/<pack>/      | InsightFace pack (antelopev2 or buffalo_l)                 |
| faithfulfaces/                  | 6DRepNet weights (.pth/.safetensors/.onnx), aligner files  |
| diffusers/<folder>/             | diffusers-format Wan2.1-VACE (1.3B or 14B)                 |
| diffusion_models/               | single-file Wan2.1-VACE transformer                        |
| loras/                          | FaithfulFaces LoRA files                                   |

Every list falls back to a single explanatory entry when empty, so the node still renders and
the web extension can tell the user which file is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from faithfulfaces_core.model_paths import inside, not_listed_message, safetensors_kind

POSE_WEIGHT_SUFFIXES = (".pth", ".safetensors", ".onnx")
MISSING_PREFIX = "(none found) "


FOLDER_EXTENSIONS = {"faithfulfaces": set(POSE_WEIGHT_SUFFIXES), "insightface": {".onnx"}}


def register_model_folders() -> None:
    """Add the pack's own model folders (``faithfulfaces``, ``insightface``) to ComfyUI."""
    for name, extensions in FOLDER_EXTENSIONS.items():
        default = os.path.join(folder_paths.models_dir, name)
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.folder_names_and_paths[name] = ([default], extensions)
        elif default not in folder_paths.folder_names_and_paths[name][0]:
            folder_paths.add_model_folder_path(name, default)


def folders(name: str) -> list[Path]:
    register_model_folders()
    return [Path(p) for p in folder_paths.get_folder_paths(name)]


def _files(name: str, suffixes: tuple[str, ...]) -> list[str]:
    """Files of model folder ``name`` with one of ``suffixes`` (ComfyUI's cached listing).

    Dangling symbolic links are left out: listing them would only lead to "not found".
    """
    register_model_folders()
    roots = folders(name)
    return [f for f in folder_paths.get_filename_list(name)
            if f.lower().endswith(suffixes) and inside(roots, f) is not None]


def _subfolders(name: str, marker: str, below: str = "") -> list[str]:
    found: set[str] = set()
    for root in folders(name):
        base = root / below
        if base.is_dir():
            found.update(p.name for p in base.iterdir() if p.is_dir() and any(p.glob(marker)))
    return sorted(found)


def _or_missing(items: list[str], hint: str) -> list[str]:
    return items or [MISSING_PREFIX + hint]


def insightface_packs() -> list[str]:
    return _or_missing(
        _subfolders("insightface", "*.onnx", below="models"),
        "place antelopev2/ or buffalo_l/ in models/insightface/models/",
    )


def pose_weights() -> list[str]:
    return _or_missing(
        [f for f in _files("faithfulfaces", POSE_WEIGHT_SUFFIXES) if "6drepnet" in f.lower()],
        "place 6DRepNet_300W_LP_AFLW2000.pth in models/faithfulfaces/",
    )


def aligner_files() -> list[str]:
    return _or_missing(
        [f for f in _files("faithfulfaces", (".safetensors",)) if "6drepnet" not in f.lower()],
        "place a FaithfulFaces aligner .safetensors in models/faithfulfaces/",
    )


def vace_models() -> list[str]:
    folders_ = [f"diffusers/{n}" for n in _subfolders("diffusers", "model_index.json")]
    singles = [f"diffusion_models/{f}" for f in _files("diffusion_models", (".safetensors",))]
    return _or_missing(
        folders_ + singles,
        "place a diffusers Wan2.1-VACE folder in models/diffusers/ or a VACE .safetensors in models/diffusion_models/",
    )


def lora_files() -> list[str]:
    return _or_missing(_files("loras", (".safetensors",)), "place a FaithfulFaces LoRA in models/loras/")


# What each model folder may name, and how a user is told where to place it.
_LISTINGS = {
    "faithfulfaces": ("model files", "models/faithfulfaces/", lambda: _files("faithfulfaces", POSE_WEIGHT_SUFFIXES)),
    "loras": ("LoRA files", "models/loras/", lambda: _files("loras", (".safetensors",))),
    "diffusion_models": ("VACE transformer files", "models/diffusion_models/",
                         lambda: _files("diffusion_models", (".safetensors",))),
    "diffusers": ("diffusers folders", "models/diffusers/", lambda: _subfolders("diffusers", "model_index.json")),
    "insightface": ("InsightFace packs", "models/insightface/models/",
                    lambda: [f"models/{p}" for p in _subfolders("insightface", "*.onnx", below="models")]),
}


def faithfulfaces_loras_first() -> list[str]:
    """The LoRA files, FaithfulFaces ones (``faithfulfaces.kind = lora`` in their header) first."""
    files = _files("loras", (".safetensors",))
    roots = folders("loras")
    ours = [f for f in files if safetensors_kind(inside(roots, f)) == "lora"]
    return ours + [f for f in files if f not in ours]


def resolve_insightface_pack(pack: str) -> Path:
    """The folder of InsightFace pack ``pack`` (``models/insightface/models/<pack>``)."""
    pack = str(pack)
    return resolve("insightface", pack if pack.startswith(MISSING_PREFIX) else f"models/{pack}")


def resolve(name: str, relative: str) -> Path:
    """The full path of ``relative``, a name the ``name`` folder's listing holds; else a clear error.

    Absolute paths, ``..`` and anything else the listing does not hold get one message that does
    not say whether such a path exists.
    """
    from faithfulfaces_core.errors import MissingModelError

    if isinstance(relative, str) and relative.startswith(MISSING_PREFIX):
        raise MissingModelError(
            f"No model file is selected: {relative[len(MISSING_PREFIX):]}, then refresh ComfyUI (press R)."
        )
    what, where, listing = _LISTINGS[name]
    path = inside(folders(name), relative) if relative in listing() else None
    if path is None:
        shown = relative.removeprefix("models/") if name == "insightface" and isinstance(relative, str) else relative
        raise MissingModelError(not_listed_message(str(shown), what, where))
    return path


def check_model(name: str, value: str) -> bool | str:
    """A ``validate_inputs`` answer for one file dropdown of folder ``name``: True, or the pack's message.

    Nodes whose dropdowns matter only for some backends check them with this instead of leaving
    it to ComfyUI's list check, which (in 2026 releases) also refuses an unused, stale value.
    """
    from faithfulfaces_core.errors import MissingModelError

    try:
        resolve_insightface_pack(value) if name == "insightface" else resolve(name, value)
    except MissingModelError as error:
        return str(error)
    return True


def check_option(value: str, options: list[str], name: str) -> bool | str:
    """A ``validate_inputs`` answer for a fixed choice the node checks itself (e.g. ``backend``)."""
    if value not in options:
        return f"{name} must be one of {', '.join(options)} (got '{value}')."
    return True


def check_backend_file(backend: str, backends: list[str], file_backends: list[str], folder: str,
                       value: str) -> bool | str:
    """A ``validate_inputs`` answer for a ``backend`` choice and a file dropdown of ``folder`` that only
    ``file_backends`` read: the backend must be known, the file must exist only when one of them runs."""
    if backend not in backends:
        return check_option(backend, backends, "backend")
    return check_model(folder, value) if backend in file_backends else True

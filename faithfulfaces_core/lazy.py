"""Package attributes that live in submodules, imported on first use (PEP 562).

A package's ``__init__`` stays free of heavy imports (torch, diffusers) so that ComfyUI's start-up
and a command's ``--help`` stay fast, while ``from faithfulfaces_core.dataset import build_dataset``
still works.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """``(__all__, __getattr__)`` for ``package``: ``exports`` maps a name to its submodule."""
    table = dict(exports)

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(f"{package}.{table[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return sorted(table), __getattr__

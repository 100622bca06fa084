"""Package attributes resolved lazily from their submodules (faithfulfaces_core/lazy.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from faithfulfaces_core.lazy import lazy_exports

PACKAGES = ("faithfulfaces_core.dataset", "faithfulfaces_core.training")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_export_is_its_submodules_object(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert getattr(importlib.import_module(value.__module__), name) is value
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018


def test_importing_the_packages_imports_nothing_heavy():
    code = f"import {', '.join(PACKAGES)}, sys; print(sorted(m for m in ('torch', 'diffusers', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_lazy_exports_imports_on_first_use():
    names, getattr_ = lazy_exports("faithfulfaces_core", {"circular_range": "dataset.variation"})
    assert names == ["circular_range"]
    assert getattr_("circular_range") is importlib.import_module("faithfulfaces_core.dataset.variation").circular_range

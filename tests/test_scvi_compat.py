"""scvi-tools' private names: used only through desweep.scvi_compat, and present in the installed scvi-tools."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import desweep
from desweep import scvi_compat

SRC = Path(desweep.__file__).parent
COMPAT = SRC / "scvi_compat.py"
PRIVATE_METHODS = {method for _, method in scvi_compat.PRIVATE_METHODS}


def _private_uses(path: Path) -> list[str]:
    """Imports of a private scvi-tools module or name, and calls of the private methods scvi_compat wraps."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "scvi":
            parts = (node.module or "").split(".") + [alias.name for alias in node.names]
            if any(part.startswith("_") for part in parts):
                found.append(f"{path.name}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                      if a.name.split(".")[0] == "scvi" and any(p.startswith("_") for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_METHODS:
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
    return found


def test_only_the_compat_module_uses_private_scvi_names():
    offenders = [use for path in sorted(SRC.rglob("*.py")) if path != COMPAT for use in _private_uses(path)]
    assert offenders == []
    assert _private_uses(COMPAT), "the scan finds nothing even in scvi_compat: it is broken"


def test_the_scan_finds_a_private_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from scvi.model._utils import x\nimport scvi.data._utils\ndef f(m):\n    return m._validate_anndata(1)\n")
    assert len(_private_uses(module)) == 3


@pytest.mark.parametrize(("where", "params"), list(scvi_compat.PRIVATE_FUNCTIONS.items()), ids=lambda v: str(v))
def test_private_functions_exist_with_the_parameters_used(where, params):
    module, name = where
    function = getattr(importlib.import_module(module), name)
    assert set(params) <= set(inspect.signature(function).parameters)


@pytest.mark.parametrize(("where", "params"), list(scvi_compat.PRIVATE_METHODS.items()), ids=lambda v: str(v))
def test_private_methods_exist_with_the_parameters_used(where, params):
    owner, method = where
    module, _, cls = owner.rpartition(".")
    function = getattr(getattr(importlib.import_module(module), cls), method)
    assert set(params) <= set(inspect.signature(function).parameters)

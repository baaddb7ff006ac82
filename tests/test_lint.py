"""The code base passes `ruff check` and `mypy` with the configuration in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    """The command that runs ``name``: the module of this interpreter (the `test` extra installs both), else PATH."""
    try:
        __import__(name)
    except ImportError:
        path = shutil.which(name)
        if path is None:
            pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
        return [path]
    return [sys.executable, "-m", name]


def test_ruff_check_is_clean():
    result = subprocess.run([*_tool("ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean():
    result = subprocess.run([*_tool("mypy"), "--python-executable", sys.executable, "src/desweep"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

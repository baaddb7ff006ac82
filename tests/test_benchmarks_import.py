"""The benchmark and helper scripts keep up with desweep's code (a rename or a move there breaks them otherwise unseen).

No test runs benchmarks/ or scripts/ end to end (they take minutes to hours), so a name
that moves in ``src/desweep`` (a function moved into a package, say) breaks a benchmark
without a failing test. Two cheap checks:

- every ``from desweep... import name`` in those scripts resolves, wherever it sits: at
  the top, inside a function (run only deep into a benchmark) or in code a script hands
  to a child Python as text;
- every script answers ``--help`` with exit status 0, which runs its top-level code
  (imports, constants, the argument parser) and nothing else.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*(REPO / "benchmarks").glob("*.py"), *(REPO / "scripts").glob("*.py")])
#: helper modules the scripts import, with no command line of their own
HELPERS = {"_timing.py"}


def _trees(source: str) -> Iterator[tuple[ast.AST, int]]:
    """The module's syntax tree, then that of each string constant that is Python importing desweep, with its first line - 1."""
    tree = ast.parse(source)
    yield tree, 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "desweep" in node.value and "import" in node.value:
            try:
                yield ast.parse(node.value), node.lineno - 1
            except SyntaxError:
                continue


def desweep_imports(path: Path) -> list[tuple[int, str, str]]:
    """``(line, module, name)`` of every import from desweep in ``path`` (name ``""`` for ``import desweep.x``)."""
    found = []
    for tree, offset in _trees(path.read_text()):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "desweep":
                found += [(offset + node.lineno, node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(offset + node.lineno, alias.name, "") for alias in node.names if alias.name.split(".")[0] == "desweep"]
    return found


def unresolved(module: str, name: str) -> str | None:
    """Why ``from module import name`` fails, or None."""
    try:
        imported = importlib.import_module(module)
    except ImportError as err:
        return f"{module}: {err}"
    if not name or hasattr(imported, name):
        return None
    try:
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        return f"{module} has no {name}"
    return None


def test_the_scripts_are_found():
    names = {path.name for path in SCRIPTS}
    assert {"planted_truth.py", "scaling.py", "de_fanout.py", "mutation_check.py"} <= names, names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_desweep_import_in_the_script_resolves(path):
    problems = [f"{path.relative_to(REPO)}:{line}: {why}" for line, module, name in desweep_imports(path)
                if (why := unresolved(module, name))]
    assert not problems, "\n".join(problems)


def test_imports_inside_functions_and_child_code_are_read(tmp_path):
    script = tmp_path / "script.py"
    script.write_text('def main():\n    from desweep.runner import no_such_name\n\n'
                      'CHILD = """\nimport json\nfrom desweep.io import no_such_reader\n"""\n')
    problems = [(line, unresolved(module, name)) for line, module, name in desweep_imports(script)]
    assert problems == [(2, "desweep.runner has no no_such_name"), (6, "desweep.io has no no_such_reader")]


@pytest.mark.parametrize("path", [p for p in SCRIPTS if p.name not in HELPERS], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_answers_help(path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(path), "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage:"), proc.stdout[:500]

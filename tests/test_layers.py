"""The layers import one way: no import cycle among desweep's modules, and the library does not reach into the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import desweep

SRC = Path(desweep.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _owner(name: str) -> str | None:
    """The module of ``name`` (a module, or a name inside one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """desweep modules that ``module`` imports anywhere in its code (top level, in functions, for type checking)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {_owner(alias.name) for alias in node.names if alias.name.split(".")[0] == "desweep"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base.split(".")[0] != "desweep":
                continue
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else _owner(base) for alias in node.names}
    return {m for m in found if m is not None and m != module}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle():
    graph = {m: imports_of(m) for m in MODULES}
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_cli_and_the_runner_import_the_cli():
    """The runner runs the commands, so it needs the command registry (``desweep.cli``); nothing else of cli/."""
    for module in MODULES:
        cli_imports = {m for m in imports_of(module) if m == "desweep.cli" or m.startswith("desweep.cli.")}
        if module == "desweep.cli" or module.startswith("desweep.cli."):
            continue
        if module.startswith("desweep.runner"):
            assert cli_imports <= {"desweep.cli"}, module
        else:
            assert not cli_imports, module


def test_library_errors_name_the_parameter_and_the_cli_the_option():
    import click
    import pytest
    from click.testing import CliRunner

    from desweep.cli._common import step_command
    from desweep.diagnose.classify import Thresholds
    from desweep.errors import ParameterError

    with pytest.raises(ParameterError) as caught:
        Thresholds(alpha=0.9).check()
    assert str(caught.value) == "alpha: must be between 0 and 0.5, got 0.9"

    @click.command()
    @click.option("--top-n", type=int)
    @click.option("-c", "--cut", "cut_at", type=int)
    @step_command
    def command(top_n: int, cut_at: int) -> None:
        if cut_at is not None:
            raise ParameterError("cut_at", "cut_at", "too deep")
        raise ParameterError("top_n", "top_n", f"must be at least 1, got {top_n}")

    result = CliRunner().invoke(command, ["--top-n", "0"])
    assert result.exit_code == 1 and result.output == "Error: --top-n: top_n: must be at least 1, got 0\n"
    result = CliRunner().invoke(command, ["-c", "3"])
    assert result.output == "Error: --cut: cut_at: too deep\n"

"""Static contract between the Nextflow modules and the Click commands they call.

For every ``modules/local/<step>/main.nf``:

- its script block calls exactly one ``desweep-<command>``, a command registered in
  ``desweep.cli.COMMANDS`` whose ``bin/`` wrapper calls that same Click command;
- each option the script block or its ``ext.args`` (conf/modules_args.config, conf/modules.config) passes exists on
  that command, and every required option is passed;
- each declared output lies in the step's folder and is a file the command writes, named
  in ``src/desweep/keys.py`` (the output contract of docs/architecture.md), and every
  such file is declared; the stub block creates each declared output;
- the module has ``meta.yml``, ``environment.yml`` and ``tests/main.nf.test`` with a
  ``- stub`` twin for each test; no module names its container (nextflow.config does, once).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import click
import pytest
import yaml

from desweep import keys
from desweep.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
MODULES = REPO / "modules" / "local"
MODULES_CONFIG = REPO / "conf" / "modules.config"
#: the steps' ext.args, generated from desweep.params (desweep.nextflow_sync)
MODULES_ARGS_CONFIG = REPO / "conf" / "modules_args.config"
#: the module nf-tests' options, one file for all
MODULE_TEST_CONFIG = REPO / "tests" / "modules.config"
#: the conda environment every module's environment.yml links to
CONDA_ENVIRONMENT = REPO / "containers" / "environment.yml"
USAGE = REPO / "docs" / "usage.md"

#: module -> (its step folder, the files it declares there): the output contract of keys.OUTPUTS, a step's
#: outputs belonging to its own module unless an output names another (the DE merge)
CONTRACT: dict[str, tuple[str, set[str]]] = {}
for _step, (_folder, _outputs) in keys.OUTPUTS.items():
    for _output in _outputs:
        CONTRACT.setdefault(_output.module or _step, (_folder, set()))[1].add(_output.pattern)


def contract(module: str) -> tuple[str, set[str]]:
    return CONTRACT[module]


#: modules that are not pipeline steps of the contract (their outputs are checked by name only)
NON_CONTRACT = {"simulate"}

OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
COMMAND_CALL = re.compile(r"(?<![\w-])desweep-([a-z][a-z0-9-]*)")


# --- parsing helpers ---------------------------------------------------------

def module_dirs() -> list[Path]:
    return sorted(p.parent for p in MODULES.glob("*/main.nf"))


def process_name(text: str) -> str:
    m = re.search(r"^process\s+([A-Z][A-Z0-9_]*)\s*\{", text, re.M)
    assert m, "no process definition"
    return m.group(1)


def section(text: str, name: str, following: tuple[str, ...]) -> str:
    """The body of a process section (``input:``, ``output:``, ``script:``, ``stub:``)."""
    m = re.search(rf"^\s*{name}:\s*$", text, re.M)
    if not m:
        return ""
    rest = text[m.end():]
    ends = [m2.start() for f in following if (m2 := re.search(rf"^\s*{f}:\s*$", rest, re.M))]
    return rest[: min(ends)] if ends else rest


def script_block(text: str) -> str:
    return section(text, "script", ("stub",))


def stub_block(text: str) -> str:
    return section(text, "stub", ())


def output_paths(text: str) -> list[str]:
    block = section(text, "output", ("when", "script", "exec", "shell", "stub"))
    return re.findall(r"""path\(?\s*['"]([^'"]+)['"]""", block)


def ext_args(process: str, config: Path = MODULES_CONFIG) -> str:
    """The text of ``withName: 'PROCESS' { ... }`` in conf/modules.config, or another config (all of them)."""
    text = config.read_text()
    blocks = []
    for m in re.finditer(r"withName:\s*['\"]?([A-Za-z0-9_:|*]+)['\"]?\s*\{", text):
        names = m.group(1).split("|")
        if not any(re.fullmatch(n.replace("*", ".*"), process) or n.split(":")[-1] == process for n in names):
            continue
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        blocks.append(text[m.end(): i - 1])
    return "\n".join(blocks)


def click_command(name: str) -> click.Command:
    module_name, attribute = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)


def option_names(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts + param.secondary_opts)
    return names


def called_command(module: Path) -> str:
    calls = set(COMMAND_CALL.findall(script_block((module / "main.nf").read_text())))
    assert len(calls) == 1, f"{module.name}: script block must call exactly one desweep-<step>, calls {sorted(calls)}"
    return calls.pop()


MODULE_IDS = [m.name for m in module_dirs()]


# --- tests -------------------------------------------------------------------

def test_every_step_of_the_contract_has_a_module() -> None:
    called = {called_command(m) for m in module_dirs()}
    steps = {name for name in COMMANDS if name not in ("run", "simulate", "dev")}
    assert not sorted(steps - called), f"commands without a Nextflow module: {sorted(steps - called)}"
    assert set(CONTRACT) <= set(MODULE_IDS), f"modules missing: {sorted(set(CONTRACT) - set(MODULE_IDS))}"


@pytest.mark.parametrize("module", MODULE_IDS)
def test_module_calls_a_registered_command_through_its_bin_wrapper(module: str) -> None:
    command = called_command(MODULES / module)
    assert command in COMMANDS, f"{module} calls desweep-{command}, which is not a registered command"
    wrapper = REPO / "bin" / f"desweep-{command}"
    assert wrapper.is_file(), f"{wrapper} is missing"
    module_name, attribute = COMMANDS[command].split(":")
    assert f"from {module_name} import {attribute}" in wrapper.read_text(), f"{wrapper} does not call {COMMANDS[command]}"


@pytest.mark.parametrize("module", MODULE_IDS)
def test_module_options_exist_on_the_click_command(module: str) -> None:
    text = (MODULES / module / "main.nf").read_text()
    command_name = called_command(MODULES / module)
    command = click_command(command_name)
    known = option_names(command)
    process = process_name(text)
    passed_in_script = set(OPTION.findall(script_block(text)))
    passed_in_config = set(OPTION.findall(ext_args(process) + ext_args(process, MODULES_ARGS_CONFIG)))
    passed_in_tests = set(OPTION.findall(ext_args(process, MODULE_TEST_CONFIG)))
    unknown = sorted((passed_in_script | passed_in_config | passed_in_tests) - known)
    assert not unknown, f"{process} passes options that `desweep {command_name}` does not have: {unknown}"
    not_passed = sorted(p.opts[-1] for p in command.params
                        if isinstance(p, click.Option) and p.required and not set(p.opts) & passed_in_script)
    assert not not_passed, f"{process} does not pass the required options {not_passed} in its script block"


@pytest.mark.parametrize("module", MODULE_IDS)
def test_module_outputs_follow_the_output_contract(module: str) -> None:
    text = (MODULES / module / "main.nf").read_text()
    command = called_command(MODULES / module)
    outputs = output_paths(text)
    if command in NON_CONTRACT:
        return
    assert module in CONTRACT, f"add the outputs of module {module} to keys.OUTPUTS"
    folder, files = contract(module)
    script = (script_block(text))
    assert re.search(rf"--outdir\s+{re.escape(folder)}\b", script), f"{module}: must write into --outdir {folder}"
    declared = set()
    for path in outputs:
        head, _, rest = path.partition("/")
        assert head == folder, f"{module}: output {path!r} is not under the step folder {folder!r}"
        declared.add(rest)
    assert declared == files, f"{module}: declares {sorted(declared)}, the contract says {sorted(files)}"


VERSIONS_EVAL = re.compile(r"""^\s*tuple val\("\$\{task\.process\}"\), val\('([\w-]+)'\), eval\((['"])(.+?)\2\)\s*"""
                           r""", emit: (versions_\w+)(, topic: versions)?$""", re.M)


@pytest.mark.parametrize("module", MODULE_IDS)
def test_module_versions_are_eval_outputs_on_the_versions_topic(module: str) -> None:
    """desweep's version from ``desweep --version`` (a missing desweep fails the task), on the topic the workflow collects."""
    text = (MODULES / module / "main.nf").read_text()
    found = VERSIONS_EVAL.findall(section(text, "output", ("when",)))
    assert found and found[0][0] == "desweep" and found[0][2] == "desweep --version", f"{module}: no eval of desweep --version: {found}"
    assert all(emit == f"versions_{tool.replace('-', '_')}" for tool, _, _, emit, _ in found), found
    # the report reads software_versions.yml, which waits for the topic to close: it stays off it
    assert {bool(topic) for *_, topic in found} == {module != "report"}, f"{module}: topic: versions on the wrong outputs"
    assert "'versions.yml'" not in text, f"{module}: still writes versions.yml"


@pytest.mark.parametrize("module", MODULE_IDS)
def test_stub_creates_every_output(module: str) -> None:
    text = (MODULES / module / "main.nf").read_text()
    stub = stub_block(text)
    assert stub.strip(), f"{module}: no stub block"
    for path in output_paths(text):
        probe = path.split("*")[0].rstrip("/") or path
        assert probe in stub, f"{module}: the stub does not create {path!r}"


@pytest.mark.parametrize("module", MODULE_IDS)
def test_module_files(module: str) -> None:
    folder = MODULES / module
    text = (folder / "main.nf").read_text()
    process = process_name(text)
    assert process == module.upper(), f"process {process} should be named {module.upper()}"
    assert 'conda "${moduleDir}/environment.yml"' in text
    assert "task.ext.args" in text and "task.ext.when" in text
    assert re.search(r"input:\s*\n\s*(//.*\n\s*)*tuple val\(meta\)|input:\s*\n\s*val\(meta\)", text), f"{module}: inputs start with meta"

    meta = yaml.safe_load((folder / "meta.yml").read_text())
    assert meta["name"] == module
    for key in ("description", "keywords", "tools", "input", "output", "authors"):
        assert meta.get(key), f"{module}/meta.yml: no {key}"
    emits = set(re.findall(r"emit:\s*(\w+)", text))
    assert emits == {next(iter(item)) for item in meta["output"]}, f"{module}/meta.yml outputs differ from the emits {sorted(emits)}"

    # one conda environment and one test config for every module: links and a path to them
    env = folder / "environment.yml"
    assert env.is_symlink() and env.resolve() == CONDA_ENVIRONMENT, f"{env} is not a link to {CONDA_ENVIRONMENT}"
    assert not (folder / "tests" / "nextflow.config").exists(), f"{module}: options go into {MODULE_TEST_CONFIG}"

    nf_test = (folder / "tests" / "main.nf.test").read_text()
    assert f'process "{process}"' in nf_test
    assert f'config "../../../../{MODULE_TEST_CONFIG.relative_to(REPO)}"' in nf_test, f"{module}: the test does not use {MODULE_TEST_CONFIG}"
    assert "nf_fixtures" in nf_test and "run(" not in nf_test, f"{module}: the test must start from tests/data/nf_fixtures, not rerun steps"
    assert (folder / "tests" / "main.nf.test.snap").is_file(), f"{module}: no committed snapshot"
    tests = re.findall(r'test\("([^"]+)"\)', nf_test)
    real = [t for t in tests if not t.endswith(" - stub")]
    assert real, f"{module}: no real nf-test"
    assert sorted(f"{t} - stub" for t in real) == sorted(t for t in tests if t.endswith(" - stub")), f"{module}: every test needs a '- stub' twin"
    assert nf_test.count('options "-stub"') == len(real)


def test_container_is_set_in_one_place() -> None:
    """No module names an image: ``process.container`` in nextflow.config is the only setting."""
    for module in module_dirs():
        assert not re.search(r"^\s*container\s", (module / "main.nf").read_text(), re.M), f"{module.name}/main.nf sets its own container"
    configs = [REPO / "nextflow.config", *sorted((REPO / "conf").glob("*.config"))]
    settings = [f"{path.name}: {line.strip()}" for path in configs for line in path.read_text().splitlines()
                if re.match(r"\s*(process\.)?container\s*=", line)]
    assert len(settings) == 1 and settings[0].startswith("nextflow.config: process.container"), settings


def modules_config_selectors(config: Path = MODULES_CONFIG) -> list[str]:
    """Every process named by a ``withName`` selector in conf/modules.config (or another), once per block, comments left out."""
    code = re.sub(r"/\*.*?\*/", "", config.read_text(), flags=re.S)
    return [n.split(":")[-1] for m in re.finditer(r"withName:\s*['\"]?([A-Za-z0-9_:|*]+)['\"]?", code)
            for n in m.group(1).split("|")]


def test_modules_config_names_real_processes() -> None:
    processes = {process_name((m / "main.nf").read_text()) for m in module_dirs()}
    for config in (MODULES_CONFIG, MODULES_ARGS_CONFIG, REPO / "conf" / "memory.config"):
        named = set(modules_config_selectors(config))
        assert named <= processes, f"{config.name} names unknown processes: {sorted(named - processes)}"


def test_modules_config_names_each_process_once() -> None:
    """A second ``withName`` block replaces the first one's ``ext.args`` without a word (it once dropped --models)."""
    for config in (MODULES_CONFIG, MODULES_ARGS_CONFIG):
        named = modules_config_selectors(config)
        repeated = sorted({n for n in named if named.count(n) > 1})
        assert not repeated, f"{config.name}: withName blocks repeated for {repeated}: merge them into one"


def test_every_module_is_used_by_the_pipeline() -> None:
    sources = "\n".join(p.read_text() for p in [REPO / "main.nf", *REPO.glob("workflows/*.nf"), *REPO.glob("subworkflows/local/*/main.nf")])
    for module in module_dirs():
        process = process_name((module / "main.nf").read_text())
        pattern = r"include\s*\{[^}]*\bPROCESS\b[^}]*\}\s*from\s*['\"][./]*modules/local/MODULE/main['\"]"
        assert re.search(pattern.replace("PROCESS", process).replace("MODULE", module.name), sources), f"{process} is not included anywhere"


DE_SWEEP = REPO / "subworkflows" / "local" / "de_sweep" / "main.nf"


def de_task_columns() -> dict[str, list[str]]:
    """``deTaskColumns``' map in subworkflows/local/de_sweep/main.nf: ``--de_split`` value -> plan columns."""
    body = re.search(r"def deTaskColumns\(split\)\s*\{.*?def columns\s*=\s*\[(.*?)\]\s*\n", DE_SWEEP.read_text(), flags=re.S)
    assert body, f"{DE_SWEEP}: no deTaskColumns map"
    return {m.group(1): re.findall(r"'([^']+)'", m.group(2))
            for m in re.finditer(r"(\w+)\s*:\s*\[([^\]]*)\]", body.group(1))}


def test_de_task_columns_follow_the_de_split_param_and_the_plan() -> None:
    """The subworkflow's split map restates ``--de_split``'s choices: it must name the same ones, and real plan columns."""
    from desweep.params import NEXTFLOW_ONLY
    from desweep.plan.row import PLAN_COLUMNS

    split = next(p for p in NEXTFLOW_ONLY if p.name == "de_split")
    columns = de_task_columns()
    assert list(columns) == list(split.choices), f"{DE_SWEEP}: deTaskColumns splits {list(columns)}, --de_split offers {list(split.choices)}"
    for value, names in columns.items():
        assert names and set(names) <= set(PLAN_COLUMNS), f"{DE_SWEEP}: de_split '{value}' groups by {names}, not plan columns"


def test_de_fanout_benchmark_counts_tasks_as_the_subworkflow_makes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/de_fanout.py scales interrupted runs by its own task count: the subworkflow's grouping, model always in."""
    spec = importlib.util.spec_from_file_location("de_fanout", REPO / "benchmarks" / "de_fanout.py")
    benchmark = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, benchmark)  # its dataclasses look their module up there
    monkeypatch.setattr(sys, "path", list(sys.path))  # it puts benchmarks/ on the path
    spec.loader.exec_module(benchmark)
    # the subworkflow adds the model to every split's columns (a sampling key names its model already)
    expected = {split: {"model", *names} for split, names in de_task_columns().items()}
    assert {split: {"model", *names} for split, names in benchmark.TASK_COLUMNS.items()} == expected


def test_the_report_and_diagnose_read_and_write_files_of_the_contract() -> None:
    from desweep.cli.diagnose import TABLES
    from desweep.report.load import CSV_FILES, OTHER_FILES

    written = {(folder, output.name) for folder, outputs in keys.OUTPUTS.values() for output in outputs}
    read = {name: (folder, file.split("/")[0]) for name, (folder, file) in {**CSV_FILES, **OTHER_FILES}.items()
            if folder != keys.PIPELINE_INFO}
    assert {name: where for name, where in read.items() if where not in written} == {}
    assert {(keys.STEP_DIAGNOSE, file) for file in TABLES.values()} <= written

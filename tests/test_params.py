"""One definition per parameter.

- the Nextflow files generated from desweep.params are current (and the check fails when a default changes);
- Click options come from the definitions: choices from the ``Literal``, ranges, defaults;
- every documented example (help texts, docs/*.md, README) parses with Click;
- help texts hold no reST markup, and every example paragraph is protected from re-wrapping (``\\b``);
- ``desweep --help`` lists the steps in pipeline order; ``desweep run --list-options`` lists every key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from desweep import params
from desweep.cli import COMMANDS, cli
from desweep.integrate import GeneLikelihood
from desweep.nextflow_sync import GENERATED

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def all_commands() -> dict[str, click.Command]:
    ctx = click.Context(cli)
    commands = {name: cli.get_command(ctx, name) for name in COMMANDS}
    for name, command in list(commands.items()):
        if isinstance(command, click.Group):
            commands.update({f"{name} {sub}": command.get_command(ctx, sub) for sub in command.list_commands(ctx)})
    return commands


# --- generated files ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_nextflow_files_are_current(name: str) -> None:
    current = (REPO / name).read_text()
    assert GENERATED[name](current) == current, f"{name} is stale: run `desweep dev sync-nextflow`"


def test_a_changed_default_makes_every_generated_file_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = tuple(dataclasses.replace(p, default=11) if p.name == "n_latent" else p for p in params.INTEGRATE)
    monkeypatch.setitem(params.STEP_PARAMS, "integrate", changed)
    defaults = ["nextflow_schema.json", "nextflow.config", "docs/usage.md"]
    for name in defaults:
        assert GENERATED[name]((REPO / name).read_text()) != (REPO / name).read_text(), name
    result = CliRunner().invoke(cli, ["dev", "sync-nextflow", "--check"])
    assert result.exit_code == 1 and f"stale: {', '.join(defaults)};" in result.output


def test_a_new_nextflow_param_makes_every_generated_file_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """A param given a group reaches the schema, the config, the docs and its module's command line."""
    added = params.Param("n_hidden", int, 128, "Hidden units.", group="integrate_options", minimum=1)
    monkeypatch.setitem(params.STEP_PARAMS, "integrate", (*params.INTEGRATE, added))
    for name, generate in GENERATED.items():
        assert generate((REPO / name).read_text()) != (REPO / name).read_text(), name
    result = CliRunner().invoke(cli, ["dev", "sync-nextflow", "--check"])
    assert result.exit_code == 1 and f"stale: {', '.join(GENERATED)};" in result.output
    assert '"--n-hidden ${params.n_hidden}"' in GENERATED["conf/modules_args.config"]("")


def test_module_args_follow_each_param_kind() -> None:
    """Text in quotes and only when set, a negatable flag both ways, a replicate's seed from its meta."""
    text = GENERATED["conf/modules_args.config"]("")  # the committed file is this (the staleness test above)
    integrate = text[text.index("withName: 'INTEGRATE'"):text.index("withName: 'CLUSTER'")]
    assert "params.extra_genes ? \"--extra-genes '${params.extra_genes}'\" : ''" in integrate
    assert "params.early_stopping ? '--early-stopping' : '--no-early-stopping'" in integrate
    assert '"--gene-likelihood ${params.gene_likelihood}"' in integrate
    assert '"--seed ${(params.seed as int) + (meta.model ?: 0)}"' in integrate
    assert "params.make_genes_unique ? '--make-genes-unique' : ''" in text
    assert "params.multiqc_title ? \"--title '${params.multiqc_title}'\" : ''" in text
    assert "withName: 'DE'" not in text  # no DE option is a Nextflow param


def test_nextflow_params_are_defined_once() -> None:
    names = [p.nextflow_name for p, _ in params.nextflow_params()]
    assert len(names) == len(set(names))
    assert {"top_n", "n_top_genes", "max_epochs", "multiqc_title"} <= set(names)


# --- Click options from the definitions --------------------------------------------

def test_click_options_follow_the_definitions() -> None:
    commands = all_commands()
    for step, defined in params.STEP_PARAMS.items():
        options = {p.name: p for p in commands[step].params if isinstance(p, click.Option)}
        for param in defined:
            option = options[param.name]
            assert option.default == param.default, (step, param.name)
            if param.choices is not None:
                assert list(option.type.choices) == list(param.choices), (step, param.name)
    option = next(p for p in commands["integrate"].params if p.name == "gene_likelihood")
    assert list(option.type.choices) == list(params.literal_values(GeneLikelihood))
    assert commands["integrate"].make_context("integrate", ["-i", "x", "-o", "y"]).params["n_latent"] == 10
    with pytest.raises(click.BadParameter):
        commands["integrate"].make_context("integrate", ["-i", "x", "-o", "y", "--n-latent", "1"])


#: options the command resolves before calling the library: a device for "auto", the cores given for no thread count
RESOLVED_BY_THE_COMMAND = {"accelerator", "threads"}


def library_default(param: params.Param, function: Any) -> Any:
    """The default of ``function``'s parameter of the same name (a dataclass field counts), or ``inspect.Parameter.empty``."""
    found = inspect.signature(function).parameters.get(param.name)
    return inspect.Parameter.empty if found is None else found.default


def test_every_param_default_is_its_library_function_default() -> None:
    """A step's option and the library keyword it reaches default alike (the text of a list option read as the list)."""
    compared, differ = 0, []
    for step, defined in params.STEP_PARAMS.items():
        functions = [getattr(importlib.import_module(target.split(":")[0]), target.split(":")[1])
                     for target in params.TARGETS[step]]
        for param in defined:
            if param.name in RESOLVED_BY_THE_COMMAND:
                continue
            option = next(p for p in all_commands()[step].params if p.name == param.name)
            default = param.default if param.default is None or option.callback is None else option.callback(None, option, param.default)
            for function in functions:
                expected = library_default(param, function)
                if expected is inspect.Parameter.empty:
                    continue
                compared += 1
                if (list(default) if isinstance(default, tuple | list) else default) != (
                        list(expected) if isinstance(expected, tuple | list) else expected):
                    differ.append(f"{step}.{param.name}: {param.default!r} vs {function.__qualname__}'s {expected!r}")
    assert compared >= 50 and differ == []


def test_top_n_is_one_parameter_for_every_step_that_classifies_top_genes() -> None:
    for step in ("normalize", "diagnose", "baselines"):
        assert params.TOP_N in params.STEP_PARAMS[step], step
    assert params.TOP_N in params.RUN_SHARED
    assert "top_n" not in {p.name for p in params.DE}  # DE's head of the ranking is stability_top_n


# --- examples and help texts -------------------------------------------------------

def joined_lines(text: str) -> list[str]:
    """Lines with their backslash continuations joined."""
    return [line.strip() for line in re.sub(r"\\\s*\n\s*", " ", text).splitlines()]


def help_examples() -> list[tuple[str, str]]:
    return [(name, line) for name, command in all_commands().items() for line in joined_lines(command.help or "")
            if line.startswith("desweep ")]


def doc_examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        fenced = re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), re.S | re.M)
        for block in (body for language, body in fenced if language in ("", "bash", "sh", "console")):
            for line in joined_lines(block):
                line = re.sub(r"^(\.venv/bin/|\$ )", "", line.split("  #")[0].strip())
                if line.startswith("desweep "):
                    found.append((path.name, line))
    return found


EXAMPLES = help_examples() + doc_examples()


def test_examples_are_found() -> None:
    assert len(help_examples()) >= len(params.STEP_PARAMS) and len(doc_examples()) >= 5


@pytest.mark.parametrize(("where", "example"), EXAMPLES, ids=[f"{w}:{e[:60]}" for w, e in EXAMPLES])
def test_documented_example_parses(where: str, example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    flags = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", example))
    while "[" in example:  # a synopsis: its [optional] parts are checked by flag name, the rest is parsed
        example = re.sub(r"\[[^\[\]]*\]", "", example)
    words = shlex.split(example)[1:]
    for word in words:  # files an option reads while parsing (e.g. --genes markers.txt)
        if word.endswith((".txt", ".yaml")) and not word.startswith("-"):
            Path(word).parent.mkdir(parents=True, exist_ok=True)
            Path(word).write_text("CD3E\n" if word.endswith(".txt") else "seeds: [0]\n")  # a grid is checked while parsing
    group: click.Command = cli
    while isinstance(group, click.Group):
        group = group.get_command(click.Context(cli), words.pop(0))
        assert group is not None, example
    known = {flag for p in group.params if isinstance(p, click.Option) for flag in p.opts + p.secondary_opts}
    assert flags <= known | {"-h", "--help"}, f"{where}: {sorted(flags - known)} not options of desweep {group.name}"
    with contextlib.suppress(click.exceptions.Exit):  # an eager option such as --show-default-grid
        group.make_context(f"desweep {group.name}", words)


@pytest.mark.parametrize("name", sorted(all_commands()))
def test_help_has_no_rest_markup_and_protected_examples(name: str) -> None:
    command = all_commands()[name]
    texts = [command.help or ""] + [p.help or "" for p in command.params if isinstance(p, click.Option)]
    for text in texts:
        assert not re.search(r"``|:(mod|func|class|data|meth|attr):`", text), (name, text)
    for paragraph in (command.help or "").split("\n\n"):
        if any(line.strip().startswith("desweep ") for line in paragraph.splitlines()):
            assert paragraph.strip().startswith("\b"), (name, paragraph)


def test_help_lists_the_steps_in_pipeline_order() -> None:
    output = CliRunner().invoke(cli, ["--help"]).output
    listed = re.findall(r"^  ([a-z]+)\s", output.split("Commands:")[1], re.M)
    assert listed == [name for name in COMMANDS if name != "dev"]


def test_run_lists_every_option_key() -> None:
    result = CliRunner().invoke(cli, ["run", "--list-options"])
    assert result.exit_code == 0, result.output
    keys = {line.split()[0] for line in result.output.splitlines()}
    for step, defined in params.STEP_PARAMS.items():
        for param in defined:
            if step != "validate" or param not in params.RUN_KEYS:  # the run sets validate's keys itself
                assert f"{step}.{param.name}" in keys
    assert "integrate.max_epochs" in keys and "validate.input" not in keys and "de.plan" not in keys
    line = next(line for line in result.output.splitlines() if line.startswith("integrate.n_latent "))
    assert line.split()[1:4] == ["integer", "range", "10"]


def test_run_top_n_reaches_every_step_that_classifies_top_genes(tmp_path: Path) -> None:
    from desweep.runner import load_config, resolve_steps

    def top_n(overrides: dict, items: tuple[str, ...] = ()) -> dict[str, int]:
        config = load_config(None, {"input": str(tmp_path / "x.h5ad"), "outdir": str(tmp_path / "out"), **overrides}, items)
        resolved = resolve_steps(config)
        return {name: item.params.get("top_n") for name, item in resolved.items() if "top_n" in item.params}

    assert top_n({}) == {"normalize": 50, "diagnose": 50, "baselines": 50}
    assert top_n({"top_n": 7}) == {"normalize": 7, "diagnose": 7, "baselines": 7}
    assert top_n({}, ("diagnose.top_n=9",)) == {"normalize": 9, "diagnose": 9, "baselines": 9}
    assert top_n({"top_n": 7}, ("baselines.top_n=3",)) == {"normalize": 7, "diagnose": 7, "baselines": 3}

"""``desweep run``: the embedded single-machine runner that chains every step.

The runner builds each step's command line from one configuration and invokes
the same Click command that ``desweep <step>`` and the Nextflow modules run, so
the option list of every step has one source of truth.

Before the first step runs, the whole run is checked
----------------------------------------------------
- one writer per output folder: a lock (``OUTDIR/.desweep_run.lock``, held for the
  whole run and released by the system when the process ends, even on
  ``kill -9``) refuses a second run naming the first;
- no input may lie inside the step folders the run writes;
- every step's command line is resolved by Click with its real option types and
  checks (:func:`resolve_steps`), so a bad value fails at once, in a message that
  names the ``--set`` item or the config key it came from; options the runner
  sets itself (``validate.input``, ``de.plan``, ...) cannot be set per step;
- only then are ``pipeline_info/params.yaml`` (every option as resolved) and
  the software versions written;
- with a labels column, right after validate, the comparisons and the plan are
  built from the validated cells (:func:`check_design`): a design with nothing to
  compare, or a plan over ``--max-combinations``, fails before training.

Resume
------
A step is skipped when its *stamp* and its outputs are unchanged. The stamp
hashes everything the step reads: its options as Click resolved them (so
``--threads`` and the spelling of a path do not count; a path counts as
resolved), the content of every file it reads from outside the output folder
(the input, every member of a samplesheet, the grid, a comparisons or gene
file) and the *run id* of each step whose outputs it reads. A run id changes
whenever a step writes its outputs, so a step that reruns reruns every step
after it; a step whose recorded outputs are gone or changed reruns. The stamp
file of a step (``.desweep_<step>.json``) records its outputs; after a rerun,
those of the previous run it did not write again are deleted, so a step's
folder holds only outputs of its latest run.

Configuration (YAML or flags)::

    input: data.h5ad          # or a samplesheet CSV/TSV
    outdir: results
    batch_key: batch
    labels_key: cell_type     # optional: Leiden clusters otherwise
    seed: 0                   # passed to every step that has --seed
    threads: 2                # passed to every step that has --threads
    models: 1                 # scVI models trained (replicates; model k with seed + k)
    steps:                    # per-step options, named as the step's CLI options
      integrate: {max_epochs: 100}
      composition: {comparisons: "A:B"}     # or a list of pairs: [[A, B]]

Values are read as text and converted by the step's option (``01`` stays
``01``); a list becomes a comma-separated option value, a list of pairs a
``--comparisons`` value.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from desweep import keys
from desweep.errors import DesweepInputError

logger = logging.getLogger(__name__)

TOP_LEVEL_KEYS = ("input", "outdir", "batch_key", "labels_key", "layer", "seed", "threads", "accelerator", "models", "steps")
#: options passed from the top level to every step whose command has them
SHARED_OPTIONS = ("seed", "threads", "accelerator")
#: resolved options that do not change a step's outputs, left out of its stamp
UNSTAMPED = frozenset({"threads", "outdir", "debug", "verbose"})


@dataclass(frozen=True)
class Step:
    """One pipeline step: its command, folder, inputs and expected outputs.

    ``arguments`` builds the options the runner sets itself (inputs from earlier
    steps, the user's input and keys); ``input_option`` names the option that
    reads the run's input (its content, samplesheet members included, is hashed).
    ``command`` (default: ``name``) is the ``desweep`` command it runs, whose
    options under ``steps:`` apply; ``seed_offset`` is added to its seed (model replicates);
    ``inherits`` lists ``(option, step)``: the option takes that step's value unless set for this step.
    """

    name: str
    folder: str
    outputs: tuple[str, ...]
    depends: tuple[str, ...]
    arguments: Callable[[dict[str, Any], Path], list[str]]
    input_option: str = ""
    command: str = ""
    seed_offset: int = 0
    inherits: tuple[tuple[str, str], ...] = ()

    @property
    def command_name(self) -> str:
        return self.command or self.name


def _path(outdir: Path, *parts: str) -> str:
    return str(outdir.joinpath(*parts))


def n_models(config: dict[str, Any]) -> int:
    """The scVI models the run trains (``models:``, default 1)."""
    return int(config.get("models") or 1)


def model_dirs(config: dict[str, Any], outdir: Path) -> list[str]:
    """The model folders in model order: ``integrate/model``, then ``integrate/replicate<k>/model``."""
    return [_path(outdir, keys.STEP_INTEGRATE, keys.MODEL_DIR)] + [
        _path(outdir, keys.STEP_INTEGRATE, keys.replicate_dir(k), keys.MODEL_DIR) for k in range(1, n_models(config))]


def _model_options(config: dict[str, Any], outdir: Path) -> list[str]:
    return [arg for path in model_dirs(config, outdir) for arg in ("--model", path)]


STEPS: tuple[Step, ...] = (
    Step("validate", keys.STEP_VALIDATE, (keys.VALIDATED_H5AD,), (),
         lambda c, o: ["-i", str(c["input"]), "--batch-key", c["batch_key"]]
         + (["--labels-key", c["labels_key"]] if c.get("labels_key") else [])
         + (["--layer", c["layer"]] if c.get("layer") else []),
         input_option="input_path"),
    Step("integrate", keys.STEP_INTEGRATE, (keys.MODEL_DIR, keys.INTEGRATED_H5AD, keys.HISTORY_CSV, keys.METRICS_CSV), ("validate",),
         lambda c, o: ["-i", _path(o, keys.STEP_VALIDATE, keys.VALIDATED_H5AD)]),
    Step("cluster", keys.STEP_CLUSTER, (keys.CLUSTERED_H5AD,), ("integrate",),
         lambda c, o: ["-i", _path(o, keys.STEP_INTEGRATE, keys.INTEGRATED_H5AD)]),
    Step("composition", keys.STEP_COMPOSITION, (keys.CLUSTER_BATCH_COUNTS_CSV, keys.COMPARISONS_CSV), ("cluster",),
         lambda c, o: ["-i", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD)]),
    Step("plan", keys.STEP_DE, (keys.PLAN_CSV, keys.PLAN_SKIPPED_CSV), ("composition",),
         lambda c, o: ["--comparisons", _path(o, keys.STEP_COMPOSITION, keys.COMPARISONS_CSV),
                       "--batch-counts", _path(o, keys.STEP_COMPOSITION, keys.CLUSTER_BATCH_COUNTS_CSV)]
         + (["--models", str(n_models(c))] if n_models(c) > 1 else [])),
    Step("de", keys.STEP_DE, (keys.DE_TABLES_DIR, keys.DE_SUMMARY_CSV, keys.DE_STABILITY_CSV), ("plan", "integrate", "cluster"),
         lambda c, o: ["--plan", _path(o, keys.STEP_DE, keys.PLAN_CSV), "--adata", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD),
                       *_model_options(c, o), "--all"]),
    # after the sweep: normalize keeps layers for every DE table's top genes (every model's), those diagnose classifies
    Step("normalize", keys.STEP_NORMALIZE, (keys.NORMALIZED_H5AD, keys.CLUSTER_BATCH_MEANS_CSV, keys.LAYER_GENES_CSV),
         ("integrate", "cluster", "plan", "de"),
         lambda c, o: ["--adata", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD), "--model", _path(o, keys.STEP_INTEGRATE, keys.MODEL_DIR),
                       "--plan", _path(o, keys.STEP_DE, keys.PLAN_CSV), "--tables", _path(o, keys.STEP_DE, keys.DE_TABLES_DIR)],
         inherits=(("top_n", "diagnose"),)),
    Step("diagnose", keys.STEP_DIAGNOSE, (keys.GENE_PATTERNS_CSV, keys.SETTING_SCORES_CSV, keys.CONCORDANCE_CSV,
                                          keys.MARKERS_CSV, keys.REJECTED_CSV, keys.MARKERS_H5AD),
         ("de", "normalize", "composition", "cluster", "integrate"),
         lambda c, o: ["--adata", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD), "--plan", _path(o, keys.STEP_DE, keys.PLAN_CSV),
                       "--tables", _path(o, keys.STEP_DE, keys.DE_TABLES_DIR),
                       "--comparisons", _path(o, keys.STEP_COMPOSITION, keys.COMPARISONS_CSV),
                       "--means", _path(o, keys.STEP_NORMALIZE, keys.CLUSTER_BATCH_MEANS_CSV),
                       "--normalized", _path(o, keys.STEP_NORMALIZE, keys.NORMALIZED_H5AD),
                       "--history", _path(o, keys.STEP_INTEGRATE, keys.HISTORY_CSV),
                       "--counts", _path(o, keys.STEP_COMPOSITION, keys.CLUSTER_BATCH_COUNTS_CSV)]),
    Step("baselines", keys.STEP_BASELINES, (keys.WILCOXON_CSV, keys.PSEUDOBULK_CSV), ("composition", "normalize", "cluster"),
         lambda c, o: ["--adata", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD),
                       "--comparisons", _path(o, keys.STEP_COMPOSITION, keys.COMPARISONS_CSV),
                       "--means", _path(o, keys.STEP_NORMALIZE, keys.CLUSTER_BATCH_MEANS_CSV)]),
    Step("report", keys.STEP_REPORT, (keys.MULTIQC_REPORT,), ("validate", "integrate", "cluster", "composition", "plan", "de",
                                                               "normalize", "diagnose", "baselines"),
         lambda c, o: ["--results", str(o)]),
)


# --------------------------------------------------------------------------- configuration
@dataclass
class RunConfig:
    """A ``desweep run`` configuration, and where each value came from (for messages).

    Attributes
    ----------
    values
        The top-level keys (:data:`TOP_LEVEL_KEYS` but ``steps``).
    steps
        Step name -> option name -> value (text, a list, or a typed value from a flag).
    origins
        ``"seed"`` or ``"<step>.<option>"`` -> ``(source, field)`` of an error about it:
        ``("--set integrate.max_epochs=x", "--max-epochs")`` or ``("run.yaml", "steps.integrate.max_epochs")``.
    source
        The config file, or ``desweep run``.
    """

    values: dict[str, Any]
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    origins: dict[str, tuple[str, str]] = field(default_factory=dict)
    source: str = "desweep run"

    @property
    def outdir(self) -> Path:
        return Path(str(self.values["outdir"]))

    def origin(self, key: str, default_field: str) -> tuple[str, str]:
        return self.origins.get(key, (self.source, default_field))


def load_config(config_path: Path | None, overrides: dict[str, Any], set_items: tuple[str, ...] = ()) -> RunConfig:
    """Merge a YAML config, command-line values and ``--set`` items (later ones win) and check its keys.

    Config values are read as text (``01`` stays ``01``); the steps' options convert them.
    """
    from desweep.io import read_yaml

    values: dict[str, Any] = {"batch_key": "batch", "outdir": "results"}
    source = str(config_path) if config_path else "desweep run"
    steps: Any = {}
    if config_path is not None:
        loaded = read_yaml(config_path, what="config", scalars_as_text=True)
        if not isinstance(loaded, dict):
            raise DesweepInputError(source, "config", "must be a mapping of keys to values")
        unknown = sorted(str(k) for k in set(loaded) - set(TOP_LEVEL_KEYS))
        if unknown:
            raise DesweepInputError(source, unknown[0], f"unknown key (allowed: {', '.join(TOP_LEVEL_KEYS)})")
        steps = loaded.pop("steps", None) or {}
        values.update({k: v for k, v in loaded.items() if v is not None})
        for key in ("input", "outdir"):  # paths in a config file are relative to that file
            if values.get(key) and not Path(str(values[key])).is_absolute():
                values[key] = str(Path(config_path).parent / str(values[key]))
    config = RunConfig(values, source=source)
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
            config.origins[key] = ("desweep run", f"--{key.replace('_', '-')}")
    if not values.get("input"):
        raise DesweepInputError(source, "input", "missing: give --input or `input:` in the config")
    if not isinstance(steps, dict):
        raise DesweepInputError(source, "steps", "must map step names to option mappings")
    names = [s.name for s in available_steps()]
    for name, options in steps.items():
        if name not in names:
            raise DesweepInputError(source, f"steps.{name}", f"unknown step (steps: {', '.join(names)})")
        if options is not None and not isinstance(options, dict):
            raise DesweepInputError(source, f"steps.{name}", "must be a mapping of option names to values")
        for option, value in (options or {}).items():
            _set_option(config, str(name), str(option), value, (source, f"steps.{name}.{option}"))
    for item in set_items:
        key, sep, value = item.partition("=")
        name, dot, option = key.partition(".")
        if not sep or not dot or not name or not option:
            raise DesweepInputError("--set", item, "must look like STEP.OPTION=VALUE, e.g. integrate.max_epochs=50")
        if name not in names:
            raise DesweepInputError(f"--set {item}", name, f"unknown step (steps: {', '.join(names)})")
        _set_option(config, name, option, value, (f"--set {item}", ""))
    values["input"] = str(Path(str(values["input"])).absolute())
    values["models"] = _positive_int(values.get("models", 1), config.origin("models", "models"))
    return config


def _positive_int(value: Any, origin: tuple[str, str]) -> int:
    try:
        number = click.IntRange(min=1).convert(value, None, None)
    except click.BadParameter as err:
        raise DesweepInputError(*origin, err.message) from None
    return int(number)


def _set_option(config: RunConfig, step: str, option: str, value: Any, origin: tuple[str, str]) -> None:
    option = option.replace("-", "_")
    config.steps.setdefault(step, {})[option] = value
    config.origins[f"{step}.{option}"] = origin


def replicate_steps(config: dict[str, Any]) -> list[Step]:
    """One ``integrate`` per further model replicate ``k``: seed + k, into ``integrate/replicate<k>``."""
    integrate = next(step for step in STEPS if step.name == "integrate")
    return [Step(f"integrate_{keys.replicate_dir(k)}", f"{keys.STEP_INTEGRATE}/{keys.replicate_dir(k)}", integrate.outputs,
                 integrate.depends, integrate.arguments, command="integrate", seed_offset=k) for k in range(1, n_models(config))]


def available_steps(config: dict[str, Any] | None = None) -> list[Step]:
    """The steps whose commands this installation provides, in pipeline order (with the model replicates of ``config``)."""
    from desweep.cli import COMMANDS

    steps = []
    for step in STEPS:
        if step.name not in COMMANDS:
            continue
        if step.name == "de" and config is not None:
            step = replace(step, depends=step.depends + tuple(r.name for r in replicate_steps(config)))
        steps.append(step)
        if step.name == "integrate" and config is not None:
            steps += replicate_steps(config)
    return steps


# --------------------------------------------------------------------------- command lines
@dataclass(frozen=True)
class ResolvedStep:
    """A step's command line, checked by Click, and its options as Click converted them."""

    step: Step
    args: list[str]
    params: dict[str, Any]
    user: dict[str, Any]


def resolve_steps(config: RunConfig) -> dict[str, ResolvedStep]:
    """Resolve and check every step's command line before any step runs.

    Each option the user set is converted on its own by the step's Click option
    (type, range, choices and checking callbacks), so an error names the
    ``--set`` item or config key it came from; then the whole command line is
    resolved. Raises :class:`DesweepInputError`.
    """
    return {step.name: _resolve(step, config) for step in available_steps(config.values)}


def _resolve(step: Step, config: RunConfig) -> ResolvedStep:
    command = _command(step.command_name)
    by_name = _options_by_name(command)
    fixed = step.arguments(config.values, config.outdir)
    outdir_args = ["--outdir", _path(config.outdir, step.folder)]
    runner_set = {p.name for p in command.params if isinstance(p, click.Option) and set(p.opts) & set(fixed)} | {"outdir"}
    options = {k: (config.values[k], k) for k in SHARED_OPTIONS if k in by_name and config.values.get(k) is not None}
    for option, other in step.inherits:  # e.g. normalize's --top-n follows diagnose's --top-n
        value = config.steps.get(other, {}).get(option)
        if value is not None:
            options[option] = (value, f"{other}.{option}")
    options.update({k: (v, f"{step.command_name}.{k}") for k, v in config.steps.get(step.command_name, {}).items()})
    if step.seed_offset and "seed" in by_name:  # a model replicate: the run's seed (or the default) + k
        seed = options.get("seed", (by_name["seed"].default, "seed"))
        options["seed"] = (seed[0] if seed[0] is not None else by_name["seed"].default, seed[1])
    args, user = list(fixed), {}
    for name, (value, key) in options.items():
        if value is None:  # YAML null: the option's default
            continue
        source, where = config.origin(key, key)
        param = by_name.get(name)
        if param is None:
            allowed = ", ".join(sorted({_long_flag(p)[2:].replace("-", "_") for p in by_name.values()
                                        if p.name not in runner_set | {"debug", "verbose"}}))
            raise DesweepInputError(source, where or name, f"unknown option of `desweep {step.command_name}` (have: {allowed})")
        flag = _long_flag(param)
        if param.name in runner_set:
            raise DesweepInputError(source, where or flag, f"`desweep run` sets {flag} of `desweep {step.command_name}` itself "
                                    "(from the top-level input and keys, or the outputs of earlier steps)")
        negated = name in {f[2:].replace("-", "_") for f in param.secondary_opts}  # no_early_stopping: true
        option_args = _option_args(param, value, source, where or flag, negated=negated)
        try:
            user[param.name] = command.make_context(f"desweep {step.command_name}", fixed + option_args + outdir_args).params[param.name]
        except click.ClickException as err:
            raise DesweepInputError(source, where or flag, _problem(err)) from None
        if step.seed_offset and param.name == "seed":
            user["seed"] += step.seed_offset
            option_args = [flag, str(user["seed"])]
        args += option_args
    args += outdir_args
    try:
        params = command.make_context(f"desweep {step.command_name}", list(args)).params
    except click.ClickException as err:
        raise DesweepInputError(config.source, f"steps.{step.name}", _problem(err)) from None
    return ResolvedStep(step, args, params, user)


def _problem(err: click.ClickException) -> str:
    cause = err.__cause__
    if isinstance(cause, DesweepInputError):  # from a checking callback: keep the file it names
        return cause.problem if cause.source.startswith("-") else str(cause)
    return err.message if isinstance(err, click.BadParameter) else err.format_message()


def _command(name: str) -> click.Command:
    from desweep.cli import cli

    command = cli.get_command(click.Context(cli), name)
    assert command is not None, name
    return command


def _options_by_name(command: click.Command) -> dict[str, click.Option]:
    """A command's options by the names a config uses: each long flag without its dashes (``--grid`` ->
    ``grid``; ``--plots/--no-plots`` -> ``plots`` and ``no_plots``, the latter negated) and the Python parameter name."""
    names: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.expose_value:
            names[param.name] = param
            for flag in param.opts:
                if flag.startswith("--"):
                    names[flag[2:].replace("-", "_")] = param
            for flag in param.secondary_opts:
                names[flag[2:].replace("-", "_")] = param
    return names


def _long_flag(param: click.Option) -> str:
    return next((flag for flag in param.opts if flag.startswith("--")), param.opts[0])


def _option_args(param: click.Option, value: Any, source: str, where: str, *, negated: bool = False) -> list[str]:
    """The command-line words for one option value (text, a list, a list of pairs, or a typed value)."""
    from desweep.names import quote_name

    flag = _long_flag(param)
    if param.is_flag:
        try:
            on = value if isinstance(value, bool) else click.BOOL.convert(str(value), param, None)
        except click.BadParameter as err:
            raise DesweepInputError(source, where, err.message) from None
        on = on != negated
        if param.secondary_opts:  # --x/--no-x
            return [flag if on else param.secondary_opts[-1]]
        return [flag] if on else []
    if isinstance(value, list | tuple):
        if all(isinstance(v, list | tuple) for v in value):  # pairs: group1:group2;...
            value = ";".join(":".join(quote_name(str(n)) for n in pair) for pair in value)
        else:
            value = ",".join(quote_name(str(v), specials=",\"") for v in value)
    return [flag, str(value)]


# --------------------------------------------------------------------------- checks before the first step
@contextlib.contextmanager
def output_lock(outdir: Path, command: str = "desweep run") -> Iterator[None]:
    """Hold ``OUTDIR/.desweep_run.lock`` for the block; a one-line error naming the holder when another run has it.

    The lock is an exclusive ``flock`` on an open file: the system releases it
    when the holding process ends, however it ends, so a crashed run never
    blocks the next one. (``flock`` works on local file systems and NFSv4;
    some network file systems ignore it.)
    """
    import fcntl
    import socket

    path = outdir / keys.RUN_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a process that has not said which"
            raise DesweepInputError(outdir, "--outdir", f"another desweep run is writing this folder ({holder}); "
                                    "wait for it to end, or choose another --outdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: {command}\n"
                  .encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def check_inputs_outside_outputs(config: RunConfig, resolved: dict[str, ResolvedStep]) -> None:
    """Refuse any file a step reads from the user (the input, its samplesheet members, a grid, ...) that a step folder holds.

    Such a file would be overwritten or deleted by the run that reads it.
    """
    from desweep.validate import input_files

    outdir = config.outdir.resolve()
    written = {(outdir / step.folder) for step in available_steps()} | {outdir / keys.PIPELINE_INFO}
    candidates = [(p, "input", ("desweep run", "--input")) for p in input_files(config.values["input"])]
    for name, item in resolved.items():
        for param, value in item.user.items():
            for path in (value if isinstance(value, list | tuple) else [value]):
                if isinstance(path, Path):
                    candidates.append((path, param, config.origin(f"{item.step.command_name}.{param}",
                                                                  f"steps.{item.step.command_name}.{param}")))
    for path, what, (source, where) in candidates:
        real = Path(path).resolve()
        inside = next((folder for folder in written if real == folder or folder in real.parents), None)
        if inside is not None:
            raise DesweepInputError(path, what, f"lies inside {inside}, a folder this run writes (it would be overwritten): "
                                    "copy it elsewhere or choose another --outdir")


def check_design(config: RunConfig, resolved: dict[str, ResolvedStep]) -> None:
    """With labels, build the comparisons and the plan from the validated cells, before training.

    Runs the functions of ``desweep composition`` and ``desweep plan`` with
    their resolved options on ``validate/validated.h5ad`` (the groups are the
    labels, so they are known before clustering): nothing to compare, a group
    too small or a plan over ``--max-combinations`` fails here, not after integrate.
    """
    from desweep import composition as comp
    from desweep.datakeys import get_keys
    from desweep.io import read_h5ad
    from desweep.plan import check_plan_size, make_plan

    if "composition" not in resolved:
        return
    validated = config.outdir / keys.STEP_VALIDATE / keys.VALIDATED_H5AD
    adata = read_h5ad(validated, backed=True)
    try:
        data_keys, obs = get_keys(adata, validated), adata.obs.copy()
    finally:
        adata.file.close()
    if not data_keys.labels_key:
        return  # Leiden groups exist only after cluster
    p = resolved["composition"].params
    counts, _, table = comp.compose(
        obs, group_key=data_keys.labels_key, batch_key=data_keys.batch_key, comparisons=p["comparisons"],
        max_comparisons=p["max_comparisons"], rule=comp.PresenceRule(min_cells=p["min_cells_present"], min_enrichment=p["min_enrichment"]),
        min_cells_per_group=p["min_cells_per_group"], source=str(validated))
    if "plan" in resolved:
        from desweep.cli.plan import read_grid

        p = resolved["plan"].params
        plan, _ = make_plan(table, read_grid(p["grid_path"]), batches=[str(c) for c in counts.columns], models=p["models"],
                            source=str(validated))
        check_plan_size(plan, max_combinations=p["max_combinations"], source=validated)


# --------------------------------------------------------------------------- running
def run_pipeline(config: RunConfig, *, force: bool = False, on_locked: Callable[[], None] | None = None) -> dict[str, str]:
    """Check the whole run, then run every available step in order, skipping those that are current.

    Parameters
    ----------
    on_locked
        Called once the output lock is held (``desweep run`` starts its log file there).

    Returns
    -------
    Step name -> ``"ran"`` or ``"skipped"``.
    """
    from desweep.cli._common import prepare_outdir
    from desweep.io import write_yaml
    from desweep.provenance import software_versions
    from desweep.validate import input_checksum

    resolved = resolve_steps(config)
    check_inputs_outside_outputs(config, resolved)
    outdir = prepare_outdir(config.outdir)
    with output_lock(outdir):
        if on_locked is not None:
            on_locked()
        checksum = input_checksum(config.values["input"])
        info = outdir / keys.PIPELINE_INFO
        write_yaml(_params_record(config, resolved, checksum), info / keys.PARAMS_YAML)
        write_yaml(software_versions(), info / keys.SOFTWARE_VERSIONS_YML)
        runs: dict[str, str] = {}
        status: dict[str, str] = {}
        for i, item in enumerate(resolved.values(), start=1):
            step = item.step
            upstream = {d: runs[d] for d in step.depends if d in runs}
            stamp = _stamp(item, outdir, upstream, checksum)
            folder = outdir / step.folder
            record = _read_record(folder, step)
            if not force and _is_current(folder, step, stamp, record):
                logger.info("[%d/%d] %s: unchanged, skipped", i, len(resolved), step.name)
                status[step.name], runs[step.name] = "skipped", record["run"]
            else:
                runs[step.name] = _run_step(item, folder, stamp, record, f"[{i}/{len(resolved)}]")
                status[step.name] = "ran"
            if step.name == "validate":
                check_design(config, resolved)
    return status


def _run_step(item: ResolvedStep, folder: Path, stamp: str, previous: dict[str, Any], counter: str) -> str:
    """Run one step, record what it wrote, delete what its previous run wrote and this one did not; return its run id."""
    step = item.step
    logger.info("%s %s: desweep %s %s", counter, step.name, step.command_name, " ".join(item.args))
    start = time.perf_counter()
    (folder / keys.step_stamp(step.name)).unlink(missing_ok=True)
    before = _listing(folder)
    _command(step.command_name).main(list(item.args), prog_name=f"desweep {step.command_name}", standalone_mode=False)
    after = _listing(folder)
    written = {rel: [info[0], info[1]] for rel, info in after.items() if before.get(rel) != info}
    for rel in previous.get("outputs", {}):
        if rel not in written and (folder / rel).is_file():
            (folder / rel).unlink()
            logger.info("%s: removed %s, written by its previous run only", step.name, folder / rel)
    _remove_empty_folders(folder)
    run = hashlib.sha256(json.dumps([stamp, sorted(written.items())]).encode()).hexdigest()
    record = {"step": step.name, "stamp": stamp, "run": run, "args": item.args, "outputs": dict(sorted(written.items()))}
    from desweep.io import write_text

    write_text(json.dumps(record, indent=1) + "\n", folder / keys.step_stamp(step.name))
    logger.info("%s %s: done in %.1f s", counter, step.name, time.perf_counter() - start)
    return run


def _listing(folder: Path) -> dict[str, tuple[int, int, int]]:
    """``relative path -> (size, mtime_ns, inode)`` of every output file below ``folder`` (stamps and temporary files left out)."""
    out = {}
    if folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.startswith(".desweep_") and ".tmp-" not in path.name:
                info = path.stat()
                out[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return out


def _remove_empty_folders(folder: Path) -> None:
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()  # only succeeds when empty


def _stamp(item: ResolvedStep, outdir: Path, upstream: dict[str, str], input_checksum: str) -> str:
    """Hash of everything a step reads: resolved options, content of files from outside ``outdir``, upstream run ids."""
    from desweep.io import file_checksum

    command = _command(item.step.command_name)
    path_params = {p.name for p in command.params if isinstance(p.type, click.Path)}
    params, files = {}, {}
    for name, value in sorted(item.params.items()):
        if name in UNSTAMPED:
            continue
        if name in path_params and value is not None:
            paths = [_stamp_path(Path(v), outdir) for v in (value if isinstance(value, list | tuple) else [value])]
            for i, path in enumerate(paths):
                if not path.startswith("OUTDIR/") and Path(path).exists():
                    key = name if len(paths) == 1 else f"{name}[{i}]"
                    files[key] = input_checksum if name == item.step.input_option else file_checksum(path)
            value = paths[0] if not isinstance(value, list | tuple) else paths
        params[name] = value
    payload = {"step": item.step.name, "params": params, "files": files, "upstream": upstream}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=_plain).encode()).hexdigest()


def _stamp_path(path: Path, outdir: Path) -> str:
    """A path as the stamp sees it: ``OUTDIR/...`` inside the output folder, else absolute and resolved."""
    real, root = path.resolve(), outdir.resolve()
    if real == root or root in real.parents:
        return "OUTDIR/" + real.relative_to(root).as_posix()
    return str(real)


def _read_record(folder: Path, step: Step) -> dict[str, Any]:
    try:
        record = json.loads((folder / keys.step_stamp(step.name)).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _is_current(folder: Path, step: Step, stamp: str, record: dict[str, Any]) -> bool:
    """Same stamp, every declared output present, and every recorded output as written (size and time)."""
    if record.get("stamp") != stamp or "run" not in record or not isinstance(record.get("outputs"), dict):
        return False
    if not all((folder / out).exists() for out in step.outputs):
        return False
    for rel, (size, mtime_ns) in record["outputs"].items():
        try:
            info = (folder / rel).stat()
        except OSError:
            return False
        if (info.st_size, info.st_mtime_ns) != (size, mtime_ns):
            return False
    return True


def _params_record(config: RunConfig, resolved: dict[str, ResolvedStep], checksum: str) -> dict[str, Any]:
    """``params.yaml``: the top-level values, the input's checksum and each step's options as resolved."""
    return {**{k: _plain(v) for k, v in config.values.items()}, "input_sha256": checksum,
            "steps": {name: {k: _plain(v) for k, v in item.user.items()} for name, item in resolved.items() if item.user},
            "resolved": {name: {k: _plain(v) for k, v in sorted(item.params.items()) if k not in UNSTAMPED | {"debug", "verbose"}}
                         for name, item in resolved.items()}}


def _plain(value: Any) -> Any:
    """A value YAML and JSON can write: paths as text, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)

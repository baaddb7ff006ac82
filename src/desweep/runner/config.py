"""``desweep run``'s configuration (YAML, flags and ``--set``) and each step's command line, checked by Click before any step runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from desweep.errors import DesweepInputError
from desweep.params import BATCH_KEY
from desweep.runner import steps as pipeline
from desweep.runner.steps import SHARED_OPTIONS, TOP_LEVEL_KEYS, Step, _path

logger = logging.getLogger("desweep.runner")
#: more scVI models than this in one run gets a warning (each is a full training)
MANY_MODELS = 10


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

    values: dict[str, Any] = {"batch_key": BATCH_KEY.default, "outdir": "results"}
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
    names = [s.name for s in pipeline.available_steps()]
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
    if values["models"] > MANY_MODELS:
        source, where = config.origin("models", "models")
        logger.warning("%s: %s: %d scVI models are trained one after another, each as long as a single run, and the sweep "
                       "runs on each; 3 to 5 show the spread between trainings", source, where or "--models", values["models"])
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
    return {step.name: _resolve(step, config) for step in pipeline.available_steps(config.values)}


def _runner_set(command: click.Command, fixed: list[str]) -> set[str]:
    """The options of ``command`` that ``desweep run`` sets itself (``fixed``: the step's own arguments)."""
    return {p.name for p in command.params if isinstance(p, click.Option) and set(p.opts) & set(fixed)} | {"outdir"}


def list_options() -> list[tuple[str, str, str, str]]:
    """Every ``STEP.OPTION`` key ``--set`` and ``steps:`` take: ``(key, type, default, help)``, in pipeline order.

    Read from the steps' Click commands, built from :mod:`desweep.params`.
    """
    values = {"input": "INPUT", "batch_key": "batch", "labels_key": "labels", "layer": "counts"}
    rows = []
    for step in pipeline.available_steps():
        command = _command(step.command_name)
        runner_set = _runner_set(command, step.arguments(values, Path("OUTDIR"))) | {"debug", "verbose", "help"}
        for param in command.params:
            if isinstance(param, click.Option) and param.expose_value and param.name not in runner_set:
                default = str(param.default) if isinstance(param.default, bool | int | float | str) else ""
                rows.append((f"{step.command_name}.{_long_flag(param)[2:].replace('-', '_')}", param.type.name, default,
                             param.help or ""))
    return rows


def _resolve(step: Step, config: RunConfig) -> ResolvedStep:
    command = _command(step.command_name)
    by_name = _options_by_name(command)
    fixed = step.arguments(config.values, config.outdir)
    outdir_args = ["--outdir", _path(config.outdir, step.folder)]
    runner_set = _runner_set(command, fixed)
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

"""Options and error handling shared by every subcommand."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from desweep import keys
from desweep.errors import DesweepInputError, ParameterError
from desweep.io import prepare_outdir, read_plan_tables  # noqa: F401  (the commands import them from here)
from desweep.params import NAMES, Param

logger = logging.getLogger("desweep")


def setup_logging(*, verbose: bool = False, log_file: Path | None = None) -> None:
    """Log desweep's messages to stderr (and optionally a file)."""
    root = logging.getLogger("desweep")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not any(getattr(h, "_desweep", False) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        handler._desweep = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(fmt)
        handler._desweep = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def step_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a subcommand: ``--debug``/``--verbose``, logging, and one-line errors.

    A :class:`DesweepInputError` (or any error, unless ``--debug``) becomes
    ``Error: <file>: <field>: <problem>`` on stderr and exit code 1 (2 for Click
    usage errors), with no traceback. SIGTERM and Ctrl-C end the command at
    once, leaving no partial output (:func:`_exit_cleanly_on_signals`).
    """

    @click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
    @click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
    @functools.wraps(func)
    def wrapper(*args: Any, debug: bool = False, verbose: bool = False, **kwargs: Any) -> Any:
        setup_logging(verbose=verbose)
        previous = _exit_cleanly_on_signals()
        try:
            outdir = kwargs.get("outdir")
            if isinstance(outdir, Path):  # a step command: the lock of the run folder it writes into, if any
                from desweep.runner.checks import step_lock

                with step_lock(outdir, f"desweep {click.get_current_context().info_name}"):
                    return func(*args, **kwargs)
            return func(*args, **kwargs)
        except DesweepInputError as err:
            if debug:
                raise
            raise click.ClickException(str(as_option_error(err))) from err
        except (click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as err:
            if debug:
                raise
            first_line = (str(err).splitlines() or [""])[0]
            raise click.ClickException(f"{type(err).__name__}: {first_line} (rerun with --debug for the traceback)") from err
        finally:
            _restore_signals(previous)

    return wrapper


def as_option_error(err: DesweepInputError, ctx: click.Context | None = None) -> DesweepInputError:
    """A library function's :class:`~desweep.errors.ParameterError` under the option of the command that sets it."""
    if not isinstance(err, ParameterError):
        return err
    ctx = ctx or click.get_current_context(silent=True)
    options = [p for p in (ctx.command.params if ctx else []) if isinstance(p, click.Option) and p.name == err.parameter]
    return err.for_option(next((o for o in options[0].opts if o.startswith("--")), None) if options else None)


def _exit_cleanly_on_signals() -> dict[int, Any]:
    """On SIGTERM (what schedulers and Nextflow send first) or Ctrl-C, delete partial outputs and exit.

    The handler does not raise into the interrupted code, which could swallow
    the exception (I/O libraries catch broadly; Lightning turns Ctrl-C during
    training into an unrelated error): it removes every temporary file
    :func:`desweep.io.atomic_path` is writing, prints ``Aborted!`` for Ctrl-C and
    ends the process at once (exit status 128 + the signal), so a stopped step
    leaves its previous complete outputs or none, and ``desweep run`` resumes.

    Returns
    -------
    The handlers replaced, for :func:`_restore_signals` (none outside the main thread).
    """
    import os
    import signal
    import threading

    from desweep.io import remove_partial_outputs

    def terminate(signum: int, frame: object) -> None:
        remove_partial_outputs()
        if signum == signal.SIGINT:
            os.write(2, b"\nAborted!\n")
        else:
            _say_terminated(signal.Signals(signum).name)
        os._exit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, terminate) for signum in (signal.SIGTERM, signal.SIGINT)}


#: the line a run stopped by a signal other than Ctrl-C ends with, on stderr and in the run log
TERMINATED = "Terminated by {signal}: partial outputs removed; rerun the same command to resume"


def _say_terminated(name: str) -> None:
    """Write :data:`TERMINATED` to stderr and to desweep's log files, without taking any lock (a signal handler)."""
    import os

    line = TERMINATED.format(signal=name)
    os.write(2, f"\n{line}\n".encode())
    logger = logging.getLogger("desweep")
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, line, (), None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler) and handler.stream is not None:
            try:
                handler.stream.write(handler.format(record) + "\n")
                handler.stream.flush()
            except (OSError, ValueError):
                pass  # the log is gone or closed: stderr has the line


def _restore_signals(previous: dict[int, Any]) -> None:
    import signal

    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def input_option(what: str, *, dest: str = "input_path", required: bool = True) -> Callable[..., Any]:
    """``-i/--input``: the AnnData a step reads (one flag name for it in every step)."""
    return click.option("-i", "--input", dest, type=click.Path(path_type=Path), required=required, default=None, help=what)


def outdir_option(default_help: str) -> Callable[..., Any]:
    """``--outdir``: the step's own output folder."""
    return click.option(
        "-o",
        "--outdir",
        type=click.Path(path_type=Path),
        required=True,
        help=f"Output folder of this step; {default_help}",
    )


comparisons_option = click.option(
    "--comparisons", "comparisons_path", type=click.Path(path_type=Path), required=True,
    help=f"{keys.STEP_COMPOSITION}/{keys.COMPARISONS_CSV}.",
)
tables_option = click.option(
    "--tables", "tables_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
    help=f"Folder of DE tables <combination_id>.csv (default: {keys.DE_TABLES_DIR}/ beside the plan).",
)


def plan_tables_dir(plan_path: Path, tables_dir: Path | None) -> Path:
    """``--tables``, or ``tables/`` beside the plan; the folder must exist."""
    tables_dir = tables_dir or plan_path.parent / keys.DE_TABLES_DIR
    if not tables_dir.is_dir():
        raise DesweepInputError(tables_dir, "--tables", "folder does not exist: run `desweep de` first")
    return tables_dir


means_option = click.option(
    "--means", "means_path", type=click.Path(path_type=Path), default=None,
    help=f"Optional {keys.STEP_NORMALIZE}/{keys.CLUSTER_BATCH_MEANS_CSV}: classify in every scVI normalized choice too.",
)


def parsed(parse: Callable[[Any], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A Click callback that checks and converts an option's value with ``parse`` when the command line is read.

    So ``desweep run`` finds a bad value of any step before the first step runs
    (it resolves every step's command line up front). A
    :class:`~desweep.errors.DesweepInputError` becomes one ``Error:`` line; the
    runner reads the original error from ``__cause__``.
    """

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return parse(value)
        except DesweepInputError as err:
            mapped = as_option_error(err, ctx)
            raise click.ClickException(str(mapped)) from mapped

    return callback


def name_list(option: str) -> Callable[[str], list[str]]:
    """Parse a comma-separated list of names (a name holding ``,`` in double quotes), see :func:`desweep.names.split_list`."""
    from desweep.names import split_list

    def parse(value: str) -> list[str]:
        try:
            return split_list(value)
        except ValueError as err:
            raise DesweepInputError(option, option.lstrip("-").replace("-", "_"), f"{err}; write a name holding ',' in double quotes") from None

    return parse


def click_type(param: Param) -> click.ParamType | type:
    """The Click type of a :class:`~desweep.params.Param`: a choice from its ``Literal``, a range from its bounds."""
    if param.choices is not None:
        return click.Choice(param.choices)
    bounds: dict[str, Any] = {"min": param.minimum if param.exclusive_minimum is None else param.exclusive_minimum,
                              "max": param.maximum if param.exclusive_maximum is None else param.exclusive_maximum,
                              "min_open": param.exclusive_minimum is not None, "max_open": param.exclusive_maximum is not None}
    range_types: dict[Any, type[click.IntRange] | type[click.FloatRange]] = {int: click.IntRange, float: click.FloatRange}
    range_type = range_types.get(param.type)
    if range_type is not None and (bounds["min"] is not None or bounds["max"] is not None):
        return range_type(bounds["min"], bounds["max"], min_open=bounds["min_open"], max_open=bounds["max_open"])
    return param.type if param.type in (int, float) else click.STRING


def _parser(param: Param) -> Callable[[Any], Any] | None:
    """The function that reads an option's text (``Param.parse``), imported when the option is read."""
    if param.parse is None:
        return None
    if param.parse == NAMES:
        return name_list(param.flag)
    names = param.parse.startswith(NAMES + "+")
    target = param.parse.removeprefix(NAMES + "+")

    def parse(value: Any) -> Any:
        module_name, attribute = target.split(":")
        function = getattr(importlib.import_module(module_name), attribute)
        return function(name_list(param.flag)(value) if names else value)

    return parse


def param_option(param: Param, *, default: Any = ..., help_suffix: str = "") -> Callable[..., Any]:
    """The Click option of one :class:`~desweep.params.Param` (``default``: another default, e.g. ``None`` for ``desweep run``)."""
    default = param.default if default is ... else default
    flags = [param.flag] + ([param.short] if param.short else [])
    help_text = param.help.removesuffix(".") + help_suffix + "." if help_suffix else param.description
    if param.type is bool:
        if param.negatable:
            flags = [f"{param.flag}/--no-{param.flag[2:]}"]
        return click.option(*flags, param.name, is_flag=True, default=default, show_default=default is not None, help=help_text)
    parse = _parser(param)
    return click.option(*flags, param.name, type=click_type(param), default=default, show_default=default is not None,
                        callback=parsed(parse) if parse else None, help=help_text)


def options_from(params: tuple[Param, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command with the Click options of ``params``, in their order (see :mod:`desweep.params`)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for param in reversed(params):
            func = param_option(param)(func)
        return func

    return decorate

"""``desweep run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from desweep import keys, params
from desweep.cli._common import param_option, setup_logging, step_command


def _list_options(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from desweep.runner import list_options

        rows = list_options()
        width = max(len(key) for key, *_ in rows)
        for key, kind, default, help_text in rows:
            click.echo(f"{key:<{width}}  {kind:<13} {default or '-':<24} {help_text}")
        ctx.exit()


def top_level_options(func: Any) -> Any:
    """``desweep run``'s options for every step (and validate's keys), from :mod:`desweep.params`, default ``None``: unset."""
    for param in reversed((*params.RUN_KEYS, *params.RUN_SHARED, params.MODELS)):
        default = f" (default: {param.default_doc or param.default})" if param.default_doc or param.default is not None else ""
        func = param_option(param, default=None, help_suffix=default)(func)
    return func


@click.command(name="run")
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML configuration (see the docs of desweep.runner); flags override it.")
@click.option("-i", "--input", "input_path", default=None, help="An .h5ad with raw counts or a samplesheet CSV.")
@click.option("-o", "--outdir", default=None, help="Output folder (default: results).")
@top_level_options
@click.option("--set", "set_options", multiple=True, metavar="STEP.OPTION=VALUE",
              help="A step option, e.g. --set integrate.max_epochs=50 (repeatable); VALUE is the option's text on the command "
                   "line. --list-options lists the keys.")
@click.option("--list-options", is_flag=True, is_eager=True, expose_value=False, callback=_list_options,
              help="List every STEP.OPTION key of --set (and of steps: in the config) with its type and default, and exit.")
@click.option("--force", is_flag=True, help="Rerun every step even if its inputs and parameters are unchanged.")
@step_command
def run(config_path: Path | None, input_path: str | None, outdir: str | None, set_options: tuple[str, ...], force: bool,
        **top_level: Any) -> None:
    """Run every step on one machine: validate, integrate, cluster, composition, plan, DE sweep,
    normalized export, diagnostics, baselines and the report.

    Every option of every step is checked before the first step runs, and one
    run at a time may write an output folder. A step whose inputs (their
    content) and parameters are unchanged since its last run is skipped.

    Example:

    \b
        desweep run -i data.h5ad --batch-key batch --labels-key cell_type -o results --set integrate.max_epochs=100
    """
    from desweep.runner import load_config, run_pipeline

    config = load_config(config_path, {"input": input_path, "outdir": outdir, **top_level}, set_options)
    log_file = config.outdir / keys.PIPELINE_INFO / "desweep_run.log"
    status = run_pipeline(config, force=force, on_locked=lambda: setup_logging(log_file=log_file))
    click.echo("; ".join(f"{name}: {state}" for name, state in status.items()))

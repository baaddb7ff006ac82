"""``desweep run``."""

from __future__ import annotations

from pathlib import Path

import click

from desweep import keys
from desweep.cli._common import setup_logging, step_command


@click.command(name="run")
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML configuration (see `desweep.runner`); flags override it.")
@click.option("-i", "--input", "input_path", default=None, help="An .h5ad with raw counts or a samplesheet CSV.")
@click.option("-o", "--outdir", default=None, help="Output folder (default: results).")
@click.option("--batch-key", default=None, help="obs column with the batch (default: batch).")
@click.option("--labels-key", default=None, help="obs column with labels to compare (default: Leiden clusters).")
@click.option("--layer", default=None, help="Layer holding raw counts (default: X).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None, help="Seed for every step (default: 0).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads for every step.")
@click.option("--accelerator", type=click.Choice(["auto", "cpu", "gpu"]), default=None, help="Device for training and sampling.")
@click.option("--models", type=click.IntRange(min=1), default=None,
              help="scVI models to train (replicates, model k with seed + k; default 1); the sweep runs on each.")
@click.option("--set", "set_options", multiple=True, metavar="STEP.OPTION=VALUE",
              help="A step option, e.g. --set integrate.max_epochs=50 (repeatable); VALUE is the option's text on the command line.")
@click.option("--force", is_flag=True, help="Rerun every step even if its inputs and parameters are unchanged.")
@step_command
def run(config_path: Path | None, input_path: str | None, outdir: str | None, batch_key: str | None,
        labels_key: str | None, layer: str | None, seed: int | None, threads: int | None, accelerator: str | None,
        models: int | None, set_options: tuple[str, ...], force: bool) -> None:
    """Run every step on one machine: validate, integrate, cluster, composition, plan, DE sweep,
    normalized export, diagnostics, baselines and the report.

    Every option of every step is checked before the first step runs, and one
    run at a time may write an output folder. A step whose inputs (their
    content) and parameters are unchanged since its last run is skipped.

    Example:

        desweep run -i data.h5ad --batch-key batch --labels-key cell_type -o results --set integrate.max_epochs=100
    """
    from desweep.runner import load_config, run_pipeline

    overrides = {"input": input_path, "outdir": outdir, "batch_key": batch_key, "labels_key": labels_key,
                 "layer": layer, "seed": seed, "threads": threads, "accelerator": accelerator, "models": models}
    config = load_config(config_path, overrides, set_options)
    log_file = config.outdir / keys.PIPELINE_INFO / "desweep_run.log"
    status = run_pipeline(config, force=force, on_locked=lambda: setup_logging(log_file=log_file))
    click.echo("; ".join(f"{name}: {state}" for name, state in status.items()))

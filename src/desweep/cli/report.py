"""``desweep report``."""

from __future__ import annotations

from pathlib import Path

import click

from desweep import keys, params
from desweep.cli._common import options_from, outdir_option, parsed, prepare_outdir, step_command


def existing_config(path: Path) -> Path:
    """``--config`` checked when the command line is read, so ``desweep run`` refuses a missing one before its first step."""
    from desweep.errors import DesweepInputError

    if not path.is_file():
        raise DesweepInputError("--config", str(path), "does not exist" if not path.exists() else "is not a file")
    return path


@click.command(name="report")
@click.option("--results", "results_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The pipeline's OUTDIR (validate/, integrate/, ..., diagnostics/, baselines/, pipeline_info/).")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None, callback=parsed(existing_config),
              help="MultiQC config to use instead of the shipped one (assets/multiqc_config.yml).")
@options_from(params.REPORT)
@outdir_option(keys.outdir_help("report").removesuffix(".") + f" (usually OUTDIR/{keys.STEP_REPORT}).")
@step_command
def report(results_dir: Path, config_path: Path | None, title: str | None, outdir: Path) -> None:
    """One self-contained MultiQC HTML report of a desweep run (offline), opening with the verdict.

    First, per comparison: the recommended DE setting, the share of batch-wide
    genes scVI's default lets into its top genes, the ranked answer and the
    genes the default would have reported wrongly; then the evidence (heatmaps,
    setting scores, concordance, the sweep) and the run's QC. Missing optional
    inputs give a "not available" note in their section.

    Example:

    \b
        desweep report --results results -o results/multiqc
    """
    from desweep.errors import DesweepInputError
    from desweep.report import build_report

    if not results_dir.is_dir():
        raise DesweepInputError(results_dir, "--results", "folder does not exist")
    prepare_outdir(outdir)
    path = build_report(results_dir, outdir, config=config_path, title=title)
    click.echo(f"wrote {path}")

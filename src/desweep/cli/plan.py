"""``desweep plan``."""

from __future__ import annotations

from pathlib import Path

import click

from desweep import keys, params
from desweep.cli._common import options_from, outdir_option, parsed, prepare_outdir, step_command


def checked_grid(grid_path: Path) -> Path:
    """``--grid`` read and checked when the command line is read, so ``desweep run`` refuses a bad grid before its first step."""
    from desweep.plan.grid import read_grid

    read_grid(grid_path)
    return grid_path


def _show_default_grid(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from desweep.plan import default_grid_text

        click.echo(default_grid_text(), nl=False)
        ctx.exit()


@click.command(name="plan")
@click.option("--comparisons", "comparisons_path", type=click.Path(path_type=Path), required=True,
              help=f"The comparisons ({keys.STEP_COMPOSITION}/{keys.COMPARISONS_CSV}).")
@click.option("--grid", "grid_path", type=click.Path(path_type=Path), default=None, callback=parsed(checked_grid),
              help="Grid YAML (default: the shipped grid; print it with --show-default-grid). Keys left out take the default.")
@click.option("--batch-counts", "counts_path", type=click.Path(path_type=Path), default=None,
              help=f"Cluster x batch counts, to know every batch of the model (default: {keys.CLUSTER_BATCH_COUNTS_CSV} "
                   "beside the comparisons, when present).")
@options_from(params.PLAN)
@click.option("--show-default-grid", is_flag=True, is_eager=True, expose_value=False, callback=_show_default_grid,
              help="Print the default grid YAML and exit.")
@outdir_option(keys.outdir_help("plan"))
@step_command
def plan(comparisons_path: Path, grid_path: Path | None, counts_path: Path | None, max_combinations: int, models: int,
         outdir: Path) -> None:
    """Cross a grid of scvi-tools DE settings with the comparisons: one row per combination.

    Invalid combinations go to plan_skipped.csv with the reason. Example:

    \b
        desweep plan --comparisons results/composition/comparisons.csv --grid grid.yaml -o results/de
    """
    from desweep.io import read_csv, write_csv
    from desweep.plan import COMPARISON_COLUMNS, check_plan_size, make_plan
    from desweep.plan.grid import read_grid

    comparisons = read_csv(comparisons_path, required=COMPARISON_COLUMNS, what="comparisons", all_text=True)
    grid = read_grid(grid_path)
    if counts_path is None and (comparisons_path.parent / keys.CLUSTER_BATCH_COUNTS_CSV).is_file():
        counts_path = comparisons_path.parent / keys.CLUSTER_BATCH_COUNTS_CSV
    batches = None
    if counts_path is not None:
        counts = read_csv(counts_path, required=("cluster",), what="batch counts")
        batches = [str(c) for c in counts.columns if c != "cluster"]
    the_plan, skipped = make_plan(comparisons, grid, batches=batches, models=models, source=str(comparisons_path))
    check_plan_size(the_plan, max_combinations=max_combinations, source=comparisons_path)
    prepare_outdir(outdir)
    write_csv(the_plan, outdir / keys.PLAN_CSV)
    write_csv(skipped, outdir / keys.PLAN_SKIPPED_CSV)
    click.echo(f"{len(the_plan)} combinations in {the_plan['sampling_key'].nunique()} sampling keys "
               f"({the_plan['comparison_id'].nunique()} comparisons); {len(skipped)} skipped (see {keys.PLAN_SKIPPED_CSV})")

"""``desweep composition``."""

from __future__ import annotations

from pathlib import Path

import click

from desweep import keys, params
from desweep.cli._common import input_option, options_from, outdir_option, prepare_outdir, step_command


@click.command(name="composition")
@input_option(f"The clustered .h5ad ({keys.STEP_CLUSTER}/{keys.CLUSTERED_H5AD}).")
@options_from(params.COMPOSITION)
@outdir_option(keys.outdir_help("composition"))
@step_command
def composition(input_path: Path, comparisons: list[tuple[str, str]] | None, max_comparisons: int, min_cells_present: int,
                min_enrichment: float, min_cells_per_group: int, outdir: Path) -> None:
    """Cluster x batch counts, batch-specific clusters and the design class of each comparison.

    Example:

    \b
        desweep composition -i results/cluster/clustered.h5ad --comparisons "3:5" -o results/composition
    """
    from desweep import composition as comp
    from desweep.datakeys import get_keys
    from desweep.io import read_h5ad, write_csv

    adata = read_h5ad(input_path, backed=True)
    data_keys = get_keys(adata, input_path, need_groups=True)
    counts, status, table = comp.compose(
        adata.obs, group_key=data_keys.groups, batch_key=data_keys.batch_key, comparisons=comparisons,
        max_comparisons=max_comparisons, rule=comp.PresenceRule(min_cells=min_cells_present, min_enrichment=min_enrichment),
        min_cells_per_group=min_cells_per_group, source=str(input_path))
    prepare_outdir(outdir)
    write_csv(counts, outdir / keys.CLUSTER_BATCH_COUNTS_CSV, index=True)
    write_csv(status, outdir / keys.CLUSTER_STATUS_CSV, index=True)
    write_csv(table, outdir / keys.COMPARISONS_CSV)
    click.echo(table[["comparison_id", "design", "recommended_batch_correction"]].to_string(index=False))

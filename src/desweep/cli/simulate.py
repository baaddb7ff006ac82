"""``desweep simulate``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from desweep.cli._common import step_command

if TYPE_CHECKING:
    from desweep.simulate import Preset

PRESET_HELP = ("default: 3,000 cells x 2,000 genes, strong effects; hard: 1,000 cells x 10,000 sparse genes, small groups, log2 effects "
               "0.5-2; realistic: 3,000 cells x 3,000 genes with batch x cell-type interactions, donors (obs 'sample'), ambient RNA "
               "and a related pair of groups")


@click.command(name="simulate")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .h5ad file to write.")
@click.option("--preset", type=click.Choice(["default", "hard", "realistic"]), default="default", show_default=True, help=PRESET_HELP)
@click.option("--n-cells", type=int, default=None, help="Cells (500 to 2,000,000; default: the preset's).")
@click.option("--n-genes", type=int, default=None, help="Genes (default: the preset's).")
@click.option("--n-batches", type=int, default=None, help="Batches (2 to 4; default 3).")
@click.option("--n-shared-clusters", type=int, default=None, help="Clusters present in every batch (default 3).")
@click.option("--n-specific-clusters", type=int, default=None, help="Clusters present in one batch only (one per batch, from batch0; default 2).")
@click.option("--markers-per-cluster", type=int, default=None, help="Planted marker genes per cluster (default: the preset's).")
@click.option("--batch-wide-genes", type=int, default=None, help="Planted batch-wide genes per batch (default: the preset's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@step_command
def simulate(output: Path, preset: Preset, n_cells: int | None, n_genes: int | None, n_batches: int | None,
             n_shared_clusters: int | None, n_specific_clusters: int | None, markers_per_cluster: int | None,
             batch_wide_genes: int | None, seed: int) -> None:
    """Simulate batched raw counts with planted cluster markers and batch-wide genes.

    The truth is stored in obs['cell_type'] and var['truth_*'] (truth_lfc in
    natural log, truth_log2fc in log2; see the docs of desweep.simulate).

    Example:

    \b
        desweep simulate -o sim.h5ad --preset hard --seed 1
    """
    from desweep.simulate import preset_params, write_simulation

    given = {"n_cells": n_cells, "n_genes": n_genes, "n_batches": n_batches, "n_shared_clusters": n_shared_clusters,
             "n_specific_clusters": n_specific_clusters, "markers_per_cluster": markers_per_cluster,
             "batch_wide_genes_per_batch": batch_wide_genes}
    params = preset_params(preset, seed=seed, **{k: v for k, v in given.items() if v is not None})
    write_simulation(params, output)

"""``desweep simulate``."""

from __future__ import annotations

from pathlib import Path

import click

from desweep.cli._common import seed_option, step_command


@click.command(name="simulate")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .h5ad file to write.")
@click.option("--n-cells", type=int, default=3000, show_default=True, help="Cells (500 to 100,000).")
@click.option("--n-genes", type=int, default=2000, show_default=True, help="Genes.")
@click.option("--n-batches", type=int, default=3, show_default=True, help="Batches (2 to 4).")
@click.option("--n-shared-clusters", type=int, default=3, show_default=True, help="Clusters present in every batch.")
@click.option("--n-specific-clusters", type=int, default=2, show_default=True, help="Clusters present in one batch only (one per batch, from batch0).")
@click.option("--markers-per-cluster", type=int, default=20, show_default=True, help="Planted marker genes per cluster.")
@click.option("--batch-wide-genes", type=int, default=30, show_default=True, help="Planted batch-wide genes per batch.")
@seed_option
@step_command
def simulate(output: Path, n_cells: int, n_genes: int, n_batches: int, n_shared_clusters: int, n_specific_clusters: int,
             markers_per_cluster: int, batch_wide_genes: int, seed: int) -> None:
    """Simulate batched raw counts with planted cluster markers and batch-wide genes.

    The truth is stored in ``obs['cell_type']`` and ``var['truth_*']`` (see the
    docs of :mod:`desweep.simulate`).

    Example:

        desweep simulate -o sim.h5ad --n-cells 2000 --seed 1
    """
    from desweep.io import write_h5ad
    from desweep.simulate import SimulationParams
    from desweep.simulate import simulate as run_simulation

    params = SimulationParams(
        n_cells=n_cells, n_genes=n_genes, n_batches=n_batches, n_shared_clusters=n_shared_clusters,
        n_specific_clusters=n_specific_clusters, markers_per_cluster=markers_per_cluster,
        batch_wide_genes_per_batch=batch_wide_genes, seed=seed,
    )
    write_h5ad(run_simulation(params), output)

"""``desweep cluster``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from desweep import keys, params
from desweep.cli._common import input_option, options_from, outdir_option, prepare_outdir, step_command

if TYPE_CHECKING:
    from desweep.cluster import Neighbors


@click.command(name="cluster")
@input_option(f"The integrated .h5ad ({keys.STEP_INTEGRATE}/{keys.INTEGRATED_H5AD}).")
@options_from(params.CLUSTER)
@outdir_option(keys.outdir_help("cluster"))
@step_command
def cluster(input_path: Path, resolution: float, n_neighbors: int, neighbors: Neighbors, seed: int, outdir: Path) -> None:
    """Leiden clusters and UMAP on the scVI latent space.

    The groups compared later are the labels given to `desweep validate`
    (--labels-key), or these Leiden clusters when no labels were given.

    Example:

    \b
        desweep cluster -i results/integrate/integrated.h5ad --resolution 0.8 -o results/cluster
    """
    from desweep.cluster import cluster as run_clustering
    from desweep.io import read_h5ad, write_csv, write_h5ad_with_x_from

    # clustering reads the embedding only; the counts, which the later steps read, are copied through from the file
    adata = read_h5ad(input_path, backed=True)
    adata, summary = run_clustering(adata, source=str(input_path), resolution=resolution, n_neighbors=n_neighbors,
                                     neighbors=neighbors, seed=seed)
    prepare_outdir(outdir)
    write_h5ad_with_x_from(adata, input_path, outdir / keys.CLUSTERED_H5AD)
    write_csv(summary, outdir / keys.CLUSTER_METRICS_CSV)
    click.echo(summary.to_string(index=False))

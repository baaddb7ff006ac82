"""``desweep cluster``."""

from __future__ import annotations

from pathlib import Path

import click

from desweep import keys
from desweep.cli._common import outdir_option, prepare_outdir, seed_option, step_command
from desweep.cluster import NEIGHBORS


@click.command(name="cluster")
@click.option("-i", "--input", "input_path", type=click.Path(path_type=Path), required=True,
              help=f"The integrated .h5ad ({keys.STEP_INTEGRATE}/{keys.INTEGRATED_H5AD}).")
@click.option("--resolution", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="Leiden resolution.")
@click.option("--n-neighbors", type=click.IntRange(min=2), default=15, show_default=True, help="Neighbours in the scVI graph.")
@click.option("--neighbors", type=click.Choice(NEIGHBORS), default="approximate", show_default=True,
              help="approximate: pynndescent (about linear in cells); exact: scikit-learn's exact search (small data).")
@seed_option
@outdir_option(f"writes {keys.CLUSTERED_H5AD} and {keys.CLUSTER_METRICS_CSV}.")
@step_command
def cluster(input_path: Path, resolution: float, n_neighbors: int, neighbors: str, seed: int, outdir: Path) -> None:
    """Leiden clusters and UMAP on the scVI latent space.

    The groups compared later are the labels given to `desweep validate`
    (--labels-key), or these Leiden clusters when no labels were given.

    Example:

        desweep cluster -i results/integrate/integrated.h5ad --resolution 0.8 -o results/cluster
    """
    from desweep.cluster import cluster as run_clustering
    from desweep.io import read_h5ad, write_csv, write_h5ad

    adata = read_h5ad(input_path)
    adata, summary = run_clustering(adata, source=str(input_path), resolution=resolution, n_neighbors=n_neighbors,
                                     neighbors=neighbors, seed=seed)
    prepare_outdir(outdir)
    write_h5ad(adata, outdir / keys.CLUSTERED_H5AD)
    write_csv(summary, outdir / keys.CLUSTER_METRICS_CSV)
    click.echo(summary.to_string(index=False))

"""``desweep normalize``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from desweep import keys, params
from desweep.cli._common import (
    input_option,
    options_from,
    outdir_option,
    plan_tables_dir,
    prepare_outdir,
    read_plan_tables,
    step_command,
    tables_option,
)
from desweep.errors import DesweepInputError

if TYPE_CHECKING:
    from anndata import AnnData

    from desweep.compute import Accelerator
    from desweep.normalize.layers import Latent


def read_top_gene_tables(plan_path: Path, tables_dir: Path | None) -> dict:
    """The DE tables of every row of ``plan_path`` (``tables/`` beside it unless ``tables_dir``); at least one."""
    from desweep.io import read_csv

    plan = read_csv(plan_path, required=("combination_id",), what="plan")
    tables_dir = plan_tables_dir(plan_path, tables_dir)
    tables = read_plan_tables(plan, tables_dir)
    if not tables:
        raise DesweepInputError(tables_dir, "tables", f"no <combination_id>.csv for any row of {plan_path}")
    return tables


def write_normalized_h5ad(normalized: AnnData, destination: Path) -> Path:
    """Write ``normalized.h5ad`` atomically and **uncompressed**.

    Dense float32 layers hardly compress (gzip saved 10% of 150 MiB and took 16 s
    instead of 0.2 s, see docs/benchmarks.md), so this file skips gzip.
    """
    from desweep.io import write_atomic

    return write_atomic(destination, lambda tmp: normalized.write_h5ad(tmp))


@click.command(name="normalize")
@input_option(f"The clustered .h5ad ({keys.STEP_CLUSTER}/{keys.CLUSTERED_H5AD}).", dest="adata_path")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help=f"The scVI model folder ({keys.STEP_INTEGRATE}/{keys.MODEL_DIR}).")
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), default=None,
              help=f"The DE plan ({keys.STEP_DE}/{keys.PLAN_CSV}): the layers hold the top --top-n genes of each of its tables.")
@tables_option
@options_from(params.NORMALIZE)
@outdir_option(keys.outdir_help("normalize"))
@step_command
def normalize(adata_path: Path, model_dir: Path, choices: tuple[str, ...], batches: list[str] | None, plan_path: Path | None,
              tables_dir: Path | None, top_n: int, genes: list[str] | None, all_genes: bool, library_size: float | Literal["latent"],
              n_samples: int, latent: Latent, chunk_size: int | None, max_memory_gb: float, accelerator: Accelerator, seed: int,
              threads: int | None, outdir: Path) -> None:
    """Export scVI normalized expression for each transform_batch choice.

    Writes one float32 layer per choice (scvi_norm__own_batch,
    scvi_norm__batch__<b> per batch, scvi_norm__mean_all_batches,
    scvi_norm__mean_all_batches__sample_<k>) for the genes a user plots (the
    top genes of every DE table of --plan, plus --genes; every gene with
    --all-genes), and the mean of each per gene, cluster and batch for every
    gene. See docs/normalized_expression.md for what scvi-tools returns for
    each choice.

    Example:

    \b
        desweep normalize -i results/cluster/clustered.h5ad \\
            --model results/integrate/model --plan results/de/plan.csv \\
            --genes markers.txt --choices all --n-samples 5 -o results/normalized
    """
    from desweep import compute
    from desweep.integrate import load_model
    from desweep.io import read_h5ad, write_csv
    from desweep.normalize import describe_layer_genes, export_normalized, select_layer_genes

    tables = read_top_gene_tables(plan_path, tables_dir) if plan_path else None
    selection = select_layer_genes(tables, top_n=top_n, requested=genes, all_genes=all_genes)

    compute.configure(threads=threads, seed=seed)
    device = compute.resolve_accelerator(accelerator)
    # backed: the model reads the counts a chunk of cells at a time as it decodes them (the file is read in order)
    adata = read_h5ad(adata_path, backed=True)
    model = load_model(str(model_dir), adata, accelerator=device, source=str(adata_path))
    normalized, means = export_normalized(
        adata, model, choices=choices, batches=batches or None, genes=selection.genes, library_size=library_size, n_samples=n_samples,
        latent=latent, chunk_size=chunk_size, max_memory_gb=max_memory_gb, seed=seed, source=str(adata_path),
    )
    layer_genes = describe_layer_genes(normalized, selection)
    prepare_outdir(outdir)
    write_normalized_h5ad(normalized, outdir / keys.NORMALIZED_H5AD)
    write_csv(means, outdir / keys.CLUSTER_BATCH_MEANS_CSV)
    write_csv(layer_genes, outdir / keys.LAYER_GENES_CSV)
    click.echo(f"{len(normalized.layers)} layers of {normalized.n_obs} cells x {normalized.n_vars} genes:")
    for layer in normalized.layers:
        click.echo(f"  {layer}")

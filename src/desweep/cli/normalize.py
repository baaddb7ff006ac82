"""``desweep normalize``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from desweep import keys
from desweep.cli._common import name_list, outdir_option, parsed, prepare_outdir, seed_option, step_command, threads_option
from desweep.compute import ACCELERATORS
from desweep.errors import DesweepInputError
from desweep.normalize import CHOICE_HELP, DEFAULT_CHOICES, DEFAULT_MAX_MEMORY_GB, LATENTS, check_choices, parse_library_size

if TYPE_CHECKING:
    from anndata import AnnData


def read_gene_list(value: str) -> list[str]:
    """Genes from ``--genes``: a comma-separated list (a name holding ``,`` in double quotes), or a file.

    The file holds one gene per line (blank lines and ``#`` comments skipped),
    or is a CSV whose ``gene`` column lists them (e.g. a DE table).
    """
    from desweep.io import read_csv, require_file

    path = Path(value)
    if not path.exists():
        if "/" in value or value.endswith((".txt", ".csv", ".tsv")):
            raise DesweepInputError(value, "--genes", "file does not exist")
        return name_list("--genes")(value)
    require_file(path, what="--genes")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if lines and "," in lines[0]:
        return list(read_csv(path, required=["gene"], what="--genes")["gene"])
    return lines


def write_normalized_h5ad(normalized: AnnData, destination: Path) -> Path:
    """Write ``normalized.h5ad`` atomically and **uncompressed**.

    Dense float32 layers hardly compress (gzip saved 10% of 150 MiB and took 16 s
    instead of 0.2 s, see docs/benchmarks.md), so this file skips gzip.
    """
    from desweep.io import write_atomic

    return write_atomic(destination, lambda tmp: normalized.write_h5ad(tmp))


_CHOICES_HELP = "; ".join(f"{name}: {text}" for name, text in CHOICE_HELP.items())


@click.command(name="normalize")
@click.option("--adata", "adata_path", type=click.Path(path_type=Path), required=True,
              help=f"The clustered .h5ad ({keys.STEP_CLUSTER}/{keys.CLUSTERED_H5AD}).")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help=f"The scVI model folder ({keys.STEP_INTEGRATE}/{keys.MODEL_DIR}).")
@click.option("--choices", default=",".join(DEFAULT_CHOICES), show_default=True,
              callback=parsed(lambda value: check_choices(name_list("--choices")(value))),
              help=f"Comma-separated transform_batch choices, or 'all'. {_CHOICES_HELP}.")
@click.option("--batches", default=None, callback=parsed(name_list("--batches")),
              help='Comma-separated batches to decode in and average over (a name holding "," in double quotes; '
                   "default: every batch of the model).")
@click.option("--genes", default=None, callback=parsed(read_gene_list),
              help="Genes to export: a comma-separated list, or a file (one gene per line, or a CSV with a 'gene' column). "
                   "Default: every modelled gene.")
@click.option("--library-size", default="1e4", show_default=True, callback=parsed(parse_library_size),
              help="'latent' (each cell's own library size: expected counts) or a number every cell is scaled to (1 = frequencies).")
@click.option("--n-samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Posterior samples of z per cell; layers are their mean (all_batches_samples keeps each).")
@click.option("--latent", type=click.Choice(LATENTS), default="sample", show_default=True,
              help="sample: draw z from the posterior (as scvi-tools); mean: decode the posterior mean (deterministic).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None,
              help="Cells decoded at a time (default: the largest that fits --max-memory-gb, at most 4096).")
@click.option("--max-memory-gb", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_MAX_MEMORY_GB, show_default=True,
              help="Cap on the estimated memory: output layers (float32) plus one working chunk.")
@click.option("--accelerator", type=click.Choice(ACCELERATORS), default="auto", show_default=True,
              help="auto uses a GPU when one is present.")
@seed_option
@threads_option
@outdir_option(f"writes {keys.NORMALIZED_H5AD} and {keys.CLUSTER_BATCH_MEANS_CSV}.")
@step_command
def normalize(adata_path: Path, model_dir: Path, choices: tuple[str, ...], batches: list[str] | None, genes: list[str] | None,
              library_size: float | str,
              n_samples: int, latent: str, chunk_size: int | None, max_memory_gb: float, accelerator: str, seed: int,
              threads: int | None, outdir: Path) -> None:
    """Export scVI normalized expression for each transform_batch choice.

    Writes one float32 layer per choice (scvi_norm__own_batch,
    scvi_norm__batch__<b> per batch, scvi_norm__mean_all_batches,
    scvi_norm__mean_all_batches__sample_<k>) and the mean of each per gene,
    cluster and batch. See docs/normalized_expression.md for what scvi-tools
    returns for each choice.

    Example:

    \b
        desweep normalize --adata results/cluster/clustered.h5ad \\
            --model results/integrate/model --genes markers.txt \\
            --choices all --n-samples 5 -o results/normalized
    """
    from desweep import compute
    from desweep.integrate import load_model
    from desweep.io import read_h5ad, write_csv
    from desweep.normalize import export_normalized

    compute.configure(threads=threads, seed=seed)
    device = compute.resolve_accelerator(accelerator)
    adata = read_h5ad(adata_path)
    model = load_model(str(model_dir), adata, accelerator=device, source=str(adata_path))
    normalized, means = export_normalized(
        adata, model, choices=choices, batches=batches or None, genes=genes, library_size=library_size, n_samples=n_samples,
        latent=latent, chunk_size=chunk_size, max_memory_gb=max_memory_gb, seed=seed, source=str(adata_path),
    )
    prepare_outdir(outdir)
    write_normalized_h5ad(normalized, outdir / keys.NORMALIZED_H5AD)
    write_csv(means, outdir / keys.CLUSTER_BATCH_MEANS_CSV)
    click.echo(f"{len(normalized.layers)} layers of {normalized.n_obs} cells x {normalized.n_vars} genes:")
    for layer in normalized.layers:
        click.echo(f"  {layer}")

"""``desweep integrate``."""

from __future__ import annotations

from pathlib import Path

import click

from desweep import keys
from desweep.cli._common import name_list, outdir_option, parsed, prepare_outdir, seed_option, step_command, threads_option
from desweep.compute import ACCELERATORS


@click.command(name="integrate")
@click.option("-i", "--input", "input_path", type=click.Path(path_type=Path), required=True,
              help=f"The validated .h5ad ({keys.STEP_VALIDATE}/{keys.VALIDATED_H5AD}).")
@click.option("--n-top-genes", type=click.IntRange(min=0), default=4000, show_default=True,
              help="Highly variable genes to model (seurat_v3 on counts); 0 keeps every gene. DE covers only modelled genes.")
@click.option("--extra-genes", default=None, callback=parsed(name_list("--extra-genes")),
              help='Comma-separated genes to model even if not highly variable (e.g. known markers; a name holding "," in double quotes).')
@click.option("--categorical-covariates", default=None, callback=parsed(name_list("--categorical-covariates")),
              help="Comma-separated extra categorical obs columns.")
@click.option("--continuous-covariates", default=None, callback=parsed(name_list("--continuous-covariates")),
              help="Comma-separated extra continuous obs columns.")
@click.option("--n-latent", type=click.IntRange(min=2), default=10, show_default=True, help="Latent dimensions.")
@click.option("--n-layers", type=click.IntRange(min=1), default=1, show_default=True, help="Hidden layers.")
@click.option("--gene-likelihood", type=click.Choice(["zinb", "nb", "poisson"]), default="zinb", show_default=True)
@click.option("--max-epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs (default: scvi-tools' heuristic, min(20000/n_cells*400, 400)).")
@click.option("--early-stopping/--no-early-stopping", default=True, show_default=True,
              help="Stop when the validation ELBO stops improving.")
@click.option("--batch-size", type=click.IntRange(min=8), default=None,
              help="Minibatch size (default: 128 on CPU, scaled up with the data on a GPU); adjusted to avoid a last minibatch of 1-2 cells.")
@click.option("--kl-warmup-epochs", type=click.IntRange(min=1), default=None,
              help="Epochs of KL warm-up (default: a quarter of --max-epochs, at most 400).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Adam learning rate.")
@click.option("--accelerator", type=click.Choice(ACCELERATORS), default="auto", show_default=True,
              help="auto uses a GPU when one is present.")
@click.option("--gpu-fallback/--no-gpu-fallback", default=True, show_default=True,
              help="With --accelerator gpu and no GPU: use the CPU with a warning, or fail.")
@seed_option
@threads_option
@outdir_option(f"writes {keys.MODEL_DIR}/, {keys.INTEGRATED_H5AD}, {keys.HISTORY_CSV} and {keys.METRICS_CSV}.")
@step_command
def integrate(input_path: Path, n_top_genes: int, extra_genes: list[str] | None, categorical_covariates: list[str] | None,
              continuous_covariates: list[str] | None, n_latent: int, n_layers: int, gene_likelihood: str, max_epochs: int | None,
              early_stopping: bool, batch_size: int | None, kl_warmup_epochs: int | None, learning_rate: float, accelerator: str, gpu_fallback: bool, seed: int,
              threads: int | None, outdir: Path) -> None:
    """Train scVI on the validated counts and write the model, embedding, history and metrics.

    Example:

        desweep integrate -i results/validate/validated.h5ad --max-epochs 100 --threads 2 -o results/integrate
    """
    from desweep import compute
    from desweep.integrate import integrate as run_integration
    from desweep.integrate import save_model
    from desweep.io import atomic_path, read_h5ad, write_csv, write_h5ad

    compute.configure(threads=threads, seed=seed)
    device = compute.resolve_accelerator(accelerator, allow_fallback=gpu_fallback)
    adata = read_h5ad(input_path)
    prepare_outdir(outdir)
    integrated, model, history, metrics = run_integration(
        adata, source=str(input_path), n_top_genes=n_top_genes, extra_genes=extra_genes or [],
        categorical_covariates=categorical_covariates or [], continuous_covariates=continuous_covariates or [],
        n_latent=n_latent, n_layers=n_layers, gene_likelihood=gene_likelihood, max_epochs=max_epochs,
        early_stopping=early_stopping, batch_size=batch_size, kl_warmup_epochs=kl_warmup_epochs,
        learning_rate=learning_rate, accelerator=device, seed=seed,
    )
    with atomic_path(outdir / keys.MODEL_DIR, directory=True) as tmp_model:
        save_model(model, integrated, tmp_model)
    write_h5ad(integrated, outdir / keys.INTEGRATED_H5AD)
    write_csv(history, outdir / keys.HISTORY_CSV)
    write_csv(metrics, outdir / keys.METRICS_CSV)
    click.echo(metrics.to_string(index=False))

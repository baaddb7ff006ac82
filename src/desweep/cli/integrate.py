"""``desweep integrate``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from desweep import keys, params
from desweep.cli._common import input_option, options_from, outdir_option, prepare_outdir, step_command

if TYPE_CHECKING:
    from desweep.compute import Accelerator


@click.command(name="integrate")
@input_option(f"The validated .h5ad ({keys.STEP_VALIDATE}/{keys.VALIDATED_H5AD}).")
@options_from(params.INTEGRATE)
@outdir_option(keys.outdir_help("integrate"))
@step_command
def integrate(input_path: Path, accelerator: Accelerator, gpu_fallback: bool, seed: int, threads: int | None, outdir: Path,
              **training: Any) -> None:
    """Train scVI on the validated counts and write the model, embedding, history and metrics.

    Example:

    \b
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
    # every other option of params.INTEGRATE is a keyword of desweep.integrate.integrate / train_scvi
    integrated, model, history, metrics = run_integration(adata, source=str(input_path), accelerator=device, seed=seed, **training)
    with atomic_path(outdir / keys.MODEL_DIR, directory=True) as tmp_model:
        save_model(model, integrated, tmp_model)
    write_h5ad(integrated, outdir / keys.INTEGRATED_H5AD)
    write_csv(history, outdir / keys.HISTORY_CSV)
    write_csv(metrics, outdir / keys.METRICS_CSV)
    click.echo(metrics.to_string(index=False))

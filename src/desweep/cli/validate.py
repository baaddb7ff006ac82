"""``desweep validate``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from desweep import keys, params
from desweep.cli._common import input_option, options_from, outdir_option, prepare_outdir, step_command


@click.command(name="validate")
@input_option("An .h5ad with raw counts, or a samplesheet CSV (sample,batch,path).")
@options_from(params.VALIDATE)
@outdir_option(keys.outdir_help("validate"))
@step_command
def validate(input_path: Path, batch_key: str, labels_key: str | None, layer: str | None, min_cells_per_batch: int,
             make_genes_unique: bool, outdir: Path) -> None:
    """Check the input and write the validated counts.

    Fails with one line naming the file and the field for: a missing, empty or
    corrupt file; values that are not raw counts (normalized, log, negative,
    NaN); a missing batch or labels column; fewer than two batches; too small a
    batch; repeated cell or gene names. Genes and cells without counts are
    dropped and reported.

    Example:

    \b
        desweep validate -i pbmc.h5ad --batch-key batch --labels-key cell_type -o results/validate
    """
    from desweep.io import write_h5ad_rows, write_text
    from desweep.validate import load_input, record_checksum, validate_adata

    adata = load_input(input_path, batch_key=batch_key, layer=layer, make_genes_unique=make_genes_unique)
    validated, report = validate_adata(adata, input_path, batch_key=batch_key, labels_key=labels_key,
                                       min_cells_per_batch=min_cells_per_batch)
    record_checksum(validated.adata, report, input_path)
    prepare_outdir(outdir)
    write_h5ad_rows(validated.adata, validated.blocks(), outdir / keys.VALIDATED_H5AD)
    write_text(json.dumps(asdict(report), indent=2) + "\n", outdir / keys.VALIDATION_REPORT)
    click.echo(f"validated {report.n_cells} cells x {report.n_genes} genes in {len(report.cells_per_batch)} batches")

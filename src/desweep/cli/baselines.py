"""``desweep baselines``."""

from __future__ import annotations

from pathlib import Path

import click

from desweep import keys, params
from desweep.cli._common import comparisons_option, input_option, means_option, options_from, outdir_option, prepare_outdir, step_command


@click.command(name="baselines")
@input_option(f"The clustered .h5ad with raw counts in X ({keys.STEP_CLUSTER}/{keys.CLUSTERED_H5AD}).", dest="adata_path")
@comparisons_option
@means_option
@options_from(params.BASELINES)
@outdir_option(keys.outdir_help("baselines"))
@step_command
def baselines(adata_path: Path, comparisons_path: Path, means_path: Path | None, methods: list[str], top_n: int, sample_key: str,
              pseudo_replicates: int, min_cells: int, seed: int, threads: int | None, outdir: Path) -> None:
    """Wilcoxon and pseudobulk DESeq2 baselines, classified like the scVI settings.

    A comparison whose groups share no batch ('confounded') gets no DESeq2
    numbers: the table says so.

    Example:

    \b
        desweep baselines -i results/cluster/clustered.h5ad \\
            --comparisons results/composition/comparisons.csv -o results/baselines
    """
    import os

    from desweep import diagnose as dg
    from desweep.baselines import run_baselines
    from desweep.cli.diagnose import optional_input
    from desweep.io import read_csv, read_h5ad, write_csv

    comparisons = read_csv(comparisons_path, required=dg.COMPARISON_REQUIRED, what="comparisons")
    means_path = optional_input(means_path, "--means")
    means = read_csv(means_path, required=dg.MEANS_REQUIRED, what="means") if means_path else None
    adata = read_h5ad(adata_path, backed=True)  # X is read in row chunks, and the two groups' rows for Wilcoxon
    threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    results = run_baselines(adata, comparisons, means, methods=methods, top_n=top_n, sample_key=sample_key or None,
                            pseudo_replicates=pseudo_replicates, min_cells=min_cells, seed=seed, threads=threads,
                            source=str(adata_path))
    prepare_outdir(outdir)
    write_csv(results["wilcoxon"], outdir / keys.WILCOXON_CSV)
    write_csv(results["pseudobulk"], outdir / keys.PSEUDOBULK_CSV)
    write_csv(results["baseline_patterns"], outdir / keys.BASELINE_PATTERNS_CSV)
    write_csv(results["baseline_scores"], outdir / keys.BASELINE_SCORES_CSV)
    scores = results["baseline_scores"]
    click.echo(scores[["combination_id", "status", "share_cluster_specific", "share_batch_wide"]].to_string(index=False))

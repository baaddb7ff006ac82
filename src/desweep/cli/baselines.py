"""``desweep baselines``."""

from __future__ import annotations

from pathlib import Path

import click

from desweep import keys
from desweep.baselines import check_methods, check_pseudo_replicates
from desweep.cli._common import (
    comparisons_option,
    means_option,
    name_list,
    outdir_option,
    parsed,
    prepare_outdir,
    seed_option,
    step_command,
    threads_option,
)


@click.command(name="baselines")
@click.option("--adata", "adata_path", type=click.Path(path_type=Path), required=True,
              help=f"The clustered .h5ad with raw counts in X ({keys.STEP_CLUSTER}/{keys.CLUSTERED_H5AD}).")
@comparisons_option
@means_option
@click.option("--methods", default="wilcoxon,pseudobulk", show_default=True, callback=parsed(lambda v: check_methods(name_list("--methods")(v))),
              help="Comma-separated: wilcoxon, pseudobulk.")
@click.option("--top-n", type=click.IntRange(min=1), default=50, show_default=True, help="Top genes classified per method.")
@click.option("--sample-key", default="sample", show_default=True,
              help="obs column of biological samples for pseudobulks (per batch when the column is absent).")
@click.option("--pseudo-replicates", type=click.IntRange(min=0), default=0, show_default=True, callback=parsed(check_pseudo_replicates),
              help="Without samples: split each group x batch into this many random pseudobulks (0 = off; p-values optimistic).")
@click.option("--min-cells", type=click.IntRange(min=1), default=10, show_default=True, help="Fewest cells per pseudobulk.")
@seed_option
@threads_option
@outdir_option(f"writes {keys.WILCOXON_CSV}, {keys.PSEUDOBULK_CSV}, {keys.BASELINE_PATTERNS_CSV} and {keys.BASELINE_SCORES_CSV}.")
@step_command
def baselines(adata_path: Path, comparisons_path: Path, means_path: Path | None, methods: list[str], top_n: int, sample_key: str,
              pseudo_replicates: int, min_cells: int, seed: int, threads: int | None, outdir: Path) -> None:
    """Wilcoxon and pseudobulk DESeq2 baselines, classified like the scVI settings.

    A comparison whose groups share no batch ('confounded') gets no DESeq2
    numbers: the table says so.

    Example:

        desweep baselines --adata results/cluster/clustered.h5ad \\
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
    adata = read_h5ad(adata_path)
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

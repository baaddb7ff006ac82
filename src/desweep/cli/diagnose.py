"""``desweep diagnose``."""

from __future__ import annotations

from pathlib import Path

import click

from desweep import keys, params
from desweep.cli._common import (
    comparisons_option,
    input_option,
    means_option,
    options_from,
    outdir_option,
    plan_tables_dir,
    prepare_outdir,
    read_plan_tables,
    step_command,
    tables_option,
)


def optional_input(path: Path | None, option: str) -> Path | None:
    """``path``, or ``None`` with a warning when an optional input is missing or empty (a pipeline placeholder)."""
    import logging

    if path is None:
        return None
    if not path.is_file() or path.stat().st_size == 0:
        logging.getLogger("desweep").warning("%s %s: missing or empty, left out", option, path)
        return None
    return path


#: result table -> the file diagnose writes it to
TABLES = keys.step_tables("diagnose")


@click.command(name="diagnose")
@input_option(f"The clustered .h5ad with raw counts in X ({keys.STEP_CLUSTER}/{keys.CLUSTERED_H5AD}).", dest="adata_path")
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), required=True,
              help=f"The DE plan ({keys.STEP_DE}/{keys.PLAN_CSV}).")
@tables_option
@comparisons_option
@means_option
@click.option("--history", "history_path", type=click.Path(path_type=Path), default=None,
              help=f"Optional {keys.STEP_INTEGRATE}/{keys.HISTORY_CSV} for the training-curve plot.")
@click.option("--counts", "counts_path", type=click.Path(path_type=Path), default=None,
              help=f"Optional {keys.STEP_COMPOSITION}/{keys.CLUSTER_BATCH_COUNTS_CSV} for the composition plot.")
@click.option("--normalized", "normalized_path", type=click.Path(path_type=Path), default=None,
              help=f"Optional {keys.STEP_NORMALIZE}/{keys.NORMALIZED_H5AD}: its layers of the markers go into {keys.MARKERS_H5AD}.")
@options_from(params.DIAGNOSE)
@outdir_option(keys.outdir_help("diagnose"))
@step_command
def diagnose(adata_path: Path, plan_path: Path, tables_dir: Path | None, comparisons_path: Path, means_path: Path | None,
             history_path: Path | None, counts_path: Path | None, normalized_path: Path | None, top_n: int,
             explained_fraction: float, alpha: float, plots: bool, plot_genes: int, sample_key: str | None,
             threads: int | None, outdir: Path) -> None:
    """Classify every setting's top genes as cluster-specific, batch-wide or other; rank settings; recommend;
    write the ranked answer.

    Example:

    \b
        desweep diagnose -i results/cluster/clustered.h5ad --plan results/de/plan.csv \\
            --comparisons results/composition/comparisons.csv \\
            --means results/normalized/cluster_batch_means.csv -o results/diagnostics
    """
    from desweep import diagnose as dg
    from desweep.datakeys import get_keys
    from desweep.errors import DesweepInputError
    from desweep.io import check_h5ad, read_csv, read_h5ad, read_h5ad_layers, write_csv, write_h5ad

    plan = read_csv(plan_path, required=dg.PLAN_REQUIRED, what="plan")
    tables_dir = plan_tables_dir(plan_path, tables_dir)
    tables = read_plan_tables(plan, tables_dir)
    comparisons = read_csv(comparisons_path, required=dg.COMPARISON_REQUIRED, what="comparisons")
    means_path, history_path, counts_path, normalized_path = (optional_input(p, what) for p, what in (
        (means_path, "--means"), (history_path, "--history"), (counts_path, "--counts"), (normalized_path, "--normalized")))
    means = read_csv(means_path, required=dg.MEANS_REQUIRED, what="means") if means_path else None
    history = read_csv(history_path, what="history") if history_path else None
    counts = read_csv(counts_path, what="counts") if counts_path else None
    adata = read_h5ad(adata_path, backed=True)  # X is read in row chunks (desweep.chunks), never whole
    if normalized_path:
        check_h5ad(normalized_path)  # read after the diagnosis, for the markers' genes only
    thresholds = dg.Thresholds(explained_fraction=explained_fraction, alpha=alpha)
    try:
        dg.check_inputs(plan.astype({"combination_id": str, "comparison_id": str}), tables,
                        comparisons.astype({"comparison_id": str}), plan_source=str(plan_path),
                        comparisons_source=str(comparisons_path))
    except DesweepInputError as err:
        if err.field == "combination_id":
            raise DesweepInputError(tables_dir, "tables", f"no <combination_id>.csv for any row of {plan_path}") from err
        raise
    results = dg.diagnose(adata, plan, tables, comparisons, means, top_n=top_n, thresholds=thresholds,
                          heatmap_genes=plot_genes, sample_key=sample_key or None, threads=threads or 1,
                          source=str(adata_path))
    data_keys = get_keys(adata, adata_path, need_groups=True)
    genes = [*results["markers"]["gene"].astype(str), *results["rejected"]["gene"].astype(str)]
    normalized = read_h5ad_layers(normalized_path, genes, prefix=keys.NORM_LAYER_PREFIX) if normalized_path else None
    markers_h5ad = dg.markers_adata(adata, results["markers"], results["rejected"], group_key=data_keys.groups,
                                    batch_key=data_keys.batch_key, normalized=normalized)

    prepare_outdir(outdir)
    for name, filename in TABLES.items():
        write_csv(results[name], outdir / filename)
    write_h5ad(markers_h5ad, outdir / keys.MARKERS_H5AD)
    if plots:
        from desweep.plots import diagnostic_figures, save_png

        has_umap = keys.X_UMAP in adata.obsm
        n = 0
        for name, fig in diagnostic_figures(
            results=results, plan=plan, tables=tables, history=history, counts=counts,
            umap_coords=adata.obsm[keys.X_UMAP] if has_umap else None,
            batch=adata.obs[data_keys.batch_key], cluster=adata.obs[data_keys.group_key],
        ):
            save_png(fig, outdir / keys.PLOTS_DIR / name)
            n += 1
        click.echo(f"wrote {n} plots to {outdir / keys.PLOTS_DIR}")
    rec = results["recommendations"]
    click.echo(rec[["comparison_id", "status", "recommended_setting_id", "share_cluster_specific", "share_batch_wide",
                    "n_markers", "n_high_confidence"]].to_string(index=False))

"""The report's only reader: everything it shows, read once from ``OUTDIR``.

:func:`load_results` returns a :class:`ReportInputs` of plain tables; the
section builders take that and never touch files. An input that is missing or
unreadable is simply absent (its section then says "not available"): a broken
optional file never costs the whole report.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from desweep import keys
from desweep.names import comparison_names, natural_key, split_names

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: the two settings the report draws for each comparison
ROLES = ("default", "recommended", "bridge")

#: every CSV the report reads: name -> (step folder, file name)
CSV_FILES: dict[str, tuple[str, str]] = {
    "history": (keys.STEP_INTEGRATE, keys.HISTORY_CSV),
    "metrics": (keys.STEP_INTEGRATE, keys.METRICS_CSV),
    "cluster_metrics": (keys.STEP_CLUSTER, keys.CLUSTER_METRICS_CSV),
    "counts": (keys.STEP_COMPOSITION, keys.CLUSTER_BATCH_COUNTS_CSV),
    "clusters": (keys.STEP_COMPOSITION, keys.CLUSTER_STATUS_CSV),
    "comparisons": (keys.STEP_COMPOSITION, keys.COMPARISONS_CSV),
    "plan": (keys.STEP_DE, keys.PLAN_CSV),
    "skipped": (keys.STEP_DE, keys.PLAN_SKIPPED_CSV),
    "summary": (keys.STEP_DE, keys.DE_SUMMARY_CSV),
    "means": (keys.STEP_NORMALIZE, keys.CLUSTER_BATCH_MEANS_CSV),
    "layer_genes": (keys.STEP_NORMALIZE, keys.LAYER_GENES_CSV),
    "recommendations": (keys.STEP_DIAGNOSE, keys.RECOMMENDATIONS_CSV),
    "recommended_settings": (keys.STEP_DIAGNOSE, keys.RECOMMENDED_SETTINGS_CSV),
    "markers": (keys.STEP_DIAGNOSE, keys.MARKERS_CSV),
    "bridge_summary": (keys.STEP_DIAGNOSE, keys.BRIDGE_SUMMARY_CSV),
    "rejected": (keys.STEP_DIAGNOSE, keys.REJECTED_CSV),
    "setting_scores": (keys.STEP_DIAGNOSE, keys.SETTING_SCORES_CSV),
    "scores_by_replicate": (keys.STEP_DIAGNOSE, keys.SETTING_SCORES_BY_REPLICATE_CSV),
    "gene_patterns": (keys.STEP_DIAGNOSE, keys.GENE_PATTERNS_CSV),
    "concordance_settings": (keys.STEP_DIAGNOSE, keys.CONCORDANCE_SETTINGS_CSV),
    "top_gene_expression": (keys.STEP_DIAGNOSE, keys.TOP_GENE_EXPRESSION_CSV),
    "thresholds": (keys.STEP_DIAGNOSE, keys.DIAGNOSE_THRESHOLDS_CSV),
    "baseline_scores": (keys.STEP_BASELINES, keys.BASELINE_SCORES_CSV),
    "pseudobulk": (keys.STEP_BASELINES, keys.PSEUDOBULK_CSV),
}
#: columns that hold names (genes, groups, batches, ids): always read as text, never as numbers
OTHER_FILES: dict[str, tuple[str, str]] = {
    "validation": (keys.STEP_VALIDATE, keys.VALIDATION_REPORT),
    "params": (keys.PIPELINE_INFO, keys.PARAMS_YAML),
    "versions": (keys.PIPELINE_INFO, keys.SOFTWARE_VERSIONS_YML),
    "umap": (keys.STEP_DIAGNOSE, f"{keys.PLOTS_DIR}/{keys.PLOT_UMAP}"),
    "markers_h5ad": (keys.STEP_DIAGNOSE, keys.MARKERS_H5AD),
    "normalized": (keys.STEP_NORMALIZE, keys.NORMALIZED_H5AD),
    "plots": (keys.STEP_DIAGNOSE, keys.PLOTS_DIR),
    "de_tables": (keys.STEP_DE, keys.DE_TABLES_DIR),
}


def where(name: str) -> str:
    """``step/file`` of an input, as "not available" notes show it."""
    step, file = {**CSV_FILES, **OTHER_FILES}[name]
    return f"{step}/{file}"


@dataclass
class ReportInputs:
    """Everything the report shows, as tables (no file handles).

    Attributes
    ----------
    tables
        The CSVs of :data:`CSV_FILES` that exist and parse, by name.
    de_tables
        ``combination_id`` -> DE table, for the combinations the report draws
        (scVI's default and the recommended setting of each comparison).
    marker_expression
        The answer's genes and rejected genes in every present cluster x
        batch (:func:`cluster_batch_expression`), from ``markers.h5ad``.
    marker_expression_source
        What ``marker_expression['mean']`` was computed from, in words.
    normalized_layers
        The layers of ``normalized.h5ad`` (name, cells, genes, storage).
    validation, params, versions
        ``validation.json``, ``params.yaml``, ``software_versions.yml``.
    umap_png
        ``diagnostics/plots/umap.png``.
    plots_dir
        Where the per-setting PNG plots are under OUTDIR, if written.
    """

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    de_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    marker_expression: pd.DataFrame | None = None
    marker_expression_source: str = ""
    normalized_layers: pd.DataFrame | None = None
    validation: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    versions: dict[str, Any] | None = None
    umap_png: bytes | None = None
    plots_dir: str | None = None

    def get(self, name: str) -> pd.DataFrame | None:
        """The table ``name`` of :data:`CSV_FILES`, or ``None`` when it was not found."""
        return self.tables.get(name)

    def comparison_name(self, comparison_id: object) -> str:
        """The display name of a comparison (:func:`desweep.names.comparison_name`); the id when no table names its groups."""
        names = {**comparison_names(self.get("comparisons")), **comparison_names(self.get("recommendations"))}
        return names.get(str(comparison_id), str(comparison_id))

    def with_comparison(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` with a ``comparison`` column (the display name) first, for row names; ``comparison_id`` kept."""
        named = table["comparison_id"].astype(str).map(self.comparison_name)
        return table.drop(columns="comparison", errors="ignore").assign(comparison=named.to_numpy())


def load_results(results: str | Path) -> ReportInputs:
    """Read every input of the report from ``results`` (the pipeline's OUTDIR)."""
    results = Path(results)
    inputs = ReportInputs()
    for name, (step, file) in CSV_FILES.items():
        table = read_csv(results / step / file)
        if table is not None:
            inputs.tables[name] = table
    histories = _replicate_histories(results)
    if histories is not None:
        inputs.tables["history"] = histories
    featured = featured_combinations(inputs.get("recommendations"), inputs.get("scores_by_replicate"))
    for cid in sorted(set(featured.values())):
        table = read_csv(results / keys.STEP_DE / keys.DE_TABLES_DIR / f"{cid}.csv")
        if table is not None:
            inputs.de_tables[cid] = table
    inputs.validation = _read_json(results / keys.STEP_VALIDATE / keys.VALIDATION_REPORT)
    inputs.params = _read_yaml(results / keys.PIPELINE_INFO / keys.PARAMS_YAML)
    inputs.versions = _read_yaml(results / keys.PIPELINE_INFO / keys.SOFTWARE_VERSIONS_YML)
    umap = results / keys.STEP_DIAGNOSE / keys.PLOTS_DIR / keys.PLOT_UMAP
    inputs.umap_png = umap.read_bytes() if umap.is_file() else None
    plots = results / keys.STEP_DIAGNOSE / keys.PLOTS_DIR
    inputs.plots_dir = where("plots") if plots.is_dir() else None  # OUTDIR-relative: the same in desweep run and Nextflow
    markers_h5ad = results / keys.STEP_DIAGNOSE / keys.MARKERS_H5AD
    if markers_h5ad.is_file():
        batch_key = (inputs.validation or {}).get("batch_key")
        inputs.marker_expression, inputs.marker_expression_source = _marker_expression(
            markers_h5ad, inputs.get("counts"), batch_key=str(batch_key) if batch_key else None)
    normalized = results / keys.STEP_NORMALIZE / keys.NORMALIZED_H5AD
    if normalized.is_file():
        inputs.normalized_layers = _layers(normalized)
    logger.info("report inputs: %d tables, %d DE tables", len(inputs.tables), len(inputs.de_tables))
    return inputs


def _replicate_histories(results: Path) -> pd.DataFrame | None:
    """The training curves of every model replicate (``integrate/replicate<k>/``), with a ``model`` column; ``None`` with one model."""
    frames = []
    for k in range(1, 1000):
        table = read_csv(results / keys.STEP_INTEGRATE / keys.replicate_dir(k) / keys.HISTORY_CSV)
        if table is None:
            break
        frames.append(table.assign(model=k))
    first = read_csv(results / keys.STEP_INTEGRATE / keys.HISTORY_CSV)
    if not frames or first is None:
        return None
    return pd.concat([first.assign(model=0), *frames], ignore_index=True)


# --------------------------------------------------------------------------- readers
def read_csv(path: Path) -> pd.DataFrame | None:
    """A CSV read by :func:`desweep.io.read_csv` (name columns as text); ``None`` when absent, empty or unreadable."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    from desweep import io

    try:
        return io.read_csv(path, what=path.name)
    except Exception as err:  # noqa: BLE001 - a broken optional input must not break the report
        logger.warning("cannot read %s: %s", path, err)
        return None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except Exception as err:  # noqa: BLE001
        logger.warning("cannot read %s: %s", path, err)
        return None
    return data if isinstance(data, dict) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        logger.warning("cannot read %s: %s", path, err)
        return None
    return data if isinstance(data, dict) else None


def _marker_expression(path: Path, counts: pd.DataFrame | None, *, batch_key: str | None) -> tuple[pd.DataFrame | None, str]:
    from desweep.io import open_h5ad

    with contextlib.ExitStack() as stack:
        try:
            adata = stack.enter_context(open_h5ad(path))  # X and the layers stay on disk, read in row chunks
        except Exception as err:  # noqa: BLE001
            logger.warning("cannot read %s: %s", path, err)
            return None, ""
        group_key, batch_key = _obs_keys(adata, batch_key)
        if group_key is None or batch_key is None:
            logger.warning("%s: cannot tell the group and batch columns of obs (%s)", path, ", ".join(map(str, adata.obs.columns)))
            return None, ""
        layers = sorted(name for name in adata.layers if name.startswith(keys.NORM_LAYER_PREFIX))
        preferred = keys.NORM_LAYER_PREFIX + keys.NORM_OWN_BATCH
        layer = preferred if preferred in layers else (layers[0] if layers else None)
        source = (f"scVI normalized expression (layer {layer})" if layer else "log1p of the raw counts (no scVI layer in the file)")
        return cluster_batch_expression(adata, group_key=group_key, batch_key=batch_key, layer=layer, counts=counts), source


def _obs_keys(adata: AnnData, batch_key: str | None) -> tuple[str | None, str | None]:
    """The group and batch columns of ``markers.h5ad``.

    Group: ``uns['desweep']['group_key']``, else the markers' ``params['groupby']``;
    batch: ``uns['desweep']['batch_key']``, else ``batch_key`` (validation.json's),
    else the one other obs column.
    """
    info = adata.uns.get(keys.UNS_DESWEEP, {}) or {}
    params = (adata.uns.get(keys.UNS_MARKERS, {}) or {}).get("params", {}) or {}
    group = str(info.get("group_key") or params.get("groupby") or "") or None
    batch = str(info.get("batch_key") or batch_key or "") or None
    others = [c for c in adata.obs.columns if c != group]
    if batch not in adata.obs and len(others) == 1:
        batch = str(others[0])
    return (group if group in adata.obs else None), (batch if batch in adata.obs else None)


def cluster_batch_expression(adata: AnnData, *, group_key: str, batch_key: str, layer: str | None = None,
                             counts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per gene and present cluster x batch: cells, the fraction with counts, the mean expression.

    Parameters
    ----------
    adata
        Raw counts in ``X``.
    layer
        Mean of this layer; ``None``: mean of ``log1p(X)``.
    counts
        ``composition/cluster_batch_counts.csv``: a cluster counts in a batch
        where the composition presence rule says it is present; ``None``: where
        ``adata`` has any of its cells.

    Returns
    -------
    ``gene, cluster, batch, n_cells, frac_expressing, mean`` (rows: genes in
    ``adata`` order, then clusters and batches sorted naturally).
    """
    from desweep.composition import cluster_batch_counts, cluster_status

    obs = adata.obs[[group_key, batch_key]].astype(str)
    table = counts.set_index(counts.columns[0]) if counts is not None else cluster_batch_counts(obs, group_key=group_key,
                                                                                                 batch_key=batch_key)
    table.index = table.index.astype(str)
    status = cluster_status(table)
    present = [(c, b) for c in status.index for b in split_names(status.loc[c, "batches"])]
    present = sorted(present, key=lambda cb: (natural_key(cb[0]), natural_key(cb[1])))
    from desweep.chunks import aggregate_codes

    position = {pair: j for j, pair in enumerate(present)}
    codes = np.fromiter((position.get(pair, -1) for pair in zip(obs[group_key], obs[batch_key], strict=True)),
                        dtype=np.int64, count=len(obs))
    # row chunks of X (and of the layer): a backed file is never loaded whole
    n_cells, sums, n_expressing, _ = aggregate_codes(adata, codes, len(present), transform=None if layer else np.log1p)
    if layer:
        _, sums, _, _ = aggregate_codes(adata, codes, len(present), layer=layer)
    frames = []
    for j, (cluster, batch) in enumerate(present):
        if not n_cells[j]:
            continue
        frames.append(pd.DataFrame({
            "gene": adata.var_names.astype(str), "cluster": cluster, "batch": batch, "n_cells": int(n_cells[j]),
            "frac_expressing": n_expressing[j] / n_cells[j], "mean": sums[j] / n_cells[j]}))
    columns = ["gene", "cluster", "batch", "n_cells", "frac_expressing", "mean"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _layers(path: Path) -> pd.DataFrame | None:
    import h5py

    rows = []
    try:
        with h5py.File(path, "r") as f:
            n_obs, n_vars = _h5_len(f.get("obs")), _h5_len(f.get("var"))
            for name in sorted(f.get("layers", {}).keys()):
                node = f["layers"][name]
                shape = tuple(node.attrs.get("shape", ())) if isinstance(node, h5py.Group) else node.shape
                rows.append({"layer": name, "choice": name.removeprefix(keys.NORM_LAYER_PREFIX),
                             "cells": int(shape[0]) if shape else n_obs, "genes": int(shape[1]) if len(shape) > 1 else n_vars,
                             "storage": "sparse" if isinstance(node, h5py.Group) else str(node.dtype)})
    except OSError as err:
        logger.warning("cannot read %s: %s", path, err)
        return None
    return pd.DataFrame(rows, columns=["layer", "choice", "cells", "genes", "storage"])


def _h5_len(group: Any) -> int:
    if group is None:
        return 0
    index = group.attrs.get("_index", "_index")
    index = index.decode() if isinstance(index, bytes) else index
    return int(group[index].shape[0]) if index in group else 0


# --------------------------------------------------------------------------- which runs are drawn
def representative_combination(by_replicate: pd.DataFrame, setting_id: str) -> str | None:
    """The run drawn for a setting: its first model and seed (in natural order) with a table."""
    part = by_replicate[(by_replicate["setting_id"].astype(str) == setting_id)
                        & (by_replicate.get("status", pd.Series("ok", index=by_replicate.index)).astype(str) == "ok")]
    if part.empty:
        return None
    order = sorted(part.itertuples(index=False), key=lambda r: (natural_key(str(r.model)), natural_key(str(r.seed))))
    return str(order[0].combination_id)


def featured_combinations(recommendations: pd.DataFrame | None, by_replicate: pd.DataFrame | None,
                          scores: pd.DataFrame | None = None) -> dict[tuple[str, str], str]:
    """``(comparison_id, "default" | "recommended" | "bridge")`` -> the combination drawn for it.

    The bridge contrast's combination comes from ``setting_scores.csv`` (its row with ``method`` ``bridge``).
    """
    out: dict[tuple[str, str], str] = {}
    if recommendations is None or by_replicate is None or not {"setting_id", "combination_id"} <= set(by_replicate.columns):
        return out
    bridges = {} if scores is None or "method" not in scores.columns else dict(
        scores.loc[scores["method"].astype(str) == "bridge", ["comparison_id", "setting_id"]].astype(str).itertuples(index=False))
    for row in recommendations.to_dict("records"):
        for role in ROLES:
            setting = bridges.get(str(row["comparison_id"])) if role == "bridge" else row.get(f"{role}_setting_id")
            cid = representative_combination(by_replicate, setting) if isinstance(setting, str) and setting else None
            if cid:
                out[(str(row["comparison_id"]), role)] = cid
    return out

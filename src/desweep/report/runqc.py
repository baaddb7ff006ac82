"""How the run went: composition, input, integration, normalized export, baselines and provenance.
Builders take :class:`ReportInputs`, read no files."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pandas as pd

from desweep.report.items import Item, missing, png_html, table, text
from desweep.report.load import where

if TYPE_CHECKING:
    from desweep.report.load import ReportInputs


def composition_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_composition"
    items: list[Item] = []
    counts = inputs.get("counts")
    if counts is None:
        items.append(missing(section, "cluster x batch counts", where("counts")))
    else:
        counts = counts.set_index(counts.columns[0])
        data = {str(c): {str(b): int(v) for b, v in row.items()} for c, row in counts.iterrows()}
        items.append(Item(section, "counts", "Cells per cluster and batch", "bargraph", data,
                          "Each bar is a cluster, split by batch; switch to percentages to see batch-specific clusters.",
                          {"pconfig": {"ylab": "cells", "cpswitch_counts_label": "cells"}}))
    status = inputs.get("clusters")
    if status is not None:
        items.append(table(section, "clusters", "Cluster status", status, row_id=status.columns[0],
                           description="shared / partial / specific: the batches each cluster is present in (composition/clusters.csv)."))
    comparisons = inputs.get("comparisons")
    if comparisons is None:
        items.append(missing(section, "comparisons", where("comparisons")))
    else:
        items.append(table(section, "comparisons", "Comparisons and their design", comparisons, row_id="comparison_id",
                           description="confounded: the groups share no batch; one_specific: one group exists in one batch only."))
    return items


def input_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_input"
    report = inputs.validation
    if report is None:
        return [missing(section, "validation report", where("validation"))]
    rows = [{"field": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else str(v)}
            for k, v in report.items() if k not in ("cells_per_batch", "notes")]
    items = [table(section, "summary", "Validation summary", pd.DataFrame(rows, columns=["field", "value"]), row_id="field")]
    per_batch = report.get("cells_per_batch") or {}
    if per_batch:
        items.append(Item(section, "cells_per_batch", "Cells per batch", "bargraph",
                          {str(b): {"cells": int(n)} for b, n in per_batch.items()}, "Cells in each batch after validation.",
                          {"pconfig": {"ylab": "cells", "cpswitch": False}}))
    notes = report.get("notes") or []
    if notes:
        items.append(Item(section, "notes", "Validation notes", "html",
                          "<ul>" + "".join(f"<li>{text(str(n))}</li>" for n in notes) + "</ul>"))
    return items


def integration_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_integration"
    history = inputs.get("history")
    items = [missing(section, "training history", where("history")) if history is None else _training_curves(section, history)]
    metrics = inputs.get("metrics")
    if metrics is None:
        items.append(missing(section, "integration metrics", where("metrics")))
    elif {"metric", "embedding", "value"} <= set(metrics.columns):
        wide = metrics.pivot_table(index="metric", columns="embedding", values="value", aggfunc="first").reset_index()
        wide.columns.name = None
        items.append(table(section, "metrics", "Integration metrics", wide, row_id="metric",
                           description="Batch mixing (batch_entropy, batch_asw: 1 = mixed) and label conservation of X_scVI "
                                       "against an unintegrated PCA (integrate/metrics.csv)."))
    cluster_metrics = inputs.get("cluster_metrics")
    if cluster_metrics is not None and {"metric", "value"} <= set(cluster_metrics.columns):
        items.append(table(section, "clusters", "Clustering", cluster_metrics, row_id="metric",
                           description="Leiden clusters on the scVI graph (cluster/cluster_metrics.csv)."))
    if inputs.umap_png is not None:
        items.append(Item(section, "umap", "UMAP by batch and cluster", "html", png_html(inputs.umap_png, alt="UMAP"),
                          "UMAP of the scVI latent space (an image: too many points for an interactive plot)."))
    return items


def _training_curves(section: str, history: pd.DataFrame) -> Item:
    """ELBO/loss and KL curves; one line per column and, with model replicates (a ``model`` column), per model."""
    models = [(f"model {m}: ", part) for m, part in history.groupby("model", sort=True)] if "model" in history.columns \
        else [("", history)]
    series = [c for c in history.columns if c not in ("epoch", "model") and pd.api.types.is_numeric_dtype(history[c])]
    main = [c for c in series if "kl" not in c.lower()]
    kl = [c for c in series if "kl" in c.lower()]
    datasets = []
    for cols in (main, kl):
        if cols:
            datasets.append({f"{prefix}{c}": {int(e): float(v) for e, v in zip(_epochs(part), part[c], strict=True) if pd.notna(v)}
                             for prefix, part in models for c in cols})
    labels = [{"name": n, "ylab": n} for n, cols in (("ELBO / loss", main), ("KL divergence", kl)) if cols]
    where_ = "integrate/history.csv" + (" and integrate/replicate<k>/history.csv" if len(models) > 1 else "")
    return Item(section, "history", "Training curves", "linegraph", datasets, f"scVI training and validation curves per epoch ({where_}).",
                {"pconfig": {"xlab": "epoch", "ylab": labels[0]["ylab"] if labels else "", "data_labels": labels}})


def _epochs(history: pd.DataFrame) -> pd.Series:
    return history["epoch"] if "epoch" in history.columns else pd.Series(range(len(history)), index=history.index)


def layer_genes_note(layer_genes: pd.DataFrame | None) -> str:
    """Which genes the normalized layers hold, in words, from ``layer_genes.csv`` (``gene, n_top_tables, requested``)."""
    if layer_genes is None or not {"gene", "n_top_tables", "requested"} <= set(layer_genes.columns):
        return f"{where('layer_genes')} not available: which genes the layers hold is not known."
    top = layer_genes["n_top_tables"] > 0
    requested = layer_genes["requested"].astype(str).str.lower().eq("true")
    counts = f"{int(top.sum())} among the top genes of at least one DE table, {int(requested.sum())} requested with --genes"
    if not (top | requested).all():
        return f"The layers hold every modelled gene ({len(layer_genes)}, --all-genes): {counts}; see {where('layer_genes')}."
    return (f"The layers hold {len(layer_genes)} genes, the union of {counts} (see {where('layer_genes')}); "
            f"{where('means')} covers every gene.")


def normalized_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_normalized"
    items: list[Item] = []
    layers = inputs.normalized_layers
    if layers is None:
        items.append(missing(section, "normalized export", where("normalized"), "Run `desweep normalize`."))
    elif len(layers):
        items.append(table(section, "layers", "Normalized layers", layers, row_id="layer",
                           description="Layers of normalized.h5ad (prefix scvi_norm__<choice>). "
                           + layer_genes_note(inputs.get("layer_genes"))))
    means = inputs.get("means")
    if means is not None and {"gene", "cluster", "batch", "choice", "mean"} <= set(means.columns):
        summary = means.groupby("choice", sort=False).agg(
            genes=("gene", "nunique"), clusters=("cluster", "nunique"), batches=("batch", "nunique"),
            cluster_batch_cells=("mean", "size"), median_mean=("mean", "median")).reset_index()
        items.append(table(section, "means", "Cluster x batch means per choice", summary, row_id="choice",
                           description="cluster_batch_means.csv: mean normalized expression per gene, cluster, batch and choice."))
    elif layers is not None:
        items.append(missing(section, "cluster x batch means", where("means")))
    return items


def baselines_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_baselines"
    scores = inputs.get("baseline_scores")
    if scores is None:
        return [missing(section, "baselines", where("baseline_scores"), "Run `desweep baselines`.")]
    rec = inputs.get("recommendations")
    if rec is not None and "share_cluster_specific" in rec.columns:
        scores = scores.merge(rec[["comparison_id", "share_cluster_specific"]].rename(
            columns={"share_cluster_specific": "recommended_scvi_share_cluster_specific"}), on="comparison_id", how="left")
    first = [c for c in ("comparison_id", "method", "status", "share_cluster_specific", "share_batch_wide", "share_other",
                         "recommended_scvi_share_cluster_specific", "n_top") if c in scores.columns]
    items = [table(section, "scores", "Baseline top-gene patterns", scores, row_id="combination_id",
                   columns=[*first, *[c for c in scores.columns if c not in first]],
                   description="Wilcoxon (cells) and pseudobulk DESeq2 (~ batch + group) per comparison, their top genes classified "
                               "like the scVI settings; status/note say when a design is confounded or not estimable, "
                               "instead of giving numbers. recommended_scvi_share_cluster_specific: the recommended scVI setting.")]
    pseudobulk = inputs.get("pseudobulk")
    if pseudobulk is not None and "status" in pseudobulk.columns:
        columns = [c for c in ("comparison_id", "status", "note", "unit", "n_units", "design_formula") if c in pseudobulk.columns]
        items.append(table(section, "pseudobulk", "Pseudobulk designs", pseudobulk.drop_duplicates("comparison_id")[columns],
                           row_id="comparison_id", description="Which pseudobulk designs were estimable."))
    return items


def provenance_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_provenance"
    items: list[Item] = []
    for data, key, title, columns in ((inputs.params, "params", "Parameters", ["parameter", "value"]),
                                      (inputs.versions, "versions", "Software versions", ["software", "version"])):
        if data is None:
            items.append(missing(section, title.lower(), where(key)))
        else:
            items.append(table(section, key, title, pd.DataFrame(_flatten(data), columns=columns), row_id=columns[0]))
    return items


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(data, dict):
        out: list[tuple[str, str]] = []
        for k, v in data.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out or [(prefix, "{}")]
    if isinstance(data, list):
        return [(prefix, ", ".join(map(str, data)))]
    return [(prefix, "" if data is None else str(data))]

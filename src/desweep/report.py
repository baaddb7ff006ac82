"""One self-contained MultiQC report of a desweep run, through MultiQC custom content.

:func:`custom_content` reads ``OUTDIR`` and turns each result into MultiQC
custom-content documents (``*_mqc.yaml``); :func:`build_report` writes them to
``OUTDIR/multiqc/custom_content/`` and runs MultiQC on that folder (offline:
no version check, no AI summary), giving ``OUTDIR/multiqc/multiqc_report.html``.

Every top-level section is a custom-content *module* whose anchor is a stable id
(:data:`SECTIONS`); its parts are sub-sections with ids ``<section>_<part>``.
An input that is missing gives a short "not available" note in its section
instead of an error. MultiQC's interactive tables, bar graphs, line graphs,
heatmaps and scatter plots are used throughout; only the UMAP is an image.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desweep import keys

logger = logging.getLogger(__name__)

#: (section id, title, description) in report order; the ids are stable anchors of the HTML report
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("desweep_input", "Input summary", "What `desweep validate` found in the input (validate/validation.json)."),
    ("desweep_integration", "Integration QC", "scVI training curves and integration metrics (integrate/, cluster/)."),
    ("desweep_composition", "Composition", "Cells per cluster and batch, batch-specific clusters and the design class of each comparison (composition/)."),
    ("desweep_sweep", "Sweep overview", "One row per DE setting (combination) of the sweep (de/summary.csv)."),
    ("desweep_scores", "Setting scores and recommendations",
     "How many of each setting's top genes are cluster-specific, batch-wide or other, and the recommended setting(s) per comparison (diagnostics/)."),
    ("desweep_concordance", "Concordance", "Top-N Jaccard index and Spearman correlation of log fold changes between the settings of a comparison."),
    ("desweep_top_genes", "Top-gene plots", "The recommended setting's top genes across every cluster x batch, and its volcano plot."),
    ("desweep_normalized", "Normalized export", "scVI normalized expression layers and cluster x batch means (normalized/)."),
    ("desweep_baselines", "Baselines", "Wilcoxon and pseudobulk DESeq2 baselines, classified like the scVI settings (baselines/)."),
    ("desweep_provenance", "Parameters and software versions", "Resolved parameters and installed versions (pipeline_info/)."),
)
SECTION_IDS: tuple[str, ...] = tuple(s[0] for s in SECTIONS)

#: the MultiQC configuration shipped with desweep (also ``assets/multiqc_config.yml``)
DEFAULT_CONFIG: dict[str, Any] = {
    "title": "desweep report",
    "subtitle": "Which genes really differ between batch-specific clusters: scVI DE settings, diagnostics and baselines",
    "intro_text": ("Each comparison's DE settings are ranked by how many of their top genes are cluster-specific "
                   "(high in one group against the other clusters of its own batch) rather than batch-wide "
                   "(the same shift between the batches in clusters both batches share). "
                   "Tables are sortable; plots are interactive."),
    "no_version_check": True,
    "no_ai": True,
    "show_analysis_paths": False,
    "show_analysis_time": False,
    "skip_generalstats": True,
    "skip_versions_section": True,
    "disable_version_detection": True,
    "run_modules": ["custom_content"],
    "custom_content": {"order": list(SECTION_IDS)},
    "max_table_rows": 20000,
    "collapse_tables": False,
    "plots_force_interactive": True,
    "plots_defer_loading_numseries": 20000,
    "num_datasets_plot_limit": 20000,
    "make_data_dir": True,
    "data_format": "tsv",
    "fn_clean_sample_names": False,
}

PATTERN_COLOURS = {"cluster_specific": "#1b9e77", "batch_wide": "#d95f02", "other": "#7570b3"}


@dataclass
class Item:
    """One custom-content document (written as ``<order>_<id>_mqc.yaml``)."""

    section: str
    part: str
    name: str
    plot_type: str
    data: Any
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.section}_{self.part}"

    def document(self) -> dict[str, Any]:
        _, title, description = next(s for s in SECTIONS if s[0] == self.section)
        doc: dict[str, Any] = {
            "id": self.id, "parent_id": self.section, "parent_name": title, "parent_description": description,
            "section_name": self.name, "description": self.description, "plot_type": self.plot_type, "data": self.data,
        }
        pconfig = {"id": f"{self.id}_plot", "title": f"desweep: {self.name}"}
        pconfig.update(self.extra.pop("pconfig", {}))
        doc["pconfig"] = pconfig
        doc.update(self.extra)
        return doc


# --------------------------------------------------------------------------- readers
def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        return pd.read_csv(path)
    except Exception as err:  # a broken optional input must not break the report
        logger.warning("cannot read %s: %s", path, err)
        return None


def _read_yaml(path: Path) -> Any:
    import yaml

    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except Exception as err:
        logger.warning("cannot read %s: %s", path, err)
        return None


def _value(v: Any) -> Any:
    """A YAML-safe scalar (no numpy types, no NaN)."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    return str(v)


def _missing(section: str, what: str, path: Path | str, hint: str = "") -> Item:
    text = f"<p><em>Not available:</em> {html.escape(what)} (<code>{html.escape(str(path))}</code>) was not found."
    if hint:
        text += f" {html.escape(hint)}"
    return Item(section, "missing_" + "".join(ch if ch.isalnum() else "_" for ch in what.lower()), f"{what}: not available", "html", text + "</p>")


def _table(section: str, part: str, name: str, df: pd.DataFrame, *, row_id: str | list[str], description: str = "",
           columns: list[str] | None = None, formats: dict[str, str] | None = None) -> Item:
    """A sortable MultiQC table; ``row_id`` column(s) name the rows (joined by `` | ``)."""
    ids = [row_id] if isinstance(row_id, str) else row_id
    columns = [c for c in (columns or list(df.columns)) if c not in ids and c in df.columns]
    data: dict[str, dict[str, Any]] = {}
    for _, row in df.iterrows():
        rid = " | ".join(str(row[c]) for c in ids)
        base, k = rid, 2
        while rid in data:
            rid, k = f"{base} ({k})", k + 1
        data[rid] = {c: v for c in columns if (v := _value(row[c])) is not None}
    headers: dict[str, dict[str, Any]] = {}
    for c in columns:
        numeric = pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        header: dict[str, Any] = {"title": c, "namespace": ""}
        if numeric:
            header["format"] = (formats or {}).get(c, "{:,.3g}")
            if c.startswith("share_"):
                header.update({"min": 0, "max": 1, "scale": "RdYlGn" if "cluster_specific" in c else "Oranges"})
            else:
                header["scale"] = False
        else:
            header["scale"] = False
        headers[c] = header
    extra = {"headers": headers, "pconfig": {"col1_header": " | ".join(ids), "no_violin": True, "sort_rows": False}}
    return Item(section, part, name, "table", data, description, extra)


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="table table-condensed", na_rep="", escape=True)


def _png(path: Path, *, alt: str, width: str = "100%") -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}" style="max-width:{width};">'


# --------------------------------------------------------------------------- sections
def _input_section(results: Path) -> list[Item]:
    section = "desweep_input"
    path = results / keys.STEP_VALIDATE / keys.VALIDATION_REPORT
    if not path.is_file():
        return [_missing(section, "validation report", path)]
    try:
        report = json.loads(path.read_text())
    except ValueError:
        return [_missing(section, "readable validation report", path)]
    rows = [{"field": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else str(v)}
            for k, v in report.items() if k not in ("cells_per_batch", "notes")]
    items = [_table(section, "summary", "Validation summary", pd.DataFrame(rows), row_id="field")]
    per_batch = report.get("cells_per_batch") or {}
    if per_batch:
        items.append(Item(section, "cells_per_batch", "Cells per batch", "bargraph",
                          {str(b): {"cells": int(n)} for b, n in per_batch.items()}, "Cells in each batch after validation.",
                          {"pconfig": {"ylab": "cells", "cpswitch": False}}))
    notes = report.get("notes") or []
    if notes:
        items.append(Item(section, "notes", "Validation notes", "html",
                          "<ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>"))
    return items


def _integration_section(results: Path) -> list[Item]:
    section = "desweep_integration"
    items: list[Item] = []
    history = _read_csv(results / keys.STEP_INTEGRATE / keys.HISTORY_CSV)
    if history is None:
        items.append(_missing(section, "training history", results / keys.STEP_INTEGRATE / keys.HISTORY_CSV))
    else:
        epoch = history["epoch"] if "epoch" in history.columns else pd.Series(range(len(history)))
        series = [c for c in history.columns if c != "epoch" and pd.api.types.is_numeric_dtype(history[c])]
        main = [c for c in series if "kl" not in c.lower()]
        kl = [c for c in series if "kl" in c.lower()]
        datasets = [
            {c: {int(e): float(v) for e, v in zip(epoch, history[c], strict=True) if pd.notna(v)} for c in cols}
            for cols in (main, kl) if cols
        ]
        labels = [{"name": n, "ylab": n} for n, cols in (("ELBO / loss", main), ("KL divergence", kl)) if cols]
        items.append(Item(section, "history", "Training curves", "linegraph", datasets,
                          "scVI training and validation curves per epoch (integrate/history.csv).",
                          {"pconfig": {"xlab": "epoch", "ylab": labels[0]["ylab"] if labels else "", "data_labels": labels}}))
    metrics = _read_csv(results / keys.STEP_INTEGRATE / keys.METRICS_CSV)
    if metrics is None:
        items.append(_missing(section, "integration metrics", results / keys.STEP_INTEGRATE / keys.METRICS_CSV))
    elif {"metric", "embedding", "value"} <= set(metrics.columns):
        wide = metrics.pivot_table(index="metric", columns="embedding", values="value", aggfunc="first").reset_index()
        wide.columns.name = None
        items.append(_table(section, "metrics", "Integration metrics", wide, row_id="metric",
                            description="Batch mixing (batch_entropy, batch_asw: 1 = mixed) and label conservation of X_scVI "
                                        "against an unintegrated PCA (integrate/metrics.csv)."))
    cluster_metrics = _read_csv(results / keys.STEP_CLUSTER / keys.CLUSTER_METRICS_CSV)
    if cluster_metrics is not None and {"metric", "value"} <= set(cluster_metrics.columns):
        items.append(_table(section, "clusters", "Clustering", cluster_metrics, row_id="metric",
                            description="Leiden clusters on the scVI graph (cluster/cluster_metrics.csv)."))
    umap = results / keys.STEP_DIAGNOSE / keys.PLOTS_DIR / keys.PLOT_UMAP
    if umap.is_file():
        items.append(Item(section, "umap", "UMAP by batch and cluster", "html", _png(umap, alt="UMAP"),
                          "UMAP of the scVI latent space (an image: too many points for an interactive plot)."))
    return items


def _composition_section(results: Path) -> list[Item]:
    section = "desweep_composition"
    folder = results / keys.STEP_COMPOSITION
    items: list[Item] = []
    counts = _read_csv(folder / keys.CLUSTER_BATCH_COUNTS_CSV)
    if counts is None:
        items.append(_missing(section, "cluster x batch counts", folder / keys.CLUSTER_BATCH_COUNTS_CSV))
    else:
        counts = counts.set_index(counts.columns[0])
        data = {str(c): {str(b): int(v) for b, v in row.items()} for c, row in counts.iterrows()}
        items.append(Item(section, "counts", "Cells per cluster and batch", "bargraph", data,
                          "Each bar is a cluster, split by batch; switch to percentages to see batch-specific clusters.",
                          {"pconfig": {"ylab": "cells", "cpswitch_counts_label": "cells"}}))
    status = _read_csv(folder / keys.CLUSTER_STATUS_CSV)
    if status is not None:
        items.append(_table(section, "clusters", "Cluster status", status, row_id=status.columns[0],
                            description="shared / partial / specific: the batches each cluster is present in (composition/clusters.csv)."))
    comparisons = _read_csv(folder / keys.COMPARISONS_CSV)
    if comparisons is None:
        items.append(_missing(section, "comparisons", folder / keys.COMPARISONS_CSV))
    else:
        items.append(_table(section, "comparisons", "Comparisons and their design", comparisons, row_id="comparison_id",
                            description="confounded: the groups share no batch; one_specific: one group exists in one batch only."))
    return items


def _sweep_section(results: Path) -> list[Item]:
    section = "desweep_sweep"
    folder = results / keys.STEP_DE
    summary = _read_csv(folder / keys.DE_SUMMARY_CSV)
    items: list[Item] = []
    if summary is not None and "combination_id" in summary.columns:
        items.append(_table(section, "summary", "DE settings", summary, row_id="combination_id",
                            description="One row per combination of the sweep (de/summary.csv); click a header to sort."))
    else:
        plan = _read_csv(folder / keys.PLAN_CSV)
        if plan is not None and "combination_id" in plan.columns:
            items.append(_table(section, "plan", "Planned DE settings", plan, row_id="combination_id",
                                description="de/summary.csv is missing: the planned settings (de/plan.csv)."))
        items.append(_missing(section, "DE summary", folder / keys.DE_SUMMARY_CSV, "Run `desweep de`."))
    skipped = _read_csv(folder / keys.PLAN_SKIPPED_CSV)
    if skipped is not None and len(skipped):
        items.append(Item(section, "skipped", "Settings skipped by the plan", "html", _html_table(skipped)))
    return items


def _scores_section(results: Path) -> list[Item]:
    section = "desweep_scores"
    folder = results / keys.STEP_DIAGNOSE
    items: list[Item] = []
    rec = _read_csv(folder / keys.RECOMMENDATIONS_CSV)
    if rec is None:
        items.append(_missing(section, "recommendations", folder / keys.RECOMMENDATIONS_CSV, "Run `desweep diagnose`."))
    else:
        items.append(_table(section, "recommendations", "Recommended settings", rec, row_id="comparison_id",
                            description="Per comparison: the setting whose top genes are most often cluster-specific, and why."))
    scores = _read_csv(folder / keys.SETTING_SCORES_CSV)
    if scores is None:
        items.append(_missing(section, "setting scores", folder / keys.SETTING_SCORES_CSV))
        return items
    thresholds = _read_csv(folder / keys.DIAGNOSE_THRESHOLDS_CSV)
    rule = ""
    if thresholds is not None and len(thresholds):
        t = thresholds.iloc[0]
        rule = (f" Rule: cluster-specific when the raw group difference clears the noise floor and at least "
                f"{t.get('explained_fraction', 0.5):g} of it is within-batch specificity but not batch shift; "
                f"top {int(t.get('top_n', 50))} genes per setting (docs/diagnostics.md).")
    items.append(_table(section, "table", "Setting scores", scores, row_id="combination_id",
                        description="Share of each setting's top genes per pattern; rank_in_comparison 1 = best." + rule))
    ok = scores[scores.get("status", pd.Series("ok", index=scores.index)) == "ok"]
    if len(ok):
        comparisons = list(dict.fromkeys(ok["comparison_id"].astype(str)))
        datasets = [{str(r["combination_id"]): {p: _value(r[f"share_{p}"]) or 0.0 for p in PATTERN_COLOURS}
                     for _, r in ok[ok["comparison_id"].astype(str) == c].sort_values("rank_in_comparison").iterrows()}
                    for c in comparisons]
        items.append(Item(section, "shares", "Top-gene patterns per setting", "bargraph", datasets,
                          "Share of each setting's top genes that are cluster-specific, batch-wide or other (one tab per comparison).",
                          {"categories": {p: {"name": p, "color": c} for p, c in PATTERN_COLOURS.items()},
                           "pconfig": {"ylab": "share of top genes", "cpswitch": False, "ymax": 1,
                                       "data_labels": [{"name": c, "ylab": "share of top genes"} for c in comparisons]}}))
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
        colour = {c: palette[i % len(palette)] for i, c in enumerate(comparisons)}
        scatter = {str(r["combination_id"]): {"x": _value(r["share_batch_wide"]) or 0.0, "y": _value(r["share_cluster_specific"]) or 0.0,
                                              "color": colour[str(r["comparison_id"])]} for _, r in ok.iterrows()}
        items.append(Item(section, "scatter", "Cluster-specific against batch-wide share", "scatter", scatter,
                          "Each point is a setting, coloured by comparison; good settings sit top left.",
                          {"pconfig": {"xlab": "share batch-wide", "ylab": "share cluster-specific", "xmin": 0, "xmax": 1, "ymin": 0, "ymax": 1}}))
    return items


def _concordance_section(results: Path) -> list[Item]:
    section = "desweep_concordance"
    path = results / keys.STEP_DIAGNOSE / keys.CONCORDANCE_CSV
    conc = _read_csv(path)
    if conc is None or conc.empty:
        return [_missing(section, "concordance", path, "Needs at least two settings per comparison (`desweep diagnose`).")]
    items: list[Item] = []
    for i, (comparison_id, part) in enumerate(conc.groupby("comparison_id", sort=False)):
        ids = list(dict.fromkeys(list(part["combination_id_1"].astype(str)) + list(part["combination_id_2"].astype(str))))
        index = {c: k for k, c in enumerate(ids)}
        labels = [_short(c, str(comparison_id)) for c in ids]
        matrix = np.eye(len(ids))
        for _, row in part.iterrows():
            a, b = index[str(row["combination_id_1"])], index[str(row["combination_id_2"])]
            upper = _value(row["jaccard_top"])
            lower = _value(row["spearman_lfc"])
            matrix[a, b] = matrix[b, a] = np.nan
            matrix[min(a, b), max(a, b)] = upper if upper is not None else np.nan
            matrix[max(a, b), min(a, b)] = lower if lower is not None else np.nan
        data = [[None if not np.isfinite(v) else round(float(v), 4) for v in row] for row in matrix]
        items.append(Item(section, f"heatmap_{i:02d}", f"{comparison_id}", "heatmap", data,
                          "Upper triangle: top-N Jaccard index; lower triangle: Spearman correlation of the log fold changes over all genes.",
                          {"xcats": labels, "ycats": labels,
                           "pconfig": {"min": -1, "max": 1, "square": False, "xcats_samples": False, "ycats_samples": False,
                                       "title": f"desweep: concordance, {comparison_id}"}}))
    items.append(_table(section, "pairs", "All pairs", conc, row_id=["combination_id_1", "combination_id_2"],
                        description="Every pair of settings of a comparison (diagnostics/concordance.csv)."))
    return items


def _short(combination_id: str, comparison_id: str) -> str:
    """A combination id without its comparison prefix (axis labels within one comparison)."""
    prefix = f"{comparison_id}__"
    return combination_id[len(prefix):] if combination_id.startswith(prefix) and len(combination_id) > len(prefix) else combination_id


def _top_genes_section(results: Path) -> list[Item]:
    section = "desweep_top_genes"
    folder = results / keys.STEP_DIAGNOSE
    rec = _read_csv(folder / keys.RECOMMENDATIONS_CSV)
    expression = _read_csv(folder / keys.TOP_GENE_EXPRESSION_CSV)
    patterns = _read_csv(folder / keys.GENE_PATTERNS_CSV)
    if rec is None or expression is None or patterns is None:
        return [_missing(section, "diagnostics", folder, "Run `desweep diagnose`.")]
    items: list[Item] = []
    for i, (_, row) in enumerate(rec.iterrows()):
        cid = row.get("best_combination_id")
        if not isinstance(cid, str) or not cid:
            continue
        part = expression[expression["combination_id"] == cid]
        if len(part):
            genes = list(dict.fromkeys(part.sort_values("rank", kind="stable")["gene"].astype(str)))
            pattern_of = part.drop_duplicates("gene").set_index(part.drop_duplicates("gene")["gene"].astype(str))["pattern"]
            cols = list(dict.fromkeys(f"{c} | {b}" for c, b in zip(part["cluster"].astype(str), part["batch"].astype(str), strict=True)))
            cols = sorted(cols)
            wide = part.assign(col=part["cluster"].astype(str) + " | " + part["batch"].astype(str), gene=part["gene"].astype(str)) \
                .pivot_table(index="gene", columns="col", values="z", aggfunc="mean").reindex(index=genes, columns=cols)
            data = [[None if not np.isfinite(v) else round(float(v), 3) for v in r] for r in wide.to_numpy(dtype=float)]
            ycats = [f"{g} ({pattern_of.get(g, '')})" for g in genes]
            items.append(Item(section, f"heatmap_{i:02d}", f"{row['comparison_id']}: top genes of {_short(cid, str(row['comparison_id']))}",
                              "heatmap", data,
                              f"Recommended setting {html.escape(cid)}: its top genes (rows, best first, pattern in brackets) "
                              "as z-scores of log2 mean expression in every cluster | batch.",
                              {"xcats": cols, "ycats": ycats,
                               "pconfig": {"min": -2.5, "max": 2.5, "xcats_samples": False, "ycats_samples": False,
                                           "colstops": [[0, "#2166ac"], [0.5, "#f7f7f7"], [1, "#b2182b"]],
                                           "title": f"desweep: top genes, {cid}"}}))
        table = _read_csv(results / keys.STEP_DE / keys.DE_TABLES_DIR / f"{cid}.csv")
        if table is not None:
            items.append(_volcano(section, f"volcano_{i:02d}", str(row["comparison_id"]), cid, table,
                                  patterns[patterns["combination_id"] == cid]))
    if not items:
        items.append(_missing(section, "recommended settings", folder / keys.RECOMMENDATIONS_CSV))
    plots = folder / keys.PLOTS_DIR
    if plots.is_dir():
        items.append(Item(section, "files", "Plots of every setting", "html",
                          f"<p>PNG plots of every setting (top-gene heatmaps, volcano plots, concordance, setting scores) are in "
                          f"<code>{html.escape(str(plots))}</code>.</p>"))
    return items


def _volcano(section: str, part: str, comparison_id: str, cid: str, table: pd.DataFrame, patterns: pd.DataFrame) -> Item:
    lfc = next((c for c in ("lfc_mean", "lfc", "logfoldchanges", "log2FoldChange") if c in table.columns), None)
    if "proba_de" in table.columns:
        y, ylab = pd.to_numeric(table["proba_de"], errors="coerce"), "proba_de"
    elif "bayes_factor" in table.columns:
        y, ylab = pd.to_numeric(table["bayes_factor"], errors="coerce"), "Bayes factor (ln)"
    else:
        y, ylab = pd.Series(np.zeros(len(table))), ""
    x = pd.to_numeric(table[lfc], errors="coerce") if lfc else pd.Series(np.zeros(len(table)))
    pattern_of = patterns.set_index(patterns["gene"].astype(str))["pattern"] if len(patterns) else pd.Series(dtype=str)
    points = {}
    for gene, xv, yv in zip(table["gene"].astype(str), x, y, strict=True):
        if not (np.isfinite(xv) and np.isfinite(yv)):
            continue
        pattern = pattern_of.get(gene)
        points[gene] = {"x": round(float(xv), 4), "y": round(float(yv), 4),
                        "color": PATTERN_COLOURS.get(pattern, "#c8c8c8") if pattern else "#c8c8c8"}
    return Item(section, part, f"{comparison_id}: volcano of {_short(cid, comparison_id)}", "scatter", points,
                "Every gene of the recommended setting's DE table; its top genes coloured by pattern "
                "(green cluster-specific, orange batch-wide, purple other; grey: not in the top N).",
                {"pconfig": {"xlab": f"{lfc or 'lfc'} (group1 vs group2)", "ylab": ylab, "marker_size": 4}})


def _normalized_section(results: Path) -> list[Item]:
    section = "desweep_normalized"
    folder = results / keys.STEP_NORMALIZE
    items: list[Item] = []
    h5ad = folder / keys.NORMALIZED_H5AD
    if h5ad.is_file():
        rows = _layers(h5ad)
        if rows:
            items.append(_table(section, "layers", "Normalized layers", pd.DataFrame(rows), row_id="layer",
                                description=f"Layers of {keys.NORMALIZED_H5AD} (prefix {keys.NORM_LAYER_PREFIX}<choice>). "
                                + layer_genes_note(_read_csv(folder / keys.LAYER_GENES_CSV))))
    else:
        items.append(_missing(section, "normalized export", h5ad, "Run `desweep normalize`."))
    means = _read_csv(folder / keys.CLUSTER_BATCH_MEANS_CSV)
    if means is not None and {"gene", "cluster", "batch", "choice", "mean"} <= set(means.columns):
        summary = means.groupby("choice", sort=False).agg(
            genes=("gene", "nunique"), clusters=("cluster", "nunique"), batches=("batch", "nunique"),
            cluster_batch_cells=("mean", "size"), median_mean=("mean", "median")).reset_index()
        items.append(_table(section, "means", "Cluster x batch means per choice", summary, row_id="choice",
                            description=f"{keys.CLUSTER_BATCH_MEANS_CSV}: mean normalized expression per gene, cluster, batch and choice."))
    elif h5ad.is_file():
        items.append(_missing(section, "cluster x batch means", folder / keys.CLUSTER_BATCH_MEANS_CSV))
    return items


def layer_genes_note(layer_genes: pd.DataFrame | None) -> str:
    """Which genes the normalized layers hold, in words, from ``layer_genes.csv`` (``gene, n_top_tables, requested``)."""
    if layer_genes is None or not {"gene", "n_top_tables", "requested"} <= set(layer_genes.columns):
        return f"{keys.LAYER_GENES_CSV} not available: which genes the layers hold is not known."
    top = layer_genes["n_top_tables"] > 0
    requested = layer_genes["requested"].astype(str).str.lower().eq("true")
    counts = f"{int(top.sum())} among the top genes of at least one DE table, {int(requested.sum())} requested with --genes"
    if not (top | requested).all():
        return f"The layers hold every modelled gene ({len(layer_genes)}, --all-genes): {counts}; see {keys.LAYER_GENES_CSV}."
    return (f"The layers hold {len(layer_genes)} genes, the union of {counts} (see {keys.LAYER_GENES_CSV}); "
            f"{keys.CLUSTER_BATCH_MEANS_CSV} covers every gene.")


def _layers(path: Path) -> list[dict[str, Any]]:
    import h5py

    rows = []
    try:
        with h5py.File(path, "r") as f:
            n_obs = _h5_len(f.get("obs"))
            n_vars = _h5_len(f.get("var"))
            for name in sorted(f.get("layers", {}).keys()):
                node = f["layers"][name]
                shape = tuple(node.attrs.get("shape", ())) if isinstance(node, h5py.Group) else node.shape
                rows.append({"layer": name, "choice": name.removeprefix(keys.NORM_LAYER_PREFIX),
                             "cells": int(shape[0]) if shape else n_obs, "genes": int(shape[1]) if len(shape) > 1 else n_vars,
                             "storage": "sparse" if isinstance(node, h5py.Group) else str(node.dtype)})
    except OSError as err:
        logger.warning("cannot read %s: %s", path, err)
    return rows


def _h5_len(group: Any) -> int:
    if group is None:
        return 0
    index = group.attrs.get("_index", "_index")
    index = index.decode() if isinstance(index, bytes) else index
    return int(group[index].shape[0]) if index in group else 0


def _baselines_section(results: Path) -> list[Item]:
    section = "desweep_baselines"
    folder = results / keys.STEP_BASELINES
    scores = _read_csv(folder / keys.BASELINE_SCORES_CSV)
    if scores is None:
        return [_missing(section, "baselines", folder / keys.BASELINE_SCORES_CSV, "Run `desweep baselines`.")]
    best = _read_csv(results / keys.STEP_DIAGNOSE / keys.RECOMMENDATIONS_CSV)
    if best is not None and "share_cluster_specific" in best.columns:
        scores = scores.merge(best[["comparison_id", "share_cluster_specific"]].rename(
            columns={"share_cluster_specific": "best_scvi_share_cluster_specific"}), on="comparison_id", how="left")
    first = [c for c in ("comparison_id", "method", "status", "share_cluster_specific", "share_batch_wide", "share_other",
                         "best_scvi_share_cluster_specific", "n_top") if c in scores.columns]
    scores = scores[["combination_id", *first, *[c for c in scores.columns if c not in first and c != "combination_id"]]]
    items = [_table(section, "scores", "Baseline top-gene patterns", scores, row_id="combination_id",
                    description="Wilcoxon (cells) and pseudobulk DESeq2 (~ batch + group) per comparison, their top genes classified "
                                "like the scVI settings; status/note say when a design is confounded or not estimable, "
                                "instead of giving numbers. best_scvi_share_cluster_specific: the recommended scVI setting.")]
    pseudobulk = _read_csv(folder / keys.PSEUDOBULK_CSV)
    if pseudobulk is not None and "status" in pseudobulk.columns:
        status = pseudobulk.drop_duplicates("comparison_id")[["comparison_id", "status", "note", "unit", "n_units", "design_formula"]]
        items.append(_table(section, "pseudobulk", "Pseudobulk designs", status, row_id="comparison_id",
                            description="Which pseudobulk designs were estimable."))
    return items


def _provenance_section(results: Path) -> list[Item]:
    section = "desweep_provenance"
    folder = results / keys.PIPELINE_INFO
    items: list[Item] = []
    params = _read_yaml(folder / keys.PARAMS_YAML)
    if isinstance(params, dict):
        rows = [{"parameter": k, "value": v} for k, v in _flatten(params)]
        items.append(_table(section, "params", "Parameters", pd.DataFrame(rows, columns=["parameter", "value"]), row_id="parameter"))
    else:
        items.append(_missing(section, "parameters", folder / keys.PARAMS_YAML))
    versions = _read_yaml(folder / keys.SOFTWARE_VERSIONS_YML)
    if isinstance(versions, dict):
        rows = [{"software": k, "version": v} for k, v in _flatten(versions)]
        items.append(_table(section, "versions", "Software versions", pd.DataFrame(rows, columns=["software", "version"]), row_id="software"))
    else:
        items.append(_missing(section, "software versions", folder / keys.SOFTWARE_VERSIONS_YML))
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


BUILDERS = {
    "desweep_input": _input_section, "desweep_integration": _integration_section, "desweep_composition": _composition_section,
    "desweep_sweep": _sweep_section, "desweep_scores": _scores_section, "desweep_concordance": _concordance_section,
    "desweep_top_genes": _top_genes_section, "desweep_normalized": _normalized_section, "desweep_baselines": _baselines_section,
    "desweep_provenance": _provenance_section,
}


def custom_content(results_dir: str | Path) -> list[Item]:
    """Every custom-content item of the report, section by section (no files written).

    A section that fails to build (an unexpected input) becomes a note, so one
    bad file never costs the whole report.
    """
    results = Path(results_dir)
    items: list[Item] = []
    for section in SECTION_IDS:
        try:
            built = BUILDERS[section](results)
        except Exception as err:  # noqa: BLE001 - report what broke, keep the rest
            logger.warning("section %s: %s", section, err)
            built = [Item(section, "error", "Section could not be built", "html",
                          f"<p><em>Not available:</em> {html.escape(type(err).__name__)}: {html.escape(str(err))}</p>")]
        items += built or [_missing(section, "inputs", results)]
    return items


def write_custom_content(items: list[Item], folder: str | Path) -> list[Path]:
    """Write ``items`` as ``NN_<id>_mqc.yaml`` files, plus the section-order config ``section_order.yml``."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, item in enumerate(items):
        path = folder / f"{i:03d}_{item.id}_mqc.yaml"
        path.write_text(yaml.safe_dump(item.document(), sort_keys=False, allow_unicode=True))
        paths.append(path)
    # within a module MultiQC puts sections in ascending order
    order = {"report_section_order": {item.id: {"order": 10 * (i + 1)} for i, item in enumerate(items)}}
    (folder / "section_order.yml").write_text(yaml.safe_dump(order, sort_keys=False))
    return paths


def write_config(path: str | Path, config: dict[str, Any] | None = None) -> Path:
    """Write the MultiQC config (default: :data:`DEFAULT_CONFIG`) as YAML."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(config or DEFAULT_CONFIG, sort_keys=False))
    return path


def build_report(results_dir: str | Path, outdir: str | Path, *, config: str | Path | None = None, title: str | None = None,
                 timeout: int = 600) -> Path:
    """Build ``<outdir>/multiqc_report.html`` from a desweep ``OUTDIR``.

    Parameters
    ----------
    results_dir
        The pipeline's OUTDIR (validate/, integrate/, ..., pipeline_info/).
    outdir
        Report folder (``OUTDIR/multiqc``): gets ``multiqc_report.html``,
        ``multiqc_data/`` and the ``custom_content/`` it was built from.
    config
        A MultiQC config file used instead of the shipped one
        (``assets/multiqc_config.yml`` = :data:`DEFAULT_CONFIG`).
    title
        Report title (default: the config's).

    Returns
    -------
    The report's path.
    """
    from desweep.errors import DesweepInputError

    results = Path(results_dir)
    if not results.is_dir():
        raise DesweepInputError(results, "--results", "folder does not exist")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    items = custom_content(results)
    content = outdir / keys.MULTIQC_CUSTOM_CONTENT_DIR
    if content.exists():
        shutil.rmtree(content)
    write_custom_content(items, content)
    work = Path(tempfile.mkdtemp(prefix=".multiqc.tmp-", dir=outdir))
    try:
        config_path = Path(config) if config else write_config(work / keys.MULTIQC_CONFIG)
        if not config_path.is_file():
            raise DesweepInputError(config_path, "--config", "does not exist")
        command = [sys.executable, "-m", "multiqc", str(content), "--outdir", str(work / "out"),
                   "--filename", keys.MULTIQC_REPORT, "--force", "--no-version-check", "--no-ai",
                   "--config", str(config_path), "--config", str(content / "section_order.yml")]
        if title:
            command += ["--title", title]
        env = dict(os.environ, MULTIQC_NO_VERSION_CHECK="1")
        logger.info("running MultiQC on %d custom-content items", len(items))
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        report = work / "out" / keys.MULTIQC_REPORT
        if proc.returncode != 0 or not report.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError("MultiQC failed: " + " | ".join(tail))
        data_dirs = [p for p in (work / "out").iterdir() if p.is_dir() and p.name.endswith("_data")]
        if data_dirs:
            target = outdir / "multiqc_data"
            if target.exists():
                shutil.rmtree(target)
            os.replace(data_dirs[0], target)
        os.replace(report, outdir / keys.MULTIQC_REPORT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("wrote %s", outdir / keys.MULTIQC_REPORT)
    return outdir / keys.MULTIQC_REPORT

"""The evidence behind the verdict: scVI's default against the recommended setting, setting scores,
concordance between settings and the sweep itself. Builders take :class:`ReportInputs`, read no files."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from desweep.io import is_true
from desweep.plots import short_setting_labels, top_genes_heatmap, volcano_points
from desweep.report.figures import score_scatter
from desweep.report.items import Item, count, figure_html, missing, note, percent, table, text, value
from desweep.report.load import ROLES, featured_combinations, where

if TYPE_CHECKING:
    from desweep.report.load import ReportInputs

SCORE_TITLES = {
    "rank_in_comparison": "rank", "share_cluster_specific_mean": "cluster-specific", "share_cluster_specific_sd": "\u00b1 SD",
    "share_batch_wide_mean": "batch-wide", "share_batch_wide_sd": "\u00b1 SD ", "share_other_mean": "other",
    "specificity_score_mean": "specificity score", "n_replicates": "runs", "n_top": "top N",
    "n_tied_top_max": "genes tied at the top", "top_n_cut_in_tie": "top N cut in a tie",
}
#: id columns of the sweep tables that the combination id already spells out
SWEEP_ID_COLUMNS = ("sampling_key", "setting_id", "comparison_id", "group1", "group2", "design")


def tie_at_cut(de_table: pd.DataFrame, n_top: int) -> tuple[set[str], int, float]:
    """Genes tied on ``proba_de`` with the ``n_top``-th gene when the tie crosses the cut.

    Returns ``(the tied genes inside the top N, genes tied in all, their proba_de)``;
    an empty set when the top N ends cleanly (the table's order then decides
    nothing that ``proba_de`` does not).
    """
    ranked = de_table.sort_values("rank", kind="stable") if "rank" in de_table.columns else de_table
    if "proba_de" not in ranked.columns or len(ranked) <= n_top or n_top < 1:
        return set(), 0, float("nan")
    proba = pd.to_numeric(ranked["proba_de"], errors="coerce").to_numpy(dtype=float)
    at_cut = proba[n_top - 1]
    tied = proba == at_cut
    if not tied[n_top:].any():
        return set(), 0, float(at_cut)
    return set(ranked["gene"].astype(str).to_numpy()[:n_top][tied[:n_top]]), int(tied.sum()), float(at_cut)


# --------------------------------------------------------------------------- default vs recommended
def top_genes_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_top_genes"
    rec, expression, by_replicate = inputs.get("recommendations"), inputs.get("top_gene_expression"), inputs.get("scores_by_replicate")
    if rec is None or expression is None or by_replicate is None:
        return [missing(section, "top-gene expression", where("top_gene_expression"), "Run `desweep diagnose`.")]
    scores = inputs.get("setting_scores")
    featured = featured_combinations(rec, by_replicate, scores)
    labels = dict(zip(scores["setting_id"].astype(str), short_setting_labels(scores), strict=True)) if scores is not None else {}
    items: list[Item] = []
    for i, row in enumerate(rec.to_dict("records")):
        comparison, name = str(row["comparison_id"]), inputs.comparison_name(row["comparison_id"])
        shown = {role: featured.get((comparison, role)) for role in ROLES}
        if not any(shown.values()):
            continue
        n_top = int(value(row.get("n_top")) or 0)
        groups = (str(row["group1"]), str(row["group2"]))
        panels, notes = [], []
        for role in ROLES:
            cid = shown[role]
            if cid is None or (role == "recommended" and cid == shown["default"]):
                continue
            part = expression[expression["combination_id"].astype(str) == cid]
            tied, n_tied, at = tie_at_cut(inputs.de_tables[cid], n_top) if cid in inputs.de_tables else (set(), 0, np.nan)
            title = _panel_title(role, row, n_top, labels.get(str(row.get(f"{role}_setting_id")), ""),
                                 None if scores is None else scores[scores["setting_id"].astype(str) == str(shown["bridge"])])
            if tied:
                notes.append(f"{_role_name(role)}: the top {n_top} is cut inside a tie: {n_tied:,} genes share proba_de = {at:.3g} "
                             f"and {len(tied)} of them made the top {n_top}, ordered by |lfc_mean| (marked \u2020).")
            if part.empty:
                panels.append(f"<div style='flex:1 1 420px'><p><b>{text(title)}</b>: no expression rows for <code>{text(cid)}</code>.</p></div>")
                continue
            fig = top_genes_heatmap(part, title=title, tied=tied, groups=groups)
            panels.append(f"<div style='flex:1 1 420px;min-width:0'>{figure_html(fig, alt=f'{role} top genes of {name}')}"
                          f"<div class='small text-muted'>run drawn: <code>{text(cid)}</code></div></div>")
        if shown["recommended"] and shown["recommended"] == shown["default"]:
            notes.append("scVI's default is the recommended setting here.")
        body = "<div style='display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start'>" + "".join(panels) + "</div>"
        body += "".join(f"<p class='small'>{text(n)}</p>" for n in notes)
        items.append(Item(section, f"heatmaps_{i:02d}", f"{name}: scVI's default, the recommended setting and the bridge contrast",
                          "html", body,
                          "Top genes (rows, best first; the strip gives each gene's pattern) as z-scores of log2 mean expression "
                          "in every cluster (columns) of every batch (blocks). A batch-wide gene lights up a whole batch; "
                          "a cluster-specific gene one column per batch. The compared groups are in bold."))
        cid = shown["recommended"]
        if cid and cid in inputs.de_tables:
            patterns = inputs.get("gene_patterns")
            part = patterns[patterns["combination_id"].astype(str) == cid] if patterns is not None else None
            items.append(_volcano(section, f"volcano_{i:02d}", name, cid, inputs.de_tables[cid], part))
    if inputs.plots_dir:
        items.append(Item(section, "files", "Plots of every setting", "html",
                          f"<p>PNG plots of every setting (top-gene heatmaps, volcano plots, concordance, setting scores) are in "
                          f"<code>OUTDIR/{text(inputs.plots_dir)}/</code>.</p>"))
    return items or [missing(section, "recommended settings", where("recommendations"), "Run `desweep diagnose`.")]


def _role_name(role: str) -> str:
    return {"default": "scVI's default", "bridge": "Bridge contrast"}.get(role, "Recommended")


def _panel_title(role: str, row: dict, n_top: int, label: str, bridge_scores: pd.DataFrame | None = None) -> str:
    if role == "bridge":
        score = bridge_scores.iloc[0] if bridge_scores is not None and len(bridge_scores) else {}
        return (f"Bridge contrast (desweep, no training):\n{percent(score.get('share_cluster_specific_mean'))} cluster-specific, "
                f"{percent(score.get('share_batch_wide_mean'))} batch-wide")
    if role == "default":
        return (f"scVI's default ({label}):\n{count(row.get('default_n_batch_wide'))} of its top {n_top} batch-wide "
                f"({percent(row.get('default_share_batch_wide'))})")
    return (f"Recommended ({label}):\n{percent(row.get('share_cluster_specific'))} cluster-specific, "
            f"{percent(row.get('share_batch_wide'))} batch-wide")


def _volcano(section: str, part: str, comparison: str, cid: str, de_table: pd.DataFrame, patterns: pd.DataFrame | None) -> Item:
    points, xlab, ylab = volcano_points(de_table, patterns)
    data = {gene: {"x": round(x, 4), "y": round(y, 4), "color": colour} for gene, x, y, colour in points}
    return Item(section, part, f"{comparison}: volcano of the recommended setting", "scatter", data,
                f"Every gene of <code>{text(cid)}</code>; its top genes coloured by pattern "
                "(green cluster-specific, orange batch-wide, purple other; grey: not in the top N).",
                {"pconfig": {"xlab": xlab, "ylab": ylab, "marker_size": 4}})


# --------------------------------------------------------------------------- setting scores
def scores_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_scores"
    scores = inputs.get("setting_scores")
    if scores is None:
        return [missing(section, "setting scores", where("setting_scores"), "Run `desweep diagnose`.")]
    scores = scores.assign(label=short_setting_labels(scores))
    ok = scores[scores["status"].astype(str) == "ok"] if "status" in scores.columns else scores
    items: list[Item] = []
    if len(ok):
        items.append(Item(section, "scatter", "Cluster-specific against batch-wide share", "html",
                          figure_html(score_scatter(ok, titles=inputs.comparison_name), alt="setting scores"),
                          "Each point is a setting (mean over seeds and models; bars: SD). Good settings sit top left. "
                          "Colour: batch_correction and where it decodes; shape: mode."))
    tied = _tied_at_top(inputs.get("summary"), inputs.get("scores_by_replicate"))
    if tied is not None:
        scores = scores.merge(tied, on="setting_id", how="left")
        scores["top_n_cut_in_tie"] = scores["n_tied_top_max"] > pd.to_numeric(scores["n_top"], errors="coerce")
    shown = ["rank_in_comparison", "recommended", "is_default", "share_cluster_specific_mean", "share_cluster_specific_sd",
             "share_batch_wide_mean", "share_batch_wide_sd", "share_other_mean", "specificity_score_mean", "n_replicates", "n_top",
             "n_tied_top_max", "top_n_cut_in_tie", "status"]
    rest = [c for c in scores.columns if c not in shown]  # the setting's parameters, ids and any further column: one click away
    scores = inputs.with_comparison(scores.sort_values(["comparison_id", "rank_in_comparison"], kind="stable", na_position="last"))
    items.append(table(section, "table", "Scores per setting", scores, row_id=["comparison", "label"],
                       columns=[*shown, *rest], titles=SCORE_TITLES, hidden=tuple(rest),
                       description="One row per setting, seeds and models averaged (diagnostics/setting_scores.csv); rank 1 = best. "
                                   "Genes tied at the top: the most genes sharing the top proba_de in any run of the setting "
                                   "(de/summary.csv); where they outnumber the top N, |lfc_mean| chose which of them made it."))
    by_replicate = inputs.get("scores_by_replicate")
    if by_replicate is not None and "model" in by_replicate.columns and by_replicate["model"].nunique() > 1:
        items.append(_model_spread(section, inputs.with_comparison(by_replicate), scores))
    return items


def _tied_at_top(summary: pd.DataFrame | None, by_replicate: pd.DataFrame | None) -> pd.DataFrame | None:
    if summary is None or by_replicate is None or "n_tied_top" not in summary.columns:
        return None
    joined = by_replicate[["combination_id", "setting_id"]].merge(summary[["combination_id", "n_tied_top"]], on="combination_id")
    return joined.groupby("setting_id", sort=False)["n_tied_top"].max().rename("n_tied_top_max").reset_index()


def _model_spread(section: str, by_replicate: pd.DataFrame, scores: pd.DataFrame) -> Item:
    recommended = scores.loc[scores["recommended"].map(is_true), ["setting_id", "label"]]
    part = by_replicate[by_replicate["setting_id"].isin(recommended["setting_id"])].merge(recommended, on="setting_id")
    per_model = part.groupby(["comparison", "label", "model", "comparison_id"], sort=False).agg(
        n_seeds=("seed", "nunique"), share_cluster_specific=("share_cluster_specific", "mean"),
        share_batch_wide=("share_batch_wide", "mean")).reset_index()
    return table(section, "models", "The recommended setting, model by model", per_model, row_id=["comparison", "label", "model"],
                 hidden=("comparison_id",),
                 description="Each scVI model (trained with its own seed), its posterior seeds averaged: how much the answer "
                             "depends on the training seed (diagnostics/setting_scores_by_replicate.csv).")


# --------------------------------------------------------------------------- concordance
def concordance_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_concordance"
    conc, scores = inputs.get("concordance_settings"), inputs.get("setting_scores")
    if conc is None or conc.empty or scores is None:
        return [missing(section, "concordance per setting", where("concordance_settings"),
                        "Needs at least two settings per comparison (`desweep diagnose`).")]
    scores = scores.assign(label=short_setting_labels(scores)).sort_values(["comparison_id", "rank_in_comparison"], na_position="last")
    label_of = dict(zip(scores["setting_id"].astype(str), scores["label"], strict=True))
    items: list[Item] = []
    for i, (comparison, part) in enumerate(conc.groupby("comparison_id", sort=False)):
        present = set(part["setting_id_1"].astype(str)) | set(part["setting_id_2"].astype(str))
        ids = [s for s in scores.loc[scores["comparison_id"] == comparison, "setting_id"].astype(str) if s in present]
        ids += sorted(present - set(ids))
        where_ = {s: k for k, s in enumerate(ids)}
        matrix = np.full((len(ids), len(ids)), np.nan)
        np.fill_diagonal(matrix, 1.0)
        for row in part.to_dict("records"):
            a, b = sorted((where_[str(row["setting_id_1"])], where_[str(row["setting_id_2"])]))
            matrix[a, b] = value(row.get("jaccard_top_mean")) or np.nan
            matrix[b, a] = value(row.get("spearman_lfc_mean")) or np.nan
        labels = [label_of.get(s, s) for s in ids]
        data = [[None if not np.isfinite(v) else round(float(v), 3) for v in r] for r in matrix]
        items.append(Item(section, f"heatmap_{i:02d}", inputs.comparison_name(comparison), "heatmap", data,
                          "Settings best first. Upper triangle: top-N Jaccard index; lower triangle: Spearman correlation of the "
                          "log fold changes over all genes; each the mean over the pairs of runs (seeds, models).",
                          {"xcats": labels, "ycats": labels,
                           "pconfig": {"min": -1, "max": 1, "square": False, "xcats_samples": False, "ycats_samples": False,
                                       "title": f"desweep: concordance, {inputs.comparison_name(comparison)}"}}))
    pairs = inputs.with_comparison(conc).assign(label_1=conc["setting_id_1"].astype(str).map(label_of),
                                                label_2=conc["setting_id_2"].astype(str).map(label_of))
    items.append(table(section, "pairs", "All pairs", pairs, row_id=["comparison", "label_1", "label_2"],
                       columns=["jaccard_top_mean", "spearman_lfc_mean", "n_pairs", "setting_id_1", "setting_id_2", "comparison_id"],
                       hidden=("setting_id_1", "setting_id_2", "comparison_id"),
                       description="Every pair of settings of a comparison (diagnostics/concordance_settings.csv)."))
    return items


# --------------------------------------------------------------------------- the sweep
def sweep_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_sweep"
    summary, plan, skipped = inputs.get("summary"), inputs.get("plan"), inputs.get("skipped")
    items: list[Item] = []
    if summary is not None and "combination_id" in summary.columns:
        items.append(table(section, "summary", "DE runs", summary, row_id="combination_id",
                           hidden=(*SWEEP_ID_COLUMNS, "top_genes"),
                           description="One row per run (setting x model x seed) of the sweep (de/summary.csv); "
                                       "more columns under \"Configure columns\"."))
    else:
        if plan is not None and "combination_id" in plan.columns:
            items.append(table(section, "plan", "Planned DE runs", plan, row_id="combination_id",
                               hidden=SWEEP_ID_COLUMNS, description="de/summary.csv is missing: the planned runs (de/plan.csv)."))
        items.append(missing(section, "DE summary", where("summary"), "Run `desweep de`."))
    if skipped is not None and "reason" in skipped.columns:
        items.append(_skipped_counts(section, skipped))
    return items


def _skipped_counts(section: str, skipped: pd.DataFrame) -> Item:
    if skipped.empty:
        return note(section, "skipped", "Settings skipped by the plan", "The plan skipped no setting.")
    unit = "setting_id" if "setting_id" in skipped.columns else "combination_id"
    counts = skipped.groupby("reason", sort=False).agg(
        settings=(unit, "nunique"), runs=("reason", "size"),
        comparisons=("comparison_id", "nunique") if "comparison_id" in skipped.columns else ("reason", "size")).reset_index()
    counts = counts.sort_values("settings", ascending=False, kind="stable")
    return table(section, "skipped", "Settings skipped by the plan, by reason", counts, row_id="reason",
                 titles={"settings": "settings skipped", "runs": "runs (with seeds and models)", "comparisons": "comparisons"},
                 description="Why the plan left these grid points out (de/plan_skipped.csv).")


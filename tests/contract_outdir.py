"""A synthetic OUTDIR that follows the output contract exactly, for the report's tests.

Built from the planted truth of a small simulation, without training or DE:
every diagnostics table has exactly the contract's columns, in the contract's
order. Three comparisons: a confounded pair with a clear answer (status ``ok``),
a batch-specific against a shared cluster (``weak``) and one with no DE table
(``no_settings``). Four settings each, two models x two seeds per setting; scVI's
default puts batch-wide genes into its top N and cuts its top N inside a tie of
``proba_de = 1``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from desweep import keys

TOP_N = 20
HEATMAP_GENES = 15
MODELS = ("model0", "model1")
SEEDS = (0, 1)
#: (label, batch_correction, decoding, mode, delta, is_default): the recommended setting of the first comparison is bc-own
SETTINGS = (
    ("nobc__vanilla", False, "observed", "vanilla", np.nan, True),
    ("bc-all__change-d0.25", True, "all", "change", 0.25, False),
    ("bc-own__change-d0.25", True, "own", "change", 0.25, False),
    ("bc-batch0__change-d0.5", True, "batch0", "change", 0.5, False),
)
PAIRS = (("only_batch0", "only_batch1"), ("only_batch0", "shared1"), ("shared2", "only_batch1"))
WEAK_GROUP = "shared1"  # only_batch0 vs shared1: status weak
NO_TABLES = "shared2_vs_only_batch1"  # planned, never computed: status no_settings
RECOMMENDED_TEXT = "batch_correction=True, decoding=own, mode=change, delta=0.25"

CONTRACT: dict[str, list[str]] = {
    keys.MARKERS_CSV: ["comparison_id", "group1", "group2", "gene", "rank", "confidence", "high_group", "lfc_mean", "proba_de",
                       "bridge_lfc", "bridge_padj", "support", "n_settings_supporting", "n_seeds_supporting",
                       "n_models_supporting", "pattern", "group_lfc", "within_lfc", "batch_shift_lfc", "heterogeneous"],
    keys.REJECTED_CSV: ["comparison_id", "group1", "group2", "gene", "default_rank", "high_group", "lfc_mean", "proba_de",
                        "group_lfc", "within_lfc", "batch_shift_lfc", "n_replicates_batch_wide", "n_replicates", "reason"],
    keys.SETTING_SCORES_CSV: ["comparison_id", "setting_id", "setting", "batch_correction", "decoding", "batchid1", "batchid2",
                              "mode", "delta", "weights", "filter_outlier_cells", "fdr_target", "is_default", "n_replicates",
                              "n_top", "share_cluster_specific_mean", "share_cluster_specific_sd", "share_batch_wide_mean",
                              "share_batch_wide_sd", "share_other_mean", "specificity_score_mean", "specificity_score_sd",
                              "rank_in_comparison", "recommended", "status"],
    keys.SETTING_SCORES_BY_REPLICATE_CSV: ["combination_id", "comparison_id", "setting_id", "model", "seed", "n_top",
                                           "n_cluster_specific", "n_batch_wide", "n_other", "share_cluster_specific",
                                           "share_batch_wide", "share_other", "specificity_score", "status"],
    keys.RECOMMENDATIONS_CSV: ["comparison_id", "group1", "group2", "design", "status", "recommended_setting_id",
                               "recommended_setting", "n_recommended_settings", "all_settings_agree", "share_cluster_specific",
                               "share_batch_wide", "default_setting_id", "default_share_batch_wide", "default_n_batch_wide",
                               "n_top", "n_markers", "n_rejected", "n_models", "model_spread_sd", "reason", "n_high_confidence"],
    keys.RECOMMENDED_SETTINGS_CSV: ["comparison_id", "setting_id", "setting", "is_best"],
    keys.CONCORDANCE_SETTINGS_CSV: ["comparison_id", "setting_id_1", "setting_id_2", "jaccard_top_mean", "spearman_lfc_mean",
                                    "n_pairs"],
}


def write_contract_outdir(outdir: Path, adata) -> dict[str, pd.DataFrame]:
    """Write the OUTDIR; returns the diagnostics tables by file name (and ``plan``).

    ``adata``: a :func:`desweep.simulate.simulate` result (``cell_type``,
    ``batch``, ``truth_*`` var columns).
    """
    from desweep import composition as comp
    from desweep.datakeys import DataKeys, set_keys
    from desweep.io import write_csv, write_h5ad

    adata = adata.copy()
    set_keys(adata, DataKeys(batch_key="batch", labels_key="cell_type", group_key="cell_type"))
    counts = comp.cluster_batch_counts(adata.obs, group_key="cell_type", batch_key="batch")
    status = comp.cluster_status(counts)
    comparisons = comp.comparison_table(status, list(PAIRS))
    plan, skipped = _plan(comparisons)
    tables = {cid: _de_table(adata, comparisons.set_index("comparison_id").loc[c], label, seed=i)
              for i, (cid, c, label) in enumerate(zip(plan["combination_id"], plan["comparison_id"], plan["label"], strict=True))
              if c != NO_TABLES}
    patterns = _gene_patterns(adata, plan, tables, comparisons)
    by_replicate = _by_replicate(plan, patterns)
    scores = _setting_scores(plan, by_replicate)
    markers, rejected = _markers(patterns, scores, comparisons, tables)
    recommendations = _recommendations(scores, comparisons, markers, rejected)
    out = {
        keys.MARKERS_CSV: markers, keys.REJECTED_CSV: rejected, keys.SETTING_SCORES_CSV: scores,
        keys.SETTING_SCORES_BY_REPLICATE_CSV: by_replicate, keys.RECOMMENDATIONS_CSV: recommendations,
        keys.RECOMMENDED_SETTINGS_CSV: _tie_band(scores),
        keys.CONCORDANCE_SETTINGS_CSV: _concordance_settings(scores),
        keys.GENE_PATTERNS_CSV: patterns, keys.TOP_GENE_EXPRESSION_CSV: _top_gene_expression(adata, patterns),
        keys.BRIDGE_SUMMARY_CSV: _bridge_summary(comparisons),
    }
    diag = outdir / keys.STEP_DIAGNOSE
    for name, table in out.items():
        assert name not in CONTRACT or list(table.columns) == CONTRACT[name], name
        write_csv(table, diag / name)
    write_h5ad(_markers_h5ad(adata, markers, rejected), diag / keys.MARKERS_H5AD)
    de = outdir / keys.STEP_DE
    write_csv(plan.drop(columns="label"), de / keys.PLAN_CSV)
    write_csv(skipped, de / keys.PLAN_SKIPPED_CSV)
    for cid, table in tables.items():
        write_csv(table, de / keys.DE_TABLES_DIR / f"{cid}.csv")
    summary = plan.drop(columns="label")[plan["combination_id"].isin(list(tables))].copy()
    summary["n_samples"] = 5000
    summary["n_tied_top"] = [int((tables[c]["proba_de"] == tables[c]["proba_de"].max()).sum()) for c in summary["combination_id"]]
    write_csv(summary, de / keys.DE_SUMMARY_CSV)
    write_csv(counts, outdir / keys.STEP_COMPOSITION / keys.CLUSTER_BATCH_COUNTS_CSV, index=True)
    write_csv(status, outdir / keys.STEP_COMPOSITION / keys.CLUSTER_STATUS_CSV, index=True)
    write_csv(comparisons, outdir / keys.STEP_COMPOSITION / keys.COMPARISONS_CSV)
    _write_run_info(outdir, adata)
    out["plan"] = plan
    return out


# --------------------------------------------------------------------------- de/
def _plan(comparisons: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for _, c in comparisons.iterrows():
        for label, bc, decoding, mode, delta, _default in SETTINGS:
            setting_id = f"{c['comparison_id']}__{label}__uniform__fdr0.05"
            for model in MODELS:
                for seed in SEEDS:
                    rows.append({"combination_id": f"{setting_id}__{model}__seed{seed}", "setting_id": setting_id, "label": label,
                                 "comparison_id": c["comparison_id"], "group1": c["group1"], "group2": c["group2"],
                                 "design": c["design"], "batch_correction": bc, "decoding": decoding,
                                 "batchid1": "batch0" if decoding == "batch0" else "", "batchid2": "batch0" if decoding == "batch0" else "",
                                 "mode": mode, "delta": delta, "weights": "uniform", "filter_outlier_cells": False,
                                 "fdr_target": 0.05, "model": model, "seed": seed})
    plan = pd.DataFrame(rows)
    skipped = plan[plan["decoding"] == "observed"].assign(reason="batchids=each needs batch_correction=true").iloc[:3]
    skipped = pd.concat([skipped, plan[plan["mode"] == "vanilla"].assign(
        reason="delta applies to mode=change only; vanilla runs once, without delta")]).drop(columns="label")
    return plan, skipped.reset_index(drop=True)


def _truth(var: pd.DataFrame, comparison: pd.Series) -> pd.Series:
    """Per gene: cluster_specific (planted marker of a group), batch_wide (of a group's batch) or other."""
    groups = {comparison["group1"], comparison["group2"]}
    batches = set(comparison["group1_batches"].split(";")) | set(comparison["group2_batches"].split(";"))
    out = pd.Series("other", index=var.index)
    out[(var["truth_pattern"] == "marker") & var["truth_cluster"].isin(groups)] = "cluster_specific"
    out[(var["truth_pattern"] == "batch_wide") & var["truth_batch"].isin(batches)] = "batch_wide"
    return out


def _de_table(adata, comparison: pd.Series, label: str, *, seed: int) -> pd.DataFrame:
    """Markers first for corrected settings; markers and batch-wide genes mixed for scVI's default, tied at proba_de = 1."""
    rng = np.random.default_rng(seed)
    truth = _truth(adata.var, comparison)
    boost = 3.0 if comparison["group2"] != WEAK_GROUP else 0.7  # the weak comparison's markers barely stand out
    score = rng.normal(0, 0.5, adata.n_vars) + np.where(truth == "cluster_specific", boost, 0.0)
    if label.startswith("nobc"):
        score += np.where(truth == "batch_wide", 3.2, 0.0)
    elif label.startswith("bc-all"):
        score += np.where(truth == "batch_wide", 2.6, 0.0)
    elif label.startswith("bc-batch0"):
        score += np.where(truth == "batch_wide", 2.9, 0.0)
    order = np.argsort(-score, kind="stable")
    proba = 1 / (1 + np.exp(-3 * (score[order] - 1.5)))
    if label.startswith("nobc"):
        proba[: int(1.6 * TOP_N)] = 1.0
    sign = np.where(rng.random(adata.n_vars) < 0.5, 1.0, -1.0)  # up in group1 (+) or group2 (-): by the planted truth where known
    var = adata.var
    sign[((var["truth_cluster"] == comparison["group1"]) | var["truth_batch"].isin(comparison["group1_batches"].split(";"))).to_numpy()] = 1.0
    sign[((var["truth_cluster"] == comparison["group2"]) | var["truth_batch"].isin(comparison["group2_batches"].split(";"))).to_numpy()] = -1.0
    lfc = (score * sign)[order]
    return pd.DataFrame({"gene": adata.var_names[order].astype(str), "rank": np.arange(1, adata.n_vars + 1),
                         "proba_de": proba, "lfc_mean": lfc, "bayes_factor": np.log(proba / (1 - proba + 1e-9) + 1e-9)})


# --------------------------------------------------------------------------- diagnostics/
def _gene_patterns(adata, plan: pd.DataFrame, tables: dict[str, pd.DataFrame], comparisons: pd.DataFrame) -> pd.DataFrame:
    by_id = comparisons.set_index("comparison_id")
    frames = []
    for _, row in plan[plan["combination_id"].isin(list(tables))].iterrows():
        top = tables[row["combination_id"]].head(TOP_N)
        truth = _truth(adata.var, by_id.loc[row["comparison_id"]]).loc[top["gene"]].to_numpy()
        frames.append(pd.DataFrame({
            "combination_id": row["combination_id"], "comparison_id": row["comparison_id"], "setting_id": row["setting_id"],
            "model": row["model"], "seed": row["seed"], "gene": top["gene"].to_numpy(), "rank": top["rank"].to_numpy(),
            "lfc": top["lfc_mean"].to_numpy(), "high_group": np.where(top["lfc_mean"] > 0, row["group1"], row["group2"]),
            "pattern": truth, "reason": "planted", "group_lfc": np.abs(top["lfc_mean"].to_numpy()),
            "within_lfc": np.where(truth == "cluster_specific", 2.0, 0.1),
            "batch_shift_lfc": np.where(truth == "batch_wide", 2.0, 0.1)}))
    return pd.concat(frames, ignore_index=True)


def _by_replicate(plan: pd.DataFrame, patterns: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, row in plan.iterrows():
        part = patterns[patterns["combination_id"] == row["combination_id"]]
        n = {p: int((part["pattern"] == p).sum()) for p in ("cluster_specific", "batch_wide", "other")}
        share = {p: (v / len(part) if len(part) else np.nan) for p, v in n.items()}
        rows.append({"combination_id": row["combination_id"], "comparison_id": row["comparison_id"], "setting_id": row["setting_id"],
                     "model": row["model"], "seed": row["seed"], "n_top": len(part),
                     **{f"n_{p}": v for p, v in n.items()}, **{f"share_{p}": v for p, v in share.items()},
                     "specificity_score": share["cluster_specific"] - share["batch_wide"],
                     "status": "ok" if len(part) else "no_table"})
    return pd.DataFrame(rows)


def _words(label: str) -> str:
    row = next(s for s in SETTINGS if s[0] == label)
    text = f"batch_correction={row[1]}, decoding={row[2]}, mode={row[3]}"
    return text + (f", delta={row[4]:g}" if row[3] == "change" else "")


def _setting_scores(plan: pd.DataFrame, by_replicate: pd.DataFrame) -> pd.DataFrame:
    rows = []
    settings = plan.drop_duplicates("setting_id")
    for _, s in settings.iterrows():
        part = by_replicate[(by_replicate["setting_id"] == s["setting_id"]) & (by_replicate["status"] == "ok")]
        default = next(x[5] for x in SETTINGS if x[0] == s["label"])
        rows.append({"comparison_id": s["comparison_id"], "setting_id": s["setting_id"], "setting": _words(s["label"]),
                     **{c: s[c] for c in ("batch_correction", "decoding", "batchid1", "batchid2", "mode", "delta", "weights",
                                          "filter_outlier_cells", "fdr_target")},
                     "is_default": default, "n_replicates": len(part), "n_top": TOP_N if len(part) else np.nan,
                     "share_cluster_specific_mean": part["share_cluster_specific"].mean(),
                     "share_cluster_specific_sd": part["share_cluster_specific"].std(),
                     "share_batch_wide_mean": part["share_batch_wide"].mean(), "share_batch_wide_sd": part["share_batch_wide"].std(),
                     "share_other_mean": part["share_other"].mean(), "specificity_score_mean": part["specificity_score"].mean(),
                     "specificity_score_sd": part["specificity_score"].std(), "rank_in_comparison": np.nan,
                     "recommended": False, "status": "ok" if len(part) else "no_table"})
    scores = pd.DataFrame(rows)
    for _, part in scores[scores["status"] == "ok"].groupby("comparison_id", sort=False):
        order = part.sort_values(["specificity_score_mean", "setting_id"], ascending=[False, True]).index
        scores.loc[order, "rank_in_comparison"] = np.arange(1, len(order) + 1)
        scores.loc[order[0], "recommended"] = True
    return scores


def _tie_band(scores: pd.DataFrame) -> pd.DataFrame:
    best = scores[scores["recommended"]]
    return pd.DataFrame({"comparison_id": best["comparison_id"], "setting_id": best["setting_id"], "setting": best["setting"],
                         "is_best": True}).reset_index(drop=True)


def _markers(patterns: pd.DataFrame, scores: pd.DataFrame, comparisons: pd.DataFrame,
             tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    markers, rejected = [], []
    for _, c in comparisons.iterrows():
        part = scores[scores["comparison_id"] == c["comparison_id"]]
        best = part[part["recommended"]]
        if best.empty:
            continue
        genes = patterns[(patterns["setting_id"] == best["setting_id"].iloc[0]) & (patterns["pattern"] == "cluster_specific")]
        kept = genes.groupby("gene", sort=False).agg(high_group=("high_group", "first"), rank=("rank", "median"), lfc_mean=("lfc", "median"),
                                                     n=("combination_id", "size"), within_lfc=("within_lfc", "median"),
                                                     batch_shift_lfc=("batch_shift_lfc", "median"))
        kept = kept[kept["n"] >= len(MODELS) * len(SEEDS) / 2].sort_values(["rank", "lfc_mean"]).reset_index()  # half the runs
        markers.append(pd.DataFrame({
            "comparison_id": c["comparison_id"], "group1": c["group1"], "group2": c["group2"], "gene": kept["gene"],
            "high_group": kept["high_group"], "rank": np.arange(1, len(kept) + 1), "lfc_mean": kept["lfc_mean"], "proba_de": 0.99,
            "n_settings_supporting": 1, "n_seeds_supporting": len(SEEDS), "n_models_supporting": len(MODELS),
            "within_lfc": kept["within_lfc"], "batch_shift_lfc": kept["batch_shift_lfc"], "pattern": "cluster_specific",
            "confidence": "high", "bridge_lfc": kept["lfc_mean"], "bridge_padj": 0.001, "support": 1.0,
            "group_lfc": kept["lfc_mean"], "heterogeneous": False}))
        default = part[part["is_default"]]["setting_id"].iloc[0]
        first = patterns[patterns["setting_id"] == default]
        bw = first[(first["combination_id"] == first["combination_id"].iloc[0]) & (first["pattern"] == "batch_wide")]
        n_bw = first[first["pattern"] == "batch_wide"].groupby("gene").size()
        rejected.append(pd.DataFrame({
            "comparison_id": c["comparison_id"], "group1": c["group1"], "group2": c["group2"], "gene": bw["gene"].to_numpy(),
            "default_rank": bw["rank"].to_numpy(), "high_group": bw["high_group"].to_numpy(), "lfc_mean": bw["lfc"].to_numpy(),
            "proba_de": 1.0, "group_lfc": bw["group_lfc"].to_numpy(), "within_lfc": bw["within_lfc"].to_numpy(),
            "batch_shift_lfc": bw["batch_shift_lfc"].to_numpy(), "n_replicates_batch_wide": n_bw.loc[bw["gene"]].to_numpy(),
            "n_replicates": len(MODELS) * len(SEEDS),
            "reason": "the same shift between the batches in the clusters both batches share (batch shift 2.00 >= 0.5 x 2.10)"}))
    return (pd.concat(markers, ignore_index=True)[CONTRACT[keys.MARKERS_CSV]],
            pd.concat(rejected, ignore_index=True)[CONTRACT[keys.REJECTED_CSV]])


def _bridge_summary(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Every comparison identifiable through the shared clusters (the contract's groups all have bridges)."""
    return pd.DataFrame({"comparison_id": comparisons["comparison_id"], "group1": comparisons["group1"],
                         "group2": comparisons["group2"], "verdict": "identifiable", "identifiable": True, "n_bridges": 3,
                         "bridges": "shared0;shared1;shared2", "n_units": 11, "design": "~ batch + cluster",
                         "reason": "3 clusters present in both groups' batches measure the batch shift"})


def _recommendations(scores: pd.DataFrame, comparisons: pd.DataFrame, markers: pd.DataFrame, rejected: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, c in comparisons.iterrows():
        cid = c["comparison_id"]
        part = scores[scores["comparison_id"] == cid]
        default = part[part["is_default"]].iloc[0]
        base = {"comparison_id": cid, "group1": c["group1"], "group2": c["group2"], "design": c["design"],
                "default_setting_id": default["setting_id"], "n_models": len(MODELS)}
        best = part[part["recommended"]]
        if best.empty:
            rows.append({**base, "status": "no_settings", "recommended_setting_id": "", "recommended_setting": "",
                         "n_recommended_settings": 0, "all_settings_agree": False, "n_markers": 0, "n_rejected": 0,
                         "reason": "No DE table for this comparison."})
            continue
        best = best.iloc[0]
        p = float(best["share_cluster_specific_mean"])
        rows.append({**base, "status": "ok" if p >= 0.5 else "weak", "recommended_setting_id": best["setting_id"],
                     "recommended_setting": best["setting"], "n_recommended_settings": 1, "all_settings_agree": False,
                     "share_cluster_specific": p, "share_batch_wide": best["share_batch_wide_mean"],
                     "default_share_batch_wide": default["share_batch_wide_mean"],
                     "default_n_batch_wide": round(default["share_batch_wide_mean"] * TOP_N), "n_top": TOP_N,
                     "n_markers": int((markers["comparison_id"] == cid).sum()), "n_rejected": int((rejected["comparison_id"] == cid).sum()),
                     "n_high_confidence": int((markers["comparison_id"] == cid).sum()),
                     "model_spread_sd": 0.02, "reason": f"{best['setting']} has the most cluster-specific top genes."})
    return pd.DataFrame(rows).reindex(columns=CONTRACT[keys.RECOMMENDATIONS_CSV])


def _concordance_settings(scores: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for cid, part in scores[scores["status"] == "ok"].groupby("comparison_id", sort=False):
        ids = list(part["setting_id"])
        for i, a in enumerate(ids):
            for j, b in enumerate(ids[i + 1:], start=i + 1):
                rows.append({"comparison_id": cid, "setting_id_1": a, "setting_id_2": b, "jaccard_top_mean": 0.9 / (1 + abs(i - j)),
                             "spearman_lfc_mean": 0.95 - 0.1 * abs(i - j), "n_pairs": len(MODELS) * len(SEEDS) ** 2})
    return pd.DataFrame(rows)


def _top_gene_expression(adata, patterns: pd.DataFrame) -> pd.DataFrame:
    """``combination_id, setting_id, model, seed, gene, rank, pattern, cluster, batch, log2_mean, z`` over present cluster x batch."""
    norm = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    norm = norm / norm.sum(axis=1, keepdims=True) * np.median(norm.sum(axis=1))
    obs = adata.obs[["cell_type", "batch"]].astype(str)
    sizes = obs.value_counts()
    cells = [cb for cb in sorted(sizes.index) if sizes[cb] >= 10]
    means = pd.DataFrame({cb: norm[((obs["cell_type"] == cb[0]) & (obs["batch"] == cb[1])).to_numpy()].mean(axis=0) for cb in cells},
                         index=adata.var_names.astype(str))
    frames = []
    for cid, part in patterns.groupby("combination_id", sort=False):
        top = part.sort_values("rank").head(HEATMAP_GENES)
        values = np.log2(means.loc[top["gene"]].to_numpy() + 0.01)
        z = (values - values.mean(axis=1, keepdims=True)) / values.std(axis=1, keepdims=True)
        n_genes, n_cols = values.shape
        frames.append(pd.DataFrame({
            "combination_id": cid, "setting_id": part["setting_id"].iloc[0], "model": part["model"].iloc[0], "seed": part["seed"].iloc[0],
            "gene": np.repeat(top["gene"].to_numpy(), n_cols), "rank": np.repeat(top["rank"].to_numpy(), n_cols),
            "pattern": np.repeat(top["pattern"].to_numpy(), n_cols), "cluster": [c for c, _ in cells] * n_genes,
            "batch": [b for _, b in cells] * n_genes, "log2_mean": values.ravel(), "z": z.ravel()}))
    return pd.concat(frames, ignore_index=True)


def _markers_h5ad(adata, markers: pd.DataFrame, rejected: pd.DataFrame):
    genes = list(dict.fromkeys([*markers["gene"], *rejected["gene"]]))
    sub = adata[:, genes].copy()
    counts = sub.X.toarray() if hasattr(sub.X, "toarray") else np.asarray(sub.X)
    library = np.asarray(adata.X.sum(axis=1)).ravel()
    sub.layers[keys.NORM_LAYER_PREFIX + keys.NORM_OWN_BATCH] = (counts / library[:, None]).astype(np.float32)
    sub.obs = sub.obs[["batch", "cell_type"]].copy()
    sub.var = pd.DataFrame(index=sub.var_names)
    first = markers[markers["comparison_id"] == markers["comparison_id"].iloc[0]]
    groups = list(dict.fromkeys(first["high_group"]))
    n = min(int((first["high_group"] == g).sum()) for g in groups)
    names = np.rec.fromarrays([first.loc[first["high_group"] == g, "gene"].to_numpy()[:n].astype(object) for g in groups], names=groups)
    scores = np.rec.fromarrays([first.loc[first["high_group"] == g, "lfc_mean"].to_numpy()[:n].astype(np.float32) for g in groups], names=groups)
    sub.uns.pop(keys.UNS_DESWEEP, None)  # the contract records the group in the markers' params only
    sub.uns[keys.UNS_MARKERS] = {"params": {"groupby": "cell_type", "reference": "rest", "method": "desweep"},
                                 "names": names, "scores": scores, "logfoldchanges": scores}
    return sub


# --------------------------------------------------------------------------- the rest of OUTDIR
def _write_run_info(outdir: Path, adata) -> None:
    from desweep.io import write_csv

    validate = outdir / keys.STEP_VALIDATE
    validate.mkdir(parents=True, exist_ok=True)
    (validate / keys.VALIDATION_REPORT).write_text(json.dumps({
        "input": "sim.h5ad", "n_cells": adata.n_obs, "n_genes": adata.n_vars, "batch_key": "batch", "labels_key": "cell_type",
        "cells_per_batch": adata.obs["batch"].value_counts().sort_index().to_dict(), "notes": ["a note"]}))
    history = pd.DataFrame({"epoch": range(20), "elbo_train": 3000 - 10 * np.arange(20) ** 0.8,
                            "elbo_validation": 3005 - 9 * np.arange(20) ** 0.8, "kl_local_train": 12 + 0.1 * np.arange(20)})
    write_csv(history, outdir / keys.STEP_INTEGRATE / keys.HISTORY_CSV)
    for k in range(1, len(MODELS)):  # model replicates train in integrate/replicate<k>/
        write_csv(history.assign(elbo_train=history["elbo_train"] + 5 * k), outdir / keys.STEP_INTEGRATE / keys.replicate_dir(k) / keys.HISTORY_CSV)
    write_csv(pd.DataFrame({"metric": ["batch_entropy", "batch_entropy", "label_asw"], "embedding": ["X_scVI", "X_pca", "X_scVI"],
                            "value": [0.9, 0.2, 0.7]}), outdir / keys.STEP_INTEGRATE / keys.METRICS_CSV)
    info = outdir / keys.PIPELINE_INFO
    info.mkdir(parents=True, exist_ok=True)
    (info / keys.PARAMS_YAML).write_text(yaml.safe_dump({"input": "sim.h5ad", "seed": 0, "steps": {"integrate": {"max_epochs": 40}}}))
    (info / keys.SOFTWARE_VERSIONS_YML).write_text(yaml.safe_dump({"desweep": "0.1.0", "multiqc": "1.35"}))

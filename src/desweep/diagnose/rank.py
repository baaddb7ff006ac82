"""Scores of settings (seeds and models averaged), the tie band and the recommendation per comparison.

Per combination (one setting on one model with one seed): the share of its top
genes that are cluster-specific, batch-wide or other, and
``specificity_score = share cluster-specific - share batch-wide``
(``setting_scores_by_replicate.csv``). Per setting: the mean and SD of these
over its replicates (``setting_scores.csv``). Settings are ranked by mean
specificity score, then mean cluster-specific share, then the mean within-batch
lfc of their cluster-specific genes, then ``setting_id``. The *tie band*: the
best setting and every setting whose mean cluster-specific share is within one
binomial standard error ``sqrt(p (1 - p) / N)`` (at least ``1 / N``) of the best's
``p`` with no larger mean batch-wide share; these are the recommended settings.

The one setting named for users who call scvi-tools by hand resists the
winner's curse: the best-scoring of many settings on one dataset is biased
upward, so when the pre-declared robust setting (:data:`ROBUST_SETTING`:
``batch_correction=True`` over every batch, ``mode="change"``, ``delta=0.5``)
is in the tie band it is named instead of the best (the one-standard-error
rule towards a simpler, pre-declared choice); otherwise the best is named.
Combinations of another method (``method`` other than ``scvi``: the bridge
contrast) are scored and ranked beside the settings but are never in the tie
band nor recommended: a user cannot pass them to scvi-tools.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from desweep.diagnose.classify import PATTERNS
from desweep.diagnose.replicates import describe_setting, is_missing, replicate_plan, sd, setting_value_is
from desweep.plan import SETTING_COLUMNS

REPLICATE_COLUMNS = ["combination_id", "comparison_id", "setting_id", "model", "seed", "n_top",
                     *[f"n_{p}" for p in PATTERNS], *[f"share_{p}" for p in PATTERNS], "specificity_score", "status",
                     "mean_within_lfc_cluster_specific"]
#: trailing columns in the shape of a one-row-per-combination table: the setting's first
#: replicate and its mean shares under the old names
COMPATIBILITY_COLUMNS = ["combination_id", "share_cluster_specific", "share_batch_wide", "share_other"]
SETTING_SCORE_COLUMNS = ["comparison_id", "setting_id", "setting", "method", *SETTING_COLUMNS, "is_default", "n_replicates", "n_top",
                         "share_cluster_specific_mean", "share_cluster_specific_sd", "share_batch_wide_mean",
                         "share_batch_wide_sd", "share_other_mean", "specificity_score_mean", "specificity_score_sd",
                         "rank_in_comparison", "recommended", "status", "n_models", "n_seeds", "mean_within_lfc_cluster_specific",
                         *COMPATIBILITY_COLUMNS]
RECOMMENDATION_COLUMNS = ["comparison_id", "group1", "group2", "design", "status", "recommended_setting_id",
                          "recommended_setting", "n_recommended_settings", "all_settings_agree", "share_cluster_specific",
                          "share_batch_wide", "default_setting_id", "default_share_batch_wide", "default_n_batch_wide", "n_top",
                          "n_markers", "n_rejected", "n_models", "model_spread_sd", "reason", "best_combination_id",
                          "best_setting_id", "n_high_confidence", "n_vetoed"]
#: the pre-declared robust setting (module docstring); the other setting columns at scvi-tools' defaults
ROBUST_SETTING = {"batch_correction": True, "decoding": "all", "mode": "change", "delta": 0.5, "weights": "uniform",
                  "filter_outlier_cells": False}
RECOMMENDED_SETTINGS_COLUMNS = ["comparison_id", "setting_id", "setting", "is_best"]


def shares(patterns: pd.DataFrame) -> dict[str, float]:
    """Counts and shares of each pattern among a setting's classified top genes."""
    n = len(patterns)
    counts = {p: int((patterns["pattern"] == p).sum()) for p in PATTERNS}
    out: dict[str, float] = {"n_top": n}
    out.update({f"n_{p}": counts[p] for p in PATTERNS})
    out.update({f"share_{p}": (counts[p] / n if n else float("nan")) for p in PATTERNS})
    out["specificity_score"] = out["share_cluster_specific"] - out["share_batch_wide"] if n else float("nan")
    return out


def replicate_scores(gene_patterns: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """``setting_scores_by_replicate.csv``: one row per combination of the plan (plan order)."""
    plan = replicate_plan(plan)
    groups = dict(tuple(gene_patterns.groupby("combination_id", sort=False))) if len(gene_patterns) else {}
    rows = []
    for _, setting in plan.iterrows():
        row = {c: setting[c] for c in ("combination_id", "comparison_id", "setting_id", "model", "seed")}
        part = groups.get(setting["combination_id"])
        if part is None or part.empty:
            row["status"] = "no_table"
        else:
            row.update({"status": "ok", **shares(part)})
            cs = part.loc[part["pattern"] == "cluster_specific", "within_lfc"]
            row["mean_within_lfc_cluster_specific"] = float(cs.mean()) if len(cs) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=REPLICATE_COLUMNS)


def setting_scores(by_replicate: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """``setting_scores.csv``: per (comparison, setting) the mean and SD over replicates, the rank and the tie band."""
    plan = replicate_plan(plan)
    first = plan.drop_duplicates("setting_id")
    rows = []
    for _, setting in first.iterrows():
        reps = by_replicate[(by_replicate["setting_id"] == setting["setting_id"]) & (by_replicate["status"] == "ok")]
        method = setting.get("method", "scvi")
        method = "scvi" if is_missing(method) else str(method)
        row = {"comparison_id": setting["comparison_id"], "setting_id": setting["setting_id"],
               "setting": describe_setting(setting) if method == "scvi" else f"{method} contrast",
               "method": method, "combination_id": setting["combination_id"]}
        row.update({c: setting[c] for c in SETTING_COLUMNS if c in plan.columns})
        row.update({"is_default": bool(setting["is_default"]), "n_replicates": len(reps),
                    "status": "ok" if len(reps) else "no_table"})
        if len(reps):
            row.update({"n_top": int(reps["n_top"].max()), "n_models": reps["model"].nunique(), "n_seeds": reps["seed"].nunique(),
                        "share_other_mean": reps["share_other"].mean(),
                        "mean_within_lfc_cluster_specific": reps["mean_within_lfc_cluster_specific"].mean()})
            for column in ("share_cluster_specific", "share_batch_wide", "specificity_score"):
                row[f"{column}_mean"] = float(reps[column].mean())
                row[f"{column}_sd"] = sd(reps[column])
            row.update({c: row[f"{c}_mean"] for c in ("share_cluster_specific", "share_batch_wide", "share_other")})
        rows.append(row)
    scores = pd.DataFrame(rows).reindex(columns=SETTING_SCORE_COLUMNS)
    scores["recommended"] = False
    for _, part in scores[scores["status"] == "ok"].groupby("comparison_id", sort=False):
        order = part.assign(_mw=part["mean_within_lfc_cluster_specific"].fillna(-np.inf)).sort_values(
            ["specificity_score_mean", "share_cluster_specific_mean", "_mw", "setting_id"],
            ascending=[False, False, False, True], kind="stable")
        scores.loc[order.index, "rank_in_comparison"] = np.arange(1, len(order) + 1)
        settings = order[order["method"] == "scvi"]
        if len(settings):
            scores.loc[tie_band(settings).index, "recommended"] = True
    scores = scores.sort_values(["comparison_id", "rank_in_comparison", "setting_id"], kind="stable", na_position="last")
    return scores.reset_index(drop=True)


def band_width(p: float, n: int) -> float:
    """One binomial standard error of a share ``p`` of ``n`` genes, at least one gene (``1 / n``)."""
    return max(math.sqrt(p * (1 - p) / n), 1.0 / n) if n else 0.0


def tie_band(ranked: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``ranked`` (best first) that tie with the best (module docstring)."""
    best = ranked.iloc[0]
    p, bw = float(best["share_cluster_specific_mean"]), float(best["share_batch_wide_mean"])
    band = band_width(p, int(best["n_top"]))
    return ranked[(ranked["share_cluster_specific_mean"] >= p - band - 1e-12) & (ranked["share_batch_wide_mean"] <= bw + 1e-12)]


def recommended_settings(scores: pd.DataFrame) -> pd.DataFrame:
    """``recommended_settings.csv``: the tie band of every comparison, best first."""
    band = scores[scores["recommended"].astype(bool)]
    out = band.assign(is_best=band["rank_in_comparison"] == band.groupby("comparison_id")["rank_in_comparison"].transform("min"))
    return out.reindex(columns=RECOMMENDED_SETTINGS_COLUMNS).reset_index(drop=True)


def model_spread(by_replicate: pd.DataFrame, setting_id: str) -> float:
    """Between-model SD of a setting's cluster-specific share (each model averaged over its seeds); NaN with one model."""
    reps = by_replicate[(by_replicate["setting_id"] == setting_id) & (by_replicate["status"] == "ok")]
    return sd(reps.groupby("model")["share_cluster_specific"].mean())


def is_robust_setting(setting: pd.Series) -> bool:
    """Whether a ``setting_scores.csv`` row is :data:`ROBUST_SETTING`."""
    return all(column in setting.index and not is_missing(setting[column]) and setting_value_is(setting[column], value)
               for column, value in ROBUST_SETTING.items())


def named_setting(ranked: pd.DataFrame) -> pd.Series:
    """The setting named for the comparison: the robust setting when it is in the tie band, else the best (module docstring)."""
    band = ranked[ranked["recommended"].astype(bool)]
    robust = [i for i, row in band.iterrows() if is_robust_setting(row)]
    return band.loc[robust[0]] if robust else ranked.iloc[0]


def recommendations(scores: pd.DataFrame, by_replicate: pd.DataFrame, comparisons: pd.DataFrame, *,
                    n_markers: dict[str, int] | None = None, n_rejected: dict[str, int] | None = None,
                    n_high_confidence: dict[str, int] | None = None, n_vetoed: dict[str, int] | None = None) -> pd.DataFrame:
    """``recommendations.csv``: per comparison the recommended setting, the default's batch-wide share and why.

    ``status``: ``ok`` (the best setting's mean cluster-specific share >= 0.5),
    ``weak`` (lower) or ``no_settings`` (no DE table).
    """
    rows = []
    planned = set(scores["comparison_id"].astype(str))
    n_models_all = by_replicate.loc[by_replicate["status"] == "ok"].groupby("comparison_id")["model"].nunique()
    for _, comp in comparisons.iterrows():
        cid = str(comp["comparison_id"])
        if cid not in planned:  # not part of this sweep
            continue
        part = scores[(scores["comparison_id"] == cid) & (scores["status"] == "ok") & (scores["method"] == "scvi")
                      ].sort_values("rank_in_comparison")
        base = {"comparison_id": cid, "group1": comp["group1"], "group2": comp["group2"], "design": comp.get("design", ""),
                "n_markers": (n_markers or {}).get(cid, 0), "n_rejected": (n_rejected or {}).get(cid, 0),
                "n_high_confidence": (n_high_confidence or {}).get(cid, 0), "n_vetoed": (n_vetoed or {}).get(cid, 0)}
        if part.empty:
            rows.append({**base, "status": "no_settings", "n_recommended_settings": 0, "all_settings_agree": False,
                         "n_models": 0, "reason": "No DE table for this comparison."})
            continue
        top, best = part.iloc[0], named_setting(part)
        band = part[part["recommended"].astype(bool)]
        default = part[part["is_default"].astype(bool)]
        default_row = default.iloc[0] if len(default) else None
        default_reps = by_replicate[(by_replicate["setting_id"] == default_row["setting_id"]) & (by_replicate["status"] == "ok")] \
            if default_row is not None else by_replicate.iloc[0:0]
        first_rep = by_replicate[(by_replicate["setting_id"] == best["setting_id"]) & (by_replicate["status"] == "ok")]
        row = {**base, "status": "ok" if best["share_cluster_specific_mean"] >= 0.5 else "weak",
               "recommended_setting_id": best["setting_id"], "recommended_setting": best["setting"],
               "n_recommended_settings": len(band), "all_settings_agree": len(part) > 1 and len(band) == len(part),
               "share_cluster_specific": float(best["share_cluster_specific_mean"]),
               "share_batch_wide": float(best["share_batch_wide_mean"]), "n_top": int(best["n_top"]),
               "default_setting_id": default_row["setting_id"] if default_row is not None else "",
               "default_share_batch_wide": float(default_row["share_batch_wide_mean"]) if default_row is not None else float("nan"),
               "default_n_batch_wide": float(default_reps["n_batch_wide"].mean()) if len(default_reps) else float("nan"),
               "n_models": int(n_models_all.get(cid, 0)), "model_spread_sd": model_spread(by_replicate, best["setting_id"]),
               "best_combination_id": first_rep["combination_id"].iloc[0] if len(first_rep) else "",
               "best_setting_id": top["setting_id"]}
        row["reason"] = _reason(row, best, part, band, comp, top)
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=RECOMMENDATION_COLUMNS)


def _reason(row: dict, best: pd.Series, part: pd.DataFrame, band: pd.DataFrame, comp: pd.Series, top: pd.Series) -> str:
    """The recommendation in plain sentences (``best``: the named setting; ``top``: the best-scoring one)."""
    n, p, q = row["n_top"], row["share_cluster_specific"], row["share_batch_wide"]
    replicates = int(best["n_replicates"])
    spread = f" (SD {best['share_cluster_specific_sd']:.0%} over {replicates} replicates)" if replicates > 1 else ""
    sentences = [f"{best['setting']}: on average {p:.0%} of its top {n} genes are cluster-specific{spread} and {q:.0%} "
                 f"batch-wide, {'the best' if best['setting_id'] == top['setting_id'] else 'within one standard error of the best'}"
                 f" of {len(part)} settings (median {part['share_cluster_specific_mean'].median():.0%} cluster-specific)."]
    if best["setting_id"] != top["setting_id"]:
        sentences.append(f"It is named instead of the best-scoring setting ({top['setting']}, {top['share_cluster_specific_mean']:.0%}) "
                         "because it is the pre-declared robust choice and ties with it: the best of many settings on one "
                         "dataset scores higher than it will on the next (the winner's curse).")
    if row["all_settings_agree"]:
        sentences.append(f"Every setting agrees: all {len(part)} are within one standard error of the best, so the choice of "
                         "setting does not matter here.")
    elif len(band) > 1:
        sentences.append(f"{len(band) - 1} more setting(s) within one standard error "
                         f"({band_width(p, n):.0%}) are recommended with it.")
    if row["default_setting_id"]:
        sentences.append(f"scvi-tools' default call (batch_correction=False, vanilla) has {row['default_share_batch_wide']:.0%} "
                         f"batch-wide genes in its top {n}.")
    else:
        sentences.append("scvi-tools' default call (batch_correction=False, vanilla) was not part of the sweep.")
    if row["n_models"] > 1:
        sentences.append(f"Between the {row['n_models']} trained models its cluster-specific share varies by "
                         f"{row['model_spread_sd']:.0%} (SD).")
    sentences.append(f"The answer ranks {row['n_markers']} gene(s), {row['n_high_confidence']} with high confidence "
                     f"(the consensus of the recommended settings), and {row['n_vetoed']} gene(s) ranked higher were vetoed as "
                     "batch-wide or heterogeneous across bridges.")
    if str(comp.get("design", "")) == "confounded":
        sentences.append("Group and batch are confounded: check the top genes in the plots before trusting them.")
    if row["status"] == "weak":
        sentences.append("Fewer than half of the best setting's top genes are cluster-specific: treat every setting with caution.")
    suggested = comp.get("recommended_batch_correction")
    if not is_missing(suggested) and "batch_correction" in best.index and not is_missing(best["batch_correction"]):
        agree = str(best["batch_correction"]).lower() == str(suggested).lower()
        sentences.append(f"Composition suggested batch_correction={suggested} ({'agrees' if agree else 'differs'}).")
    return " ".join(sentences)

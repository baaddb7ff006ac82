"""Diagnostics: are a setting's top genes cluster-specific, or batch effects? And the answer.

For every DE combination of the plan (a setting on one trained model with one
posterior seed) the top ``N`` genes are classified from the expression of each
cluster in each batch; settings are scored and ranked with seeds and models
averaged, one is recommended per comparison, and the answer is one ranked
list of genes per comparison, pooled over the recommended settings' replicates
and the bridge contrast, with batch-wide genes vetoed and a confidence column. The rules are in ``docs/diagnostics.md``; the package, by concern:

- :mod:`~desweep.diagnose.profiles`: expression per cluster x batch with its sampling noise;
- :mod:`~desweep.diagnose.classify`: the per-gene call;
- :mod:`~desweep.diagnose.tables`: the DE tables' top genes, and each comparison's calls computed once;
- :mod:`~desweep.diagnose.replicates`: settings, models and seeds of the plan;
- :mod:`~desweep.diagnose.rank`: scores, tie band and recommendations;
- :mod:`~desweep.diagnose.answer`: the ranked answer (``markers.csv``);
- :mod:`~desweep.diagnose.markers`: rejected genes, ``markers.h5ad``;
- :mod:`~desweep.diagnose.concordance`: agreement between settings.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING

import pandas as pd

from desweep import keys
from desweep.bridge import bridge_contrast, bridge_plan_rows, bridge_tables
from desweep.bridge.sweep import METHOD_BRIDGE, METHOD_COLUMN
from desweep.composition import PresenceRule
from desweep.diagnose.classify import PATTERNS, SCORE_COLUMNS, Thresholds, classify_genes
from desweep.diagnose.concordance import concordance, concordance_settings
from desweep.diagnose.answer import MIN_SUPPORT, answer_table, ranked_answer
from desweep.diagnose.markers import markers_adata, rejected_genes
from desweep.diagnose.profiles import (
    MEANS_REQUIRED,
    RAW,
    ExpressionProfile,
    build_profiles,
    means_profiles,
    presence_counts,
    raw_profile,
    top_gene_expression,
)
from desweep.diagnose.rank import recommendations, recommended_settings, replicate_scores, setting_scores, shares
from desweep.diagnose.replicates import classify_plan, describe_setting, replicate_plan
from desweep.diagnose.tables import ComparisonCalls, classify_setting, table_lfc, top_genes
from desweep.errors import DesweepInputError, ParameterError
from desweep.defaults import CLASSIFIED_TOP_N

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "COMPARISON_REQUIRED", "MEANS_REQUIRED", "PATTERNS", "PLAN_REQUIRED", "RAW", "SCORE_COLUMNS", "ComparisonCalls",
    "ExpressionProfile", "Thresholds", "build_profiles", "check_inputs", "classify_genes", "classify_plan", "classify_setting",
    "answer_table", "concordance", "concordance_settings", "describe_setting", "diagnose", "markers_adata",
    "means_profiles", "presence_counts", "raw_profile", "recommendations", "recommended_settings", "ranked_answer",
    "rejected_genes", "replicate_plan", "replicate_scores", "setting_scores", "shares", "table_lfc", "top_gene_expression", "top_genes",
]

logger = logging.getLogger(__name__)

PLAN_REQUIRED = ("combination_id", "comparison_id", "group1", "group2")
COMPARISON_REQUIRED = ("comparison_id", "group1", "group2", "design")


def check_inputs(plan: pd.DataFrame, tables: dict[str, pd.DataFrame], comparisons: pd.DataFrame, *,
                 plan_source: str = keys.PLAN_CSV, comparisons_source: str = keys.COMPARISONS_CSV,
                 groups: set[str] | None = None) -> None:
    """Raise a one-line error for a plan, tables or comparisons that do not fit together."""
    for column in PLAN_REQUIRED:
        if column not in plan.columns:
            raise DesweepInputError(plan_source, column, f"column missing (have: {', '.join(map(str, plan.columns))})")
    for column in COMPARISON_REQUIRED:
        if column not in comparisons.columns:
            raise DesweepInputError(comparisons_source, column, f"column missing (have: {', '.join(map(str, comparisons.columns))})")
    known = set(comparisons["comparison_id"].astype(str))
    unknown = sorted(set(plan["comparison_id"].astype(str)) - known)
    if unknown:
        raise DesweepInputError(plan_source, "comparison_id", f"'{unknown[0]}' is not in {comparisons_source}")
    if not any(str(c) in tables for c in plan["combination_id"]):
        raise DesweepInputError(plan_source, "combination_id", "no DE table for any combination of the plan: run `desweep de` first")
    for cid, table in tables.items():
        if "gene" not in table.columns:
            raise DesweepInputError(f"{keys.DE_TABLES_DIR}/{cid}.csv", "gene", "column missing")
    if groups is not None:
        for column in ("group1", "group2"):
            for group in comparisons[column].astype(str):
                if group not in groups:
                    raise DesweepInputError(comparisons_source, column, f"group '{group}' is not a group of the data (have: {', '.join(sorted(groups))})")


def diagnose(
    adata: AnnData,
    plan: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    comparisons: pd.DataFrame,
    means: pd.DataFrame | None = None,
    *,
    top_n: int = CLASSIFIED_TOP_N,
    thresholds: Thresholds = Thresholds(),
    presence: PresenceRule = PresenceRule(),
    heatmap_genes: int = 30,
    sample_key: str | None = None,
    threads: int = 1,
    source: str = keys.CLUSTERED_H5AD,
) -> dict[str, pd.DataFrame]:
    """Classify every combination's top genes, score and rank the settings, recommend one, and rank the answer.

    Parameters
    ----------
    adata
        ``clustered.h5ad``: raw counts in ``X``, batch and group keys recorded in ``uns['desweep']``.
    plan
        ``de/plan.csv`` (``combination_id, comparison_id, group1, group2``; ``setting_id``, ``model``,
        ``seed`` and the setting's parameters when present).
    tables
        ``combination_id`` -> its DE table (``gene, rank, lfc_mean, proba_de, ...``, best first).
    comparisons
        ``composition/comparisons.csv``.
    means
        ``normalized/cluster_batch_means.csv`` (optional): every scVI choice is scored too.
    top_n
        Genes classified per combination.
    heatmap_genes
        Genes per setting in ``top_gene_expression`` (the first replicate of each setting, as the heatmaps).
    sample_key
        obs column of samples nested in batches for the bridge contrast (``None``: cluster x batch units).
    threads
        PyDESeq2's processes for the bridge contrast.

    Returns
    -------
    ``{"gene_patterns", "setting_scores", "setting_scores_by_replicate", "concordance",
    "concordance_settings", "recommendations", "recommended_settings", "markers",
    "rejected", "thresholds", "top_gene_expression", "bridge", "bridge_summary"}``: the
    tables of the same names (``thresholds``: one row of the rule's parameters). The
    bridge contrast (:func:`desweep.bridge.bridge_contrast`) of each identifiable
    comparison enters the plan as the combination ``<comparison_id>__bridge``
    (``method = bridge``): classified and scored like a setting, never recommended.
    """
    from desweep.datakeys import get_keys

    if top_n < 1:
        raise ParameterError("top_n", "top_n", f"must be at least 1, got {top_n}")
    thresholds.check()
    data_keys = get_keys(adata, source, need_groups=True)
    plan = plan.astype({"combination_id": str, "comparison_id": str, "group1": str, "group2": str})
    comparisons = comparisons.astype({"comparison_id": str, "group1": str, "group2": str})
    check_inputs(plan, tables, comparisons, groups=set(adata.obs[data_keys.group_key].astype(str)))
    bridge = bridge_contrast(adata, comparisons, group_key=data_keys.groups, batch_key=data_keys.batch_key,
                             sample_key=sample_key, presence=presence, threads=threads, source=source)
    plan = replicate_plan(bridge_plan_rows(bridge["bridge_summary"], plan))
    tables = {**tables, **bridge_tables(bridge["bridge"])}
    profiles = build_profiles(adata, means, group_key=data_keys.groups, batch_key=data_keys.batch_key,
                              presence=presence, pseudocount_fraction=thresholds.pseudocount_fraction)
    patterns = classify_plan(plan, tables, comparisons, profiles, top_n=top_n, thresholds=thresholds)
    by_replicate = replicate_scores(patterns, plan)
    scores = setting_scores(by_replicate, plan)
    markers, vetoed = answer_table(plan, tables, scores, by_replicate, patterns, comparisons, profiles[RAW],
                                   bridge=bridge["bridge"], top_n=top_n, thresholds=thresholds)
    rejected = rejected_genes(patterns, by_replicate, scores, comparisons)
    pairs = concordance(plan[plan[METHOD_COLUMN] != METHOD_BRIDGE], tables, top_n=top_n)
    first_replicates = set(plan.drop_duplicates("setting_id")["combination_id"])
    return {
        "gene_patterns": patterns,
        "setting_scores": scores,
        "setting_scores_by_replicate": by_replicate,
        "concordance": pairs,
        "concordance_settings": concordance_settings(pairs),
        "recommendations": recommendations(scores, by_replicate, comparisons,
                                           n_markers=markers["comparison_id"].value_counts().to_dict(),
                                           n_high_confidence=markers.loc[markers["confidence"] == "high", "comparison_id"]
                                           .value_counts().to_dict(), n_vetoed=vetoed,
                                           n_rejected=rejected["comparison_id"].value_counts().to_dict()),
        "recommended_settings": recommended_settings(scores),
        "markers": markers,
        "rejected": rejected,
        "thresholds": pd.DataFrame([{**asdict(thresholds), "z": thresholds.z, "top_n": top_n,
                                     "min_cells_present": presence.min_cells, "min_enrichment": presence.min_enrichment,
                                     "min_marker_support": MIN_SUPPORT}]),
        "top_gene_expression": top_gene_expression(patterns[patterns["combination_id"].isin(first_replicates)],
                                                   profiles[RAW], max_genes=heatmap_genes),
        "bridge": bridge["bridge"],
        "bridge_summary": bridge["bridge_summary"],
    }

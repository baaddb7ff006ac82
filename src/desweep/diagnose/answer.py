"""The answer: one ranked list of genes per comparison, pooled over estimators whose errors differ.

No single DE setting is trustworthy on its own: scVI's settings err with the
model's decoding and the training seed, the bridge contrast
(:mod:`desweep.bridge`) errs where the compared groups do not shift between
batches like the bridge clusters. Their errors differ, so their agreement is
evidence; their disagreement is not averaged away but shows in the ranks.

Pooling
-------
Two *families* of rankings of every gene of a comparison:

``scvi``
    Every replicate (every trained model x every posterior seed) of the
    recommended settings (the tie band of :mod:`desweep.diagnose.rank`): each
    replicate's full DE table ranks every gene.
``bridge``
    The bridge contrast's full table (its ``rank``), when the comparison is
    identifiable through bridge clusters.

Within a table a gene's *normalized rank* is ``u = rank / (n_genes + 1)``
(a gene missing from a table takes ``u = 1``). A family's score of a gene is
the mean of ``ln u`` over its tables (the rank product of Breitling et al.
2004); the pooled score is the mean of the family scores, so each family
weighs the same however many replicates it has. Genes are ranked by pooled
score (lowest first), then by name.

Genes the bridge contrast does not support (``padj >= 0.05``, or untested) come
after every gene it supports: scVI's settings err together where the model's
decoding errs (the same latent space), and a gene that the direct estimate of
the user's contrast finds no evidence for is not an answer, however high the
settings rank it. Without a bridge contrast the pooled score alone orders.

Veto
----
Walking down that order, a gene is left out of the answer when the raw
expression call (:mod:`desweep.diagnose.classify`, in the direction the pooled
evidence gives) is ``batch_wide``, or when the bridge contrast finds the batch
shift heterogeneous across bridges for it (the assumption that the groups shift
like the bridges is doubtful for that gene). The first ``top_n`` genes kept are
the answer, ``rank`` 1 to ``top_n``; ``n_vetoed`` counts the genes passed over.

Confidence
----------
``high``
    The consensus rule: at least half of the recommended settings' replicates
    have the gene in their top ``N`` and classified ``cluster_specific``.
``medium``
    Not ``high``, but the raw call is ``cluster_specific`` and every family
    that ranks the gene agrees on its direction.
``low``
    The rest: ranked high by the pooled evidence, not confirmed by the call.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from desweep.diagnose.classify import Thresholds
from desweep.io import is_true
from desweep.diagnose.profiles import RAW, ExpressionProfile
from desweep.diagnose.tables import ComparisonCalls, oriented_comparison, table_lfc
from desweep.defaults import CLASSIFIED_TOP_N

logger = logging.getLogger(__name__)

MIN_SUPPORT = 0.5
#: the bridge contrast's false discovery rate below which it supports a gene (the conventional 5 %)
BRIDGE_FDR = 0.05
FAMILIES = ("scvi", "bridge")
CONFIDENCE = ("high", "medium", "low")
ANSWER_COLUMNS = ["comparison_id", "group1", "group2", "gene", "rank", "confidence", "high_group", "lfc_mean", "proba_de",
                  "bridge_lfc", "bridge_padj", "bridge_rank", "median_rank", "support", "n_replicates_supporting",
                  "n_replicates", "n_settings_supporting", "n_seeds_supporting", "n_models_supporting", "pattern",
                  "group_lfc", "within_lfc", "batch_shift_lfc", "heterogeneous", "direction_agrees", "families", "score"]


def normalized_log_ranks(table: pd.DataFrame, genes: pd.Index) -> np.ndarray:
    """``ln(rank / (n + 1))`` of every gene of ``genes`` in one ranked table (0, i.e. ``u = 1``, when absent)."""
    ranks = pd.Series(pd.to_numeric(table["rank"], errors="coerce").to_numpy(dtype=float),
                      index=table["gene"].astype(str).to_numpy())
    ranks = ranks[~ranks.index.duplicated()]
    u = ranks.reindex(genes).to_numpy(dtype=float) / (len(table) + 1)
    return np.log(np.where(np.isfinite(u), u, 1.0))


def _signed(table: pd.DataFrame, genes: pd.Index, column: str | None = None) -> np.ndarray:
    """A table's log fold change for ``genes`` (NaN when absent)."""
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float) if column else table_lfc(table)
    series = pd.Series(values, index=table["gene"].astype(str).to_numpy())
    return series[~series.index.duplicated()].reindex(genes).to_numpy(dtype=float)


def family_scores(replicate_tables: list[pd.DataFrame], bridge_table: pd.DataFrame | None,
                  genes: pd.Index) -> dict[str, np.ndarray]:
    """Per family, the mean normalized log rank of every gene (module docstring); families without tables are left out."""
    scores = {}
    if replicate_tables:
        scores["scvi"] = np.mean([normalized_log_ranks(t, genes) for t in replicate_tables], axis=0)
    if bridge_table is not None and len(bridge_table):
        scores["bridge"] = normalized_log_ranks(bridge_table, genes)
    return scores


def support(gene_patterns: pd.DataFrame, combination_ids: list[str], top_n: int) -> pd.DataFrame:
    """Per gene, the replicates that have it in their top ``top_n`` and classified ``cluster_specific`` (the consensus rule)."""
    calls = gene_patterns[gene_patterns["combination_id"].isin(set(combination_ids))
                          & (gene_patterns["pattern"] == "cluster_specific")
                          & (pd.to_numeric(gene_patterns["rank"], errors="coerce") <= top_n)]
    out = calls.groupby("gene", sort=False).agg(
        n_replicates_supporting=("combination_id", "nunique"), n_settings_supporting=("setting_id", "nunique"),
        n_seeds_supporting=("seed", "nunique"), n_models_supporting=("model", "nunique"))
    out["support"] = out["n_replicates_supporting"] / max(len(combination_ids), 1)
    return out


def ranked_answer(
    comparison: pd.Series,
    replicate_tables: dict[str, pd.DataFrame],
    gene_patterns: pd.DataFrame,
    raw: ExpressionProfile,
    *,
    bridge_table: pd.DataFrame | None = None,
    top_n: int = CLASSIFIED_TOP_N,
    thresholds: Thresholds = Thresholds(),
    min_support: float = MIN_SUPPORT,
) -> tuple[pd.DataFrame, int]:
    """The ranked answer of one comparison (module docstring).

    Parameters
    ----------
    comparison
        Its ``comparisons.csv`` row (``comparison_id``, ``group1``, ``group2``, batches).
    replicate_tables
        ``combination_id`` -> full DE table of every replicate of the recommended settings.
    gene_patterns
        The classified top genes of those replicates (``gene_patterns.csv`` rows; others are ignored).
    raw
        The raw expression profile (the call that vetoes batch-wide genes).
    bridge_table
        The comparison's rows of ``bridge.csv`` (``gene, rank, lfc, padj, heterogeneous``), or ``None``.

    Returns
    -------
    ``(answer, n_vetoed)``: at most ``top_n`` rows with :data:`ANSWER_COLUMNS`, best first.
    """
    cid, g1, g2 = str(comparison["comparison_id"]), str(comparison["group1"]), str(comparison["group2"])
    tables = list(replicate_tables.values())
    genes = pd.Index(sorted({str(g) for t in [*tables, *([bridge_table] if bridge_table is not None else [])]
                              for g in t["gene"]}))
    families = family_scores(tables, bridge_table, genes)
    if not families or genes.empty:
        return pd.DataFrame(columns=ANSWER_COLUMNS), 0
    pooled = np.mean(list(families.values()), axis=0)

    scvi_lfc = np.nanmedian(np.vstack([_signed(t, genes) for t in tables]), axis=0) if tables else np.full(len(genes), np.nan)
    proba = np.nanmedian(np.vstack([_signed(t, genes, "proba_de") for t in tables if "proba_de" in t]), axis=0) \
        if any("proba_de" in t for t in tables) else np.full(len(genes), np.nan)
    scvi_rank = np.nanmedian(np.vstack([_signed(t, genes, "rank") for t in tables]), axis=0) if tables else np.full(len(genes), np.nan)
    if bridge_table is not None and len(bridge_table):
        bridge_lfc, bridge_padj = _signed(bridge_table, genes, "lfc"), _signed(bridge_table, genes, "padj")
        bridge_rank = _signed(bridge_table, genes, "rank")
        het = bridge_table.assign(gene=bridge_table["gene"].astype(str)).drop_duplicates("gene").set_index("gene")["heterogeneous"]
        heterogeneous = np.array([is_true(v) for v in het.reindex(genes)], dtype=bool)
    else:
        bridge_lfc = bridge_padj = bridge_rank = np.full(len(genes), np.nan)
        heterogeneous = np.zeros(len(genes), dtype=bool)
    # genes the bridge contrast finds no evidence for come after every gene it supports, whatever scVI says
    unsupported = np.isfinite(bridge_rank).any() & ~(np.nan_to_num(bridge_padj, nan=1.0) < BRIDGE_FDR)
    order = np.lexsort((genes.to_numpy(dtype=str), pooled, unsupported))
    # the direction the pooled evidence gives: the bridge contrast's where it has one, else scVI's
    direction = np.where(np.isfinite(bridge_lfc) & (bridge_lfc != 0), bridge_lfc, scvi_lfc)
    signs = np.vstack([np.sign(scvi_lfc), np.sign(bridge_lfc)])
    agrees = np.all((signs == np.sign(direction)) | ~np.isfinite(signs) | (signs == 0), axis=0)

    calls = ComparisonCalls(oriented_comparison(comparison, g1, g2), {RAW: raw}, thresholds)
    kept: list[int] = []
    call_rows: dict[int, pd.Series] = {}
    vetoed, start, chunk = 0, 0, max(2 * top_n, 20)
    while len(kept) < top_n and start < len(order):
        idx = order[start:start + chunk]
        start += chunk
        looked = calls.lookup(genes[idx], direction[idx])
        for j, i in enumerate(idx):
            row = looked.iloc[j]
            if row["pattern"] == "batch_wide" or heterogeneous[i]:
                vetoed += 1
                continue
            kept.append(i)
            call_rows[i] = row
            if len(kept) == top_n:
                break
    sup = support(gene_patterns, list(replicate_tables), top_n).reindex(genes[kept])
    rows = []
    for rank, i in enumerate(kept, start=1):
        call, s = call_rows[i], sup.loc[genes[i]]
        high = s["support"] >= min_support - 1e-12 if np.isfinite(s["support"]) else False
        medium = call["pattern"] == "cluster_specific" and bool(agrees[i])
        rows.append({"comparison_id": cid, "group1": g1, "group2": g2, "gene": genes[i], "rank": rank,
                     "confidence": "high" if high else "medium" if medium else "low", "high_group": call["high_group"],
                     "lfc_mean": scvi_lfc[i], "proba_de": proba[i], "bridge_lfc": bridge_lfc[i], "bridge_padj": bridge_padj[i],
                     "bridge_rank": bridge_rank[i], "median_rank": scvi_rank[i],
                     "support": float(np.nan_to_num(s["support"])), "n_replicates": len(replicate_tables),
                     **{c: int(np.nan_to_num(s[c])) for c in ("n_replicates_supporting", "n_settings_supporting",
                                                               "n_seeds_supporting", "n_models_supporting")},
                     "pattern": call["pattern"], "group_lfc": call["group_lfc"], "within_lfc": call["within_lfc"],
                     "batch_shift_lfc": call["batch_shift_lfc"], "heterogeneous": bool(heterogeneous[i]),
                     "direction_agrees": bool(agrees[i]), "families": ";".join(families), "score": pooled[i]})
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS), vetoed


def _recommended_replicates(scores: pd.DataFrame, by_replicate: pd.DataFrame, cid: str) -> list[str]:
    """The combinations (every model x seed) of a comparison's recommended settings that have a table."""
    band = scores[(scores["comparison_id"].astype(str) == cid) & scores["recommended"].astype(bool)]
    reps = by_replicate[by_replicate["setting_id"].isin(set(band["setting_id"])) & (by_replicate["status"] == "ok")]
    return reps["combination_id"].astype(str).tolist()


def _oriented_bridge(bridge: pd.DataFrame | None, cid: str, group1: str) -> pd.DataFrame | None:
    """The comparison's bridge rows, with ``lfc`` positive when higher in the plan's ``group1``."""
    if bridge is None or bridge.empty:
        return None
    part = bridge[bridge["comparison_id"].astype(str) == cid]
    if part.empty:
        return None
    if str(part["group1"].iloc[0]) != group1:
        part = part.assign(lfc=-pd.to_numeric(part["lfc"], errors="coerce"))
    return part


def answer_table(
    plan: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    scores: pd.DataFrame,
    by_replicate: pd.DataFrame,
    gene_patterns: pd.DataFrame,
    comparisons: pd.DataFrame,
    raw: ExpressionProfile,
    *,
    bridge: pd.DataFrame | None = None,
    top_n: int = CLASSIFIED_TOP_N,
    thresholds: Thresholds = Thresholds(),
) -> tuple[pd.DataFrame, dict[str, int]]:
    """``markers.csv``: the ranked answer of every comparison with recommended settings, and the genes vetoed per comparison.

    The plan's orientation of each comparison (its ``group1``) is the answer's; the
    bridge table's lfc is turned to it.
    """
    frames, vetoed = [], {}
    by_id = {str(r["comparison_id"]): r for _, r in comparisons.iterrows()}
    first = plan.drop_duplicates("comparison_id")
    for _, row in first.iterrows():
        cid = str(row["comparison_id"])
        combos = [c for c in _recommended_replicates(scores, by_replicate, cid) if c in tables]
        if not combos or cid not in by_id:
            continue
        comparison = oriented_comparison(by_id[cid], str(row["group1"]), str(row["group2"]))
        part, vetoed[cid] = ranked_answer(comparison, {c: tables[c] for c in combos}, gene_patterns, raw,
                                          bridge_table=_oriented_bridge(bridge, cid, str(row["group1"])),
                                          top_n=top_n, thresholds=thresholds)
        frames.append(part)
    frames = [f for f in frames if len(f)]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ANSWER_COLUMNS)
    logger.info("ranked answer: %d genes in %d comparisons (%d high confidence)", len(out),
                out["comparison_id"].nunique() if len(out) else 0, int((out["confidence"] == "high").sum()) if len(out) else 0)
    return out.reindex(columns=ANSWER_COLUMNS), vetoed

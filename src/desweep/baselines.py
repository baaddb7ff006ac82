"""Classical baselines beside the scVI sweep: Wilcoxon and pseudobulk DESeq2.

Wilcoxon
--------
scanpy's ``rank_genes_groups`` (``method='wilcoxon'``) on log-normalized counts
(``normalize_total`` to 10,000 then ``log1p``) of the two groups' cells,
``group1`` against ``group2`` as reference. Genes are ranked by the absolute
z-score, so genes up in ``group2`` rank too (``logfoldchanges`` < 0). A cell
test ignores batches: for a ``confounded`` comparison the numbers are still
given (they show what naive DE finds) with ``batch_confounded = True``.

Pseudobulk DESeq2
-----------------
Counts are summed per group and *unit*: the ``sample`` column of ``obs`` when
present, else the batch (optionally split into ``pseudo_replicates`` random,
seeded parts; these only measure cell-sampling noise, so their p-values are
optimistic). Units with fewer than ``min_cells`` cells are dropped. pydeseq2
fits ``~ batch + group`` (``~ group`` when every unit is from one batch) and
tests ``group1`` against ``group2``. The design must be estimable: the group
effect must not be a combination of batch effects (some batch holds both
groups) and at least one residual degree of freedom must remain. Otherwise --
always for a ``confounded`` comparison -- the table has one row per comparison
with ``status`` and ``note`` saying why, and no numbers.

Both methods' top genes are classified with :mod:`desweep.diagnose`
(``baseline_patterns.csv``, ``baseline_scores.csv``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from desweep import keys
from desweep.choices import literal_values
from desweep.composition import PresenceRule
from desweep.diagnose import Thresholds, build_profiles, classify_setting, shares
from desweep.errors import DesweepInputError, ParameterError
from desweep.pseudobulk import fit_deseq2, sum_counts, wald_test
from desweep.names import comparison_name
from desweep.defaults import CLASSIFIED_TOP_N

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

Method = Literal["wilcoxon", "pseudobulk"]
METHODS = literal_values(Method)
WILCOXON_COLUMNS = ["comparison_id", "status", "batch_confounded", "note", "gene", "rank", "score", "logfoldchanges",
                    "pvals", "pvals_adj", "pct_group1", "pct_group2"]
PSEUDOBULK_COLUMNS = ["comparison_id", "status", "note", "unit", "n_units", "design_formula", "gene", "rank", "baseMean",
                      "log2FoldChange", "lfcSE", "stat", "pvalue", "padj"]


def _two_groups(adata: AnnData, group_key: str, g1: str, g2: str) -> AnnData:
    groups = adata.obs[group_key].astype(str)
    return adata[groups.isin([g1, g2]).to_numpy()]


def wilcoxon(adata: AnnData, comparison: pd.Series, *, group_key: str) -> pd.DataFrame:
    """scanpy Wilcoxon of ``group1`` against ``group2`` on log-normalized counts, ranked by ``|score|``."""
    import scanpy as sc

    g1, g2 = str(comparison["group1"]), str(comparison["group2"])
    sub = _two_groups(adata, group_key, g1, g2).to_memory()  # the two groups' rows only, also from a backed file
    sub.obs["_group"] = pd.Categorical(np.where(sub.obs[group_key].astype(str) == g1, "group1", "group2"),
                                       categories=["group1", "group2"])
    sc.pp.normalize_total(sub, target_sum=1e4)
    sc.pp.log1p(sub)
    sc.tl.rank_genes_groups(sub, "_group", groups=["group1"], reference="group2", method="wilcoxon", pts=True,
                            use_raw=False, tie_correct=True)
    res = sc.get.rank_genes_groups_df(sub, group="group1").rename(columns={"names": "gene"})
    res["gene"] = res["gene"].astype(str)
    in1 = (sub.obs["_group"] == "group1").to_numpy()
    detected = _detected(sub)
    pct = pd.DataFrame({"pct_group1": np.asarray(detected[in1].mean(axis=0)).ravel(),
                        "pct_group2": np.asarray(detected[~in1].mean(axis=0)).ravel()}, index=sub.var_names.astype(str))
    res = res.join(pct, on="gene")
    res = res.assign(_abs=res["scores"].abs()).sort_values(["_abs", "gene"], ascending=[False, True], kind="stable")
    res = res.drop(columns="_abs").rename(columns={"scores": "score"}).reset_index(drop=True)
    res["rank"] = np.arange(1, len(res) + 1)
    confounded = str(comparison.get("design", "")) == "confounded"
    res.insert(0, "comparison_id", str(comparison["comparison_id"]))
    res.insert(1, "status", "ok")
    res.insert(2, "batch_confounded", confounded)
    res.insert(3, "note", "group and batch fully confounded: differences include batch effects" if confounded else "")
    return res.reindex(columns=WILCOXON_COLUMNS)


def _detected(adata: AnnData):
    import scipy.sparse as sp

    x = adata.X
    return (x > 0).astype(np.float32) if sp.issparse(x) else (np.asarray(x) > 0).astype(np.float32)


def pseudobulk_counts(
    adata: AnnData, comparison: pd.Series, *, group_key: str, batch_key: str, sample_key: str | None = keys.SAMPLE,
    pseudo_replicates: int = 0, min_cells: int = 10, seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Summed counts per group x unit (``sample``, else batch [x pseudo-replicate]).

    Returns
    -------
    ``(counts, metadata, unit)``: units x genes integer counts, their metadata
    (``group`` = ``group1``/``group2``, ``batch``, ``n_cells``) and the unit kind.
    """
    g1, g2 = str(comparison["group1"]), str(comparison["group2"])
    obs = adata.obs
    in_groups = obs[group_key].astype(str).isin([g1, g2]).to_numpy()
    use_sample = bool(sample_key) and sample_key in obs.columns
    unit_kind = f"obs['{sample_key}']" if use_sample else "batch"
    unit = obs[sample_key].astype(str) if use_sample else obs[batch_key].astype(str)
    if not use_sample and pseudo_replicates > 1:
        rng = np.random.default_rng(seed)
        rep = np.zeros(adata.n_obs, dtype=np.int64)
        rep[in_groups] = rng.integers(0, pseudo_replicates, size=int(in_groups.sum()))
        unit = unit + "_rep" + pd.Series(rep, index=obs.index).astype(str)
        unit_kind = f"batch x {pseudo_replicates} pseudo-replicates"
    group = np.where(obs[group_key].astype(str) == g1, "group1", "group2")
    key = pd.Series(group, index=obs.index) + "|" + unit
    summed, n_cells = sum_counts(adata, key, mask=in_groups)
    labels = list(summed.index)
    batch_of = obs[batch_key].astype(str)[in_groups].groupby(key[in_groups].to_numpy(), observed=True).agg(
        lambda s: s.mode().iloc[0])
    meta = pd.DataFrame({"group": [k.split("|")[0] for k in labels], "batch": [batch_of[k] for k in labels],
                         "n_cells": n_cells}, index=[f"u{i}" for i in range(len(labels))])
    meta["unit"] = [k.split("|", 1)[1] for k in labels]
    counts = summed.set_axis(meta.index, axis=0)
    keep = meta["n_cells"] >= min_cells
    return counts[keep.to_numpy()], meta[keep], unit_kind


def estimability(meta: pd.DataFrame) -> tuple[bool, str, str]:
    """Is ``~ batch + group`` estimable on these units? Returns ``(ok, formula, why_not)``."""
    if meta.empty or meta["group"].nunique() < 2:
        return False, "", "a group has no unit with enough cells"
    multi_batch = meta["batch"].nunique() > 1
    formula = "~batch + group" if multi_batch else "~group"
    design = pd.get_dummies(meta[["batch"]], drop_first=True).astype(float) if multi_batch else pd.DataFrame(index=meta.index)
    design.insert(0, "intercept", 1.0)
    without_group = np.linalg.matrix_rank(design.to_numpy())
    design["group"] = (meta["group"] == "group1").astype(float)
    rank = np.linalg.matrix_rank(design.to_numpy())
    if rank == without_group:
        return False, formula, "group is confounded with batch in the units kept (no batch holds both groups)"
    if len(meta) - rank < 1:
        return False, formula, (f"{len(meta)} units for {rank} coefficients: no residual degree of freedom "
                                "(give obs['sample'] or pseudo-replicates)")
    return True, formula, ""


def pseudobulk_deseq2(
    adata: AnnData, comparison: pd.Series, *, group_key: str, batch_key: str, sample_key: str | None = keys.SAMPLE,
    pseudo_replicates: int = 0, min_cells: int = 10, seed: int = 0, threads: int = 1,
) -> pd.DataFrame:
    """pydeseq2 ``~ batch + group`` on pseudobulks, or one row saying why not (module docstring)."""
    cid = str(comparison["comparison_id"])
    if str(comparison.get("design", "")) == "confounded":
        return _not_estimable(cid, "confounded", "group and batch are fully confounded (the groups share no batch): "
                              "~ batch + group is not estimable", "", 0, "")
    counts, meta, unit = pseudobulk_counts(adata, comparison, group_key=group_key, batch_key=batch_key, sample_key=sample_key,
                                           pseudo_replicates=pseudo_replicates, min_cells=min_cells, seed=seed)
    ok, formula, why = estimability(meta)
    if not ok:
        return _not_estimable(cid, "not_estimable", why, unit, len(meta), formula)
    counts = counts.loc[:, counts.sum(axis=0) > 0]
    res = _run_deseq2(counts, meta, formula, threads=threads)
    res = res.assign(_p=res["padj"].fillna(2.0), _q=res["pvalue"].fillna(2.0), _s=-res["stat"].abs().fillna(0.0))
    res = res.sort_values(["_p", "_q", "_s", "gene"], kind="stable").drop(columns=["_p", "_q", "_s"]).reset_index(drop=True)
    res["rank"] = np.arange(1, len(res) + 1)
    res.insert(0, "comparison_id", cid)
    res.insert(1, "status", "ok")
    res.insert(2, "note", "pseudo-replicates: p-values are optimistic" if "pseudo" in unit else "")
    res.insert(3, "unit", unit)
    res.insert(4, "n_units", len(meta))
    res.insert(5, "design_formula", formula)
    return res.reindex(columns=PSEUDOBULK_COLUMNS)


def _run_deseq2(counts: pd.DataFrame, meta: pd.DataFrame, formula: str, *, threads: int) -> pd.DataFrame:
    metadata = pd.DataFrame({"group": pd.Categorical(meta["group"], categories=["group2", "group1"]),
                             "batch": pd.Categorical(["b_" + str(b) for b in meta["batch"]])}, index=meta.index)
    dds = fit_deseq2(counts, metadata, formula, threads=threads)
    return wald_test(dds, ["group", "group1", "group2"], threads=threads)


def _not_estimable(cid: str, status: str, note: str, unit: str, n_units: int, formula: str) -> pd.DataFrame:
    row: dict[str, object] = {c: np.nan for c in PSEUDOBULK_COLUMNS}
    row.update({"comparison_id": cid, "status": status, "note": note, "unit": unit, "n_units": n_units,
                "design_formula": formula, "gene": ""})
    return pd.DataFrame([row], columns=PSEUDOBULK_COLUMNS)


def check_methods(methods: list[str] | tuple[str, ...]) -> list[str]:
    """``methods`` if each is one of :data:`METHODS` (and there is one at least)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ParameterError("methods", "methods", f"unknown method '{unknown[0] if unknown else ''}' (choose from {', '.join(METHODS)})")
    return list(methods)


def check_pseudo_replicates(n: int) -> int:
    """``n`` if it is 0 (off) or at least 2 (one pseudo-replicate per group x batch would be the batch itself)."""
    if n < 0 or n == 1:
        raise ParameterError("pseudo_replicates", "pseudo_replicates", f"must be 0 (off) or at least 2, got {n}")
    return n


def run_baselines(
    adata: AnnData,
    comparisons: pd.DataFrame,
    means: pd.DataFrame | None = None,
    *,
    methods: tuple[str, ...] | list[str] = METHODS,
    top_n: int = CLASSIFIED_TOP_N,
    sample_key: str | None = keys.SAMPLE,
    pseudo_replicates: int = 0,
    min_cells: int = 10,
    seed: int = 0,
    threads: int = 1,
    thresholds: Thresholds = Thresholds(),
    presence: PresenceRule = PresenceRule(),
    source: str = keys.CLUSTERED_H5AD,
) -> dict[str, pd.DataFrame]:
    """Run the baselines on every comparison and classify their top genes like the scVI settings.

    Parameters
    ----------
    adata
        ``clustered.h5ad`` (raw counts in ``X``; keys recorded in ``uns['desweep']``).
    comparisons
        ``composition/comparisons.csv``.
    means
        ``normalized/cluster_batch_means.csv`` (optional), scored like in :func:`desweep.diagnose.diagnose`.
    methods
        Any of ``wilcoxon``, ``pseudobulk``.

    Returns
    -------
    ``{"wilcoxon", "pseudobulk", "baseline_patterns", "baseline_scores"}``; a
    method not run gives an empty table. ``baseline_patterns`` has the columns
    of ``gene_patterns.csv`` with ``combination_id = <comparison_id>__<method>``.
    """
    from desweep.datakeys import get_keys

    methods = check_methods(methods)
    if top_n < 1:
        raise ParameterError("top_n", "top_n", f"must be at least 1, got {top_n}")
    check_pseudo_replicates(pseudo_replicates)
    data_keys = get_keys(adata, source, need_groups=True)
    for column in ("comparison_id", "group1", "group2", "design"):
        if column not in comparisons.columns:
            raise DesweepInputError(keys.COMPARISONS_CSV, column, f"column missing (have: {', '.join(map(str, comparisons.columns))})")
    comparisons = comparisons.astype({"comparison_id": str, "group1": str, "group2": str})
    groups = set(adata.obs[data_keys.group_key].astype(str))
    for column in ("group1", "group2"):
        for group in comparisons[column]:
            if group not in groups:
                raise DesweepInputError(keys.COMPARISONS_CSV, column, f"group '{group}' is not a group of the data")
    profiles = build_profiles(adata, means, group_key=data_keys.groups, batch_key=data_keys.batch_key,
                              presence=presence, pseudocount_fraction=thresholds.pseudocount_fraction)
    results: dict[str, list[pd.DataFrame]] = {m: [] for m in METHODS}
    patterns, scores = [], []
    for _, comp in comparisons.iterrows():
        for method in methods:
            logger.info("%s: %s", comparison_name(comp["group1"], comp["group2"]), method)
            if method == "wilcoxon":
                table = wilcoxon(adata, comp, group_key=data_keys.groups)
                lfc_column = "logfoldchanges"
            else:
                table = pseudobulk_deseq2(adata, comp, group_key=data_keys.groups, batch_key=data_keys.batch_key,
                                          sample_key=sample_key, pseudo_replicates=pseudo_replicates, min_cells=min_cells,
                                          seed=seed, threads=threads)
                lfc_column = "log2FoldChange"
            results[method].append(table)
            cid = f"{comp['comparison_id']}__{method}"
            status = str(table["status"].iloc[0])
            row = {"combination_id": cid, "comparison_id": comp["comparison_id"], "method": method, "status": status,
                   "note": str(table["note"].iloc[0]) if status != "ok" or table["note"].iloc[0] else ""}
            if status == "ok":
                ranked = table[["gene", "rank", lfc_column]].rename(columns={lfc_column: "lfc"})
                calls = classify_setting(ranked, comp, profiles, top_n=top_n, thresholds=thresholds)
                calls.insert(0, "comparison_id", comp["comparison_id"])
                calls.insert(0, "combination_id", cid)
                patterns.append(calls)
                row.update(shares(calls))
            scores.append(row)
    score_table = pd.DataFrame(scores)
    for column in ("n_top", "share_cluster_specific", "share_batch_wide", "share_other", "specificity_score"):
        if column not in score_table.columns:
            score_table[column] = np.nan
    return {
        "wilcoxon": pd.concat(results["wilcoxon"], ignore_index=True) if results["wilcoxon"] else pd.DataFrame(columns=WILCOXON_COLUMNS),
        "pseudobulk": (pd.concat(results["pseudobulk"], ignore_index=True) if results["pseudobulk"]
                       else pd.DataFrame(columns=PSEUDOBULK_COLUMNS)),
        "baseline_patterns": pd.concat(patterns, ignore_index=True) if patterns else pd.DataFrame(columns=["combination_id", "gene", "rank", "pattern"]),
        "baseline_scores": score_table,
    }

"""One negative-binomial GLM over every unit, and the Wald contrast of two clusters on it.

Design ``~ batch + cluster``: each unit's log mean is its batch's shift plus its
cluster's level, so a cluster's level is measured net of the batch shift
wherever the batches are linked through shared clusters. With samples nested
in batches the design is ``~ sample + cluster`` (sample absorbs batch), and
the dispersion then measures the spread between samples, not only cell
sampling: this is used only when every contrast asked stays estimable with at
least one residual degree of freedom.

Shrinkage: PyDESeq2's apeGLM shrinks one coefficient of the design, so each
comparison would need its own refit with group2 as the reference level. The
shrunken lfc here is the normal-prior shrinkage of DESeq2's first versions
(``betaPrior``), applied to the contrast itself: a zero-centred normal prior
whose scale matches the upper 5 % of the genes' ``|lfc|``, giving
``lfc * s^2 / (s^2 + se^2)``; one fit serves every comparison.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from desweep.bridge.units import Units
from desweep.pseudobulk import fit_deseq2, wald_test

Term = Literal["batch", "sample"]

#: quantile of |lfc| matched to the normal prior's, as DESeq2's betaPrior (upper 5 %)
PRIOR_QUANTILE = 0.95


def collapse_samples(units: Units) -> Units:
    """The same cells summed per cluster x batch (samples merged)."""
    meta = units.meta
    key = meta["cluster"] + "\x00" + meta["batch"]
    order = pd.unique(key)
    counts = units.counts.groupby(key.to_numpy(), sort=False).sum().loc[order]
    variance = units.variance.groupby(key.to_numpy(), sort=False).sum().loc[order]
    first = meta.groupby(key.to_numpy(), sort=False).first().loc[order]
    new_meta = pd.DataFrame({"cluster": first["cluster"].to_numpy(), "batch": first["batch"].to_numpy(), "sample": "",
                             "n_cells": meta.groupby(key.to_numpy(), sort=False)["n_cells"].sum().loc[order].to_numpy(),
                             "library_size": counts.sum(axis=1).to_numpy()}, index=[f"u{i}" for i in range(len(order))])
    return Units(counts=counts.set_axis(new_meta.index, axis=0), variance=variance.set_axis(new_meta.index, axis=0), meta=new_meta,
                 present=units.present, samples=False)


def design_matrix(meta: pd.DataFrame, term: Term) -> tuple[np.ndarray, list[str]]:
    """Treatment-coded ``~ term + cluster`` (first level of each factor the reference) and its cluster columns."""
    parts = [np.ones((len(meta), 1))]
    for factor in (term, "cluster"):
        levels = sorted(meta[factor].unique())
        parts.append(np.column_stack([(meta[factor] == lv).to_numpy(float) for lv in levels[1:]]) if len(levels) > 1
                     else np.zeros((len(meta), 0)))
    clusters = sorted(meta["cluster"].unique())
    return np.hstack(parts), clusters


def estimable(meta: pd.DataFrame, term: Term, pairs: list[tuple[str, str]]) -> tuple[bool, str]:
    """Are all ``pairs`` (cluster vs cluster) estimable under ``~ term + cluster``, with a residual degree of freedom?"""
    x, clusters = design_matrix(meta, term)
    rank = np.linalg.matrix_rank(x)
    if len(meta) - rank < 1:
        return False, f"{len(meta)} units for {rank} coefficients: no residual degree of freedom"
    offset = x.shape[1] - (len(clusters) - 1)
    for g1, g2 in pairs:
        contrast = np.zeros(x.shape[1])
        for group, sign in ((g1, 1.0), (g2, -1.0)):
            if group not in clusters:
                return False, f"'{group}' has no unit"
            position = clusters.index(group)
            if position:
                contrast[offset + position - 1] = sign
        if np.linalg.matrix_rank(np.vstack([x, contrast])) > rank:
            return False, f"'{g1}' vs '{g2}' is not estimable by {term}"
    return True, ""


def fit(units: Units, term: Term, *, threads: int = 1):
    """PyDESeq2 fit of ``~ term + cluster``; factor levels are coded, the codes kept in ``dds.uns``."""
    meta = units.meta
    metadata = pd.DataFrame(index=meta.index)
    codes: dict[str, dict[str, str]] = {}
    for factor, prefix in ((term, "t"), ("cluster", "c")):
        levels = sorted(meta[factor].unique())
        codes[factor] = {lv: f"{prefix}{i:05d}" for i, lv in enumerate(levels)}
        metadata[factor] = pd.Categorical([codes[factor][v] for v in meta[factor]], categories=list(codes[factor].values()))
    dds = fit_deseq2(units.counts, metadata, f"~{term} + cluster", threads=threads)
    dds.uns["desweep_cluster_codes"] = codes["cluster"]
    return dds


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """BH adjustment over every gene, an untested gene (NaN) counting as p = 1."""
    p = np.where(np.isfinite(pvalues), pvalues, 1.0)
    adjusted = stats.false_discovery_control(p, method="bh") if len(p) else p
    return np.where(np.isfinite(pvalues), adjusted, np.nan)


def normal_prior_shrink(lfc: np.ndarray, se: np.ndarray) -> np.ndarray:
    """Zero-centred normal-prior shrinkage (module docstring); NaN stays NaN."""
    finite = np.isfinite(lfc) & np.isfinite(se)
    if not finite.any():
        return lfc.copy()
    scale = np.quantile(np.abs(lfc[finite]), PRIOR_QUANTILE) / stats.norm.ppf(1 - (1 - PRIOR_QUANTILE) / 2)
    prior_var = max(scale**2, 1e-8)
    return lfc * prior_var / (prior_var + se**2)


def lower_bound(lfc: np.ndarray, se: np.ndarray, *, alpha: float, extra_var: np.ndarray | None = None) -> np.ndarray:
    """Lower ``1 - alpha`` confidence bound of ``|lfc|``, 0 when the interval crosses 0.

    ``extra_var`` (per gene) widens the interval: the spread of the batch shift
    across bridges, which the GLM's single batch term ignores.
    """
    variance = se**2 + (0.0 if extra_var is None else np.nan_to_num(extra_var))
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(lfc), np.maximum(0.0, np.abs(lfc) - stats.norm.ppf(1 - alpha / 2) * np.sqrt(variance)), np.nan)


def contrast(dds, group1: str, group2: str, *, threads: int = 1) -> pd.DataFrame:
    """Wald contrast of cluster ``group1`` vs ``group2`` on a fitted GLM, every gene in the data's order.

    Returns
    -------
    ``gene, base_mean, lfc, lfc_shrunk, se, stat, pvalue, padj``.
    """
    code = dds.uns["desweep_cluster_codes"]
    res = wald_test(dds, ["cluster", code[group1], code[group2]], threads=threads, filters=False)
    lfc, se = res["log2FoldChange"].to_numpy(float), res["lfcSE"].to_numpy(float)
    return pd.DataFrame({
        "gene": res["gene"], "base_mean": res["baseMean"].to_numpy(float), "lfc": lfc,
        "lfc_shrunk": normal_prior_shrink(lfc, se), "se": se, "stat": res["stat"].to_numpy(float),
        "pvalue": res["pvalue"].to_numpy(float), "padj": benjamini_hochberg(res["pvalue"].to_numpy(float)),
    })

"""The batch shift between two groups' batches, bridge by bridge, and how much it varies.

In each bridge (a cluster present in one of group1's batches and one of
group2's) the shift is ``log2 CPM`` in group1's batches minus ``log2 CPM`` in
group2's batches, from the bridge's pseudobulk counts ``y`` over a library of
``N`` counts: ``log2((y + 0.5) / (N + 1) * 1e6)``. Its variance on the natural
log scale (delta method) is ``var(y) / (y + 0.5)^2`` with ``var(y)`` from the
cells as replicates (so overdispersion between cells counts), floored at the
Poisson ``1 / (y + 0.5)`` (the same half count as the estimate, so an all-zero
unit has a finite, non-zero variance), then divided by ``ln(2)^2``. The GLM's
dispersion is not used here: without samples it is measured on the residuals
of ``~ batch + cluster``, which are the very differences between bridges that
this test is meant to detect. The bridges are
pooled with :func:`desweep.meta.random_effects`; the GLM's contrast already
removes a common shift, and the spread of the shift across bridges says how
far the compared groups' own, unseen shift may be from it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from desweep.bridge.units import Units
from desweep.meta import random_effects

SHIFT_COLUMNS = ["shift_lfc", "se_shift_prediction", "shift_tau2", "shift_i2", "shift_q_pvalue", "n_bridges",
                 "lobo_lfc_min", "lobo_lfc_max", "heterogeneous"]
LN2_SQUARED = np.log(2.0) ** 2


def _side(units: Units, cluster: str, batches: list[str]) -> tuple[np.ndarray, np.ndarray]:
    rows = ((units.meta["cluster"] == cluster) & units.meta["batch"].isin(batches)).to_numpy()
    y = units.counts.loc[rows].to_numpy(float).sum(axis=0)
    var_y = units.variance.loc[rows].to_numpy(float).sum(axis=0)
    library = float(units.meta.loc[rows, "library_size"].sum())
    log2_cpm = np.log2((y + 0.5) / (library + 1.0) * 1e6)
    variance = np.maximum(var_y / (y + 0.5) ** 2, 1.0 / (y + 0.5)) / LN2_SQUARED
    return log2_cpm, variance


def bridge_shifts(units: Units, bridges: list[str], batches1: list[str], batches2: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per bridge and gene: the log2 shift (group1's batches minus group2's) and its variance (bridges x genes)."""
    shifts, variances = [], []
    for cluster in bridges:
        in1 = [b for b in units.present[cluster] if b in batches1]
        in2 = [b for b in units.present[cluster] if b in batches2]
        level1, var1 = _side(units, cluster, in1)
        level2, var2 = _side(units, cluster, in2)
        shifts.append(level1 - level2)
        variances.append(var1 + var2)
    n_genes = units.counts.shape[1]
    return np.array(shifts).reshape(-1, n_genes), np.array(variances).reshape(-1, n_genes)


def heterogeneous(lfc: np.ndarray, tau2: np.ndarray, q_pvalue: np.ndarray, *, alpha: float) -> np.ndarray:
    """The shift differs across bridges clearly: Q significant at ``alpha`` and the shift's spread is large for this gene.

    Large means that an unseen cluster's shift, at the ``1 - alpha`` prediction
    bound ``z * tau``, moves the gene's own contrast by half its size or more
    (so it could halve it or, for a small contrast, flip its sign).
    """
    z = stats.norm.ppf(1 - alpha / 2)
    with np.errstate(invalid="ignore"):
        return (np.nan_to_num(q_pvalue, nan=1.0) < alpha) & (z * np.sqrt(np.nan_to_num(tau2)) >= np.abs(np.nan_to_num(lfc)) / 2)


def shift_table(lfc: np.ndarray, shifts: np.ndarray, variances: np.ndarray, *, alpha: float) -> pd.DataFrame:
    """Pooled shift, its spread and the leave-one-bridge-out range of the contrast, per gene.

    Leaving a bridge out is not refitted: the contrast moves by the change of the
    pooled shift, ``lfc + shift_all - shift_without_i`` (a difference in
    differences), which is the GLM's answer up to its weighting of the bridges.
    """
    n_genes = len(lfc)
    k = shifts.shape[0]
    if k == 0:
        table = pd.DataFrame({c: np.full(n_genes, np.nan) for c in SHIFT_COLUMNS})
        table["n_bridges"] = 0
        table["heterogeneous"] = False
        return table
    pooled = random_effects(shifts, variances)
    lobo = np.full((k, n_genes), np.nan)
    if k >= 2:
        for i in range(k):
            rest = np.arange(k) != i
            lobo[i] = lfc + pooled.mean - random_effects(shifts[rest], variances[rest]).mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a gene without a contrast: all-NaN column
        low, high = np.nanmin(lobo, axis=0), np.nanmax(lobo, axis=0)
    return pd.DataFrame({
        "shift_lfc": pooled.mean, "se_shift_prediction": pooled.se_prediction, "shift_tau2": pooled.tau2,
        "shift_i2": pooled.i2, "shift_q_pvalue": pooled.q_pvalue, "n_bridges": k,
        "lobo_lfc_min": low, "lobo_lfc_max": high,
        "heterogeneous": heterogeneous(lfc, pooled.tau2, pooled.q_pvalue, alpha=alpha),
    })

"""Pooling one effect measured in several independent units (bridges), with its heterogeneity.

The batch shift between two groups' batches can only be measured in the clusters
present on both sides (*bridges*). The groups themselves are a further, unseen
cluster: if the bridges disagree, the shift the groups carry is uncertain by
that disagreement, however precisely each bridge is measured. A fixed-effect
average (inverse-variance or plain) ignores it; the random-effects model
(DerSimonian and Laird, 1986) estimates the between-bridge variance ``tau^2``
and adds it to the error of the pooled shift and, for a new unit such as the
compared groups, to the prediction error (Higgins, Thompson and Spiegelhalter,
2009). Vectorised over genes; NaN entries (a bridge without a value for a gene)
are left out of that gene's pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

#: variances at or below this are raised to it, so that a unit measured without noise
#: (all-zero counts) cannot take all the weight; callers should floor variances first
MIN_VARIANCE = 1e-12


@dataclass(frozen=True)
class Pooled:
    """Random-effects pool per gene (arrays of length n_genes).

    Attributes
    ----------
    mean
        Random-effects pooled estimate (NaN without any unit).
    se
        Its standard error, ``sqrt(1 / sum(1 / (v_i + tau^2)))``.
    se_prediction
        Standard error for one new unit, ``sqrt(se^2 + tau^2)``: the error of the
        shift an unseen cluster carries when it shifts like a random bridge.
    tau2
        Between-unit variance (DerSimonian-Laird, truncated at 0); NaN with fewer than 2 units.
    q
        Cochran's Q; NaN with fewer than 2 units.
    q_pvalue
        ``P(chi2_{k-1} >= Q)``: the test that every unit has the same effect; NaN with fewer than 2 units.
    i2
        ``max(0, (Q - (k - 1)) / Q)``: the share of the spread that is not sampling noise; NaN with fewer than 2 units.
    n_units
        Units with a value, per gene.
    """

    mean: np.ndarray
    se: np.ndarray
    se_prediction: np.ndarray
    tau2: np.ndarray
    q: np.ndarray
    q_pvalue: np.ndarray
    i2: np.ndarray
    n_units: np.ndarray


def random_effects(estimates: np.ndarray, variances: np.ndarray) -> Pooled:
    """Pool ``estimates`` (units x genes) with their sampling ``variances`` (same shape).

    Parameters
    ----------
    estimates
        One row per unit (bridge), one column per gene; NaN where a unit has no value.
    variances
        The sampling variance of each estimate (floored at :data:`MIN_VARIANCE`).

    Returns
    -------
    :class:`Pooled`, one value per gene. With a single unit the pool is that unit
    (``tau2``, ``q``, ``i2`` NaN: heterogeneity cannot be measured, and
    ``se_prediction`` equals ``se``).

    Examples
    --------
    >>> pooled = random_effects(np.array([[0.0], [0.0], [3.0]]), np.full((3, 1), 0.0009))
    >>> round(float(pooled.mean[0]), 2), round(float(pooled.se_prediction[0]), 2)
    (1.0, 2.0)
    """
    y = np.atleast_2d(np.asarray(estimates, dtype=float))
    v = np.atleast_2d(np.asarray(variances, dtype=float))
    if y.shape != v.shape:
        msg = f"estimates {y.shape} and variances {v.shape} differ in shape"
        raise ValueError(msg)
    present = np.isfinite(y) & np.isfinite(v)
    k = present.sum(axis=0)
    v = np.where(present, np.maximum(v, MIN_VARIANCE), np.inf)
    y0 = np.where(present, y, 0.0)
    w = np.where(present, 1.0 / v, 0.0)
    sum_w = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fixed = (w * y0).sum(axis=0) / sum_w
        q = (w * (y0 - fixed) ** 2).sum(axis=0)
        c = sum_w - (w**2).sum(axis=0) / sum_w
        tau2 = np.maximum(0.0, (q - (k - 1)) / c)
        tau2 = np.where(k >= 2, np.nan_to_num(tau2, nan=0.0), np.nan)
        w_re = np.where(present, 1.0 / (v + np.nan_to_num(tau2)), 0.0)
        mean = (w_re * y0).sum(axis=0) / w_re.sum(axis=0)
        se = np.sqrt(1.0 / w_re.sum(axis=0))
        i2 = np.where(q > 0, np.maximum(0.0, (q - (k - 1)) / q), 0.0)
    many = k >= 2
    none = k == 0
    return Pooled(
        mean=np.where(none, np.nan, mean),
        se=np.where(none, np.nan, se),
        se_prediction=np.where(none, np.nan, np.sqrt(se**2 + np.nan_to_num(tau2))),
        tau2=tau2,
        q=np.where(many, q, np.nan),
        q_pvalue=np.where(many, stats.chi2.sf(q, np.maximum(k - 1, 1)), np.nan),
        i2=np.where(many, i2, np.nan),
        n_units=k,
    )

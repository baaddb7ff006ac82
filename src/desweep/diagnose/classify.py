"""Is a top gene cluster-specific, a batch effect, or neither? A per-gene test.

For a comparison ``group1`` vs ``group2`` the gene's *high group* ``H`` is the
group the DE table has it higher in (``L`` the other). The question is the
user's: is the gene higher in ``H`` than in ``L`` once the difference between
their batches is taken out? Measured in a profile
(:mod:`desweep.diagnose.profiles`), each with its delta-method standard error
from the gene's own sampling noise (counts, cells, and samples where known):

``group_lfc`` (``d``)
    ``H`` against ``L``, each pooled over its cells (cell-weighted over its batches).
``batch_shift_lfc`` (``s``)
    The same-direction difference between *batches* in clusters other than
    ``H`` (the *bridges*: clusters present in one of ``H``'s batches that
    ``L`` lacks, when any, and in one of ``L``'s batches that ``H`` lacks, when
    any; NaN when no cluster is, or when both groups have the same batches).
    Each bridge is averaged over ``H``'s batches weighted by ``H``'s cells,
    and over ``L``'s batches weighted by ``L``'s cells (over the batches the
    bridge is present in): the difference ``d`` would show between two
    clusters that differ only by their batches. The bridges' shifts are
    pooled with a random-effects model (:func:`desweep.meta.random_effects`):
    the groups are one more, unseen cluster, so ``se_batch_shift_lfc`` is the
    *prediction* standard error, which includes the spread between bridges
    (``shift_tau2``, ``shift_i2``; ``shift_heterogeneous`` when Cochran's Q
    test of equal shifts rejects at ``alpha``). With one bridge the spread
    cannot be measured and the prediction error is that bridge's own.
``between_batch_lfc``
    The bridges' shift between the groups' own batches only (those the other
    group lacks), each batch equally, pooled the same way: what a table that
    compares the batches themselves would show. It serves the second
    ``batch_wide`` rule only, where pooling over shared batches hides ``d``.
``net_lfc`` (``d - s``)
    The user's contrast: ``H`` against ``L`` net of the batch shift, with
    ``se_net_lfc = sqrt(se_d^2 + se_s^2)`` (``d`` and ``s`` use different cells).
``within_lfc`` (``w``)
    Descriptive, and the fallback without bridges: per batch where ``H`` is
    present, ``H`` against the mean log of the other present clusters of that
    batch, averaged over ``H``'s batches (``within_lfc_vs_next``: against the
    highest other cluster, for information). ``own_cluster_only``: ``w`` clear
    and at least ``f d`` (high only in its own cluster, not also in another
    cell type).

A difference is *clear* when it is at least ``z`` standard errors (``z``: the
one-sided normal quantile of ``alpha``, 2.33 for the default 0.01) and at
least ``min_abs_lfc`` (log2 1.2). With ``f = explained_fraction`` (0.5):

``cluster_specific``
    ``d`` clear; with a measurable shift, ``d - s`` clear and ``s < f d`` (any
    shift estimate explaining half of ``d`` vetoes the call); without one
    (no cluster on both sides) the within-batch rule: ``w >= f d`` and ``w``
    clear, and the reason says the shift was not measurable.
``batch_wide``
    ``d`` clear, ``s`` clearly at least ``f d`` (``s - z se_s >= f d``) and
    ``d - s`` not clear; or ``d`` not clear (pooling over batches can hide it)
    but ``b = between_batch_lfc`` clear, ``w < f b`` and ``b - z se_b >= f |lfc|``,
    ``lfc`` being the DE table's log2 fold change (the shift clearly explains
    the difference the table reports).
``other``
    Everything else, with the reason: no clear raw difference, both a clear
    net contrast and a clear shift of at least ``f d``, a shift reaching
    ``f d`` that is not clear, neither a clear net contrast nor a clear shift
    (e.g. bridges that disagree), or nothing measurable.

The batch shift must *clearly* reach ``f d`` because it is measured in other
clusters, where a sparse marker's counts are noise: a shift that merely reaches
``f d`` by chance would turn a true marker batch-wide. A cluster-specific call
is guarded the other way: any shift estimate reaching ``f d`` vetoes it.
Every threshold is relative to the gene's own noise and difference: nothing
depends on depth, normalization scale or the number of genes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
import pandas as pd

from desweep.choices import literal_values
from desweep.defaults import ALPHA, EXPLAINED_FRACTION
from desweep.diagnose.profiles import DEFAULT_PSEUDOCOUNT_FRACTION, ExpressionProfile
from desweep.errors import DesweepInputError, ParameterError
from desweep.meta import random_effects

logger = logging.getLogger(__name__)

Pattern = Literal["cluster_specific", "batch_wide", "other"]
PATTERNS = literal_values(Pattern)
SCORE_COLUMNS = ["group_lfc", "net_lfc", "within_lfc", "within_lfc_vs_next", "batch_shift_lfc", "n_shift_clusters",
                 "se_group_lfc", "se_net_lfc", "se_within_lfc", "se_batch_shift_lfc", "shift_tau2", "shift_i2",
                 "shift_heterogeneous", "own_cluster_only", "between_batch_lfc", "se_between_batch_lfc"]
#: the scores :func:`_call` reads, in its argument order
CALL_COLUMNS = ("group_lfc", "within_lfc", "batch_shift_lfc", "net_lfc", "between_batch_lfc", "se_group_lfc",
                "se_within_lfc", "se_batch_shift_lfc", "se_net_lfc", "se_between_batch_lfc")
#: the score columns written once more per scVI choice (``<column>__<choice>``)
CHOICE_COLUMNS = ["pattern", "group_lfc", "within_lfc", "batch_shift_lfc", "between_batch_lfc"]


@dataclass(frozen=True)
class Thresholds:
    """The classification rule's parameters (module docstring); all scale-free.

    Attributes
    ----------
    explained_fraction
        Share of the group difference a within-batch (or batch) difference must
        reach to explain it.
    alpha
        One-sided level of the per-gene test: a difference is clear when it is
        at least ``z = Phi^-1(1 - alpha)`` standard errors.
    min_abs_lfc
        The smallest clear difference (log2), however many cells.
    pseudocount_fraction
        ``eps`` as a fraction of the profile's median gene mean.
    """

    explained_fraction: float = EXPLAINED_FRACTION
    alpha: float = ALPHA
    min_abs_lfc: float = math.log2(1.2)
    pseudocount_fraction: float = DEFAULT_PSEUDOCOUNT_FRACTION

    def check(self) -> None:
        """Raise a one-line error for a value out of range."""
        if not 0 < self.explained_fraction < 1:
            raise ParameterError("explained_fraction", "explained_fraction", f"must be between 0 and 1, got {self.explained_fraction}")
        if not 0 < self.alpha < 0.5:
            raise ParameterError("alpha", "alpha", f"must be between 0 and 0.5, got {self.alpha}")
        if self.min_abs_lfc < 0 or self.pseudocount_fraction <= 0:
            raise DesweepInputError("thresholds", "min_abs_lfc/pseudocount_fraction", "must be non-negative (pseudocount positive)")

    @property
    def z(self) -> float:
        """Standard errors a clear difference must reach."""
        return NormalDist().inv_cdf(1 - self.alpha)


@dataclass(frozen=True)
class Side:
    """The high group, the low group and the batches each is compared in."""

    high: str
    low: str
    high_batches: list[str]
    low_batches: list[str]


def _mean_of(values: list[np.ndarray], variances: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of estimates and its variance (independent terms), per gene, ignoring NaN terms."""
    if not values:
        nan = np.full(n, np.nan)
        return nan, nan
    stack, var_stack = np.vstack(values), np.vstack(variances)
    finite = np.isfinite(stack)
    count = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, stack, 0).sum(axis=0) / count
        var = np.where(finite, var_stack, 0).sum(axis=0) / count**2
    return np.where(count > 0, mean, np.nan), np.where(count > 0, var, np.nan)


def side_scores(profile: ExpressionProfile, side: Side, genes: pd.Index) -> dict[str, np.ndarray]:
    """Scores and standard errors of ``genes`` for one direction (high group = ``side.high``)."""
    n, genes = len(genes), profile.rows(genes)
    high, var_high = profile.pooled_log2(side.high, side.high_batches, genes)
    low, var_low = profile.pooled_log2(side.low, side.low_batches, genes)
    within, var_within, vs_next = [], [], []
    for batch in side.high_batches:
        others = [c for c in profile.clusters if c != side.high and profile.cells(c, batch) > 0]
        if not others or profile.cells(side.high, batch) <= 0:
            continue
        h, var_h = profile.log2(side.high, batch, genes)
        logs = [profile.log2(c, batch, genes) for c in others]
        other_log = np.vstack([v for v, _ in logs])
        within.append(h - other_log.mean(axis=0))
        var_within.append(var_h + np.vstack([v for _, v in logs]).sum(axis=0) / len(others) ** 2)
        vs_next.append(h - other_log.max(axis=0))
    within_lfc, var_w = _mean_of(within, var_within, n)
    within_next, _ = _mean_of(vs_next, [np.zeros(n)] * len(vs_next), n)

    matched, between = _bridge_shifts(profile, side, genes)
    # the groups are one more, unseen bridge: their shift is uncertain by the bridges' spread too
    pooled = random_effects(*matched) if matched else None
    pooled_between = random_effects(*between) if between else None
    nan = np.full(n, np.nan)
    shift = pooled.mean if pooled else nan
    se_shift = pooled.se_prediction if pooled else nan
    group_lfc, se_group = high - low, np.sqrt(var_high + var_low)
    return {"group_lfc": group_lfc, "net_lfc": group_lfc - shift, "within_lfc": within_lfc, "within_lfc_vs_next": within_next,
            "batch_shift_lfc": shift, "n_shift_clusters": pooled.n_units.astype(float) if pooled else np.zeros(n),
            "se_group_lfc": se_group, "se_net_lfc": np.sqrt(se_group**2 + se_shift**2), "se_within_lfc": np.sqrt(var_w),
            "se_batch_shift_lfc": se_shift, "shift_tau2": pooled.tau2 if pooled else nan,
            "shift_i2": pooled.i2 if pooled else nan, "shift_q_pvalue": pooled.q_pvalue if pooled else nan,
            "between_batch_lfc": pooled_between.mean if pooled_between else nan,
            "se_between_batch_lfc": pooled_between.se_prediction if pooled_between else nan}


def _bridge_shifts(profile: ExpressionProfile, side: Side, genes: np.ndarray
                   ) -> tuple[tuple[np.ndarray, np.ndarray] | None, tuple[np.ndarray, np.ndarray] | None]:
    """Per bridge (rows) the shift with the groups' batch mix, and the shift between the groups' own batches.

    Each as ``(estimates, variances)``, ``None`` without a bridge (module docstring, ``batch_shift_lfc`` and
    ``between_batch_lfc``).
    """
    n = len(genes)
    hi = sorted(set(side.high_batches) - set(side.low_batches)) or sorted(side.high_batches)
    lo = sorted(set(side.low_batches) - set(side.high_batches)) or sorted(side.low_batches)
    if set(hi) == set(lo):
        return None, None
    matched, var_matched, between, var_between = [], [], [], []
    for cluster in profile.clusters:
        if cluster == side.high:
            continue
        on_hi = [b for b in hi if profile.cells(cluster, b) > 0]
        on_lo = [b for b in lo if profile.cells(cluster, b) > 0]
        if not (on_hi and on_lo):
            continue
        # the bridge seen with each group's own mix of batches: the batch part of d
        hi_log, var_hi = profile.weighted_log2(cluster, {b: profile.cells(side.high, b) for b in side.high_batches}, genes)
        lo_log, var_lo = profile.weighted_log2(cluster, {b: profile.cells(side.low, b) for b in side.low_batches}, genes)
        matched.append(hi_log - lo_log)
        var_matched.append(var_hi + var_lo)
        hi_log, var_hi = _mean_of(*zip(*[profile.log2(cluster, b, genes) for b in on_hi], strict=True), n)  # type: ignore[call-arg]
        lo_log, var_lo = _mean_of(*zip(*[profile.log2(cluster, b, genes) for b in on_lo], strict=True), n)  # type: ignore[call-arg]
        between.append(hi_log - lo_log)
        var_between.append(var_hi + var_lo)
    if not matched:
        return None, None
    return (np.vstack(matched), np.vstack(var_matched)), (np.vstack(between), np.vstack(var_between))


def classify_genes(
    profile: ExpressionProfile,
    genes: list[str] | pd.Index,
    direction: np.ndarray | float,
    *,
    group1: str,
    group2: str,
    batches1: list[str] | None = None,
    batches2: list[str] | None = None,
    thresholds: Thresholds = Thresholds(),
    check_magnitude: bool = True,
) -> pd.DataFrame:
    """Classify ``genes`` as ``cluster_specific``, ``batch_wide`` or ``other`` in ``group1`` vs ``group2``.

    Parameters
    ----------
    profile
        Expression per cluster x batch.
    genes
        The genes (e.g. a setting's top genes), in order.
    direction
        Per gene (or one value for all), the DE table's log2 fold change:
        ``> 0`` when it has the gene higher in ``group1``, ``< 0`` when higher
        in ``group2``; ``0``/NaN: the sign of the raw ``group_lfc``. When the raw
        data clearly go the other way the raw direction is used and
        ``direction_agrees`` is false.
    check_magnitude
        Use ``|direction|`` as the table's fold change (the second
        ``batch_wide`` rule); ``False`` when ``direction`` holds signs only.
    batches1, batches2
        Batches each group is present in (default: from ``profile.n_cells``).

    Returns
    -------
    One row per gene (index = gene): ``high_group``, ``direction_agrees``,
    ``pattern``, ``reason`` and :data:`SCORE_COLUMNS`.
    """
    thresholds.check()
    genes = pd.Index([str(g) for g in genes])
    group1, group2 = str(group1), str(group2)
    batches1 = list(batches1) if batches1 else profile.batches_of(group1)
    batches2 = list(batches2) if batches2 else profile.batches_of(group2)
    known = genes.isin(profile.means.index)
    s1 = side_scores(profile, Side(group1, group2, batches1, batches2), genes)
    s2 = side_scores(profile, Side(group2, group1, batches2, batches1), genes)
    z, floor = thresholds.z, thresholds.min_abs_lfc
    d1 = np.nan_to_num(s1["group_lfc"])
    clear1 = np.maximum(z * np.nan_to_num(s1["se_group_lfc"]), floor)
    direction = np.broadcast_to(np.asarray(direction, dtype=float), (len(genes),))
    de_sign = np.where(np.isfinite(direction) & (direction != 0), np.sign(direction), 0.0)
    contrary = (de_sign != 0) & (de_sign * d1 <= -clear1)  # the raw data clearly go the other way
    raw_sign = np.where(d1 == 0, 1.0, np.sign(d1))
    sign = np.where((de_sign != 0) & ~contrary, de_sign, raw_sign)
    scores = {k: np.where(sign > 0, s1[k], s2[k]) for k in s1}
    scores["shift_heterogeneous"] = np.nan_to_num(scores.pop("shift_q_pvalue"), nan=1.0) < thresholds.alpha
    scores["own_cluster_only"] = own_cluster_only(scores, thresholds)
    calls = [_call(bool(known[i]), *(float(scores[k][i]) for k in CALL_COLUMNS), thresholds)  # type: ignore[call-arg, arg-type]
             for i in range(len(genes))]
    reasons = [reason + ("; the DE table has it the other way round, the raw data clearly not" if contrary[i] and known[i] else "")
               for i, (_, reason) in enumerate(calls)]
    out = pd.DataFrame({"high_group": np.where(sign > 0, group1, group2), "direction_agrees": ~contrary,
                        "pattern": [p for p, _ in calls], "reason": reasons}, index=genes)
    for k in SCORE_COLUMNS:
        out[k] = scores[k]
    return check_hidden_shift(out, np.abs(direction), thresholds) if check_magnitude else out


def own_cluster_only(scores: dict[str, np.ndarray], thresholds: Thresholds) -> np.ndarray:
    """``w`` clear and at least ``f d``: high against the other clusters of its own batch (descriptive)."""
    d, w, se_w = scores["group_lfc"], scores["within_lfc"], scores["se_within_lfc"]
    with np.errstate(invalid="ignore"):
        return np.isfinite(w) & (w >= thresholds.explained_fraction * d) \
            & (w >= np.maximum(thresholds.z * np.nan_to_num(se_w, nan=np.inf), thresholds.min_abs_lfc))


HIDDEN = "raw group difference not clear"


def check_hidden_shift(calls: pd.DataFrame, magnitude: np.ndarray, thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    """The second ``batch_wide`` rule's last condition: the shift clearly explains ``f`` of the table's ``|lfc|``.

    ``calls`` from :func:`classify_genes` (with ``se_between_batch_lfc`` when known);
    ``magnitude``: ``|lfc|`` of the DE table per row (NaN or 0: unknown, the call stands).
    """
    f = thresholds.explained_fraction
    magnitude = np.asarray(magnitude, dtype=float)
    shift = calls["between_batch_lfc"].to_numpy(dtype=float)
    se = calls["se_between_batch_lfc"].to_numpy(dtype=float) if "se_between_batch_lfc" in calls else np.zeros(len(calls))
    weak = ((calls["pattern"] == "batch_wide") & calls["reason"].str.startswith(HIDDEN)).to_numpy() \
        & np.isfinite(magnitude) & (magnitude > 0) & ~(shift - thresholds.z * se >= f * magnitude)
    if weak.any():
        calls = calls.copy()
        calls.loc[weak, "pattern"] = "other"
        calls.loc[weak, "reason"] = [f"{HIDDEN}; the batch shift ({s:.2f} +- {e:.2f}) does not clearly explain {f:g} of the "
                                     f"DE table's |lfc| ({m:.2f})" for s, e, m in zip(shift[weak], se[weak], magnitude[weak], strict=True)]
    return calls


def _call(known: bool, d: float, w: float, s: float, net: float, between: float, se_d: float, se_w: float, se_s: float,
          se_net: float, se_between: float, thresholds: Thresholds) -> tuple[str, str]:
    """The pattern of one gene and why (module docstring)."""
    if not known:
        return "other", "gene not in the expression profile"
    if not np.isfinite(d):
        return "other", "a group has no cells in this profile"
    z, f = thresholds.z, thresholds.explained_fraction

    def clear(value: float, se: float) -> bool:
        return _clear(value, se, thresholds)

    if not clear(d, se_d):
        # pooling over batches can hide a batch-wide gene's difference: a clear batch shift still explains its rank
        if clear(between, se_between) and not (np.isfinite(w) and w >= f * between):
            return "batch_wide", (f"{HIDDEN} ({d:.2f} +- {se_d:.2f}) but a clear shift between "
                                  f"the groups' batches in other clusters ({between:.2f} +- {se_between:.2f})")
        return "other", f"{HIDDEN} ({d:.2f} +- {se_d:.2f} log2)"
    if not np.isfinite(s):
        return _within_call(d, w, se_w, thresholds)
    net_ok = clear(net, se_net)
    shift_high = s >= f * d
    shift_ok = clear(s, se_s) and s - z * se_s >= f * d
    contrast = f"net of the batch shift {net:.2f} +- {se_net:.2f}"
    shift = f"batch shift {s:.2f} +- {se_s:.2f}"
    if net_ok and not shift_high:
        return "cluster_specific", f"higher than the other group {contrast} ({shift} < {f:g} x {d:.2f})"
    if shift_ok and not net_ok:
        return "batch_wide", f"the same shift between batches in other clusters ({shift} clearly >= {f:g} x {d:.2f}; {contrast})"
    if net_ok and shift_ok:
        return "other", f"both a clear difference {contrast} and the {shift} (>= {f:g} x {d:.2f}) explain the difference"
    if net_ok or shift_high:
        return "other", f"the {shift} reaches {f:g} x {d:.2f}, not clearly ({contrast})"
    return "other", f"neither a clear difference {contrast} nor a clear {shift}"


def _clear(value: float, se: float, thresholds: Thresholds) -> bool:
    """At least ``z`` standard errors and at least ``min_abs_lfc`` (module docstring); NaN is never clear."""
    return bool(np.isfinite(value) and value >= max(thresholds.z * (se if np.isfinite(se) else np.inf), thresholds.min_abs_lfc))


def _within_call(d: float, w: float, se_w: float, thresholds: Thresholds) -> tuple[str, str]:
    """The call without a measurable batch shift: within-batch specificity decides (module docstring)."""
    f = thresholds.explained_fraction
    unmeasurable = "batch shift not measurable (no cluster in both sides' batches)"
    if not np.isfinite(w):
        return "other", f"{unmeasurable}, and no other cluster in the high group's batch: within-batch specificity not measurable"
    within_high = w >= f * d
    within_ok = within_high and _clear(w, se_w, thresholds)
    if within_ok:
        return "cluster_specific", (f"{unmeasurable}: judged within its batch, high against the other clusters "
                                    f"(within {w:.2f} +- {se_w:.2f} >= {f:g} x {d:.2f})")
    return "other", (f"{unmeasurable}, and within-batch specificity ({w:.2f} +- {se_w:.2f}) does not clearly "
                     f"reach {f:g} x {d:.2f}")

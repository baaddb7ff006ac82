"""Diagnostics: are a setting's top genes cluster-specific, or batch effects?

For every DE setting (a ``combination_id`` of the plan) the top ``N`` genes are
classified from the expression of each cluster in each batch, and the settings
of a comparison are ranked by how many of their top genes are cluster-specific.
The rules are documented in ``docs/diagnostics.md``; in short:

Expression per cluster x batch
------------------------------
``raw``: the mean of depth-normalized counts (each cell scaled to the median
library size) of the cells of a cluster in a batch. Only cluster x batch cells
where the cluster is *present* (the composition presence rule,
:class:`desweep.composition.PresenceRule`) count; stray cells are ignored.
With ``cluster_batch_means.csv`` every scVI normalized choice gives a second,
third, ... profile, scored the same way (``pattern__<choice>`` columns).
Log fold changes are ``log2((a + eps) / (b + eps))`` with ``eps`` one tenth of
the median gene mean of that profile, so multiplying a profile by any constant
leaves every score unchanged (scale-free).

Scores of a gene in a comparison ``group1`` vs ``group2``
---------------------------------------------------------
The gene's *high group* ``H`` is ``group1`` when the DE table's ``lfc_mean`` is
positive, else ``group2`` (unless the raw ``group_lfc`` clearly, by more than
the noise floor, goes the other way: then the raw direction, and
``direction_agrees`` is false); ``L`` is the other group.

``group_lfc``
    ``H`` against ``L``, each pooled over its cells.
``within_lfc``
    ``H`` against the other clusters of its own batch(es): per batch where ``H``
    is present, ``H``'s mean against the geometric mean of the other present
    clusters' means, averaged over those batches. (``within_lfc_vs_next``:
    the same against the highest other cluster, for information.)
``batch_shift_lfc``
    The same-direction difference between *batches*, measured in clusters that
    are not ``H``: ``H``'s batches (those of ``L`` removed when any remain)
    against ``L``'s batches (those of ``H`` removed when any remain), in every
    cluster present on both sides, averaged over those clusters.
``min_lfc``
    The noise floor of the comparison: ``max(noise_k * sigma, min_abs_lfc)``
    where ``sigma`` is the robust spread (1.4826 x MAD) of ``group_lfc`` over
    every gene.

Call (``f`` = ``explained_fraction``, default 0.5)
-------------------------------------------------
``cluster_specific``
    ``group_lfc >= min_lfc``, ``within_lfc >= f * group_lfc`` and
    ``batch_shift_lfc < f * group_lfc`` (or not measurable).
``batch_wide``
    ``group_lfc >= min_lfc``, ``batch_shift_lfc >= f * group_lfc`` and
    ``within_lfc < f * group_lfc``; or, when pooling over batches left
    ``group_lfc`` below the floor, ``batch_shift_lfc >= min_lfc`` and
    ``within_lfc < f * min_lfc``.
``other``
    Everything else: no clear raw difference, both explanations, neither, or
    not measurable; ``reason`` says which.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from desweep import keys
from desweep.composition import PresenceRule, cluster_batch_counts, cluster_status
from desweep.errors import DesweepInputError
from desweep.names import join_names, split_names

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

Pattern = Literal["cluster_specific", "batch_wide", "other"]
PATTERNS: tuple[str, ...] = ("cluster_specific", "batch_wide", "other")
RAW = "raw"
PLAN_REQUIRED = ("combination_id", "comparison_id", "group1", "group2")
TABLE_REQUIRED = ("gene",)
COMPARISON_REQUIRED = ("comparison_id", "group1", "group2", "design")
MEANS_REQUIRED = ("gene", "cluster", "batch", "choice", "mean")
#: plan columns copied into setting_scores.csv when present (the setting's description)
SETTING_COLUMNS = ("setting_id", "batch_correction", "decoding", "batchid1", "batchid2", "mode", "delta", "weights",
                   "filter_outlier_cells", "fdr_target", "seed")
#: the plan columns that describe a setting in reasons and plot labels
DESCRIBE_COLUMNS = ("batch_correction", "decoding", "batchid1", "batchid2", "mode", "delta", "weights", "filter_outlier_cells", "seed")
SCORE_COLUMNS = ["group_lfc", "within_lfc", "within_lfc_vs_next", "batch_shift_lfc", "n_shift_clusters"]


@dataclass(frozen=True)
class Thresholds:
    """The classification rule's parameters (module docstring); all scale-free.

    Attributes
    ----------
    explained_fraction
        Share of the group difference a within-batch (or batch) difference must
        reach to explain it.
    noise_k
        The noise floor in robust standard deviations of ``group_lfc`` over all genes.
    min_abs_lfc
        The smallest noise floor (log2), for data where almost no gene varies.
    pseudocount_fraction
        ``eps`` as a fraction of the profile's median gene mean.
    """

    explained_fraction: float = 0.5
    noise_k: float = 3.0
    min_abs_lfc: float = math.log2(1.2)
    pseudocount_fraction: float = 0.1

    def check(self) -> None:
        if not 0 < self.explained_fraction < 1:
            raise DesweepInputError("--explained-fraction", "explained_fraction", f"must be between 0 and 1, got {self.explained_fraction}")
        if self.noise_k < 0 or self.min_abs_lfc < 0 or self.pseudocount_fraction <= 0:
            raise DesweepInputError("thresholds", "noise_k/min_abs_lfc/pseudocount_fraction", "must be non-negative (pseudocount positive)")


@dataclass
class ExpressionProfile:
    """Mean expression of every gene in every present cluster x batch.

    Attributes
    ----------
    name
        ``raw`` or the scVI normalized choice.
    means
        Genes x ``(cluster, batch)`` columns (linear scale); NaN where absent.
    n_cells
        Clusters x batches: cells counted (0 where the cluster is absent).
    eps
        Pseudocount of the log fold changes.
    """

    name: str
    means: pd.DataFrame
    n_cells: pd.DataFrame
    eps: float = field(default=0.0)

    def __post_init__(self) -> None:
        if not self.eps:
            gene_means = self.means.mean(axis=1, skipna=True).to_numpy()
            positive = gene_means[np.isfinite(gene_means) & (gene_means > 0)]
            self.eps = float(np.median(positive)) * Thresholds().pseudocount_fraction if positive.size else 1e-9

    def batches_of(self, cluster: str) -> list[str]:
        if cluster not in self.n_cells.index:
            return []
        row = self.n_cells.loc[cluster]
        return [str(b) for b in row.index if row[b] > 0]

    @property
    def clusters(self) -> list[str]:
        return [str(c) for c in self.n_cells.index]


# --------------------------------------------------------------------------- profiles
def presence_counts(obs: pd.DataFrame, *, group_key: str, batch_key: str, rule: PresenceRule = PresenceRule()) -> pd.DataFrame:
    """Cells per cluster (rows) and batch (columns), 0 where the cluster is not present (presence rule)."""
    counts = cluster_batch_counts(obs, group_key=group_key, batch_key=batch_key)
    status = cluster_status(counts, rule)
    present = counts.copy()
    for cluster in counts.index:
        batches = set(split_names(status.loc[cluster, "batches"]))
        for batch in counts.columns:
            if batch not in batches:
                present.loc[cluster, batch] = 0
    present.index = present.index.astype(str)
    present.columns = present.columns.astype(str)
    return present


def raw_profile(adata: AnnData, *, group_key: str, batch_key: str, rule: PresenceRule = PresenceRule(),
                pseudocount_fraction: float = 0.1) -> ExpressionProfile:
    """Mean depth-normalized counts per present cluster x batch from raw counts in ``adata.X``."""
    import scipy.sparse as sp

    n_cells = presence_counts(adata.obs, group_key=group_key, batch_key=batch_key, rule=rule)
    x = adata.X
    x = x.tocsr() if sp.issparse(x) else sp.csr_matrix(np.asarray(x))
    library = np.asarray(x.sum(axis=1)).ravel().astype(float)
    median = float(np.median(library[library > 0])) if (library > 0).any() else 1.0
    scale = np.divide(median, library, out=np.zeros_like(library), where=library > 0)
    normalized = sp.diags(scale) @ x
    groups = adata.obs[group_key].astype(str).to_numpy()
    batches = adata.obs[batch_key].astype(str).to_numpy()
    columns, rows = [], []
    for cluster in n_cells.index:
        for batch in n_cells.columns:
            if n_cells.loc[cluster, batch] <= 0:
                continue
            cells = np.flatnonzero((groups == cluster) & (batches == batch))
            rows.append(np.asarray(normalized[cells].mean(axis=0)).ravel())
            columns.append((cluster, batch))
    means = pd.DataFrame(np.column_stack(rows) if rows else np.zeros((adata.n_vars, 0)), index=adata.var_names.astype(str),
                         columns=pd.MultiIndex.from_tuples(columns, names=["cluster", "batch"]))
    profile = ExpressionProfile(RAW, means, n_cells)
    profile.eps = _eps(means, pseudocount_fraction)
    return profile


def means_profiles(means: pd.DataFrame, n_cells: pd.DataFrame, *, source: str = keys.CLUSTER_BATCH_MEANS_CSV,
                   pseudocount_fraction: float = 0.1) -> dict[str, ExpressionProfile]:
    """One profile per scVI normalized choice of ``cluster_batch_means.csv`` (long: gene, cluster, batch, choice, mean)."""
    missing = [c for c in MEANS_REQUIRED if c not in means.columns]
    if missing:
        raise DesweepInputError(source, missing[0], f"column missing (have: {', '.join(map(str, means.columns))})")
    means = means.astype({"gene": str, "cluster": str, "batch": str, "choice": str})
    profiles = {}
    for choice, part in means.groupby("choice", sort=False):
        wide = part.pivot_table(index="gene", columns=["cluster", "batch"], values="mean", aggfunc="mean")
        keep = [(c, b) for c, b in wide.columns if c in n_cells.index and b in n_cells.columns and n_cells.loc[c, b] > 0]
        wide = wide[keep]
        wide.columns = pd.MultiIndex.from_tuples(keep, names=["cluster", "batch"])
        profile = ExpressionProfile(str(choice), wide, n_cells)
        profile.eps = _eps(wide, pseudocount_fraction)
        profiles[str(choice)] = profile
    return profiles


def _eps(means: pd.DataFrame, fraction: float) -> float:
    gene_means = means.mean(axis=1, skipna=True).to_numpy(dtype=float)
    positive = gene_means[np.isfinite(gene_means) & (gene_means > 0)]
    return float(np.median(positive)) * fraction if positive.size else 1e-9


# --------------------------------------------------------------------------- scoring
def _log(profile: ExpressionProfile, cluster: str, batch: str, genes: pd.Index) -> np.ndarray:
    if (cluster, batch) not in profile.means.columns:
        return np.full(len(genes), np.nan)
    values = profile.means[(cluster, batch)].reindex(genes).to_numpy(dtype=float)
    return np.log2(np.clip(values, 0, None) + profile.eps)


def _pooled(profile: ExpressionProfile, cluster: str, batches: list[str], genes: pd.Index) -> np.ndarray:
    total, weight = np.zeros(len(genes)), 0.0
    for batch in batches:
        n = float(profile.n_cells.loc[cluster, batch]) if cluster in profile.n_cells.index and batch in profile.n_cells.columns else 0.0
        if n <= 0 or (cluster, batch) not in profile.means.columns:
            continue
        total += n * np.nan_to_num(profile.means[(cluster, batch)].reindex(genes).to_numpy(dtype=float))
        weight += n
    return np.log2(np.clip(total / weight, 0, None) + profile.eps) if weight else np.full(len(genes), np.nan)


@dataclass(frozen=True)
class _Side:
    """The high group, the low group and the batches each is compared in."""

    high: str
    low: str
    high_batches: list[str]
    low_batches: list[str]


def _sides(group1: str, group2: str, batches1: list[str], batches2: list[str]) -> tuple[_Side, _Side]:
    up1 = _Side(group1, group2, batches1, batches2)
    up2 = _Side(group2, group1, batches2, batches1)
    return up1, up2


def _side_scores(profile: ExpressionProfile, side: _Side, genes: pd.Index) -> dict[str, np.ndarray]:
    """Scores of ``genes`` for one direction (high group = ``side.high``)."""
    n = len(genes)
    group_lfc = _pooled(profile, side.high, side.high_batches, genes) - _pooled(profile, side.low, side.low_batches, genes)
    within, vs_next = [], []
    for batch in side.high_batches:
        others = [c for c in profile.clusters if c != side.high and profile.n_cells.loc[c, batch] > 0]
        if not others or (side.high, batch) not in profile.means.columns:
            continue
        high = _log(profile, side.high, batch, genes)
        other_logs = np.vstack([_log(profile, c, batch, genes) for c in others])
        within.append(high - np.nanmean(other_logs, axis=0))
        vs_next.append(high - np.nanmax(other_logs, axis=0))
    within_lfc = np.nanmean(np.vstack(within), axis=0) if within else np.full(n, np.nan)
    within_next = np.nanmean(np.vstack(vs_next), axis=0) if vs_next else np.full(n, np.nan)

    hi = sorted(set(side.high_batches) - set(side.low_batches)) or sorted(side.high_batches)
    lo = sorted(set(side.low_batches) - set(side.high_batches)) or sorted(side.low_batches)
    shifts = []
    if set(hi) != set(lo):
        for cluster in profile.clusters:
            if cluster == side.high:
                continue
            on_hi = [b for b in hi if profile.n_cells.loc[cluster, b] > 0 and (cluster, b) in profile.means.columns]
            on_lo = [b for b in lo if profile.n_cells.loc[cluster, b] > 0 and (cluster, b) in profile.means.columns]
            if on_hi and on_lo:
                hi_log = np.nanmean(np.vstack([_log(profile, cluster, b, genes) for b in on_hi]), axis=0)
                lo_log = np.nanmean(np.vstack([_log(profile, cluster, b, genes) for b in on_lo]), axis=0)
                shifts.append(hi_log - lo_log)
    shift = np.nanmean(np.vstack(shifts), axis=0) if shifts else np.full(n, np.nan)
    return {"group_lfc": group_lfc, "within_lfc": within_lfc, "within_lfc_vs_next": within_next,
            "batch_shift_lfc": shift, "n_shift_clusters": np.full(n, len(shifts), dtype=float)}


def noise_floor(profile: ExpressionProfile, group1: str, group2: str, batches1: list[str], batches2: list[str],
                thresholds: Thresholds = Thresholds()) -> float:
    """``max(noise_k * 1.4826 * MAD(group_lfc over all genes), min_abs_lfc)`` for a comparison."""
    genes = profile.means.index
    d = _pooled(profile, group1, batches1, genes) - _pooled(profile, group2, batches2, genes)
    d = d[np.isfinite(d)]
    if d.size < 3:
        return thresholds.min_abs_lfc
    sigma = 1.4826 * float(np.median(np.abs(d - np.median(d))))
    return max(thresholds.noise_k * sigma, thresholds.min_abs_lfc)


def classify_genes(
    profile: ExpressionProfile,
    genes: list[str] | pd.Index,
    direction: np.ndarray,
    *,
    group1: str,
    group2: str,
    batches1: list[str] | None = None,
    batches2: list[str] | None = None,
    thresholds: Thresholds = Thresholds(),
    min_lfc: float | None = None,
) -> pd.DataFrame:
    """Classify ``genes`` as ``cluster_specific``, ``batch_wide`` or ``other`` in ``group1`` vs ``group2``.

    Parameters
    ----------
    profile
        Expression per cluster x batch.
    genes
        The genes (e.g. a setting's top genes), in order.
    direction
        Per gene, ``> 0`` when the DE table has it higher in ``group1``, ``< 0``
        when higher in ``group2``; ``0``/NaN: the sign of the raw ``group_lfc``.
    batches1, batches2
        Batches each group is present in (default: from ``profile.n_cells``).
    min_lfc
        The noise floor (default: :func:`noise_floor` of this comparison).

    Returns
    -------
    One row per gene (index = gene): ``high_group``, ``pattern``, ``reason``,
    the scores (module docstring), ``min_lfc`` and ``explained_fraction``.
    """
    thresholds.check()
    genes = pd.Index([str(g) for g in genes])
    group1, group2 = str(group1), str(group2)
    batches1 = list(batches1) if batches1 else profile.batches_of(group1)
    batches2 = list(batches2) if batches2 else profile.batches_of(group2)
    if min_lfc is None:
        min_lfc = noise_floor(profile, group1, group2, batches1, batches2, thresholds)
    known = genes.isin(profile.means.index)
    up1, up2 = _sides(group1, group2, batches1, batches2)
    s1, s2 = _side_scores(profile, up1, genes), _side_scores(profile, up2, genes)
    direction = np.asarray(direction, dtype=float)
    raw_sign = np.sign(np.nan_to_num(s1["group_lfc"]))
    de_sign = np.where(np.isfinite(direction) & (direction != 0), np.sign(direction), 0.0)
    # the raw data clearly go the other way: describe the gene in the direction it is really higher
    contrary = (de_sign != 0) & (de_sign * np.nan_to_num(s1["group_lfc"]) <= -min_lfc)
    sign = np.where((de_sign != 0) & ~contrary, de_sign, np.where(raw_sign == 0, 1, raw_sign))
    scores = {k: np.where(sign > 0, s1[k], s2[k]) for k in SCORE_COLUMNS}
    f = thresholds.explained_fraction
    patterns, reasons = [], []
    for i in range(len(genes)):
        d, w, s = scores["group_lfc"][i], scores["within_lfc"][i], scores["batch_shift_lfc"][i]
        pattern, reason = _call(known[i], d, w, s, min_lfc, f)
        if contrary[i] and known[i]:
            reason += "; the DE table has it the other way round, the raw data clearly not"
        patterns.append(pattern)
        reasons.append(reason)
    out = pd.DataFrame({"high_group": np.where(sign > 0, group1, group2), "direction_agrees": ~contrary,
                        "pattern": patterns, "reason": reasons}, index=genes)
    for k in SCORE_COLUMNS:
        out[k] = scores[k]
    out["min_lfc"] = min_lfc
    out["explained_fraction"] = f
    return out


def _call(known: bool, d: float, w: float, s: float, min_lfc: float, f: float) -> tuple[str, str]:
    if not known:
        return "other", "gene not in the expression profile"
    if not np.isfinite(d):
        return "other", "a group has no cells in this profile"
    if d < min_lfc:
        # pooling over batches can hide a batch-wide gene's difference: a clear batch shift still explains its rank
        if np.isfinite(s) and s >= min_lfc and not (np.isfinite(w) and w >= f * min_lfc):
            return "batch_wide", (f"raw group difference below the noise floor ({d:.2f} < {min_lfc:.2f}) "
                                  f"but a clear shift between the groups' batches in other clusters ({s:.2f})")
        return "other", f"raw difference between the groups below the noise floor ({d:.2f} < {min_lfc:.2f} log2)"
    within_ok = np.isfinite(w) and w >= f * d
    shift_ok = np.isfinite(s) and s >= f * d
    if within_ok and not shift_ok:
        note = "" if np.isfinite(s) else "; batch shift not measurable (no cluster in both sides' batches)"
        return "cluster_specific", f"high against the other clusters of its batch (within {w:.2f} >= {f:g} x {d:.2f}){note}"
    if shift_ok and not within_ok:
        return "batch_wide", f"the same shift between batches in other clusters (shift {s:.2f} >= {f:g} x {d:.2f})"
    if within_ok and shift_ok:
        return "other", f"both cluster-specific (within {w:.2f}) and batch shift ({s:.2f}) explain the difference"
    if not np.isfinite(w):
        return "other", "no other cluster in the high group's batch: within-batch specificity not measurable"
    return "other", f"neither within-batch specificity ({w:.2f}) nor batch shift ({s:.2f}) explains {f:g} x {d:.2f}"


# --------------------------------------------------------------------------- settings
def top_genes(table: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """The first ``top_n`` rows of a DE table (sorted best first; by ``rank`` when present)."""
    table = table.copy()
    if "rank" in table.columns:
        table = table.sort_values("rank", kind="stable")
    else:
        table["rank"] = np.arange(1, len(table) + 1)
    table["gene"] = table["gene"].astype(str)
    return table.head(top_n).reset_index(drop=True)


def _direction(table: pd.DataFrame) -> np.ndarray:
    for column in ("lfc_mean", "lfc", "logfoldchanges", "log2FoldChange", "lfc_median"):
        if column in table.columns:
            return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
    return np.zeros(len(table))


def _group_batches(row: pd.Series, column: str, profile: ExpressionProfile, group: str) -> list[str]:
    return split_names(row.get(column)) or profile.batches_of(group)


def classify_setting(
    table: pd.DataFrame,
    comparison: pd.Series,
    profiles: dict[str, ExpressionProfile],
    *,
    top_n: int = 50,
    thresholds: Thresholds = Thresholds(),
    floors: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Classify the top ``top_n`` genes of one DE table in every profile.

    Parameters
    ----------
    table
        A DE table with ``gene`` and ``rank`` (else its order) and a log fold
        change (``lfc_mean`` for scVI, ``logfoldchanges``/``log2FoldChange`` for baselines).
    comparison
        A row of ``comparisons.csv`` (``group1``, ``group2``, optional ``group1_batches``...).
    profiles
        ``raw`` first, then scVI choices; the first profile gives ``pattern``.

    Returns
    -------
    ``gene, rank, lfc, high_group, pattern, reason, <scores>`` and, per further
    profile, ``pattern__<choice>`` and its scores.
    """
    top = top_genes(table, top_n)
    g1, g2 = str(comparison["group1"]), str(comparison["group2"])
    direction = _direction(top)
    out = pd.DataFrame({"gene": top["gene"], "rank": top["rank"].astype(int), "lfc": direction})
    for i, (name, profile) in enumerate(profiles.items()):
        b1 = _group_batches(comparison, "group1_batches", profile, g1)
        b2 = _group_batches(comparison, "group2_batches", profile, g2)
        floor = (floors or {}).get(name)
        calls = classify_genes(profile, top["gene"], direction, group1=g1, group2=g2, batches1=b1, batches2=b2,
                               thresholds=thresholds, min_lfc=floor).reset_index(drop=True)
        if i == 0:
            out = pd.concat([out, calls], axis=1)
        else:
            extra = calls[["pattern", "group_lfc", "within_lfc", "batch_shift_lfc"]].add_suffix(f"__{name}")
            out = pd.concat([out, extra], axis=1)
    return out


def _comparison_floors(comparison: pd.Series, profiles: dict[str, ExpressionProfile], thresholds: Thresholds) -> dict[str, float]:
    g1, g2 = str(comparison["group1"]), str(comparison["group2"])
    return {name: noise_floor(p, g1, g2, _group_batches(comparison, "group1_batches", p, g1),
                              _group_batches(comparison, "group2_batches", p, g2), thresholds)
            for name, p in profiles.items()}


def shares(patterns: pd.DataFrame) -> dict[str, float]:
    """Counts and shares of each pattern among a setting's classified top genes."""
    n = len(patterns)
    counts = {p: int((patterns["pattern"] == p).sum()) for p in PATTERNS}
    out: dict[str, float] = {"n_top": n}
    out.update({f"n_{p}": counts[p] for p in PATTERNS})
    out.update({f"share_{p}": (counts[p] / n if n else float("nan")) for p in PATTERNS})
    out["specificity_score"] = out["share_cluster_specific"] - out["share_batch_wide"] if n else float("nan")
    return out


def setting_scores(gene_patterns: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """Per setting: the share of each pattern among its top genes, and its rank within its comparison.

    Settings are ranked by ``specificity_score`` (share cluster-specific minus
    share batch-wide), then by share cluster-specific, then by the mean
    ``within_lfc`` of their cluster-specific genes, then by ``combination_id``.
    """
    rows = []
    for _, setting in plan.iterrows():
        cid = str(setting["combination_id"])
        part = gene_patterns[gene_patterns["combination_id"] == cid]
        row = {"combination_id": cid, "comparison_id": str(setting["comparison_id"])}
        row.update({c: setting[c] for c in SETTING_COLUMNS if c in plan.columns})
        if part.empty:
            row.update({"status": "no_table"})
        else:
            row.update({"status": "ok", **shares(part)})
            cs = part.loc[part["pattern"] == "cluster_specific", "within_lfc"]
            row["mean_within_lfc_cluster_specific"] = float(cs.mean()) if len(cs) else float("nan")
        rows.append(row)
    scores = pd.DataFrame(rows)
    for column in ["n_top", *[f"n_{p}" for p in PATTERNS], *[f"share_{p}" for p in PATTERNS], "specificity_score",
                   "mean_within_lfc_cluster_specific"]:
        if column not in scores.columns:
            scores[column] = np.nan
    scores["rank_in_comparison"] = np.nan
    for _, part in scores[scores["status"] == "ok"].groupby("comparison_id", sort=False):
        order = part.assign(_mw=part["mean_within_lfc_cluster_specific"].fillna(-np.inf)).sort_values(
            ["specificity_score", "share_cluster_specific", "_mw", "combination_id"],
            ascending=[False, False, False, True], kind="stable")
        scores.loc[order.index, "rank_in_comparison"] = np.arange(1, len(order) + 1)
    scores = scores.sort_values(["comparison_id", "rank_in_comparison", "combination_id"], kind="stable", na_position="last")
    return scores.reset_index(drop=True)


def describe_setting(row: pd.Series) -> str:
    """``batch_correction=True, mode=change, ...`` from a setting's plan columns."""
    parts = [f"{c}={row[c]}" for c in DESCRIBE_COLUMNS if c in row.index and not _missing(row[c])]
    return ", ".join(parts) or str(row.get("combination_id", ""))


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def recommendations(scores: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per comparison: the recommended setting(s) and why.

    The best setting has the highest ``specificity_score``; settings within
    one binomial standard error of its cluster-specific share
    (``sqrt(p (1 - p) / N)``, at least ``1 / N``) and with no more batch-wide
    genes are recommended with it. ``status``: ``ok`` (best share of
    cluster-specific genes >= 0.5), ``weak`` (lower) or ``no_settings``.
    """
    rows = []
    planned = set(scores["comparison_id"].astype(str))
    for _, comp in comparisons.iterrows():
        cid = str(comp["comparison_id"])
        if cid not in planned:  # not part of this sweep
            continue
        part = scores[(scores["comparison_id"] == cid) & (scores["status"] == "ok")].sort_values("rank_in_comparison")
        base = {"comparison_id": cid, "group1": comp["group1"], "group2": comp["group2"], "design": comp.get("design", "")}
        if part.empty:
            rows.append({**base, "status": "no_settings", "recommended": "", "best_combination_id": "", "best_setting": "",
                         "n_settings": 0, "reason": "no DE table for this comparison"})
            continue
        best = part.iloc[0]
        n = int(best["n_top"])
        p = float(best["share_cluster_specific"])
        band = max(math.sqrt(p * (1 - p) / n) if n else 0.0, 1.0 / n if n else 0.0)
        tied = part[(part["share_cluster_specific"] >= p - band - 1e-12) & (part["share_batch_wide"] <= best["share_batch_wide"] + 1e-12)]
        status = "ok" if p >= 0.5 else "weak"
        median = float(part["share_cluster_specific"].median())
        reason = (f"{describe_setting(best)}: {int(best['n_cluster_specific'])} of its top {n} genes "
                  f"({p:.0%}) are cluster-specific and {int(best['n_batch_wide'])} ({best['share_batch_wide']:.0%}) batch-wide, "
                  f"the best of {len(part)} settings (median {median:.0%} cluster-specific)")
        if len(tied) > 1:
            reason += f"; {len(tied) - 1} more setting(s) within one standard error ({band:.0%}) are recommended with it"
        design = str(comp.get("design", ""))
        if design == "confounded":
            reason += ". Group and batch are confounded: check the top genes in the plots before trusting them"
        if status == "weak":
            reason += ". Fewer than half of the best setting's top genes are cluster-specific: treat every setting with caution"
        suggested = comp.get("recommended_batch_correction")
        if not _missing(suggested) and "batch_correction" in best.index:
            agree = str(best["batch_correction"]).lower() == str(suggested).lower()
            reason += (f". Composition suggested batch_correction={suggested}" + (" (agrees)" if agree else " (differs)"))
        rows.append({**base, "status": status, "recommended": join_names(tied["combination_id"].astype(str)),
                     "best_combination_id": str(best["combination_id"]), "best_setting": describe_setting(best),
                     "share_cluster_specific": p, "share_batch_wide": float(best["share_batch_wide"]),
                     "n_settings": len(part), "reason": reason + "."})
    columns = ["comparison_id", "group1", "group2", "design", "status", "recommended", "best_combination_id", "best_setting",
               "share_cluster_specific", "share_batch_wide", "n_settings", "reason"]
    return pd.DataFrame(rows).reindex(columns=columns)


def concordance(plan: pd.DataFrame, tables: dict[str, pd.DataFrame], *, top_n: int = 50) -> pd.DataFrame:
    """Top-``N`` Jaccard and Spearman correlation of ``lfc`` between every pair of settings of a comparison.

    ``spearman_lfc``: over every gene in both tables; ``spearman_lfc_top``: over
    the union of both top-``N`` lists (genes in both tables).
    """
    rows = []
    for comparison_id, part in plan.groupby("comparison_id", sort=False):
        ids = [str(c) for c in part["combination_id"] if str(c) in tables]
        prepared = {}
        for cid in ids:
            table = tables[cid]
            lfc = pd.Series(_direction(table), index=table["gene"].astype(str).to_numpy())
            prepared[cid] = (set(top_genes(table, top_n)["gene"]), lfc[~lfc.index.duplicated()])
        for a, b in itertools.combinations(ids, 2):
            top_a, lfc_a = prepared[a]
            top_b, lfc_b = prepared[b]
            union = top_a | top_b
            common = lfc_a.index.intersection(lfc_b.index)
            top_common = [g for g in common if g in union]
            rows.append({
                "comparison_id": str(comparison_id), "combination_id_1": a, "combination_id_2": b,
                "n_top": top_n, "n_shared_top": len(top_a & top_b),
                "jaccard_top": len(top_a & top_b) / len(union) if union else float("nan"),
                "n_common_genes": len(common),
                "spearman_lfc": _spearman(lfc_a[common], lfc_b[common]),
                "spearman_lfc_top": _spearman(lfc_a[top_common], lfc_b[top_common]),
            })
    columns = ["comparison_id", "combination_id_1", "combination_id_2", "n_top", "n_shared_top", "jaccard_top",
               "n_common_genes", "spearman_lfc", "spearman_lfc_top"]
    return pd.DataFrame(rows, columns=columns)


def _spearman(a: pd.Series, b: pd.Series) -> float:
    ok = np.isfinite(a.to_numpy(dtype=float)) & np.isfinite(b.to_numpy(dtype=float))
    if ok.sum() < 3:
        return float("nan")
    ra, rb = a[ok].rank().to_numpy(), b[ok].rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def top_gene_expression(patterns: pd.DataFrame, profile: ExpressionProfile, *, max_genes: int = 30) -> pd.DataFrame:
    """Long table of each setting's top ``max_genes`` genes across every present cluster x batch.

    Columns ``combination_id, gene, rank, pattern, cluster, batch, log2_mean, z``
    (``z``: ``log2(mean + eps)`` standardized per gene and setting), for plots
    and the report's interactive heatmaps.
    """
    columns = sorted(profile.means.columns, key=lambda cb: (str(cb[0]), str(cb[1])))
    frames = []
    for cid, part in patterns.groupby("combination_id", sort=False):
        top = part.sort_values("rank").head(max_genes)
        top = top[top["gene"].astype(str).isin(profile.means.index)]
        if top.empty:
            continue
        values = np.log2(np.clip(profile.means.loc[top["gene"].astype(str), columns].to_numpy(dtype=float), 0, None) + profile.eps)
        mean = np.nanmean(values, axis=1, keepdims=True)
        sd = np.nanstd(values, axis=1, keepdims=True)
        z = np.divide(values - mean, sd, out=np.zeros_like(values), where=sd > 0)
        n_genes, n_cols = values.shape
        frames.append(pd.DataFrame({
            "combination_id": cid,
            "gene": np.repeat(top["gene"].astype(str).to_numpy(), n_cols),
            "rank": np.repeat(top["rank"].to_numpy(), n_cols),
            "pattern": np.repeat(top["pattern"].to_numpy(), n_cols),
            "cluster": [c for c, _ in columns] * n_genes,
            "batch": [b for _, b in columns] * n_genes,
            "log2_mean": values.ravel(),
            "z": z.ravel(),
        }))
    columns_out = ["combination_id", "gene", "rank", "pattern", "cluster", "batch", "log2_mean", "z"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns_out)


# --------------------------------------------------------------------------- entry point
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
    top_n: int = 50,
    thresholds: Thresholds = Thresholds(),
    presence: PresenceRule = PresenceRule(),
    heatmap_genes: int = 30,
    source: str = keys.CLUSTERED_H5AD,
) -> dict[str, pd.DataFrame]:
    """Classify every setting's top genes, score and rank the settings, recommend one per comparison.

    Parameters
    ----------
    adata
        ``clustered.h5ad``: raw counts in ``X``, batch and group keys recorded in ``uns['desweep']``.
    plan
        ``de/plan.csv`` (``combination_id, comparison_id, group1, group2`` and the setting's parameters).
    tables
        ``combination_id`` -> its DE table (``gene, rank, lfc_mean, ...``, best first).
    comparisons
        ``composition/comparisons.csv``.
    means
        ``normalized/cluster_batch_means.csv`` (optional): every scVI choice is scored too.
    top_n
        Genes classified per setting.
    heatmap_genes
        Genes per setting in ``top_gene_expression`` (for the heatmaps).

    Returns
    -------
    ``{"gene_patterns", "setting_scores", "concordance", "recommendations",
    "thresholds", "top_gene_expression"}``: the tables of the same names
    (``thresholds``: one row of the rule's parameters).
    """
    from desweep.datakeys import get_keys

    if top_n < 1:
        raise DesweepInputError("--top-n", "top_n", f"must be at least 1, got {top_n}")
    thresholds.check()
    data_keys = get_keys(adata, source, need_groups=True)
    plan = plan.astype({"combination_id": str, "comparison_id": str, "group1": str, "group2": str})
    comparisons = comparisons.astype({"comparison_id": str, "group1": str, "group2": str})
    groups = set(adata.obs[data_keys.group_key].astype(str))
    check_inputs(plan, tables, comparisons, groups=groups)
    profiles = build_profiles(adata, means, group_key=data_keys.group_key, batch_key=data_keys.batch_key,
                              presence=presence, thresholds=thresholds)
    patterns = classify_plan(plan, tables, comparisons, profiles, top_n=top_n, thresholds=thresholds)
    scores = setting_scores(patterns, plan)
    return {
        "gene_patterns": patterns,
        "setting_scores": scores,
        "concordance": concordance(plan, tables, top_n=top_n),
        "recommendations": recommendations(scores, comparisons),
        "thresholds": pd.DataFrame([{**asdict(thresholds), "top_n": top_n, "min_cells_present": presence.min_cells,
                                     "min_enrichment": presence.min_enrichment}]),
        "top_gene_expression": top_gene_expression(patterns, profiles[RAW], max_genes=heatmap_genes),
    }


def build_profiles(adata: AnnData, means: pd.DataFrame | None, *, group_key: str, batch_key: str,
                   presence: PresenceRule = PresenceRule(), thresholds: Thresholds = Thresholds()) -> dict[str, ExpressionProfile]:
    """``{"raw": ..., <choice>: ...}``: the raw profile first, then one per scVI choice in ``means``."""
    raw = raw_profile(adata, group_key=group_key, batch_key=batch_key, rule=presence,
                      pseudocount_fraction=thresholds.pseudocount_fraction)
    profiles = {RAW: raw}
    if means is not None:
        for name, profile in means_profiles(means, raw.n_cells, pseudocount_fraction=thresholds.pseudocount_fraction).items():
            profiles[name if name != RAW else "scvi_raw"] = profile
    return profiles


def classify_plan(plan: pd.DataFrame, tables: dict[str, pd.DataFrame], comparisons: pd.DataFrame,
                  profiles: dict[str, ExpressionProfile], *, top_n: int = 50, thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    """``gene_patterns.csv``: the classified top genes of every setting of the plan, in plan order."""
    by_id = comparisons.set_index("comparison_id")
    floors: dict[str, dict[str, float]] = {}
    frames = []
    for _, setting in plan.iterrows():
        cid = str(setting["combination_id"])
        if cid not in tables:
            logger.warning("no DE table for %s: skipped", cid)
            continue
        comp = by_id.loc[str(setting["comparison_id"])]
        comp = comp.copy()
        g1, g2 = str(setting["group1"]), str(setting["group2"])
        if (g1, g2) == (str(comp["group2"]), str(comp["group1"])):  # the plan compares the other way round
            for a, b in (("group1_batches", "group2_batches"), ("n_cells_group1", "n_cells_group2")):
                if a in comp.index and b in comp.index:
                    comp[a], comp[b] = comp[b], comp[a]
        comp["group1"], comp["group2"] = g1, g2
        key = str(setting["comparison_id"])
        if key not in floors:
            floors[key] = _comparison_floors(comp, profiles, thresholds)
        calls = classify_setting(tables[cid], comp, profiles, top_n=top_n, thresholds=thresholds, floors=floors[key])
        calls.insert(0, "comparison_id", key)
        calls.insert(0, "combination_id", cid)
        frames.append(calls)
    if not frames:
        return pd.DataFrame(columns=["combination_id", "comparison_id", "gene", "rank", "pattern"])
    logger.info("classified the top %d genes of %d settings", top_n, len(frames))
    return pd.concat(frames, ignore_index=True)

"""A comparison's DE tables: their top genes and directions, and the calls of those genes, computed once.

Every setting, model and seed of a comparison classifies its top genes from the
same profiles, so a gene's call depends only on the direction its table gives
(and, for the second ``batch_wide`` rule, on the table's ``|lfc|``):
:class:`ComparisonCalls` computes each gene's call once per direction and
every table of the comparison looks it up.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from desweep.diagnose.classify import CHOICE_COLUMNS, SCORE_COLUMNS, Thresholds, check_hidden_shift, classify_genes
from desweep.diagnose.profiles import ExpressionProfile
from desweep.names import split_names

LFC_COLUMNS = ("lfc_mean", "lfc", "logfoldchanges", "log2FoldChange", "lfc_median")


def top_genes(table: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """The first ``top_n`` rows of a DE table (sorted best first; by ``rank`` when present)."""
    table = table.copy()
    if "rank" in table.columns:
        table = table.sort_values("rank", kind="stable")
    else:
        table["rank"] = np.arange(1, len(table) + 1)
    table["gene"] = table["gene"].astype(str)
    return table.head(top_n).reset_index(drop=True)


def table_lfc(table: pd.DataFrame) -> np.ndarray:
    """The DE table's log fold change (``lfc_mean`` for scVI, ``logfoldchanges``/``log2FoldChange`` for baselines)."""
    for column in LFC_COLUMNS:
        if column in table.columns:
            return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
    return np.zeros(len(table))


def group_batches(row: pd.Series, column: str, profile: ExpressionProfile, group: str) -> list[str]:
    """The batches of ``group`` from a comparisons.csv row (``;``-joined, :func:`desweep.names.join_names`), else where the profile has it."""
    return split_names(row.get(column)) or profile.batches_of(group)


class ComparisonCalls:
    """The calls of one comparison in every profile, computed once per gene and direction and reused.

    Every setting, model and seed of a comparison classifies genes from the same
    profiles, so a gene's call depends only on the direction its table gives.
    """

    def __init__(self, comparison: pd.Series, profiles: dict[str, ExpressionProfile], thresholds: Thresholds = Thresholds()):
        self.group1, self.group2 = str(comparison["group1"]), str(comparison["group2"])
        self.comparison, self.profiles, self.thresholds = comparison, profiles, thresholds
        self._cache: dict[float, pd.DataFrame] = {}

    def _compute(self, genes: pd.Index, sign: float) -> pd.DataFrame:
        frames = []
        for i, (name, profile) in enumerate(self.profiles.items()):
            calls = classify_genes(profile, genes, sign, group1=self.group1, group2=self.group2,
                                   batches1=group_batches(self.comparison, "group1_batches", profile, self.group1),
                                   batches2=group_batches(self.comparison, "group2_batches", profile, self.group2),
                                   thresholds=self.thresholds, check_magnitude=False)
            frames.append(calls if i == 0 else calls[[*CHOICE_COLUMNS, "reason"]].add_suffix(f"__{name}"))
        return pd.concat(frames, axis=1)

    def prepare(self, genes: pd.Series | list[str], direction: np.ndarray) -> None:
        """Compute the calls of many genes at once (e.g. the union of every table's top genes)."""
        self.lookup(genes, direction)

    def lookup(self, genes: pd.Series | list[str], direction: np.ndarray) -> pd.DataFrame:
        """The calls of ``genes`` (in order) given each gene's DE direction."""
        genes = pd.Index([str(g) for g in genes])
        sign = np.where(np.isfinite(direction) & (direction != 0), np.sign(direction), 0.0)
        out = None
        for value in (1.0, -1.0, 0.0):
            mask = sign == value
            if not mask.any():
                continue
            cached = self._cache.get(value)
            new = genes[mask].difference(cached.index) if cached is not None else genes[mask].unique()
            if len(new):
                computed = self._compute(new, value)
                cached = computed if cached is None else pd.concat([cached, computed])
                self._cache[value] = cached
            assert cached is not None  # computed above when the cache had none of these genes
            part = cached.loc[genes[mask]]
            if out is None:
                out = pd.DataFrame(index=range(len(genes)), columns=part.columns)
            out.loc[np.flatnonzero(mask)] = part.to_numpy()
        out = out.infer_objects() if out is not None else pd.DataFrame(index=range(0))
        if out.empty:
            return out
        magnitude = np.abs(np.asarray(direction, dtype=float))
        out = check_hidden_shift(out, magnitude, self.thresholds)
        for name in list(self.profiles)[1:]:
            suffixed = out[[f"{c}__{name}" for c in (*SCORE_COLUMNS, "pattern", "reason") if f"{c}__{name}" in out.columns]]
            suffixed = suffixed.assign(se_between_batch_lfc=out["se_between_batch_lfc"].to_numpy())  # the choice borrows raw's errors
            choice = check_hidden_shift(suffixed.rename(columns=lambda c, name=name: c.removesuffix(f"__{name}")), magnitude, self.thresholds)
            out[f"pattern__{name}"] = choice["pattern"].to_numpy()
        return out.drop(columns=[c for c in out.columns if c.startswith("reason__")])


def classify_setting(table: pd.DataFrame, comparison: pd.Series, profiles: dict[str, ExpressionProfile], *,
                     top_n: int = 50, thresholds: Thresholds = Thresholds(),
                     calls: ComparisonCalls | None = None) -> pd.DataFrame:
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
    calls
        A :class:`ComparisonCalls` of this comparison to reuse (one is made otherwise).

    Returns
    -------
    ``gene, rank, lfc, proba_de, high_group, direction_agrees, pattern, reason,
    <scores>`` and, per further profile, ``pattern__<choice>`` and its scores.
    """
    top = top_genes(table, top_n)
    direction = table_lfc(top)
    calls = calls or ComparisonCalls(comparison, profiles, thresholds)
    proba = pd.to_numeric(top["proba_de"], errors="coerce").to_numpy(dtype=float) if "proba_de" in top else np.full(len(top), np.nan)
    out = pd.DataFrame({"gene": top["gene"], "rank": top["rank"].astype(int), "lfc": direction, "proba_de": proba})
    return pd.concat([out, calls.lookup(top["gene"], direction)], axis=1)


def oriented_comparison(comparison: pd.Series, group1: str, group2: str) -> pd.Series:
    """The comparisons.csv row as the plan compares it (``group1``/``group2`` possibly swapped)."""
    comp = comparison.copy()
    if (group1, group2) == (str(comp["group2"]), str(comp["group1"])):
        for a, b in (("group1_batches", "group2_batches"), ("n_cells_group1", "n_cells_group2")):
            if a in comp.index and b in comp.index:
                comp[a], comp[b] = comp[b], comp[a]
    comp["group1"], comp["group2"] = group1, group2
    return comp

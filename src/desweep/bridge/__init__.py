"""The bridge contrast: group1 vs group2 net of the batch shift, measured on clusters shared across batches.

When two groups live in different batches, their difference mixes biology and
batch. Clusters present in both groups' batches (*bridges*) show the batch
shift alone; a negative-binomial GLM ``~ batch + cluster`` over the pseudobulk
of every present cluster x batch estimates each cluster's level net of its
batch, and the Wald contrast of the two groups is a difference in differences.
Its assumption: the compared groups shift between batches like the bridges.
Per gene the shift is also measured bridge by bridge and pooled with a
random-effects model, so that a shift that differs across bridges is reported
(``heterogeneous``, the prediction SE, the leave-one-bridge-out range). The
package, by concern:

- :mod:`~desweep.bridge.units`: the pseudobulk units and each comparison's verdict;
- :mod:`~desweep.bridge.fit`: the GLM, the contrast, its shrinkage and lower bound;
- :mod:`~desweep.bridge.shift`: the shift per bridge, pooled, and its sensitivity;
- :mod:`~desweep.bridge.sweep`: the contrast as one more method of the sweep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from desweep import keys
from desweep.bridge.fit import Term, collapse_samples, contrast, estimable, fit, lower_bound, residual_df
from desweep.bridge.shift import SHIFT_COLUMNS, bridge_shifts, shift_table
from desweep.bridge.sweep import METHOD_COLUMN, bridge_plan_rows, bridge_tables
from desweep.bridge.units import Identifiability, Units, build_units, check_samples, identify, present_batches
from desweep.composition import PresenceRule
from desweep.errors import ParameterError
from desweep.names import join_names

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["BRIDGE_COLUMNS", "METHOD_COLUMN", "SUMMARY_COLUMNS", "bridge_contrast", "bridge_plan_rows", "bridge_tables"]

logger = logging.getLogger(__name__)

BRIDGE_COLUMNS = ["comparison_id", "group1", "group2", "gene", "rank", "lfc", "lfc_shrunk", "se", "stat", "pvalue", "padj",
                  "lfc_lower", "base_mean", "high_group", *SHIFT_COLUMNS]
SUMMARY_COLUMNS = ["comparison_id", "group1", "group2", "verdict", "identifiable", "n_bridges", "bridges", "n_units",
                   "design", "reason"]
#: parts each cluster x batch is split into when one unit per cluster x batch leaves no residual degree of
#: freedom (e.g. one donor per batch and as many clusters as batches): three is the fewest that give the
#: dispersion more than one degree of freedom per unit
PSEUDO_REPLICATES = 3


def _choose_design(units: Units, pairs: list[tuple[str, str]]) -> tuple[Units, Term, str]:
    """Samples within batches when every pair stays estimable with them, else cluster x batch units."""
    note = ""
    if units.samples:
        ok, why = estimable(units.meta, "sample", pairs)
        if ok:
            return units, "sample", ""
        note = f"samples not used ({why})"
        units = collapse_samples(units)
    return units, "batch", note


def _split_units(adata: AnnData, present: dict[str, list[str]], component: frozenset[str], *, group_key: str,
                 batch_key: str) -> Units:
    return _subset(build_units(adata, present, group_key=group_key, batch_key=batch_key, pseudo_replicates=PSEUDO_REPLICATES),
                   component)


def _subset(units: Units, batches: frozenset[str]) -> Units:
    rows = units.meta["batch"].isin(batches).to_numpy()
    return Units(counts=units.counts.loc[rows], variance=units.variance.loc[rows], meta=units.meta.loc[rows],
                 present=units.present, samples=units.samples)


def _ranked(table: pd.DataFrame) -> pd.DataFrame:
    order = table.assign(_s=-table["stat"].abs().fillna(-1.0)).sort_values(["_s", "gene"], kind="stable")
    order = order.drop(columns="_s").reset_index(drop=True)
    order.insert(order.columns.get_loc("lfc"), "rank", np.arange(1, len(order) + 1))
    return order


def _comparison_rows(dds, units: Units, comp: pd.Series, ident: Identifiability, *, alpha: float, threads: int) -> pd.DataFrame:
    g1, g2 = str(comp["group1"]), str(comp["group2"])
    table = contrast(dds, g1, g2, threads=threads)
    shifts, variances = bridge_shifts(units, ident.bridges, ident.batches1, ident.batches2)
    shift = shift_table(table["lfc"].to_numpy(float), shifts, variances, alpha=alpha)
    table["lfc_lower"] = lower_bound(table["lfc"].to_numpy(float), table["se"].to_numpy(float), alpha=alpha,
                                     extra_var=shift["shift_tau2"].to_numpy(float))
    table["high_group"] = np.where(table["lfc"] > 0, g1, np.where(table["lfc"] < 0, g2, ""))
    table = pd.concat([table, shift], axis=1)
    table.insert(0, "comparison_id", str(comp["comparison_id"]))
    table.insert(1, "group1", g1)
    table.insert(2, "group2", g2)
    return _ranked(table).reindex(columns=BRIDGE_COLUMNS)


def _fit_component(units: Units, members: pd.DataFrame, verdicts: dict[str, Identifiability], *, alpha: float,
                   threads: int, split: Callable[[], Units] | None = None) -> tuple[list[pd.DataFrame], dict[str, tuple[int, str]]]:
    """One GLM over a linked set of batches and every estimable comparison in it; ``verdicts`` updated in place.

    ``split``: builds the same cells as pseudo-replicates (:data:`PSEUDO_REPLICATES` per cluster x
    batch), used when the cluster x batch design leaves no residual degree of freedom.
    """
    pairs = list(zip(members["group1"], members["group2"], strict=True))
    units, term, note = _choose_design(units, pairs)
    replicated = ""
    if term == "batch" and split is not None and residual_df(units.meta, term) < 1:
        units, replicated = split(), f" ({PSEUDO_REPLICATES} pseudo-replicates per cluster x batch)"
        note = "; ".join(filter(None, [note, (
            f"one unit per cluster x batch left no residual degree of freedom: each was split into {PSEUDO_REPLICATES} "
            "random parts of its cells, so p-values reflect cell sampling only (optimistic); the ranking stands")]))
    for cid, g1, g2 in members[["comparison_id", "group1", "group2"]].itertuples(index=False):
        ok, why = estimable(units.meta, term, [(g1, g2)])
        if not ok:
            v = verdicts[cid]
            verdicts[cid] = Identifiability("not_identifiable", v.bridges, v.batches1, v.batches2, v.component,
                                            f"the GLM ~ {term} + cluster cannot estimate it: {why}")
    members = members[[verdicts[c].verdict != "not_identifiable" for c in members["comparison_id"]]]
    if members.empty:
        return [], {}
    start = time.perf_counter()
    dds = fit(units, term, threads=threads)
    logger.info("bridge GLM ~ %s + cluster: %d units x %d genes in %.1f s", term, len(units.meta), units.counts.shape[1],
                time.perf_counter() - start)
    tables, designs = [], {}
    for _, comp in members.iterrows():
        cid = comp["comparison_id"]
        tables.append(_comparison_rows(dds, units, comp, verdicts[cid], alpha=alpha, threads=threads))
        if note:
            v = verdicts[cid]
            verdicts[cid] = Identifiability(v.verdict, v.bridges, v.batches1, v.batches2, v.component, f"{v.reason}; {note}")
        designs[cid] = (len(units.meta), f"~ {term} + cluster{replicated}")
    return tables, designs


def bridge_contrast(
    adata: AnnData,
    comparisons: pd.DataFrame,
    *,
    group_key: str,
    batch_key: str,
    sample_key: str | None = None,
    presence: PresenceRule = PresenceRule(),
    alpha: float = 0.01,
    threads: int = 1,
    source: str = keys.CLUSTERED_H5AD,
) -> dict[str, pd.DataFrame]:
    """Estimate every comparison's group1 vs group2 contrast net of the batch shift (module docstring).

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X`` (sparse or dense).
    comparisons
        ``comparison_id, group1, group2`` (``composition/comparisons.csv``).
    group_key, batch_key
        obs columns of the clusters (groups) and batches.
    sample_key
        obs column of samples (donors) nested in batches, or ``None``: units are then cluster x batch.
    presence
        The composition presence rule: only present cluster x batch cells enter the fit.
    alpha
        Level of the lower bound ``lfc_lower`` and of the heterogeneity test.
    threads
        PyDESeq2's processes.

    Returns
    -------
    ``{"bridge": ..., "bridge_summary": ...}``: one row per identifiable comparison
    and gene (all genes, ranked by ``|stat|``; columns :data:`BRIDGE_COLUMNS`) and
    one row per comparison (:data:`SUMMARY_COLUMNS`).

    Raises
    ------
    DesweepInputError
        ``alpha`` outside (0, 1), or a sample column missing or not nested in batches.
    """
    if not 0 < alpha < 1:
        raise ParameterError("alpha", "alpha", f"must be between 0 and 1, got {alpha}")
    if sample_key:
        check_samples(adata.obs, sample_key=sample_key, batch_key=batch_key, source=source)
    present = present_batches(adata, group_key=group_key, batch_key=batch_key, rule=presence)
    comps = comparisons.astype({"comparison_id": str, "group1": str, "group2": str})
    verdicts = {cid: identify(g1, g2, present) for cid, g1, g2 in comps[["comparison_id", "group1", "group2"]].itertuples(index=False)}
    wanted = {v.component for v in verdicts.values() if v.verdict != "not_identifiable"}
    all_units = build_units(adata, present, group_key=group_key, batch_key=batch_key, sample_key=sample_key) if wanted else None
    tables, fitted = [], {}
    for component in sorted(wanted, key=sorted):
        assert all_units is not None  # built whenever a component is wanted
        members = comps[[verdicts[c].component == component and verdicts[c].verdict != "not_identifiable"
                         for c in comps["comparison_id"]]]
        split = None if sample_key else partial(_split_units, adata, present, component, group_key=group_key, batch_key=batch_key)
        part, designs = _fit_component(_subset(all_units, component), members, verdicts, alpha=alpha, threads=threads,
                                       split=split)
        tables += part
        fitted.update(designs)
    rows = []
    for cid, g1, g2 in comps[["comparison_id", "group1", "group2"]].itertuples(index=False):
        v = verdicts[cid]
        n_units, design = fitted.get(cid, (0, ""))
        rows.append({"comparison_id": cid, "group1": g1, "group2": g2, "verdict": v.verdict,
                     "identifiable": v.verdict != "not_identifiable", "n_bridges": len(v.bridges),
                     "bridges": join_names(v.bridges), "n_units": n_units, "design": design, "reason": v.reason})
    return {
        "bridge": pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=BRIDGE_COLUMNS),
        "bridge_summary": pd.DataFrame(rows, columns=SUMMARY_COLUMNS),
    }

"""The bridge contrast's units and the identifiability of each comparison.

A *unit* is the pseudobulk of one cluster in one batch (or in one sample of a
batch), kept only where the composition presence rule says the cluster is
present in that batch. Batches are linked through the clusters present in both;
a comparison is identifiable when its groups' batches are linked, directly
(*bridges*: clusters present in one of group1's batches and one of group2's)
or through a chain of batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from desweep.composition import PresenceRule, cluster_batch_counts, cluster_status
from desweep.errors import DesweepInputError
from desweep.names import join_names, split_names
from desweep.pseudobulk import sum_counts

if TYPE_CHECKING:
    from anndata import AnnData

Verdict = Literal["same_batch", "identifiable", "single_bridge", "not_identifiable"]


@dataclass(frozen=True)
class Units:
    """Pseudobulk units of one dataset.

    Attributes
    ----------
    counts
        Units x genes summed raw counts (index ``u0``, ``u1``, ...).
    variance
        The variance of each sum with the unit's cells as replicates (same shape).
    meta
        Per unit: ``cluster``, ``batch``, ``sample`` (``""`` without samples), ``n_cells``, ``library_size``.
    present
        Cluster -> the batches it is present in (presence rule), in the batches' order.
    samples
        Whether the units are samples within batches.
    """

    counts: pd.DataFrame
    variance: pd.DataFrame
    meta: pd.DataFrame
    present: dict[str, list[str]]
    samples: bool


@dataclass(frozen=True)
class Identifiability:
    """One comparison's verdict (module docstring)."""

    verdict: Verdict
    bridges: list[str]
    batches1: list[str]
    batches2: list[str]
    component: frozenset[str]
    reason: str


def present_batches(adata: AnnData, *, group_key: str, batch_key: str, rule: PresenceRule) -> dict[str, list[str]]:
    """Cluster -> batches it is present in (clusters present nowhere are left out)."""
    status = cluster_status(cluster_batch_counts(adata.obs, group_key=group_key, batch_key=batch_key), rule)
    return {str(c): split_names(b) for c, b in status["batches"].items() if b}


def check_samples(obs: pd.DataFrame, *, sample_key: str, batch_key: str, source: str) -> None:
    """Refuse a sample column that is missing or not nested in batches (a sample in two batches)."""
    if sample_key not in obs.columns:
        raise DesweepInputError(source, sample_key, f"obs column missing (have: {', '.join(map(str, obs.columns))})")
    batches_per_sample = obs.groupby(obs[sample_key].astype(str), observed=True)[batch_key].nunique()
    crossing = batches_per_sample[batches_per_sample > 1]
    if len(crossing):
        raise DesweepInputError(source, sample_key, f"sample '{crossing.index[0]}' occurs in {int(crossing.iloc[0])} batches: "
                                "samples must be nested in batches")


def pseudo_replicate_labels(cluster: np.ndarray, batch: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """``rep1`` ... ``rep<n>`` per cell: each cluster x batch's cells dealt at random into ``n`` near-equal parts."""
    rng = np.random.default_rng(seed)
    labels = np.empty(len(cluster), dtype=object)
    frame = pd.DataFrame({"c": cluster, "b": batch})
    for _, rows in sorted(frame.groupby(["c", "b"], sort=True).indices.items()):
        labels[rows] = [f"rep{i % n + 1}" for i in rng.permutation(len(rows))]
    return labels


def build_units(adata: AnnData, present: dict[str, list[str]], *, group_key: str, batch_key: str,
                sample_key: str | None = None, pseudo_replicates: int = 0, seed: int = 0) -> Units:
    """Sum the raw counts of the cells of every present cluster x batch (x sample) into units.

    ``pseudo_replicates`` (> 1, without ``sample_key``): each cluster x batch split
    into that many random parts of its cells (``meta['sample']`` = ``rep1``, ...),
    so that a design with one unit per coefficient keeps residual degrees of
    freedom; their spread is cell sampling only.
    """
    obs = adata.obs
    cluster = obs[group_key].astype(str).to_numpy()
    batch = obs[batch_key].astype(str).to_numpy()
    pairs = {(c, b) for c, batches in present.items() for b in batches}
    keep = np.fromiter(((c, b) in pairs for c, b in zip(cluster, batch, strict=True)), dtype=bool, count=adata.n_obs)
    if sample_key:
        sample = obs[sample_key].astype(str).to_numpy()
    elif pseudo_replicates > 1:
        sample = np.full(adata.n_obs, "", dtype=object)
        sample[keep] = pseudo_replicate_labels(cluster[keep], batch[keep], pseudo_replicates, seed=seed)
    else:
        sample = np.full(adata.n_obs, "", dtype=object)
    cluster_code = {c: i for i, c in enumerate(sorted(present))}
    batch_code = {b: i for i, b in enumerate(sorted(set(batch)))}
    sample_code = {s: i for i, s in enumerate(sorted(set(sample)))}
    # fixed-width codes sort like the names they stand for, whatever characters the names hold
    labels = np.full(adata.n_obs, "", dtype=object)
    labels[keep] = [f"{cluster_code[c]:06d}|{batch_code[b]:06d}|{sample_code[s]:06d}"
                    for c, b, s in zip(cluster[keep], batch[keep], sample[keep], strict=True)]
    counts, n_cells, variance = sum_counts(adata, labels, with_variance=True, mask=keep)
    clusters, batches, samples = sorted(cluster_code), sorted(batch_code), sorted(sample_code)
    codes = [tuple(int(x) for x in label.split("|")) for label in counts.index]
    meta = pd.DataFrame({
        "cluster": [clusters[c] for c, _, _ in codes], "batch": [batches[b] for _, b, _ in codes],
        "sample": [samples[s] for _, _, s in codes], "n_cells": n_cells,
        "library_size": counts.sum(axis=1).to_numpy(),
    }, index=[f"u{i}" for i in range(len(codes))])
    return Units(counts=counts.set_axis(meta.index, axis=0), variance=variance.set_axis(meta.index, axis=0), meta=meta,
                 present=present, samples=bool(sample_key))


def components(present: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    """Batch -> the set of batches linked to it through clusters present in two batches."""
    parent: dict[str, str] = {}

    def root(b: str) -> str:
        while parent.setdefault(b, b) != b:
            b = parent[b]
        return b

    for batches in present.values():
        for b in batches[1:]:
            ra, rb = root(batches[0]), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        root(batches[0])
    groups: dict[str, set[str]] = {}
    for b in parent:
        groups.setdefault(root(b), set()).add(b)
    return {b: frozenset(groups[root(b)]) for b in parent}


def identify(group1: str, group2: str, present: dict[str, list[str]]) -> Identifiability:
    """Verdict of one comparison: same batch, identifiable through bridges, one bridge, or not at all."""
    b1, b2 = present.get(group1, []), present.get(group2, [])
    for group, batches in ((group1, b1), (group2, b2)):
        if not batches:
            return Identifiability("not_identifiable", [], b1, b2, frozenset(),
                                   f"'{group}' is present in no batch (presence rule): it has no unit")
    linked = components(present)
    component = linked[b1[0]]
    shared = [b for b in b1 if b in b2]
    if shared:
        return Identifiability("same_batch", [], b1, b2, component,
                               f"the groups share batch(es) {join_names(shared)}: compared within batch, no bridge needed")
    bridges = [c for c, batches in sorted(present.items())
               if c not in (group1, group2) and set(batches) & set(b1) and set(batches) & set(b2)]
    if not any(linked[b] == component for b in b2):
        return Identifiability("not_identifiable", [], b1, b2, frozenset(),
                               "no cluster links the groups' batches: the group difference cannot be told from the batch shift")
    if len(bridges) >= 2:
        return Identifiability("identifiable", bridges, b1, b2, component,
                               f"{len(bridges)} clusters present in both groups' batches measure the batch shift")
    if len(bridges) == 1:
        return Identifiability("single_bridge", bridges, b1, b2, component,
                               "one cluster alone measures the batch shift: whether the groups shift like it cannot be checked "
                               "(heterogeneity not measurable)")
    return Identifiability("identifiable", [], b1, b2, component,
                           "the groups' batches are linked only through other batches: no direct bridge, "
                           "heterogeneity not measurable")

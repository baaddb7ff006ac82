"""Means of the layers per gene, cluster and measured batch (``cluster_batch_means.csv``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData

    from desweep.normalize.layers import LayerSpec

_MEANS_BLOCK = 16384  # cells per block when summing layers per cluster and batch


class ClusterBatchSums:
    """Sums of layers per (cluster, measured batch) and gene, added a block of cells at a time.

    Parameters
    ----------
    obs
        The cells' annotations (group and batch columns).
    group_key, batch_key
        obs columns of the clusters and the batches the cells were measured in.
    n_genes
        Genes (columns) of the blocks added.
    """

    def __init__(self, obs: pd.DataFrame, *, group_key: str, batch_key: str, n_genes: int) -> None:
        import scipy.sparse as sp

        self.clusters = _categories(obs[group_key])
        self.batches = _categories(obs[batch_key])
        c_codes = pd.Categorical(obs[group_key].astype(str), categories=self.clusters).codes
        b_codes = pd.Categorical(obs[batch_key].astype(str), categories=self.batches).codes
        valid = (c_codes >= 0) & (b_codes >= 0)  # cells without a cluster or batch count nowhere
        combined = c_codes[valid].astype(np.int64) * len(self.batches) + b_codes[valid]
        n_combinations = len(self.clusters) * len(self.batches)
        counts = np.bincount(combined, minlength=n_combinations)
        self.present = np.flatnonzero(counts)
        self.counts = counts[self.present]
        self.indicator = sp.csr_matrix(
            (np.ones(combined.size), (combined, np.flatnonzero(valid))), shape=(n_combinations, len(obs))
        )[self.present].tocsc()
        self.n_genes = n_genes
        self.sums: dict[str, np.ndarray] = {}

    def add(self, choice: str, start: int, stop: int, values: np.ndarray) -> None:
        """Add the values ``(stop - start, n_genes)`` of cells ``start:stop`` of one layer (float64 sums)."""
        total = self.sums.setdefault(choice, np.zeros((self.present.size, self.n_genes)))
        total += self.indicator[:, start:stop] @ np.asarray(values, dtype=np.float64)

    def table(self, genes: Sequence[str], choices: Sequence[str]) -> pd.DataFrame:
        """The long means table (see :func:`cluster_batch_means`), choices in the order given."""
        names = np.asarray(genes, dtype=object)
        n_batches = len(self.batches)
        frames = [pd.DataFrame({
            "gene": np.tile(names, self.present.size),
            "cluster": np.repeat(np.asarray(self.clusters, dtype=object)[self.present // n_batches], names.size),
            "batch": np.repeat(np.asarray(self.batches, dtype=object)[self.present % n_batches], names.size),
            "choice": choice,
            "mean": (self.sums[choice] / self.counts[:, None]).reshape(-1),
            "n_cells": np.repeat(self.counts, names.size),
        }) for choice in choices]
        columns = ["gene", "cluster", "batch", "choice", "mean", "n_cells"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def cluster_batch_means(
    normalized: AnnData, *, group_key: str, batch_key: str, layers: Sequence[LayerSpec],
) -> pd.DataFrame:
    """Mean of each layer per gene, cluster and (observed) batch.

    Returns
    -------
    A long table ``gene, cluster, batch, choice, mean, n_cells`` with a row for
    every cluster x batch combination that has cells, ordered by choice (layer
    order), cluster, batch (category order) and gene (model order). ``batch``
    is the batch the cells were measured in; ``choice`` is the layer name
    without ``scvi_norm__`` (how they were decoded).
    """
    sums = ClusterBatchSums(normalized.obs, group_key=group_key, batch_key=batch_key, n_genes=normalized.n_vars)
    for spec in layers:
        for lo in range(0, normalized.n_obs, _MEANS_BLOCK):  # float64 sums without a float64 copy of the layer
            hi = min(lo + _MEANS_BLOCK, normalized.n_obs)
            sums.add(spec.suffix, lo, hi, normalized.layers[spec.layer][lo:hi])
    return sums.table(normalized.var_names, [spec.suffix for spec in layers])


def _categories(column: pd.Series) -> list[str]:
    if isinstance(column.dtype, pd.CategoricalDtype):
        present = set(column.astype(str))
        return [str(c) for c in column.cat.categories if str(c) in present]
    return sorted(set(column.astype(str)))

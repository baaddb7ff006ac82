"""A seeded simulator of batched single-cell counts with planted truth.

The simulated data mimic the situation desweep is built for: several batches,
clusters shared by every batch, and clusters that exist in one batch only.

Truth
-----
``obs``
    ``batch`` (``batch0`` ... ``batch{B-1}``) and ``cell_type``: the planted
    cluster, ``shared{k}`` (present in every batch) or ``only_batch{b}``
    (present in batch ``b`` only).
``var``
    ``truth_pattern``: ``marker`` (up in one cluster, in every batch it occurs
    in), ``batch_wide`` (up in every cell of one batch, whatever its cluster) or
    ``null`` (neither); ``truth_cluster`` (the cluster of a marker, else ``""``),
    ``truth_batch`` (the batch of a batch-wide gene, else ``""``),
    ``truth_lfc`` (the planted effect in **natural log**: the logit added to the
    gene, 0 for null), ``truth_log2fc`` (the same effect in **log2**, i.e.
    ``truth_lfc / ln 2``), ``truth_base`` (the gene's base logit).
``uns['simulation']``
    The parameters (``marker_lfc`` and ``batch_lfc`` in natural log) and the
    preset's name.

Presets
-------
``default``
    3,000 cells x 2,000 genes, 3 batches, 3 shared and 2 batch-specific
    clusters (each 25 % of its batch), 20 markers per cluster with natural-log
    effects 1.5-3 (log2 2.2-4.3) and 30 batch-wide genes per batch with 1-2
    (log2 1.4-2.9). Planted genes are well expressed.
``hard``
    The regime where the classification is difficult: 1,000 cells x 10,000
    sparse genes (library median 2,000 UMIs, so a typical gene has ~0.1 counts
    per cell), batch-specific clusters of 30-150 cells, shared clusters of
    50-100 cells per batch, 25 markers per cluster and 25 batch-wide genes per
    batch, both with modest log2 fold changes uniform in 0.5-2 (natural log
    0.35-1.39). Planted genes have base logits N(1, 0.75), so some are barely
    expressed.
``realistic``
    What real data do rather than what the classifier assumes (module
    :mod:`desweep.simulate_realistic`, which documents its structure and
    truth): 3,000 cells x 3,000 genes, 4 shared and 3 batch-specific clusters,
    batch x cell-type interactions, donors (``obs['sample']``), ambient RNA, a
    related pair of groups and markers shared with a second cluster; the truth
    of a comparison is the group-vs-group contrast in a common batch.

The realized fold change of a planted gene between cells is close to
``exp(truth_lfc)`` (the softmax renormalization shrinks it slightly).

Model
-----
For gene ``g`` and a cell of cluster ``k`` in batch ``b``:
``mean = L * softmax_g(base_g + marker_kg + shift_bg + noise_bg)`` where
``base_g ~ N(0, 1)``, ``marker_kg`` is ``truth_lfc`` for the cluster's markers,
``shift_bg`` is ``truth_lfc`` for the batch's batch-wide genes, ``noise_bg ~
N(0, batch_noise)`` is a weak per-gene batch effect on every gene, and the
library size ``L`` is log-normal with a per-batch median. Counts are negative
binomial (gamma-Poisson) with per-gene inverse dispersion ``theta_g``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from desweep.simulate_params import BATCH_KEY, LABELS_KEY, PRESETS, Preset, SimulationParams, cluster_names, preset_params

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from anndata import AnnData

__all__ = ["BATCH_KEY", "LABELS_KEY", "PRESETS", "Preset", "SimulationParams", "cluster_names", "preset_params", "simulate",
           "simulate_blocks", "write_simulation"]

logger = logging.getLogger(__name__)

def simulate(params: SimulationParams | None = None, *, chunk_size: int = 5000) -> AnnData:
    """Simulate raw counts with planted markers and batch-wide genes.

    Parameters
    ----------
    params
        Simulation parameters (see :data:`PRESETS`); defaults give 3,000
        cells x 2,000 genes, 3 batches, 3 shared clusters and 2
        batch-specific clusters.
    chunk_size
        Cells drawn at a time (bounds the dense intermediates).

    Returns
    -------
    AnnData with sparse integer counts in ``X`` and the truth described in the
    module docstring. The same parameters give the same data.
    """
    adata, blocks = simulate_blocks(params, chunk_size=chunk_size)
    adata.X = sp.vstack(list(blocks), format="csr")
    return adata


def write_simulation(params: SimulationParams | None, destination: str | Path, *, chunk_size: int = 5000) -> Path:
    """Simulate and write the .h5ad one block of ``chunk_size`` cells at a time: never the whole count matrix in memory.

    The file holds the same data as ``simulate(params)`` written whole (same
    obs, var, uns and ``X``). The ``realistic`` preset mixes each cell with its
    batch's average profile, so it is drawn whole and written as one block.
    """
    from desweep.io import write_h5ad_rows

    adata, blocks = simulate_blocks(params, chunk_size=chunk_size)
    return write_h5ad_rows(adata, blocks, destination)


def simulate_blocks(params: SimulationParams | None = None, *, chunk_size: int = 5000) -> tuple[AnnData, Iterator[sp.csr_matrix]]:
    """The simulated data without ``X``, and ``X`` as CSR blocks of ``chunk_size`` cells drawn lazily, in order.

    The blocks must be drawn after the AnnData is built and before anything
    else uses the generator: they continue the same random stream.
    """
    import anndata as ad

    params = params or SimulationParams()
    params.check()
    if params.realistic:
        from desweep.simulate_realistic import simulate_realistic

        whole = simulate_realistic(params)
        counts, whole.X = whole.X, None
        return whole, iter([counts])
    rng = np.random.default_rng(params.seed)
    batches = [f"batch{b}" for b in range(params.n_batches)]
    shared, specific = cluster_names(params)
    clusters = shared + specific

    var = _plant_genes(params, rng, clusters, batches)
    obs = _assign_cells(params, rng, batches, shared, specific)
    cluster_lfc = _effect_matrix(var, clusters, "marker", "truth_cluster")
    batch_lfc = _effect_matrix(var, batches, "batch_wide", "truth_batch")
    batch_lfc += rng.normal(0.0, params.batch_noise, size=batch_lfc.shape)
    base = rng.normal(0.0, 1.0, size=params.n_genes)
    planted = var["truth_pattern"].to_numpy() != "null"
    base[planted] = rng.normal(*params.planted_base, size=planted.sum())  # planted genes detectable
    theta = rng.gamma(shape=4.0, scale=2.5, size=params.n_genes)
    library_medians = params.library_median * np.exp(rng.normal(0.0, 0.35, size=params.n_batches))
    var["truth_base"] = base

    cluster_idx = pd.Categorical(obs[LABELS_KEY], categories=clusters).codes
    batch_idx = pd.Categorical(obs[BATCH_KEY], categories=batches).codes

    def blocks() -> Iterator[sp.csr_matrix]:
        for start in range(0, params.n_cells, chunk_size):
            sl = slice(start, min(start + chunk_size, params.n_cells))
            logits = base + cluster_lfc[cluster_idx[sl]] + batch_lfc[batch_idx[sl]]
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            library = library_medians[batch_idx[sl]] * np.exp(rng.normal(0.0, 0.3, size=probs.shape[0]))
            mean = probs * library[:, None]
            rate = rng.gamma(shape=theta, scale=mean / theta)
            yield sp.csr_matrix(rng.poisson(rate).astype(np.float32))

    adata = ad.AnnData(obs=obs, var=var)
    adata.uns["simulation"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(params).items() if v is not None}
    adata.uns["simulation"]["library_medians"] = library_medians.round(1).tolist()
    logger.info("simulating %d cells x %d genes, clusters %s", adata.n_obs, adata.n_vars, ", ".join(clusters))
    return adata, blocks()


def _plant_genes(params: SimulationParams, rng: np.random.Generator, clusters: list[str], batches: list[str]) -> pd.DataFrame:
    order = rng.permutation(params.n_genes)
    pattern = np.full(params.n_genes, "null", dtype=object)
    truth_cluster = np.full(params.n_genes, "", dtype=object)
    truth_batch = np.full(params.n_genes, "", dtype=object)
    lfc = np.zeros(params.n_genes)
    pos = 0
    for cluster in clusters:
        genes = order[pos : pos + params.markers_per_cluster]
        pos += params.markers_per_cluster
        pattern[genes], truth_cluster[genes] = "marker", cluster
        lfc[genes] = rng.uniform(*params.marker_lfc, size=genes.size)
    for batch in batches:
        genes = order[pos : pos + params.batch_wide_genes_per_batch]
        pos += params.batch_wide_genes_per_batch
        pattern[genes], truth_batch[genes] = "batch_wide", batch
        lfc[genes] = rng.uniform(*params.batch_lfc, size=genes.size)
    names = [f"gene{i:05d}" for i in range(params.n_genes)]
    return pd.DataFrame(
        {"truth_pattern": pattern, "truth_cluster": truth_cluster, "truth_batch": truth_batch, "truth_lfc": lfc,
         "truth_log2fc": lfc / math.log(2)},
        index=pd.Index(names, name=None),
    )


def _assign_cells(
    params: SimulationParams, rng: np.random.Generator, batches: list[str], shared: list[str], specific: list[str]
) -> pd.DataFrame:
    batch_of_cell = rng.integers(0, params.n_batches, size=params.n_cells)
    labels = np.empty(params.n_cells, dtype=object)
    for b in range(len(batches)):
        cells = np.flatnonzero(batch_of_cell == b)
        has_specific = b < len(specific)
        if not has_specific:
            n_specific = 0
        elif params.specific_cells is not None:
            n_specific = int(rng.integers(params.specific_cells[0], params.specific_cells[1] + 1))
        else:
            n_specific = round(params.specific_fraction * cells.size)
        labels[cells[:n_specific]] = specific[b] if has_specific else None
        shared_weights = rng.dirichlet(np.full(len(shared), 8.0))
        labels[cells[n_specific:]] = rng.choice(shared, size=cells.size - n_specific, p=shared_weights)
    obs = pd.DataFrame(
        {
            BATCH_KEY: pd.Categorical([batches[b] for b in batch_of_cell], categories=batches),
            LABELS_KEY: pd.Categorical(labels, categories=shared + specific),
        },
        index=[f"cell{i:06d}" for i in range(params.n_cells)],
    )
    return obs


def _effect_matrix(var: pd.DataFrame, levels: list[str], pattern: str, column: str) -> np.ndarray:
    effect = np.zeros((len(levels), var.shape[0]))
    for i, level in enumerate(levels):
        hit = (var["truth_pattern"] == pattern).to_numpy() & (var[column] == level).to_numpy()
        effect[i, hit] = var["truth_lfc"].to_numpy()[hit]
    return effect

"""The ``realistic`` simulator preset: what real data do, not what desweep's classifier assumes.

:mod:`desweep.simulate` plants markers up in one cluster against all others and
purely additive batch effects, which is the classifier's own notion of the truth.
This preset adds what real batches and cell types do:

Structure
---------
Cell types
    ``shared{k}`` in every batch (the bridges) and ``only_batch{b}`` in batch ``b``
    only. A cluster's markers are up in it; a share of them
    (``shared_program_fraction``) is also up in one other cluster, so a marker of
    H against L may be expressed in a third cell type.
Related pair
    ``only_batch0`` and ``only_batch1`` (different batches) share a parent
    profile: ``parent_markers`` genes up in both by the same amount. Between the
    two, those genes do not differ; their markers against each other are their
    own markers only.
Batch-wide genes
    Up in every cell of one batch (``batch_wide``), plus weak per-gene noise of
    every batch as in the other presets.
Batch x cell-type interactions
    ``interaction_genes_per_batch`` genes per batch with a batch-specific cluster
    respond to that batch's condition only in some cell types: the batch's
    specific cluster and some, but never all, of the bridge clusters (at least
    one), so the shift differs between bridges and heterogeneity is detectable.
    A gene that responded in the batch-specific cluster alone would be
    indistinguishable from a marker by any method (no cell of that type exists
    in another batch to show the response); none is planted.
Donors
    ``obs['sample']`` names ``donors_per_batch`` donors per batch
    (``batch0_donor0`` ...); each donor adds a per-gene effect N(0, donor_sd) to
    every gene of its cells.
Ambient RNA
    Each cell's expression profile is mixed with its batch's average profile:
    ``p = (1 - a) p_cell + a p_batch`` with ``a`` drawn per batch in
    ``ambient_fraction`` and jittered per cell.

Truth
-----
``var['truth_pattern']``: ``marker``, ``parent_marker`` (the related pair's shared
genes), ``batch_wide``, ``interaction`` or ``null`` (no planted effect at all;
batch noise and donor effects touch every gene). ``truth_cluster`` (a marker's
cluster, or ``only_batch0,only_batch1``), ``truth_also`` (the second cluster of a
shared-program marker), ``truth_batch`` (batch-wide and interaction genes),
``truth_interaction_clusters`` (comma-separated cell types an interaction gene
responds in), ``truth_lfc`` / ``truth_log2fc`` (the planted effect), ``truth_base``
and, per cluster ``k``, ``truth_logit_<k>``: the gene's logit in cluster ``k``
without batch, interaction, donor or ambient terms. The truth of a comparison is
the user's contrast, group1 vs group2 in a common batch:
``log2 softmax(truth_logit_<group1>) - log2 softmax(truth_logit_<group2>)``
(:func:`contrast_truth`). ``uns['simulation']['comparisons']`` lists the default
comparisons: the related pair (confounded), an unrelated confounded pair and a
one-specific pair.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from desweep.simulate_params import BATCH_KEY, LABELS_KEY, SimulationParams, cluster_names

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

SAMPLE_KEY = "sample"
PATTERNS = ("marker", "parent_marker", "batch_wide", "interaction", "null")


def simulate_realistic(params: SimulationParams) -> AnnData:
    """Counts with the realistic structure of the module docstring (``params.realistic`` must be true)."""
    import anndata as ad

    rng = np.random.default_rng(params.seed)
    batches = [f"batch{b}" for b in range(params.n_batches)]
    shared, specific = cluster_names(params)
    clusters = shared + specific
    var, effect, interaction = _plant(params, rng, clusters, shared, specific, batches)
    obs = _cells(params, rng, batches, shared, specific)
    base = var["truth_base"].to_numpy()
    batch_shift = _batch_shift(var, batches) + rng.normal(0.0, params.batch_noise, size=(len(batches), params.n_genes))
    donors = list(obs[SAMPLE_KEY].cat.categories)
    donor_effect = rng.normal(0.0, params.donor_sd, size=(len(donors), params.n_genes))
    theta = rng.gamma(shape=4.0, scale=2.5, size=params.n_genes)
    library_medians = params.library_median * np.exp(rng.normal(0.0, 0.35, size=params.n_batches))
    ambient = rng.uniform(*params.ambient_fraction, size=params.n_batches)

    k = pd.Categorical(obs[LABELS_KEY], categories=clusters).codes
    b = pd.Categorical(obs[BATCH_KEY], categories=batches).codes
    d = pd.Categorical(obs[SAMPLE_KEY], categories=donors).codes
    logits = base + effect[k] + batch_shift[b] + interaction[b, k] + donor_effect[d]
    probs = _softmax(logits)
    cell_ambient = np.clip(ambient[b] * np.exp(rng.normal(0.0, 0.3, size=params.n_cells)), 0.0, 0.5)
    for i in range(len(batches)):
        rows = b == i
        probs[rows] = (1 - cell_ambient[rows, None]) * probs[rows] + cell_ambient[rows, None] * probs[rows].mean(axis=0)
    library = library_medians[b] * np.exp(rng.normal(0.0, 0.3, size=params.n_cells))
    mean = probs * library[:, None]
    counts = rng.poisson(rng.gamma(shape=theta, scale=mean / theta)).astype(np.float32)

    for j, cluster in enumerate(clusters):
        var[f"truth_logit_{cluster}"] = base + effect[j]
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
    adata.uns["simulation"] = {key: (list(v) if isinstance(v, tuple) else v) for key, v in asdict(params).items() if v is not None}
    adata.uns["simulation"].update(library_medians=library_medians.round(1).tolist(), ambient_fraction_per_batch=ambient.round(4).tolist(),
                                   comparisons=[[specific[0], specific[1]], [specific[-1], specific[0]], [specific[-1], shared[0]]])
    logger.info("simulated %d cells x %d genes (realistic), clusters %s", adata.n_obs, adata.n_vars, ", ".join(clusters))
    return adata


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=-1, keepdims=True)


def _plant(params: SimulationParams, rng: np.random.Generator, clusters: list[str], shared: list[str], specific: list[str],
           batches: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The gene table, the cell-type effects (cluster x gene) and the interactions (batch x cluster x gene)."""
    n = params.n_genes
    order = iter(rng.permutation(n))
    var = pd.DataFrame({"truth_pattern": "null", "truth_cluster": "", "truth_also": "", "truth_batch": "",
                        "truth_interaction_clusters": "", "truth_lfc": 0.0}, index=[f"gene{i:05d}" for i in range(n)])
    col = {name: var.columns.get_loc(name) for name in var.columns}
    effect = np.zeros((len(clusters), n))
    interaction = np.zeros((len(batches), len(clusters), n))
    for j, cluster in enumerate(clusters):
        for _ in range(params.markers_per_cluster):
            g, lfc = next(order), rng.uniform(*params.marker_lfc)
            var.iat[g, col["truth_pattern"]], var.iat[g, col["truth_cluster"]], var.iat[g, col["truth_lfc"]] = "marker", cluster, lfc
            effect[j, g] = lfc
            if rng.random() < params.shared_program_fraction:
                other = int(rng.choice([i for i in range(len(clusters)) if i != j]))
                effect[other, g] = rng.uniform(*params.marker_lfc)
                var.iat[g, col["truth_also"]] = clusters[other]
    pair = [clusters.index(specific[0]), clusters.index(specific[1])]
    for _ in range(params.parent_markers):
        g, lfc = next(order), rng.uniform(*params.marker_lfc)
        var.iloc[g, [col["truth_pattern"], col["truth_cluster"], col["truth_lfc"]]] = ["parent_marker", ",".join(specific[:2]), lfc]
        effect[pair, g] = lfc
    for batch in batches:
        for _ in range(params.batch_wide_genes_per_batch):
            g = next(order)
            var.iloc[g, [col["truth_pattern"], col["truth_batch"], col["truth_lfc"]]] = ["batch_wide", batch, rng.uniform(*params.batch_lfc)]
    for i, batch in enumerate(batches[: len(specific)]):
        for _ in range(params.interaction_genes_per_batch):
            g, lfc = next(order), rng.uniform(*params.batch_lfc)
            bridges = rng.choice(shared, size=int(rng.integers(1, len(shared))), replace=False)
            responding = [specific[i], *sorted(bridges)]
            var.iloc[g, [col["truth_pattern"], col["truth_batch"], col["truth_interaction_clusters"], col["truth_lfc"]]] = [
                "interaction", batch, ",".join(responding), lfc]
            interaction[i, [clusters.index(c) for c in responding], g] = lfc
    var["truth_log2fc"] = var["truth_lfc"] / math.log(2)
    base = rng.normal(0.0, 1.0, size=n)
    planted = (var["truth_pattern"] != "null").to_numpy()
    base[planted] = rng.normal(*params.planted_base, size=planted.sum())
    var["truth_base"] = base
    return var, effect, interaction


def _batch_shift(var: pd.DataFrame, batches: list[str]) -> np.ndarray:
    shift = np.zeros((len(batches), var.shape[0]))
    wide = (var["truth_pattern"] == "batch_wide").to_numpy()
    for i, batch in enumerate(batches):
        hit = wide & (var["truth_batch"] == batch).to_numpy()
        shift[i, hit] = var["truth_lfc"].to_numpy()[hit]
    return shift


def _cells(params: SimulationParams, rng: np.random.Generator, batches: list[str], shared: list[str], specific: list[str]) -> pd.DataFrame:
    batch_of = rng.integers(0, params.n_batches, size=params.n_cells)
    labels = np.empty(params.n_cells, dtype=object)
    donors = np.empty(params.n_cells, dtype=object)
    for i, batch in enumerate(batches):
        cells = np.flatnonzero(batch_of == i)
        n_specific = round(params.specific_fraction * cells.size) if i < len(specific) else 0
        labels[cells[:n_specific]] = specific[i] if n_specific else None
        labels[cells[n_specific:]] = rng.choice(shared, size=cells.size - n_specific, p=rng.dirichlet(np.full(len(shared), 8.0)))
        donors[cells] = [f"{batch}_donor{d}" for d in rng.integers(0, params.donors_per_batch, size=cells.size)]
    donor_names = [f"{batch}_donor{d}" for batch in batches for d in range(params.donors_per_batch)]
    return pd.DataFrame({BATCH_KEY: pd.Categorical([batches[i] for i in batch_of], categories=batches),
                         LABELS_KEY: pd.Categorical(labels, categories=shared + specific),
                         SAMPLE_KEY: pd.Categorical(donors, categories=donor_names)},
                        index=[f"cell{i:06d}" for i in range(params.n_cells)])


def contrast_truth(adata, pairs: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """The user's contrast per comparison x gene: group1 vs group2 in a common batch, from the simulator's parameters.

    Columns ``comparison_id, group1, group2, gene, truth_pattern, truth_log2fc``.
    ``truth_pattern`` for the comparison: ``marker`` (the two groups' cell-type
    effects differ), ``interaction`` (an interaction gene of the batch of group1
    or group2 that responds in that group), ``batch_wide``, ``null`` (no planted
    effect of any kind) or ``other`` (a planted gene with no contrast here, e.g.
    a marker of a third cluster or the related pair's parent markers).
    """
    var = adata.var
    pairs = pairs or [tuple(p) for p in adata.uns["simulation"]["comparisons"]]
    only_batch = adata.obs.groupby(LABELS_KEY, observed=True)[BATCH_KEY].agg(lambda s: s.unique()[0] if s.nunique() == 1 else "")
    batch_of = {str(c): str(b) for c, b in only_batch.items()}
    frames = []
    for i, (group1, group2) in enumerate(pairs):
        logit1, logit2 = var[f"truth_logit_{group1}"].to_numpy(), var[f"truth_logit_{group2}"].to_numpy()
        log2fc = (_log_softmax(logit1) - _log_softmax(logit2)) / math.log(2)
        responding = var["truth_interaction_clusters"].str.split(",")
        interacts = (var["truth_pattern"] == "interaction").to_numpy() & np.array([
            (group1 in cells and batch == batch_of.get(group1)) or (group2 in cells and batch == batch_of.get(group2))
            for cells, batch in zip(responding, var["truth_batch"], strict=True)])
        pattern = np.select([np.abs(logit1 - logit2) > 1e-9, interacts, (var["truth_pattern"] == "batch_wide").to_numpy(),
                             (var["truth_pattern"] == "null").to_numpy()], ["marker", "interaction", "batch_wide", "null"], default="other")
        frames.append(pd.DataFrame({"comparison_id": str(i), "group1": group1, "group2": group2, "gene": var.index,
                                    "truth_pattern": pattern, "truth_log2fc": log2fc}))
    return pd.concat(frames, ignore_index=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    top = logits.max()
    return logits - top - math.log(np.exp(logits - top).sum())

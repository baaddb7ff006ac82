"""The realistic preset's planted structure is really in its counts, and the other presets did not move."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from desweep.simulate import preset_params, simulate
from desweep.simulate_realistic import contrast_truth


def _digest(adata) -> str:
    h = hashlib.sha256()
    for part in (adata.X.data, adata.X.indices, adata.X.indptr):
        h.update(np.ascontiguousarray(part).tobytes())
    h.update(pd.util.hash_pandas_object(adata.var, index=True).to_numpy().tobytes())
    h.update(pd.util.hash_pandas_object(adata.obs, index=True).to_numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(("preset", "digest"), [("default", "4ee48d52dccaf188"), ("hard", "ad87e6c7505fb5c3")])
def test_other_presets_unchanged(preset, digest):
    """Counts and truth of the default and hard presets are those before the realistic preset existed (digests taken then)."""
    assert _digest(simulate(preset_params(preset))) == digest


@pytest.fixture(scope="module")
def real():
    return simulate(preset_params("realistic"))


def _props(adata) -> np.ndarray:
    x = adata.X.toarray()
    return x / x.sum(axis=1, keepdims=True)


def _mean(props, mask, genes) -> float:
    return float(props[np.ix_(mask, genes)].mean())


def test_truth_columns_and_donors(real):
    var, obs = real.var, real.obs
    assert set(var["truth_pattern"]) == {"marker", "parent_marker", "batch_wide", "interaction", "null"}
    assert (var["truth_pattern"] == "interaction").sum() == 3 * 20
    assert {f"truth_logit_{c}" for c in obs["cell_type"].cat.categories} <= set(var.columns)
    donors = obs.groupby("batch", observed=True)["sample"].nunique()
    assert (donors == 3).all()
    assert (obs.groupby("sample", observed=True)["batch"].nunique() == 1).all()


def test_interaction_genes_respond_only_in_their_cell_types(real):
    """Up in the batch's responding cell types against the same types elsewhere; not in its other bridges."""
    props, obs, var = _props(real), real.obs, real.var
    inter = var[(var["truth_pattern"] == "interaction") & (var["truth_batch"] == "batch1")]
    up, flat = [], []
    for gene, cells in inter["truth_interaction_clusters"].items():
        g = [var.index.get_loc(gene)]
        responding = cells.split(",")
        assert responding[0] == "only_batch1" and 2 <= len(responding) <= 4  # never all four bridges
        for cluster in (c for c in obs["cell_type"].cat.categories if c.startswith("shared")):
            here = ((obs["cell_type"] == cluster) & (obs["batch"] == "batch1")).to_numpy()
            there = ((obs["cell_type"] == cluster) & (obs["batch"] != "batch1")).to_numpy()
            (up if cluster in responding else flat).append(np.log2(_mean(props, here, g) / _mean(props, there, g)))
    assert np.median(up) > 0.6
    assert abs(np.median(flat)) < 0.3


def test_donors_differ_within_batch_and_cell_type(real):
    """Two donors' pseudobulks of one cell type in one batch differ more with donor effects than without."""
    def spread(adata):
        obs, x = adata.obs, adata.X
        def pick(d):
            return np.asarray(x[((obs["sample"] == d) & (obs["cell_type"] == "shared3")).to_numpy()].sum(axis=0)).ravel()

        a, b = pick("batch2_donor0"), pick("batch2_donor1")
        keep = (a > 50) & (b > 50)
        return np.std(np.log2(a[keep] / a.sum()) - np.log2(b[keep] / b.sum()))

    without = simulate(replace(preset_params("realistic"), donor_sd=0.0))
    assert spread(real) > 1.5 * spread(without)


def test_ambient_rna_carries_a_batch_specific_profile_into_other_cells(real):
    """Exclusive markers of only_batch0 are higher in batch0's bridge cells than in other batches', more than without ambient RNA.

    The same seed without ambient RNA draws the same numbers, so the ratios differ by the mixing alone. At the
    preset's 5-15 % the leak is about 2 % (a 15 % cluster with 2.5-fold markers), so the mechanism is checked at 40 %.
    """
    def ratio(adata):
        props, obs, var = _props(adata), adata.obs, adata.var
        genes = [var.index.get_loc(g) for g in var.index[(var["truth_cluster"] == "only_batch0") & (var["truth_also"] == "")]]
        shared = obs["cell_type"].str.startswith("shared").to_numpy()
        in0 = (obs["batch"] == "batch0").to_numpy()
        return _mean(props, shared & in0, genes) / _mean(props, shared & ~in0, genes)

    clean = ratio(simulate(replace(preset_params("realistic"), ambient_fraction=(0.0, 0.0))))
    assert ratio(real) > 1.01 * clean
    assert ratio(simulate(replace(preset_params("realistic"), ambient_fraction=(0.4, 0.4)))) > 1.05 * clean
    assert all(0.05 <= a <= 0.15 for a in real.uns["simulation"]["ambient_fraction_per_batch"])


def test_related_pair_shares_its_parent_markers(real):
    """Parent markers are up in both related groups, and the truth of their contrast is no difference."""
    props, obs, var = _props(real), real.obs, real.var
    parent = [var.index.get_loc(g) for g in var.index[var["truth_pattern"] == "parent_marker"]]
    shared = obs["cell_type"].str.startswith("shared").to_numpy()
    for group in ("only_batch0", "only_batch1"):
        assert _mean(props, (obs["cell_type"] == group).to_numpy(), parent) > 2 * _mean(props, shared, parent)
    truth = contrast_truth(real)
    pair = truth[(truth["group1"] == "only_batch0") & (truth["group2"] == "only_batch1")].set_index("gene")
    assert (pair.loc[var.index[var["truth_pattern"] == "parent_marker"], "truth_pattern"] == "other").all()
    assert pair.loc[var.index[var["truth_pattern"] == "parent_marker"], "truth_log2fc"].abs().max() < 0.1


def test_contrast_truth_is_the_group_vs_group_contrast(real):
    """Markers differ by the planted effects; interaction genes have no contrast although they look like markers."""
    truth = contrast_truth(real)
    var = real.var
    pair = truth[truth["comparison_id"] == "0"].set_index("gene")
    own = var.index[(var["truth_cluster"] == "only_batch0") & (var["truth_also"] == "")]
    assert (pair.loc[own, "truth_pattern"] == "marker").all()
    expected = var.loc[own, "truth_log2fc"]
    assert np.allclose(pair.loc[own, "truth_log2fc"], expected, atol=0.1)
    inter = pair[pair["truth_pattern"] == "interaction"]
    assert len(inter) > 0 and inter["truth_log2fc"].abs().max() < 0.1
    assert set(var.loc[inter.index, "truth_batch"]) <= {"batch0", "batch1"}
    assert (pair.loc[var.index[var["truth_pattern"] == "null"], "truth_pattern"] == "null").all()

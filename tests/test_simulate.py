"""The simulator's planted truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from desweep.cli import cli
from desweep.errors import DesweepInputError
from desweep.simulate import SimulationParams, simulate


def test_same_seed_same_counts():
    a = simulate(SimulationParams(n_cells=600, n_genes=500, seed=3))
    b = simulate(SimulationParams(n_cells=600, n_genes=500, seed=3))
    c = simulate(SimulationParams(n_cells=600, n_genes=500, seed=4))
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0


def test_counts_are_integers_and_truth_is_complete(sim_small):
    x = sim_small.X
    assert np.all(x.data >= 0) and np.all(x.data == np.round(x.data))
    counts = sim_small.var["truth_pattern"].value_counts()
    assert counts["marker"] == 5 * 20 and counts["batch_wide"] == 3 * 30
    markers = sim_small.var.query("truth_pattern == 'marker'")
    assert set(markers["truth_cluster"]) == {"shared0", "shared1", "shared2", "only_batch0", "only_batch1"}
    assert (sim_small.var.query("truth_pattern == 'null'")["truth_lfc"] == 0).all()


def test_batch_specific_clusters_live_in_one_batch(sim_small):
    table = pd.crosstab(sim_small.obs["cell_type"], sim_small.obs["batch"])
    assert (table.loc["only_batch0"] > 0).sum() == 1 and table.loc["only_batch0", "batch0"] > 50
    assert (table.loc["only_batch1"] > 0).sum() == 1 and table.loc["only_batch1", "batch1"] > 50
    for shared in ("shared0", "shared1", "shared2"):
        assert (table.loc[shared] > 20).all()


def test_planted_effects_are_visible_in_counts(sim_small):
    """A marker is higher in its cluster, a batch-wide gene higher in its batch, in raw proportions."""
    x = sim_small.X.toarray()
    props = x / x.sum(axis=1, keepdims=True)
    var, obs = sim_small.var, sim_small.obs
    marker = var.index[(var.truth_cluster == "only_batch0")][0]
    g = var.index.get_loc(marker)
    in_cluster = (obs.cell_type == "only_batch0").to_numpy()
    assert props[in_cluster, g].mean() > 2 * props[~in_cluster & (obs.batch == "batch0").to_numpy(), g].mean()
    batch_gene = var.index[(var.truth_batch == "batch1")][0]
    g = var.index.get_loc(batch_gene)
    shared = obs.cell_type.str.startswith("shared").to_numpy()
    in_batch = (obs.batch == "batch1").to_numpy()
    assert props[shared & in_batch, g].mean() > 1.5 * props[shared & ~in_batch, g].mean()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"n_cells": 100}, "--n-cells"), ({"n_batches": 5}, "--n-batches"), ({"n_genes": 100}, "--n-genes"),
     ({"n_specific_clusters": 4, "n_batches": 3}, "--n-specific-clusters")],
)
def test_impossible_parameters_fail_in_one_line(kwargs, field):
    with pytest.raises(DesweepInputError, match=field):
        simulate(SimulationParams(**kwargs))


def test_cli_writes_h5ad(tmp_path):
    out = tmp_path / "sim.h5ad"
    result = CliRunner().invoke(cli, ["simulate", "-o", str(out), "--n-cells", "500", "--n-genes", "400", "--seed", "1"])
    assert result.exit_code == 0, result.output
    import anndata as ad

    adata = ad.read_h5ad(out)
    assert adata.shape == (500, 400)
    assert {"batch", "cell_type"} <= set(adata.obs.columns)


# --------------------------------------------------------------------------- the hard preset
@pytest.fixture(scope="module")
def hard():
    from desweep.simulate import preset_params

    return simulate(preset_params("hard", seed=2))


def test_hard_preset_is_small_sparse_and_modest(hard):
    import math

    assert hard.shape == (1000, 10_000)
    sizes = pd.crosstab(hard.obs["cell_type"], hard.obs["batch"])
    for specific in ("only_batch0", "only_batch1"):
        assert 30 <= sizes.loc[specific].sum() <= 150 and (sizes.loc[specific] > 0).sum() == 1
    assert sizes.loc[["shared0", "shared1", "shared2"]].to_numpy().max() < 200
    gene_means = np.asarray(hard.X.mean(axis=0)).ravel()
    assert np.median(gene_means) < 0.2  # sparse: a typical gene has far below one count per cell
    var = hard.var
    planted = var[var["truth_pattern"] != "null"]
    assert np.allclose(var["truth_log2fc"], var["truth_lfc"] / math.log(2))
    assert planted["truth_log2fc"].between(0.5, 2.0).all()  # modest effects, in log2
    assert (var["truth_pattern"] == "marker").sum() == 5 * 25 and (var["truth_pattern"] == "batch_wide").sum() == 3 * 25
    assert hard.uns["simulation"]["preset"] == "hard"


def test_default_preset_is_unchanged():
    """The default preset draws what SimulationParams() always drew (same counts for the same seed)."""
    from desweep.simulate import preset_params

    a = simulate(preset_params("default", seed=5, n_cells=600, n_genes=500))
    b = simulate(SimulationParams(n_cells=600, n_genes=500, seed=5))
    assert (a.X != b.X).nnz == 0
    assert a.var["truth_lfc"].between(0, 3.0).all()


def test_cli_preset_with_override(tmp_path):
    import anndata as ad

    out = tmp_path / "hard.h5ad"
    result = CliRunner().invoke(cli, ["simulate", "-o", str(out), "--preset", "hard", "--n-genes", "3000", "--seed", "1"])
    assert result.exit_code == 0, result.output
    adata = ad.read_h5ad(out)
    assert adata.shape == (1000, 3000) and adata.uns["simulation"]["markers_per_cluster"] == 25
    result = CliRunner().invoke(cli, ["simulate", "-o", str(out), "--preset", "easy"])
    assert result.exit_code == 2 and "easy" in result.output


# --------------------------------------------------------------------------- written block by block
@pytest.mark.parametrize("preset", ["default", "realistic"])
def test_written_block_by_block_equals_simulated_whole(tmp_path, preset):
    """The streamed file holds what simulate() returns, written whole: the same counts, obs, var and parameters."""
    import anndata as ad

    from desweep.io import write_h5ad
    from desweep.simulate import preset_params, write_simulation

    params = preset_params(preset, n_cells=650, n_genes=600 if preset == "default" else 1000, seed=7)
    write_h5ad(simulate(params, chunk_size=100), tmp_path / "whole.h5ad")
    whole = ad.read_h5ad(tmp_path / "whole.h5ad")
    write_simulation(params, tmp_path / "sim.h5ad", chunk_size=100)
    streamed = ad.read_h5ad(tmp_path / "sim.h5ad")
    assert streamed.X.shape == whole.X.shape and (streamed.X != whole.X).nnz == 0
    assert streamed.X.indptr.dtype == whole.X.indptr.dtype
    pd.testing.assert_frame_equal(streamed.obs, whole.obs)
    pd.testing.assert_frame_equal(streamed.var, whole.var)
    np.testing.assert_array_equal(streamed.uns["simulation"]["library_medians"], whole.uns["simulation"]["library_medians"])
    assert streamed.uns["simulation"]["seed"] == 7


def test_block_writer_widens_indptr_before_it_overflows(tmp_path, monkeypatch):
    """Past 32-bit offsets the stored indptr becomes 64-bit (as scipy's vstack does), and X reads back whole."""
    import anndata as ad
    import scipy.sparse as sp

    from desweep import io

    monkeypatch.setattr(io, "INT32_MAX", 50)  # 20 values a block: the third block passes it
    blocks = [sp.random(4, 10, density=0.5, format="csr", random_state=i, dtype=np.float32) for i in range(5)]
    shell = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(20)]), var=pd.DataFrame(index=[f"g{j}" for j in range(10)]))
    io.write_h5ad_rows(shell, iter(blocks), tmp_path / "x.h5ad")
    back = ad.read_h5ad(tmp_path / "x.h5ad")
    assert back.X.indptr.dtype == np.int64
    assert (sp.vstack(blocks, format="csr") != back.X).nnz == 0
    with pytest.raises(ValueError, match="rows of X"):
        io.write_h5ad_rows(shell, iter(blocks[:2]), tmp_path / "short.h5ad")
    assert not (tmp_path / "short.h5ad").exists()

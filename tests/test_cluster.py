"""cluster: approximate and exact neighbour graphs, and the planted clusters they recover."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from desweep import keys
from desweep.cluster import cluster, knn_transformer
from desweep.errors import DesweepInputError


def _latent(n_cells: int = 1500, n_dims: int = 10, seed: int = 0) -> np.ndarray:
    """Five well separated Gaussian blobs, like a trained scVI latent space."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(5, n_dims))
    return (centres[rng.integers(0, 5, n_cells)] + rng.normal(size=(n_cells, n_dims))).astype(np.float32)


@pytest.mark.parametrize("neighbors", ["approximate", "exact"])
def test_knn_graph_is_a_sparse_matrix_scanpy_can_read(neighbors):
    """scanpy 1.11 reads the graph with ``getnnz``: a ``csr_array`` (pynndescent 0.7's output) crashes it."""
    import scanpy as sc

    latent = _latent()
    graph = knn_transformer(neighbors, 15, n_obs=latent.shape[0]).fit_transform(latent)
    assert isinstance(graph, sp.csr_matrix) and not isinstance(graph, sp.sparray)
    adata = ad.AnnData(np.zeros((latent.shape[0], 1), dtype=np.float32), obsm={keys.X_SCVI: latent})
    sc.pp.neighbors(adata, use_rep=keys.X_SCVI, transformer=knn_transformer(neighbors, 15, n_obs=adata.n_obs))
    assert adata.obsp["distances"].shape == (adata.n_obs, adata.n_obs)


def test_approximate_neighbours_are_nearly_exact_and_seeded():
    latent = _latent()
    approx = knn_transformer("approximate", 15, n_obs=latent.shape[0], seed=3).fit_transform(latent)
    again = knn_transformer("approximate", 15, n_obs=latent.shape[0], seed=3).fit_transform(latent)
    exact = knn_transformer("exact", 15, n_obs=latent.shape[0]).fit_transform(latent)
    assert (approx != again).nnz == 0, "the same seed must give the same graph"
    found = approx.multiply(exact > 0).count_nonzero() + latent.shape[0]  # pynndescent stores each cell's self at distance 0
    recall = found / exact.count_nonzero()
    assert recall >= 0.98, recall


def test_unknown_neighbour_method_is_one_line():
    with pytest.raises(DesweepInputError, match="--neighbors: neighbors: must be one of approximate, exact"):
        knn_transformer("annoy", 15, n_obs=100)  # type: ignore[arg-type]


@pytest.mark.slow
def test_approximate_and_exact_leiden_agree_on_the_planted_clusters(pipeline_dirs):
    """On the shared fixture (2,000 cells) both graphs give the same Leiden ARI against the planted clusters."""
    integrated = ad.read_h5ad(pipeline_dirs["integrate"] / keys.INTEGRATED_H5AD)
    ari = {}
    for neighbors in ("approximate", "exact"):
        _, summary = cluster(integrated.copy(), resolution=0.3, neighbors=neighbors)
        ari[neighbors] = summary.set_index("metric")["value"]["ari_leiden_vs_labels"]
    assert ari["approximate"] == pytest.approx(ari["exact"], abs=1e-9) and ari["exact"] >= 0.8, ari
    default = pd.read_csv(pipeline_dirs["cluster"] / keys.CLUSTER_METRICS_CSV).set_index("metric")["value"]
    assert default["ari_leiden_vs_labels"] == pytest.approx(ari["approximate"]), "the step's default is the approximate graph"


def test_cli_clusters_a_backed_file_and_copies_its_counts(tmp_path, monkeypatch):
    """The step reads the embedding only (X stays on disk) and clustered.h5ad carries the input's X unchanged."""
    from click.testing import CliRunner

    from desweep.cli import cli
    from desweep.datakeys import DataKeys, set_keys

    latent = _latent(n_cells=600)
    rng = np.random.default_rng(1)
    counts = sp.random(600, 30, density=0.3, format="csr", dtype=np.float32, random_state=rng)
    counts.data = np.round(counts.data * 10) + 1
    obs = pd.DataFrame({"batch": pd.Categorical(np.where(np.arange(600) % 2, "b1", "b2"))}, index=[f"c{i}" for i in range(600)])
    integrated = ad.AnnData(counts, obs=obs, obsm={keys.X_SCVI: latent})
    set_keys(integrated, DataKeys(batch_key="batch", labels_key=None, group_key=None))
    integrated.write_h5ad(tmp_path / "integrated.h5ad", compression="gzip")

    def no_full_read(self):
        raise AssertionError("the backed X was loaded whole")

    monkeypatch.setattr(type(ad.read_h5ad(tmp_path / "integrated.h5ad", backed="r").X), "to_memory", no_full_read)
    result = CliRunner().invoke(cli, ["cluster", "-i", str(tmp_path / "integrated.h5ad"), "--resolution", "0.3",
                                      "--outdir", str(tmp_path / "cluster")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    monkeypatch.undo()
    clustered = ad.read_h5ad(tmp_path / "cluster" / keys.CLUSTERED_H5AD)
    assert (counts != clustered.X).nnz == 0 and clustered.X.dtype == np.float32
    assert clustered.obs[keys.LEIDEN].nunique() == 5 and keys.X_UMAP in clustered.obsm
    np.testing.assert_array_equal(clustered.obsm[keys.X_SCVI], latent)
    assert clustered.uns["desweep"]["group_key"] == keys.LEIDEN


def test_copied_counts_must_match_the_cells(tmp_path):
    """X copied from a file of another shape is refused, and nothing is written."""
    from desweep.io import write_h5ad_with_x_from

    source = ad.AnnData(sp.random(5, 3, density=0.5, format="csr", dtype=np.float32))
    source.write_h5ad(tmp_path / "src.h5ad")
    with pytest.raises(ValueError, match="X is 5 x 3, the data 4 x 3"):
        write_h5ad_with_x_from(ad.AnnData(np.zeros((4, 3), dtype=np.float32)), tmp_path / "src.h5ad", tmp_path / "out.h5ad")
    assert not (tmp_path / "out.h5ad").exists()

"""The chunked row reader and aggregation (desweep.chunks) against scanpy's in-memory aggregate."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from desweep.chunks import aggregate, group_codes, row_chunks, row_sums, smallest_positive, take_columns


def _adata(n: int = 53, genes: int = 9, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.6, size=(n, genes)).astype(np.float32)
    obs = pd.DataFrame({"cluster": pd.Categorical(rng.choice(["c2", "c0", "c1"], n), categories=["c2", "c0", "c1"]),
                        "batch": rng.choice(["b1", "b0"], n), "sample": rng.choice(["s0", "s1", "s2"], n)},
                       index=[f"cell{i}" for i in range(n)])
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(genes)]))


@pytest.mark.parametrize("by", ["cluster", ["cluster", "batch"], ["batch", "cluster", "sample"]])
@pytest.mark.parametrize("dense", [False, True])
def test_aggregate_equals_scanpy_with_small_chunks(by, dense):
    import scanpy as sc

    adata = _adata()
    if dense:
        adata.X = adata.X.toarray()
    expected = sc.get.aggregate(adata, by=by, func=["sum", "count_nonzero"])
    got = aggregate(adata, by, chunk_size=7)
    columns = [by] if isinstance(by, str) else by
    assert len(got.groups) == expected.n_obs > 2
    for column in columns:
        assert list(got.groups[column].astype(str)) == list(expected.obs[column].astype(str))
    np.testing.assert_array_equal(got.sum, np.asarray(expected.layers["sum"]))
    np.testing.assert_array_equal(got.n_positive, np.asarray(expected.layers["count_nonzero"]))
    sizes = pd.DataFrame({c: adata.obs[c].astype(str) for c in columns}).value_counts()
    assert list(got.n_cells) == [sizes[tuple(str(r[c]) for c in columns)] for _, r in got.groups.iterrows()]


def test_aggregate_reads_a_backed_file_in_chunks(tmp_path, monkeypatch):
    adata = _adata(n=40)
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    want = aggregate(adata, ["cluster", "batch"], chunk_size=1000, squares=True)
    seen = []
    real = row_chunks

    def spy(*args, **kwargs):
        for start, stop, chunk in real(*args, **kwargs):
            seen.append(chunk.shape[0])
            yield start, stop, chunk

    monkeypatch.setattr("desweep.chunks.row_chunks", spy)
    got = aggregate(backed, ["cluster", "batch"], chunk_size=7, squares=True)
    assert seen == [7] * 5 + [5]
    np.testing.assert_array_equal(got.sum, want.sum)
    np.testing.assert_array_equal(got.sum_squares, want.sum_squares)
    np.testing.assert_array_equal(got.n_cells, want.n_cells)


def test_aggregate_mask_scale_transform_and_squares():
    adata = _adata()
    x = adata.X.toarray().astype(float)
    mask = np.arange(adata.n_obs) % 3 != 0
    scale = np.linspace(0.5, 2.0, adata.n_obs)
    got = aggregate(adata, "cluster", mask=mask, scale=scale, transform=np.log1p, squares=True, chunk_size=5)
    codes, groups = group_codes(adata.obs, "cluster", mask=mask)
    assert (codes[~mask] == -1).all() and list(groups["cluster"]) == ["c2", "c0", "c1"]
    values = np.log1p(x * scale[:, None])
    for g, cluster in enumerate(groups["cluster"]):
        rows = mask & (adata.obs["cluster"] == cluster).to_numpy()
        np.testing.assert_allclose(got.sum[g], values[rows].sum(axis=0), rtol=1e-12)
        np.testing.assert_allclose(got.sum_squares[g], (values[rows] ** 2).sum(axis=0), rtol=1e-12)
        np.testing.assert_array_equal(got.n_positive[g], (x[rows] > 0).sum(axis=0))
        assert got.n_cells[g] == rows.sum()


def test_row_helpers():
    adata = _adata(n=23)
    x = adata.X.toarray()
    x[3, 2] = 0.25
    adata.X = sp.csr_matrix(x)
    np.testing.assert_allclose(row_sums(adata, chunk_size=4), x.sum(axis=1))
    assert smallest_positive(adata, chunk_size=4) == 0.25
    assert smallest_positive(ad.AnnData(X=sp.csr_matrix((5, 3))), chunk_size=2) is None
    np.testing.assert_array_equal(take_columns(adata.X, np.array([4, 1]), chunk_size=4).toarray(), x[:, [4, 1]])
    with pytest.raises(ValueError, match="chunk_size"):
        next(row_chunks(adata, chunk_size=0))


def test_sum_counts_equals_scanpy_sum_and_variance(monkeypatch):
    import scanpy as sc

    from desweep import chunks
    from desweep.pseudobulk import sum_counts

    adata = _adata(n=61)
    units = (adata.obs["cluster"].astype(str) + "|" + adata.obs["batch"]).to_numpy()
    mask = np.arange(adata.n_obs) % 4 != 1
    monkeypatch.setattr(chunks, "DEFAULT_CHUNK_SIZE", 6)
    monkeypatch.setattr(chunks.aggregate_codes, "__kwdefaults__", {**chunks.aggregate_codes.__kwdefaults__, "chunk_size": 6})
    counts, n_cells, variance = sum_counts(adata, units, with_variance=True, mask=mask)
    kept = adata[mask].copy()
    kept.obs["u"] = units[mask]
    expected = sc.get.aggregate(kept, by="u", func=["sum", "var"])
    assert list(counts.index) == list(expected.obs["u"].astype(str)) and len(counts) == 6
    np.testing.assert_array_equal(counts.to_numpy(), np.asarray(expected.layers["sum"]))
    assert list(n_cells) == list(kept.obs["u"].value_counts().reindex(counts.index))
    np.testing.assert_array_equal(variance.to_numpy(), np.asarray(expected.layers["var"]) * n_cells[:, None])


def test_read_h5ad_layers_reads_the_genes_asked_for(tmp_path):
    from desweep.errors import DesweepInputError
    from desweep.io import read_h5ad_layers

    adata = _adata(n=29)
    rng = np.random.default_rng(1)
    adata.layers["scvi_norm__own"] = rng.random(adata.shape).astype(np.float32)
    adata.layers["scvi_norm__sparse"] = sp.csr_matrix(adata.X * 2)
    adata.layers["other"] = adata.X.copy()
    path = tmp_path / "n.h5ad"
    adata.write_h5ad(path)
    got = read_h5ad_layers(path, ["g7", "g2", "missing", "g4"], prefix="scvi_norm__", chunk_size=4)
    assert list(got.var_names) == ["g2", "g4", "g7"] and list(got.obs_names) == list(adata.obs_names)
    assert sorted(got.layers) == ["scvi_norm__own", "scvi_norm__sparse"]
    cols = [2, 4, 7]
    np.testing.assert_array_equal(got.layers["scvi_norm__own"], adata.layers["scvi_norm__own"][:, cols])
    np.testing.assert_array_equal(got.layers["scvi_norm__sparse"], adata.layers["scvi_norm__sparse"][:, cols].toarray())
    path.with_suffix(".csv").write_text("a,b\n1,2\n")
    with pytest.raises(DesweepInputError, match="text/CSV"):
        read_h5ad_layers(path.with_suffix(".csv"), ["g1"], prefix="scvi_norm__")


def test_open_h5ad_leaves_x_and_layers_on_disk_and_the_report_aggregates_them(tmp_path):
    import h5py

    from desweep.io import open_h5ad
    from desweep.report.load import cluster_batch_expression

    adata = _adata(n=300)
    adata.layers["scvi_norm__own_batch"] = np.random.default_rng(2).random(adata.shape).astype(np.float32)
    adata.uns["desweep"] = {"group_key": "cluster"}
    path = tmp_path / "m.h5ad"
    adata.write_h5ad(path)
    with open_h5ad(path) as lazy:
        assert not isinstance(lazy.layers["scvi_norm__own_batch"], np.ndarray)
        assert isinstance(lazy.layers["scvi_norm__own_batch"], h5py.Dataset) and not sp.issparse(lazy.X)
        assert lazy.uns["desweep"]["group_key"] == "cluster" and list(lazy.obs_names) == list(adata.obs_names)
        for layer in (None, "scvi_norm__own_batch"):
            got = cluster_batch_expression(lazy, group_key="cluster", batch_key="batch", layer=layer)
            want = cluster_batch_expression(adata, group_key="cluster", batch_key="batch", layer=layer)
            assert len(got) >= adata.n_vars * 4
            pd.testing.assert_frame_equal(got, want)

"""validate reads a CSR .h5ad backed and checks and writes its counts block by block."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from desweep.errors import DesweepInputError
from desweep.io import write_h5ad_rows
from desweep.validate import (
    CountsScan,
    open_counts_h5ad,
    read_counts_h5ad,
    validate_adata,
    validate_counts,
)


def _counts(n_cells: int = 45, n_genes: int = 12, seed: int = 0) -> ad.AnnData:
    """Counts with one empty cell and one empty gene (both dropped), two batches and an obsm to carry."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.5, size=(n_cells, n_genes)).astype(np.float32)
    x[17] = 0
    x[:, 5] = 0
    obs = pd.DataFrame({"batch": np.where(np.arange(n_cells) % 3 == 0, "b1", "b2"), "cell_type": np.tile(["T", "B", "NK"], n_cells // 3)},
                       index=[f"c{i}" for i in range(n_cells)])
    adata = ad.AnnData(sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    adata.obsm["X_pre"] = rng.normal(size=(n_cells, 2))
    return adata


def _validated_file(path: Path, adata: ad.AnnData, out: Path, chunk_size: int, *, backed: bool) -> ad.AnnData:
    adata.write_h5ad(path)
    source = open_counts_h5ad(path) if backed else read_counts_h5ad(path)
    assert source.isbacked == backed
    validated, report = validate_adata(source, path, batch_key="batch", labels_key="cell_type", min_cells_per_batch=5,
                                       chunk_size=chunk_size)
    assert (report.dropped_cells_no_counts, report.dropped_genes_no_counts) == (1, 1)
    write_h5ad_rows(validated.adata, validated.blocks(chunk_size), out)
    return ad.read_h5ad(out)


@pytest.mark.parametrize("chunk_size", [7, 1000])
def test_backed_validation_in_blocks_writes_what_the_whole_matrix_gives(tmp_path, chunk_size):
    """Blocks of 7 cells from a backed file give the counts, obs, var and obsm of the in-memory subset."""
    adata = _counts()
    streamed = _validated_file(tmp_path / "in.h5ad", adata, tmp_path / "streamed.h5ad", chunk_size, backed=True)
    whole = _validated_file(tmp_path / "in2.h5ad", adata, tmp_path / "whole.h5ad", 10_000, backed=False)
    expected = adata[np.asarray(adata.X.sum(axis=1)).ravel() > 0, np.asarray(adata.X.sum(axis=0)).ravel() > 0]
    assert streamed.shape == (44, 11) and streamed.X.dtype == np.float32
    assert (streamed.X != expected.X).nnz == 0 and (whole.X != expected.X).nnz == 0
    assert list(streamed.obs_names) == list(expected.obs_names) and list(streamed.var_names) == list(expected.var_names)
    np.testing.assert_array_equal(streamed.obsm["X_pre"], expected.obsm["X_pre"])
    pd.testing.assert_frame_equal(streamed.obs, whole.obs)
    assert streamed.uns["desweep"] == whole.uns["desweep"]


def test_backed_counts_are_read_in_blocks_only(tmp_path, monkeypatch):
    """No read of the backed X asks for more rows than one block."""
    from anndata.abc import CSRDataset

    path = tmp_path / "in.h5ad"
    _counts().write_h5ad(path)
    source = open_counts_h5ad(path)
    assert isinstance(source.X, CSRDataset)
    sizes = []
    original = type(source.X).__getitem__

    def spy(self, index):
        block = original(self, index)
        sizes.append(block.shape[0])
        return block

    monkeypatch.setattr(type(source.X), "__getitem__", spy)
    validated, _ = validate_adata(source, path, batch_key="batch", min_cells_per_batch=5, chunk_size=7)
    write_h5ad_rows(validated.adata, validated.blocks(7), tmp_path / "out.h5ad")
    assert sizes and max(sizes) <= 7


def test_block_scan_reports_what_the_whole_matrix_check_does():
    """NaNs counted over every block, the smallest value over all, the first fraction in row order."""
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    for value, message in ((np.nan, "has 2 NaN"), (-2.0, r"negative values \(min -5\)"), (0.5, r"non-integer values \(e.g. 0.5\)")):
        bad = x.copy()
        bad[1, 1] = value
        bad[8, 3] = -5.0 if value == -2.0 else value
        if value == 0.5:
            bad[8, 3] = 7.25
        with pytest.raises(DesweepInputError, match=message):
            validate_counts(sp.csr_matrix(bad), "f.h5ad", "X")
        scan = CountsScan()
        for start in range(0, 10, 3):
            scan.add(sp.csr_matrix(bad[start : start + 3]))
        with pytest.raises(DesweepInputError, match=message):
            scan.raise_if_bad("f.h5ad", "X")
    scan = CountsScan()
    scan.add(x)
    scan.raise_if_bad("f.h5ad", "X")


def test_samplesheet_and_dense_inputs_are_read_whole(tmp_path):
    """A dense X is read into memory as before (only CSR is read backed) and validates the same."""
    adata = _counts()
    adata.X = adata.X.toarray()
    adata.write_h5ad(tmp_path / "dense.h5ad")
    source = open_counts_h5ad(tmp_path / "dense.h5ad")
    assert not source.isbacked and sp.issparse(source.X)

"""The groups' dendrogram stored in ``markers.h5ad``, so scanpy's plots never compute it from the file's sparse ``X``."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData


def store_dendrogram(adata: AnnData, groupby: str) -> str:
    """Compute scanpy's dendrogram of ``obs[groupby]`` and store it where scanpy's plots look for it.

    ``sc.pl.rank_genes_groups_dotplot(adata, key=...)`` draws a dendrogram by
    default and, when none is stored, computes one on first use: with fewer
    genes than its 50 principal components it averages ``X`` itself per group,
    which fails on a sparse ``X`` in scanpy 1.11 ("agg function failed"). A
    markers file of a run with few markers has such an ``X`` (raw counts,
    sparse), so the dendrogram is computed here, with scanpy's defaults, on a
    dense copy of those few genes.

    Returns
    -------
    The ``uns`` key written: ``dendrogram_<groupby>``.
    """
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    dense = ad.AnnData(X=x.astype(np.float32), obs=adata.obs[[groupby]].copy())
    key = f"dendrogram_{groupby}"
    with warnings.catch_warnings():  # scanpy's note that it runs a PCA first, as it would itself
        warnings.filterwarnings("ignore", category=UserWarning, module="scanpy")
        sc.tl.dendrogram(dense, groupby=groupby, key_added=key)
    adata.uns[key] = dense.uns[key]
    return key

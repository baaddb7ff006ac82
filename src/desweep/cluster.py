"""Leiden clustering on the scVI neighbour graph, and UMAP coordinates for plots.

Neighbours
----------
``neighbors="approximate"`` (default) builds the kNN graph with pynndescent's
nearest-neighbour descent, the index scanpy and UMAP use for large data: its
cost grows about linearly with the cells (measured: docs/benchmarks.md), while
an exact search on the ~10-dimensional scVI latent space grows much faster
(k-d trees lose their edge in 10 dimensions). ``neighbors="exact"`` keeps
scikit-learn's exact search, for small data or to check the approximation.

Both hand scanpy their graph as a ``scipy.sparse.csr_matrix``. pynndescent 0.7
returns a sparse *array* (``csr_array``), and scanpy 1.11 reads the graph with
``getnnz``, which only sparse matrices have (``'csr_array' object has no
attribute 'getnnz'``, from 8,192 cells on, where scanpy picks pynndescent
itself). scikit-learn returns a ``csr_matrix`` today and is moving to sparse
arrays. So the conversion sits in one place, the output of the transformer
desweep passes, whatever the library versions.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from desweep import keys
from desweep.choices import check_choice, literal_values
from desweep.datakeys import DataKeys, get_keys, set_keys
from desweep.errors import DesweepInputError, ParameterError

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

Neighbors = Literal["approximate", "exact"]
NEIGHBORS = literal_values(Neighbors)


def cluster(
    adata: AnnData,
    *,
    source: str = "integrated.h5ad",
    resolution: float = 1.0,
    n_neighbors: int = 15,
    neighbors: Neighbors = "approximate",
    seed: int = 0,
) -> tuple[AnnData, pd.DataFrame]:
    """Build the scVI neighbour graph, run Leiden and UMAP, and record the group key.

    The groups compared later are the user's labels when ``desweep validate``
    was given ``--labels-key``, else the Leiden clusters (``obs['desweep_leiden']``,
    named ``0``, ``1``, ... by decreasing size).

    Parameters
    ----------
    neighbors
        - ``"approximate"``: pynndescent's nearest-neighbour descent (seeded).
        - ``"exact"``: scikit-learn's exact search.

    Returns
    -------
    ``adata`` with ``obs['desweep_leiden']``, ``obsm['X_umap']`` and the group key in
    ``uns['desweep']``; and a summary table (``metric, value``): the number of
    clusters and, with labels, the adjusted Rand index of Leiden against them.
    """
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score

    data_keys = get_keys(adata, source)
    if keys.X_SCVI not in adata.obsm:
        raise DesweepInputError(source, f"obsm['{keys.X_SCVI}']", "missing: run `desweep integrate` first")
    if resolution <= 0:
        raise ParameterError("resolution", "resolution", f"must be positive, got {resolution}")
    start = time.perf_counter()
    sc.pp.neighbors(adata, use_rep=keys.X_SCVI, transformer=knn_transformer(neighbors, n_neighbors, n_obs=adata.n_obs, seed=seed),
                    random_state=seed)
    logger.info("%s kNN graph (%d neighbours) of %d cells in %.1f s", neighbors, n_neighbors, adata.n_obs, time.perf_counter() - start)
    sc.tl.leiden(adata, resolution=resolution, key_added=keys.LEIDEN, random_state=seed, flavor="igraph",
                 n_iterations=2, directed=False)
    start = time.perf_counter()
    sc.tl.umap(adata, random_state=seed)
    logger.info("UMAP in %.1f s", time.perf_counter() - start)
    group_key = data_keys.labels_key or keys.LEIDEN
    set_keys(adata, DataKeys(batch_key=data_keys.batch_key, labels_key=data_keys.labels_key, group_key=group_key))
    summary = [("n_clusters", float(adata.obs[keys.LEIDEN].nunique()))]
    if data_keys.labels_key:
        ari = adjusted_rand_score(adata.obs[data_keys.labels_key], adata.obs[keys.LEIDEN])
        summary.append(("ari_leiden_vs_labels", float(ari)))
    logger.info("Leiden: %d clusters at resolution %.2f; comparing groups in obs['%s']", summary[0][1], resolution, group_key)
    return adata, pd.DataFrame(summary, columns=["metric", "value"])


def knn_transformer(neighbors: Neighbors, n_neighbors: int, *, n_obs: int, seed: int = 0):
    """A scikit-learn style kNN transformer whose graph is a ``scipy.sparse.csr_matrix``.

    The approximate search uses UMAP's settings for the number of trees and
    iterations (what scanpy picks itself) and one thread, so that the graph
    depends only on the data and ``seed``, not on the cores available.

    Raises
    ------
    DesweepInputError
        An unknown ``neighbors``.
    """
    check_choice(neighbors, Neighbors, source="--neighbors", field="neighbors")
    if neighbors == "exact":
        from sklearn.neighbors import KNeighborsTransformer

        return _with_csr_matrix_output(KNeighborsTransformer)(n_neighbors=n_neighbors, mode="distance")
    from pynndescent import PyNNDescentTransformer

    return _with_csr_matrix_output(PyNNDescentTransformer)(
        n_neighbors=n_neighbors, random_state=seed, n_jobs=1,
        n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)), n_iters=max(5, round(np.log2(max(n_obs, 2)))),
    )


def _with_csr_matrix_output(transformer_class: type) -> type:
    """``transformer_class`` with ``fit_transform`` returning a ``csr_matrix`` (see the module docstring)."""

    class CsrMatrixOutput(transformer_class):
        def fit_transform(self, X, y=None, **fit_params):  # X: scikit-learn's signature
            import scipy.sparse as sp

            return sp.csr_matrix(super().fit_transform(X, y, **fit_params))

    CsrMatrixOutput.__name__ = CsrMatrixOutput.__qualname__ = f"CsrMatrix{transformer_class.__name__}"
    return CsrMatrixOutput

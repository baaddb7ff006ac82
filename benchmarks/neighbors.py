#!/usr/bin/env python3
"""The kNN graph of `desweep cluster`: approximate (pynndescent) against exact (scikit-learn), on real scVI latents.

For each integrated.h5ad given (e.g. the scaling benchmark's), in one process on
one thread: the CPU time of each search (pynndescent's one-off compilation is
timed apart, on 1,000 cells first), the recall of the approximate graph (share
of the exact neighbours it finds), and Leiden (resolution 1, seed 0) on each
graph: its ARI against the planted labels and between the two.

    .venv/bin/python benchmarks/neighbors.py /tmp/scaling/n10000/integrate/integrated.h5ad ...
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("--n-neighbors", type=int, default=15)
    args = parser.parse_args()
    import anndata as ad

    from desweep import keys
    from desweep.cluster import knn_transformer

    start = time.process_time()
    warm = np.random.default_rng(0).standard_normal((1000, 10)).astype(np.float32)
    knn_transformer("approximate", args.n_neighbors, n_obs=1000).fit_transform(warm)
    print(f"pynndescent compilation (first call, 1,000 cells): {time.process_time() - start:.1f} s CPU", flush=True)
    print(f"{'cells':>8} {'approx s':>9} {'exact s':>9} {'recall':>7} {'ARI approx':>11} {'ARI exact':>10} {'ARI a~e':>8}")
    for path in args.inputs:
        adata = ad.read_h5ad(path)
        latent = np.asarray(adata.obsm[keys.X_SCVI], dtype=np.float32)
        graphs, seconds = {}, {}
        for method in ("approximate", "exact"):
            start = time.process_time()
            graphs[method] = knn_transformer(method, args.n_neighbors, n_obs=latent.shape[0]).fit_transform(latent)
            seconds[method] = time.process_time() - start
        exact = graphs["exact"]
        recall = (graphs["approximate"].multiply(exact > 0).count_nonzero()) / exact.count_nonzero()
        labels = {m: leiden(adata, graphs[m], args.n_neighbors) for m in graphs}
        truth = adata.obs["cell_type"].astype(str).to_numpy()
        from sklearn.metrics import adjusted_rand_score as ari

        print(f"{adata.n_obs:>8} {seconds['approximate']:>9.1f} {seconds['exact']:>9.1f} {recall:>7.4f} "
              f"{ari(truth, labels['approximate']):>11.3f} {ari(truth, labels['exact']):>10.3f} "
              f"{ari(labels['approximate'], labels['exact']):>8.3f}  ({path}; load {os.getloadavg()[0]:.1f})", flush=True)


def leiden(adata, graph, n_neighbors: int) -> np.ndarray:
    """Leiden as `desweep cluster` runs it, on a given kNN graph."""
    import scanpy as sc

    from desweep import keys

    class Given:
        def get_params(self, deep: bool = True) -> dict:
            return {"n_neighbors": n_neighbors}

        def fit_transform(self, X, y=None):
            return graph

    sub = adata.copy()
    sc.pp.neighbors(sub, use_rep=keys.X_SCVI, transformer=Given(), random_state=0)
    sc.tl.leiden(sub, resolution=1.0, key_added="leiden", random_state=0, flavor="igraph", n_iterations=2, directed=False)
    return sub.obs["leiden"].astype(str).to_numpy()


if __name__ == "__main__":
    main()

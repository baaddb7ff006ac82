#!/usr/bin/env python
"""Time the bridge contrast (one PyDESeq2 fit per dataset) and print its verdicts.

Examples::

    python benchmarks/bridge_fit.py --input ../shared/data/pbmc_3tech.h5ad --group-key cell_type \\
        --keep-only "B cells=V3" --keep-only "Monocytes=V2"
    python benchmarks/bridge_fit.py --preset hard

Every pair of groups is a comparison. ``--keep-only GROUP=BATCH`` drops the
group's cells from every other batch (a group made batch-specific).
"""

from __future__ import annotations

import argparse
import itertools
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="an .h5ad with raw counts in X")
    parser.add_argument("--preset", help="simulate this desweep simulate preset instead of --input")
    parser.add_argument("--group-key", default="cell_type")
    parser.add_argument("--batch-key", default="batch")
    parser.add_argument("--sample-key", default=None)
    parser.add_argument("--keep-only", action="append", default=[], metavar="GROUP=BATCH")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from desweep.bridge import bridge_contrast

    if args.preset:
        from desweep.simulate import PRESETS, simulate

        adata = simulate(PRESETS[args.preset])
    else:
        adata = ad.read_h5ad(args.input)
    if not sp.issparse(adata.X):
        adata.X = sp.csr_matrix(adata.X)
    for item in args.keep_only:
        group, batch = item.split("=", 1)
        obs = adata.obs
        drop = (obs[args.group_key].astype(str) == group) & (obs[args.batch_key].astype(str) != batch)
        adata = adata[~drop.to_numpy()].copy()
    groups = sorted(adata.obs[args.group_key].astype(str).unique())
    pairs = list(itertools.combinations(groups, 2))
    comparisons = pd.DataFrame({"comparison_id": [f"{a}_vs_{b}" for a, b in pairs], "group1": [a for a, _ in pairs],
                                "group2": [b for _, b in pairs]})
    start = time.perf_counter()
    result = bridge_contrast(adata, comparisons, group_key=args.group_key, batch_key=args.batch_key,
                             sample_key=args.sample_key, threads=args.threads)
    elapsed = time.perf_counter() - start
    print(f"{adata.n_obs} cells x {adata.n_vars} genes, {len(pairs)} comparisons: {elapsed:.1f} s")
    with pd.option_context("display.width", 200, "display.max_colwidth", 90):
        print(result["bridge_summary"][["comparison_id", "verdict", "n_bridges", "n_units", "design", "reason"]].to_string(index=False))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Make the guide's input from the shared PBMC data: two cell types, each in one batch only.

The PBMC data (3 batches = 10x chemistries VDJ, V2, V3; labels Monocytes, T/NK cells,
B cells) has no batch-specific cell type, so the guide makes two, the situation
desweep is for: B cells are kept in VDJ only and Monocytes in V3 only, while T/NK
cells stay in every batch (they carry the batch effects the model learns).

    python scripts/guide_data.py ../shared/data/pbmc_3tech.h5ad results/guide/pbmc_two_specific.h5ad
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata as ad

KEEP_ONLY_IN = {"B cells": "VDJ", "Monocytes": "V3"}


def main(source: Path, destination: Path) -> None:
    adata = ad.read_h5ad(source)
    keep = ~adata.obs["cell_type"].isin(list(KEEP_ONLY_IN))
    for cell_type, batch in KEEP_ONLY_IN.items():
        keep |= (adata.obs["cell_type"] == cell_type) & (adata.obs["batch"] == batch)
    subset = adata[keep.to_numpy()].copy()
    subset.uns["guide"] = {"source": str(source.name), "kept_only_in": KEEP_ONLY_IN}
    destination.parent.mkdir(parents=True, exist_ok=True)
    subset.write_h5ad(destination, compression="gzip")
    print(subset.obs.groupby(["cell_type", "batch"], observed=True).size().unstack(fill_value=0))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="pbmc_3tech.h5ad")
    parser.add_argument("destination", type=Path, help="The guide's input .h5ad to write.")
    args = parser.parse_args()
    main(args.source, args.destination)

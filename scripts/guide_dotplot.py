#!/usr/bin/env python3
"""The guide's dotplot of one comparison's consensus markers, drawn by scanpy from diagnostics/markers.h5ad.

    python scripts/guide_dotplot.py results/guide/diagnostics/markers.h5ad B-cells_vs_Monocytes docs/guide/markers_dotplot.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import scanpy as sc


def main(markers_h5ad: str, comparison_id: str, output: str) -> None:
    adata = sc.read_h5ad(markers_h5ad)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    fig = sc.pl.rank_genes_groups_dotplot(adata, key=f"desweep_markers__{comparison_id}", n_genes=12, dendrogram=False,
                                          show=False, return_fig=True)
    fig.savefig(output, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("markers_h5ad", help="diagnostics/markers.h5ad")
    parser.add_argument("comparison_id")
    parser.add_argument("output", help="The PNG to write.")
    args = parser.parse_args()
    main(args.markers_h5ad, args.comparison_id, args.output)

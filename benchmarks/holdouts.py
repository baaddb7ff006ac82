#!/usr/bin/env python3
"""Semi-synthetic holdouts from real data: a cell type made batch-specific, its truth measured on the full data.

A holdout keeps every cell of a real dataset except those of the chosen cell types
outside the batch each is kept in, so the kept type becomes batch-specific and group
and batch are confounded as in desweep's use case. The truth comes from the cells
that were removed:

- the contrast of group1 vs group2 *within each batch* of the full data (both types
  occur in every batch there): per batch, the log2 ratio of mean normalized
  expression (counts per 10,000, pseudocount 0.1) and a Wilcoxon rank-sum test on
  log1p of those values;
- a true marker of the comparison: a clear, same-signed difference in every batch
  (BH-adjusted p < 0.05 and |log2 ratio| >= 1 in each), the true contrast being the
  mean of the per-batch log2 ratios;
- a batch-wide gene: one whose expression differs between the two groups' batches
  within the bridge cell types (the types kept in every batch), by the same rule,
  and that is not a true marker;
- null: no sign of a difference in any batch (BH p >= 0.05 and |log2 ratio| < 0.5 in
  each); a gene with some difference below the marker thresholds is neither a marker
  nor null (``truth_pattern`` "weak").

With a single bridge cell type the batch shift is measured in one cell type only:
nothing can tell whether the two groups shift like it, and no heterogeneity across
bridges can be measured.

Each holdout is written as ``<name>.h5ad`` (counts, ``batch``, ``cell_type``) and
``<name>_truth.csv`` (one row per comparison x gene: ``comparison_id, group1,
group2, gene, truth_pattern, truth_log2fc, lfc_<batch>...``).

    .venv/bin/python benchmarks/holdouts.py --data ../shared/data/pbmc_3tech.h5ad --outdir /work/cache/bench/data
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: thresholds of a clear difference in one batch
MIN_LOG2FC = 1.0
MAX_PADJ = 0.05
#: a null gene's log2 ratio stays below this in every batch
NULL_LOG2FC = 0.5
#: normalized library size and the pseudocount added to mean expression before the log ratio
LIBRARY = 1e4
PSEUDO = 0.1


@dataclass(frozen=True)
class Holdout:
    """One holdout: which cell type is kept in which batch only, and the comparisons to score."""

    name: str
    keep: dict[str, str]
    comparisons: tuple[tuple[str, str], ...]


#: PBMC (three 10x chemistries, each a donor): B cells vs Monocytes, confounded (T/NK the one bridge) and one-specific
PBMC_HOLDOUTS = (
    Holdout("pbmc_confounded", {"B cells": "V3", "Monocytes": "V2"}, (("B cells", "Monocytes"),)),
    Holdout("pbmc_one_specific", {"B cells": "V3"}, (("B cells", "Monocytes"),)),
)


def make_holdout(adata, holdout: Holdout, *, batch_key: str = "batch", labels_key: str = "cell_type"):
    """The cells of ``adata`` left when each cell type of ``holdout.keep`` is kept in its one batch only."""
    obs = adata.obs
    drop = np.zeros(adata.n_obs, dtype=bool)
    for cell_type, batch in holdout.keep.items():
        drop |= (obs[labels_key] == cell_type).to_numpy() & (obs[batch_key] != batch).to_numpy()
    sub = adata[~drop].copy()
    sub.uns["holdout"] = {"name": holdout.name, "keep": dict(holdout.keep)}
    return sub


def _normalized(adata):
    import scanpy as sc

    norm = adata.copy()
    sc.pp.normalize_total(norm, target_sum=LIBRARY)
    return norm


def within_batch_contrast(norm, group1: str, group2: str, batch: str, *, batch_key: str, labels_key: str) -> pd.DataFrame:
    """Per gene, in one batch: log2 ratio of mean normalized expression of group1 over group2 and the Wilcoxon BH p-value."""
    cells = norm[(norm.obs[batch_key] == batch).to_numpy() & norm.obs[labels_key].isin([group1, group2]).to_numpy()].copy()
    return _two_group_test(cells, labels_key, group1, group2)


def _two_group_test(cells, key: str, group1: str, group2: str) -> pd.DataFrame:
    import scanpy as sc

    x = cells.X
    in1 = (cells.obs[key] == group1).to_numpy()
    mean1 = np.asarray(x[in1].mean(axis=0)).ravel()
    mean2 = np.asarray(x[~in1].mean(axis=0)).ravel()
    cells.X = cells.X.copy()
    sc.pp.log1p(cells)
    cells.obs["_g"] = pd.Categorical(np.where(in1, "g1", "g2"))
    sc.tl.rank_genes_groups(cells, "_g", groups=["g1"], reference="g2", method="wilcoxon", tie_correct=True)
    res = sc.get.rank_genes_groups_df(cells, group="g1").set_index("names").reindex(cells.var_names)
    return pd.DataFrame({"lfc": np.log2((mean1 + PSEUDO) / (mean2 + PSEUDO)), "padj": res["pvals_adj"].to_numpy()},
                        index=cells.var_names)


def _clear(table: pd.DataFrame) -> pd.Series:
    return (table["padj"] < MAX_PADJ) & (table["lfc"].abs() >= MIN_LOG2FC)


def truth_table(adata, holdout: Holdout, *, batch_key: str = "batch", labels_key: str = "cell_type") -> pd.DataFrame:
    """The truth of each comparison of ``holdout``, measured on the full data ``adata`` (module docstring)."""
    norm = _normalized(adata)
    batches = [str(b) for b in adata.obs[batch_key].cat.categories]
    types = [str(t) for t in adata.obs[labels_key].cat.categories]
    bridges = [t for t in types if t not in holdout.keep]
    frames = []
    for i, (group1, group2) in enumerate(holdout.comparisons):
        per_batch = {b: within_batch_contrast(norm, group1, group2, b, batch_key=batch_key, labels_key=labels_key) for b in batches}
        lfc = pd.DataFrame({b: t["lfc"] for b, t in per_batch.items()})
        clear = pd.DataFrame({b: _clear(t) for b, t in per_batch.items()})
        sign = np.sign(lfc)
        marker = clear.all(axis=1) & (sign.nunique(axis=1) == 1)
        weak = pd.DataFrame({b: (t["padj"] < MAX_PADJ) | (t["lfc"].abs() >= NULL_LOG2FC) for b, t in per_batch.items()}).any(axis=1)
        batch_wide = _batch_wide(norm, holdout, group1, group2, bridges, batch_key=batch_key, labels_key=labels_key) & ~marker
        pattern = np.select([marker, batch_wide, weak], ["marker", "batch_wide", "weak"], default="null")
        frame = pd.DataFrame({"comparison_id": str(i), "group1": group1, "group2": group2, "gene": lfc.index,
                              "truth_pattern": pattern, "truth_log2fc": lfc.mean(axis=1).to_numpy()})
        for b in batches:
            frame[f"lfc_{b}"] = lfc[b].to_numpy()
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _batches_of(holdout: Holdout, group: str, batches: list[str]) -> list[str]:
    return [holdout.keep[group]] if group in holdout.keep else batches


def _batch_wide(norm, holdout: Holdout, group1: str, group2: str, bridges: list[str], *, batch_key: str,
                labels_key: str) -> pd.Series:
    """Genes that differ clearly, within some bridge cell type, between a batch of group1 and a batch of group2."""
    batches = [str(b) for b in norm.obs[batch_key].cat.categories]
    pairs = {tuple(sorted((a, b))) for a in _batches_of(holdout, group1, batches) for b in _batches_of(holdout, group2, batches) if a != b}
    hit = pd.Series(False, index=norm.var_names)
    for bridge in bridges:
        cells = norm[(norm.obs[labels_key] == bridge).to_numpy()]
        for a, b in sorted(pairs):
            pair = cells[cells.obs[batch_key].isin([a, b]).to_numpy()].copy()
            hit |= _clear(_two_group_test(pair, batch_key, a, b))
    return hit


def build(data: Path, outdir: Path, holdouts: tuple[Holdout, ...] = PBMC_HOLDOUTS, *, truth_only: bool = False) -> list[Path]:
    """Write each holdout's .h5ad (unless ``truth_only``) and truth CSV under ``outdir``; return the .h5ad paths."""
    import anndata as ad

    adata = ad.read_h5ad(data)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for holdout in holdouts:
        path = outdir / f"{holdout.name}.h5ad"
        if not truth_only:
            make_holdout(adata, holdout).write_h5ad(path)
        truth_table(adata, holdout).to_csv(outdir / f"{holdout.name}_truth.csv", index=False)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(os.environ.get("DESWEEP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=shared / "pbmc_3tech.h5ad")
    parser.add_argument("--outdir", type=Path, required=True)
    parser.add_argument("--truth-only", action="store_true", help="Rewrite the truth tables only (the .h5ad files stay).")
    args = parser.parse_args()
    for path in build(args.data, args.outdir, truth_only=args.truth_only):
        truth = pd.read_csv(path.with_name(path.stem + "_truth.csv"), keep_default_na=False)
        print(path, truth.groupby(["comparison_id", "truth_pattern"]).size().to_dict())


if __name__ == "__main__":
    main()

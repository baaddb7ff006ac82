"""The rejected genes scvi-tools' default would report, and ``markers.h5ad`` for the answer.

The answer itself, ``markers.csv`` (one ranked list per comparison with a
confidence column), is built in :mod:`desweep.diagnose.answer`.

Rejected genes
--------------
The genes scvi-tools' default call (``batch_correction=False``, vanilla, the
other defaults) puts in its top ``N`` and desweep classifies ``batch_wide``, in
at least half of the default's replicates: what the default would have told you,
with the evidence (the raw group, within-batch and batch-shift lfcs and the reason).

``markers.h5ad``
----------------
Every cell, the marker and rejected genes, raw counts in ``X``, the group and
batch columns, the ``scvi_norm__`` layers of those genes when given, and
``uns['desweep_markers']`` in scanpy's ``rank_genes_groups`` structure (one field
per group that has genes in the answer: in rank order, ``scores`` = the consensus support),
so ``sc.pl.rank_genes_groups_dotplot(adata, key="desweep_markers")`` draws them;
``uns['desweep_markers__<comparison_id>']`` holds each comparison's two groups.
scanpy's structure needs equally long lists: a group with fewer markers than the
longest list is padded with the file's other genes (``scores`` 0,
``logfoldchanges`` NaN); ``uns['desweep_markers']['n_markers']`` gives each
group's count, to pass as ``n_genes``. Without any marker the keys are left out.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from desweep import keys
from desweep.diagnose.dendrogram import store_dendrogram

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

REJECTED_COLUMNS = ["comparison_id", "group1", "group2", "gene", "default_rank", "high_group", "lfc_mean", "proba_de",
                    "group_lfc", "within_lfc", "batch_shift_lfc", "n_replicates_batch_wide", "n_replicates", "reason"]
UNS_MARKERS = keys.UNS_MARKERS


def _calls(gene_patterns: pd.DataFrame, by_replicate: pd.DataFrame, setting_ids: set[str],
           pattern: str) -> tuple[int, pd.DataFrame]:
    """The replicates of ``setting_ids`` that have a table, and their top genes called ``pattern``."""
    reps = by_replicate[by_replicate["setting_id"].isin(setting_ids) & (by_replicate["status"] == "ok")]
    calls = gene_patterns[gene_patterns["combination_id"].isin(set(reps["combination_id"]))]
    return len(reps), calls[calls["pattern"] == pattern]


def _groups_of(comparisons: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {str(r["comparison_id"]): (str(r["group1"]), str(r["group2"])) for _, r in comparisons.iterrows()}


def rejected_genes(gene_patterns: pd.DataFrame, by_replicate: pd.DataFrame, scores: pd.DataFrame,
                   comparisons: pd.DataFrame) -> pd.DataFrame:
    """``rejected.csv``: the batch-wide genes in the top ``N`` of scvi-tools' default call (module docstring)."""
    groups = _groups_of(comparisons)
    frames = []
    for cid, part in scores[scores["is_default"].astype(bool) & (scores["status"] == "ok")].groupby("comparison_id", sort=False):
        n_reps, wide = _calls(gene_patterns, by_replicate, {part["setting_id"].iloc[0]}, "batch_wide")
        if wide.empty:
            continue
        summary = wide.groupby(["gene", "high_group"], sort=False).agg(
            n_replicates_batch_wide=("combination_id", "nunique"), default_rank=("rank", "median"),
            lfc_mean=("lfc", "median"), proba_de=("proba_de", "median"), group_lfc=("group_lfc", "first"),
            within_lfc=("within_lfc", "first"), batch_shift_lfc=("batch_shift_lfc", "first"), reason=("reason", "first"),
        ).reset_index()
        summary["n_replicates"] = n_reps
        kept = summary[summary["n_replicates_batch_wide"] >= n_reps / 2]
        kept = kept.sort_values(["default_rank", "gene"], kind="stable").drop_duplicates("gene")
        g1, g2 = groups.get(str(cid), ("", ""))
        frames.append(kept.assign(comparison_id=str(cid), group1=g1, group2=g2))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=REJECTED_COLUMNS)
    return out.reindex(columns=REJECTED_COLUMNS).reset_index(drop=True)


def markers_adata(adata: AnnData, markers: pd.DataFrame, rejected: pd.DataFrame, *, group_key: str, batch_key: str,
                  normalized: AnnData | None = None) -> AnnData:
    """``markers.h5ad``: every cell x the marker and rejected genes (module docstring).

    Parameters
    ----------
    adata
        ``clustered.h5ad`` (raw counts in ``X``; in memory or backed).
    normalized
        ``normalized.h5ad`` (optional): its ``scvi_norm__`` layers are copied for
        the genes it has (NaN for the others).

    Returns
    -------
    The AnnData; ``uns['desweep_markers']`` and ``uns['desweep_markers__<comparison_id>']``.
    """
    import anndata as ad

    from desweep.chunks import take_columns

    names = list(dict.fromkeys([*markers["gene"].astype(str), *rejected["gene"].astype(str)]))
    genes = [g for g in names if g in adata.var_names]
    x = take_columns(adata.X, adata.var_names.get_indexer(genes))  # row chunks: a backed adata is never loaded whole
    obs = pd.DataFrame({group_key: pd.Categorical(adata.obs[group_key].astype(str)),
                        batch_key: pd.Categorical(adata.obs[batch_key].astype(str))}, index=adata.obs_names)
    var = pd.DataFrame({"is_marker": [g in set(markers["gene"].astype(str)) for g in genes],
                        "is_rejected": [g in set(rejected["gene"].astype(str)) for g in genes]}, index=pd.Index(genes))
    out = ad.AnnData(X=x, obs=obs, var=var)
    if normalized is not None:
        for layer in normalized.layers:
            if layer.startswith(keys.NORM_LAYER_PREFIX):
                out.layers[layer] = _layer(normalized, layer, adata.obs_names, genes)
    for key, part in [(UNS_MARKERS, markers), *((f"{UNS_MARKERS}__{cid}", p) for cid, p in markers.groupby("comparison_id", sort=False))]:
        structure = rank_genes_groups_structure(part, genes, group_key=group_key)
        if structure is not None:
            out.uns[key] = structure
    if out.n_vars:
        store_dendrogram(out, group_key)
    return out


def _layer(normalized: AnnData, layer: str, cells: pd.Index, genes: list[str]) -> np.ndarray:
    values = np.full((len(cells), len(genes)), np.nan, dtype=np.float32)
    have = [i for i, g in enumerate(genes) if g in normalized.var_names]
    rows = normalized.obs_names.get_indexer(cells)
    if have and (rows >= 0).all():
        cols = normalized.var_names.get_indexer([genes[i] for i in have])
        data = normalized.layers[layer][:, cols]
        data = data.toarray() if hasattr(data, "toarray") else np.asarray(data)
        # the cells are usually in the same order: no second cells x genes copy then
        values[:, have] = data if np.array_equal(rows, np.arange(len(rows))) else data[rows]
    return values


def rank_genes_groups_structure(markers: pd.DataFrame, genes: list[str], *, group_key: str) -> dict | None:
    """Markers as scanpy's ``rank_genes_groups`` result: recarrays ``names``, ``scores``, ``logfoldchanges``, ... per group.

    ``None`` when no group has a marker.
    """
    by_group: dict[str, pd.DataFrame] = {}
    for group, part in markers.groupby("high_group", sort=True):
        part = part.sort_values(["comparison_id", "rank"], kind="stable").drop_duplicates("gene")
        by_group[str(group)] = part[part["gene"].astype(str).isin(genes)]
    length = max((len(p) for p in by_group.values()), default=0)
    fields: dict[str, list[np.ndarray]] = {"names": [], "scores": [], "logfoldchanges": [], "pvals": [], "pvals_adj": []}
    for part in by_group.values():
        own = part["gene"].astype(str).tolist()
        pad = [g for g in genes if g not in set(own)][: length - len(own)]
        lfc = pd.to_numeric(part["lfc_mean"], errors="coerce").to_numpy(dtype=float)
        sign = np.where(part["high_group"].astype(str).to_numpy() == part["group1"].astype(str).to_numpy(), 1.0, -1.0)
        fields["names"].append(np.array(own + pad, dtype=object))
        fields["scores"].append(np.concatenate([part["support"].to_numpy(dtype=np.float32), np.zeros(len(pad), np.float32)]))
        fields["logfoldchanges"].append(np.concatenate([(lfc * sign).astype(np.float32), np.full(len(pad), np.nan, np.float32)]))
        fields["pvals"].append(np.full(length, np.nan))
        fields["pvals_adj"].append(np.full(length, np.nan))
    groups = list(by_group)
    if not groups:
        return None
    result: dict = {"params": {"groupby": group_key, "reference": "rest", "method": "desweep", "use_raw": False,
                               "layer": "", "corr_method": "none"},
                    "n_markers": np.rec.fromarrays([np.array([len(p)]) for p in by_group.values()], names=groups)}  # type: ignore[call-overload]
    for field, columns in fields.items():
        result[field] = np.rec.fromarrays(columns, names=groups)  # type: ignore[call-overload]  # numpy's stubs: names as a list
    return result

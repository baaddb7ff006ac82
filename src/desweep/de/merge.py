"""Merging a sweep: the summaries of its sampling keys in plan order, and replicate stability."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from desweep.errors import DesweepInputError
from desweep.plan import PLAN_COLUMNS

#: top genes compared between replicates in the stability table (de/stability.csv)
STABILITY_TOP_N = 10
SUMMARY_TOP_GENES = 10
SUMMARY_COLUMNS = PLAN_COLUMNS + [
    "sampling", "n_samples", "batch_size", "n_cells1", "n_cells2", "n_genes", "n_de", "n_tied_top", "max_proba_de", "pseudocounts",
    "top_genes", "out_of_distribution", "ood_decoding",
]
STABILITY_COLUMNS = ["setting_id", "comparison_id", "gene", "n_runs", "frac_de", "frac_top", "top_n", "mean_rank"]


def merge_summaries(partials: list[pd.DataFrame], plan: pd.DataFrame, *, source: str = "summary") -> pd.DataFrame:
    """Concatenate per-key summaries in plan order; every combination of the plan must be there once."""
    summary = pd.concat([p for p in partials if not p.empty], ignore_index=True) if partials else pd.DataFrame(columns=SUMMARY_COLUMNS)
    ids = summary["combination_id"].astype(str) if "combination_id" in summary else pd.Series(dtype=str)
    missing = [c for c in plan["combination_id"] if c not in set(ids)]
    if missing:
        keys = list(dict.fromkeys(plan.loc[plan["combination_id"].isin(missing), "sampling_key"]))
        raise DesweepInputError(source, "sampling_key", f"no summary for {len(keys)} sampling key(s), e.g. '{keys[0]}': "
                                "run `desweep de --sampling-key` for them first")
    extra = sorted(set(ids) - set(plan["combination_id"]))
    if extra:
        raise DesweepInputError(source, "combination_id", f"'{extra[0]}' is not in the plan (a summary from another plan?)")
    if ids.duplicated().any():
        raise DesweepInputError(source, "combination_id", f"'{ids[ids.duplicated()].iloc[0]}' appears in two summaries")
    order = {cid: i for i, cid in enumerate(plan["combination_id"])}
    summary = summary.assign(_order=ids.map(order)).sort_values("_order").drop(columns="_order")
    return summary[SUMMARY_COLUMNS].reset_index(drop=True)


def stability(tables: Mapping[str, pd.DataFrame], plan: pd.DataFrame, *, top_n: int = STABILITY_TOP_N) -> pd.DataFrame:
    """Replicate stability: per setting and gene, the fraction of replicates (models x seeds) where the gene is DE / in the top ``top_n``.

    Parameters
    ----------
    tables
        Tables (at least ``gene, rank, is_de_fdr``) by ``combination_id``.
    plan
        The plan: rows with one ``setting_id`` and different models or seeds are replicates.

    Returns
    -------
    Columns :data:`STABILITY_COLUMNS`; only genes DE or in the top ``top_n`` in
    at least one replicate; rows in plan order of the settings, then by
    ``frac_top``, ``frac_de`` (descending), ``mean_rank`` and gene.
    """
    settings = list(dict.fromkeys(plan["setting_id"]))
    setting_code = {setting: i for i, setting in enumerate(settings)}
    comparison_of = dict(zip(plan["setting_id"], plan["comparison_id"], strict=True))
    parts = []
    for cid, setting in zip(plan["combination_id"], plan["setting_id"], strict=True):
        if cid in tables:
            table = tables[cid]
            flags = table["is_de_fdr"]
            if flags.dtype != bool:
                flags = flags.astype(str).str.lower().isin(["true", "1"])
            parts.append((setting_code[setting], table["gene"].astype(str).to_numpy(), table["rank"].to_numpy(dtype=float),
                          flags.to_numpy(dtype=bool)))
    if not parts:
        return pd.DataFrame(columns=STABILITY_COLUMNS)
    genes, gene_codes = np.unique(np.concatenate([p[1] for p in parts]), return_inverse=True)
    setting_codes = np.concatenate([np.full(p[1].size, p[0]) for p in parts])
    ranks = np.concatenate([p[2] for p in parts])
    flags = np.concatenate([p[3] for p in parts])
    cell = setting_codes * genes.size + gene_codes  # one bin per (setting, gene)
    size = len(settings) * genes.size
    n_runs_per_setting = np.bincount([p[0] for p in parts], minlength=len(settings))
    seen = np.bincount(cell, minlength=size)
    n_de = np.bincount(cell, weights=flags, minlength=size)
    n_top = np.bincount(cell, weights=ranks <= top_n, minlength=size)
    rank_sum = np.bincount(cell, weights=ranks, minlength=size)
    keep = np.flatnonzero((seen > 0) & ((n_de > 0) | (n_top > 0)))
    runs = n_runs_per_setting[keep // genes.size]
    out = pd.DataFrame({
        "setting_id": np.asarray(settings, dtype=object)[keep // genes.size], "gene": genes[keep % genes.size],
        "n_runs": runs, "frac_de": n_de[keep] / runs, "frac_top": n_top[keep] / runs, "top_n": top_n,
        "mean_rank": rank_sum[keep] / seen[keep], "_setting": keep // genes.size,
    })
    out["comparison_id"] = out["setting_id"].map(comparison_of)
    out = out.sort_values(["_setting", "frac_top", "frac_de", "mean_rank", "gene"], ascending=[True, False, False, True, True])
    return out[STABILITY_COLUMNS].reset_index(drop=True)

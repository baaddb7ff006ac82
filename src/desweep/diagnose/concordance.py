"""Agreement between the settings of a comparison: top-N Jaccard and Spearman correlation of log fold changes.

Pairs are formed within one replicate (the same trained model and posterior
seed), so two settings are compared on equal footing; ``concordance_settings``
averages each pair of settings over the replicates.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from desweep.diagnose.tables import table_lfc, top_genes
from desweep.diagnose.replicates import replicate_plan
from desweep.defaults import CLASSIFIED_TOP_N

CONCORDANCE_COLUMNS = ["comparison_id", "model", "seed", "combination_id_1", "combination_id_2", "setting_id_1", "setting_id_2",
                       "n_top", "n_shared_top", "jaccard_top", "n_common_genes", "spearman_lfc", "spearman_lfc_top"]
SETTINGS_COLUMNS = ["comparison_id", "setting_id_1", "setting_id_2", "jaccard_top_mean", "spearman_lfc_mean", "n_pairs"]


def _lfc_series(table: pd.DataFrame) -> pd.Series:
    lfc = pd.Series(table_lfc(table), index=table["gene"].astype(str).to_numpy())
    return lfc[~lfc.index.duplicated()]


def concordance(plan: pd.DataFrame, tables: dict[str, pd.DataFrame], *, top_n: int = CLASSIFIED_TOP_N) -> pd.DataFrame:
    """Top-``N`` Jaccard and Spearman correlation of ``lfc`` between every pair of settings of a comparison, per replicate.

    ``spearman_lfc``: over every gene in both tables; ``spearman_lfc_top``: over
    the union of both top-``N`` lists (genes in both tables).
    """
    plan = replicate_plan(plan)
    rows = []
    for (comparison_id, model, seed), part in plan.groupby(["comparison_id", "model", "seed"], sort=False):
        ids = [cid for cid in part["combination_id"] if cid in tables]
        setting_of = dict(zip(part["combination_id"], part["setting_id"], strict=True))
        lfcs = {cid: _lfc_series(tables[cid]) for cid in ids}
        tops = {cid: set(top_genes(tables[cid], top_n)["gene"]) for cid in ids}
        common = pd.Index(sorted(set.intersection(*(set(s.index) for s in lfcs.values())))) if ids else pd.Index([])
        # ranks over the genes every table has, once per table (when a pair has exactly these genes, all finite)
        aligned = {cid: lfcs[cid].reindex(common) for cid in ids}
        ranks = {cid: values.rank().to_numpy() if values.notna().all() else None for cid, values in aligned.items()}
        for a, b in itertools.combinations(ids, 2):
            union = tops[a] | tops[b]
            shared = lfcs[a].index.intersection(lfcs[b].index)
            rank_a, rank_b = ranks[a], ranks[b]
            if len(shared) == len(common) and rank_a is not None and rank_b is not None:
                full = _correlation(rank_a, rank_b)
            else:
                full = _spearman(lfcs[a][shared], lfcs[b][shared])
            top_common = [g for g in union if g in lfcs[a].index and g in lfcs[b].index]
            rows.append({
                "comparison_id": str(comparison_id), "model": int(model), "seed": int(seed),
                "combination_id_1": a, "combination_id_2": b, "setting_id_1": setting_of[a], "setting_id_2": setting_of[b],
                "n_top": top_n, "n_shared_top": len(tops[a] & tops[b]),
                "jaccard_top": len(tops[a] & tops[b]) / len(union) if union else float("nan"),
                "n_common_genes": len(shared), "spearman_lfc": full,
                "spearman_lfc_top": _spearman(lfcs[a][top_common], lfcs[b][top_common]),
            })
    return pd.DataFrame(rows, columns=CONCORDANCE_COLUMNS)


def concordance_settings(pairs: pd.DataFrame) -> pd.DataFrame:
    """``concordance_settings.csv``: each pair of settings averaged over the replicates it was compared in."""
    if pairs.empty:
        return pd.DataFrame(columns=SETTINGS_COLUMNS)
    out = pairs.groupby(["comparison_id", "setting_id_1", "setting_id_2"], sort=False).agg(
        jaccard_top_mean=("jaccard_top", "mean"), spearman_lfc_mean=("spearman_lfc", "mean"),
        n_pairs=("jaccard_top", "size")).reset_index()
    return out[SETTINGS_COLUMNS]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _spearman(a: pd.Series, b: pd.Series) -> float:
    ok = np.isfinite(a.to_numpy(dtype=float)) & np.isfinite(b.to_numpy(dtype=float))
    return _correlation(a[ok].rank().to_numpy(), b[ok].rank().to_numpy()) if ok.sum() >= 3 else float("nan")

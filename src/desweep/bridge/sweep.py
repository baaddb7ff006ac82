"""The bridge contrast as one more method of the sweep: a plan row and a DE-shaped table per comparison.

Each identifiable comparison gets a pseudo-combination ``<comparison_id>__bridge``
(setting ``bridge``, model 0, seed 0, ``method = bridge``), so that the
classifier, the replicate scores and the setting scores treat it exactly like
an scVI setting. It is scored and ranked beside them but never recommended:
it is not a call a user can make in scvi-tools.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: plan column naming the estimator of a combination
METHOD_COLUMN = "method"
METHOD_SCVI = "scvi"
METHOD_BRIDGE = "bridge"
BRIDGE_SETTING = "bridge"


def combination_id(comparison_id: str) -> str:
    """The pseudo-combination of a comparison's bridge contrast."""
    return f"{comparison_id}__{BRIDGE_SETTING}"


def bridge_plan_rows(summary: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """``plan`` with ``method`` (``scvi``) and one ``bridge`` row per identifiable comparison of the plan."""
    out = plan.copy()
    if METHOD_COLUMN not in out.columns:
        out[METHOD_COLUMN] = METHOD_SCVI
    planned = set(out["comparison_id"].astype(str))
    rows = [{"combination_id": combination_id(r.comparison_id), "comparison_id": r.comparison_id, "group1": r.group1,
             "group2": r.group2, "setting_id": combination_id(r.comparison_id), "model": 0, "seed": 0,
             METHOD_COLUMN: METHOD_BRIDGE}
            for r in summary.itertuples(index=False) if bool(r.identifiable) and str(r.comparison_id) in planned]
    if not rows:
        return out
    # booleans stay booleans beside the bridge rows' missing values (a float column would turn True into 1.0)
    out = out.astype({c: object for c in out.columns if pd.api.types.is_bool_dtype(out[c])})
    return pd.concat([out, pd.DataFrame(rows, columns=list(out.columns))], ignore_index=True)


def bridge_tables(bridge: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``combination_id`` -> a DE-shaped table (``gene, rank, lfc_mean, proba_de``, best first) per comparison.

    ``proba_de = 1 - padj`` (0 for an untested gene), so that readers that look
    at a posterior probability see the same order of evidence.
    """
    tables = {}
    for cid, part in bridge.groupby("comparison_id", sort=False):
        part = part.sort_values("rank", kind="stable")
        tables[combination_id(str(cid))] = pd.DataFrame({
            "gene": part["gene"].astype(str).to_numpy(), "rank": part["rank"].to_numpy(),
            "lfc_mean": part["lfc"].to_numpy(float),
            "proba_de": 1.0 - np.nan_to_num(part["padj"].to_numpy(float), nan=1.0),
        })
    return tables

"""Checks of a plan and of the data it is run on, before anything is sampled."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from desweep.errors import DesweepInputError
from desweep.names import split_names
from desweep.plan import PLAN_COLUMNS, SAMPLING_FIELDS, rows_by_sampling_key
from desweep.plan.row import parse_columns

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI


def check_plan(plan: pd.DataFrame, *, source: str = "plan.csv") -> pd.DataFrame:
    """Check a plan (from :func:`desweep.plan.make_plan` or read as strings) and return it typed.

    Raises
    ------
    DesweepInputError
        A missing column, a value that does not parse, a repeated
        ``combination_id``, or rows of one ``sampling_key`` that differ in a
        sampling setting (a hand-edited plan).
    """
    if "model" not in plan.columns:  # a plan from before model replicates: one model
        plan = plan.assign(model=0)
    missing = [c for c in PLAN_COLUMNS if c not in plan.columns]
    if missing:
        raise DesweepInputError(source, missing[0], "column missing (is this a desweep plan.csv?)")
    if plan.empty:
        raise DesweepInputError(source, "combination_id", "the plan has no rows")
    out = parse_columns(plan, source=source)
    change = out["mode"] == "change"
    if out.loc[change, "delta"].isna().any():
        raise DesweepInputError(source, "delta", "change mode needs a delta on every row")
    if out.loc[~change, "delta"].notna().any():
        raise DesweepInputError(source, "delta", "vanilla rows must leave delta empty")
    if (out.loc[~out["batch_correction"], ["batchid1", "batchid2"]] != "").any().any():
        raise DesweepInputError(source, "batchid1", "batchid1/batchid2 need batch_correction=True (scvi-tools: 'Inconsistent batch policy')")
    dup = out["combination_id"][out["combination_id"].duplicated()]
    if not dup.empty:
        raise DesweepInputError(source, "combination_id", f"'{dup.iloc[0]}' appears twice")
    for key, rows in rows_by_sampling_key(out):
        for column in SAMPLING_FIELDS:
            if rows[column].nunique() > 1:
                raise DesweepInputError(source, "sampling_key", f"rows of '{key}' differ in {column}; "
                                        "rows sharing a sampling key must share every sampling setting (rerun `desweep plan`)")
    return out.reset_index(drop=True)


def check_inputs(adata: AnnData, model: SCVI, plan: pd.DataFrame, *, group_key: str, source: str = "adata") -> None:
    """Check that every group and batch the plan names exists in the data and the model."""
    groups = set(adata.obs[group_key].astype(str))
    for column in ("group1", "group2"):
        absent = sorted(set(plan[column]) - groups)
        if absent:
            raise DesweepInputError(source, f"obs['{group_key}']", f"plan group '{absent[0]}' has no cells (have: {', '.join(sorted(groups))})")
    known = set(batch_names(model, adata))
    for column in ("batchid1", "batchid2"):
        for text in plan[column]:
            for batch in split_names(text):
                if batch not in known:
                    raise DesweepInputError(source, column, f"batch '{batch}' is not a batch of the model (have: {', '.join(sorted(known))})")


def batch_registry(model: SCVI, adata: AnnData):
    """scvi-tools' registry of the model's batch key (its categories, in the model's order)."""
    from scvi import REGISTRY_KEYS

    return model.get_anndata_manager(adata, required=True).get_state_registry(REGISTRY_KEYS.BATCH_KEY)


def batch_names(model: SCVI, adata: AnnData) -> list[str]:
    """The model's batches, as text, in the model's order."""
    return [str(b) for b in batch_registry(model, adata).categorical_mapping]

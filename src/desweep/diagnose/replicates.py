"""Settings and their replicates: which combinations of the plan belong together.

A *combination* (``combination_id``, one DE table) is a *setting*
(``setting_id``: comparison, decoding, mode, delta, weights, filter, FDR target)
run on one trained scVI model (``model``) with one posterior-sampling seed
(``seed``). Models and seeds are replicates: desweep scores, ranks and
recommends settings, averaging over them.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from desweep.diagnose.classify import Thresholds
from desweep.diagnose.tables import ComparisonCalls, classify_setting, oriented_comparison, table_lfc, top_genes
from desweep.diagnose.profiles import ExpressionProfile
from desweep.io import is_true
from desweep.plan import DESCRIBE_COLUMNS, SCVI_DEFAULTS
from desweep.defaults import CLASSIFIED_TOP_N

logger = logging.getLogger(__name__)

#: the columns that identify a combination and its replicate
ID_COLUMNS = ("combination_id", "comparison_id", "setting_id", "model", "seed")


def is_missing(value: object) -> bool:
    """``None``, NaN or an empty string."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def setting_value_is(value: object, expected: object) -> bool:
    """Whether a plan or score table's setting value (read as text or typed) is ``expected`` (bool, float or text)."""
    if isinstance(expected, bool):
        return is_true(value) == expected
    if isinstance(expected, float):
        return math.isclose(float(value), expected)  # type: ignore[arg-type]
    return str(value) == expected


def is_default_setting(row: pd.Series) -> bool:
    """Whether a plan row is scvi-tools' default call (:data:`SCVI_DEFAULTS`; columns absent count as default)."""
    for column, default in SCVI_DEFAULTS.items():
        if column in row.index and not is_missing(row[column]) and not setting_value_is(row[column], default):
            return False
    return "delta" not in row.index or is_missing(row["delta"])


def describe_setting(row: pd.Series) -> str:
    """``batch_correction=True, mode=change, ...`` from a setting's plan columns."""
    parts = [f"{c}={row[c]:g}" if isinstance(row[c], float) else f"{c}={row[c]}"
             for c in DESCRIBE_COLUMNS if c in row.index and not is_missing(row[c])]
    return ", ".join(parts) or str(row.get("setting_id", row.get("combination_id", "")))


def replicate_plan(plan: pd.DataFrame) -> pd.DataFrame:
    """The plan with ``setting_id``, ``model`` and ``seed`` filled in and ``is_default`` added.

    Plans without them (hand-made, or from before model replicates) count as one
    model (``model = 0``) and seed 0; a missing ``setting_id`` is the ``combination_id``.
    """
    out = plan.copy()
    out["combination_id"] = out["combination_id"].astype(str)
    out["comparison_id"] = out["comparison_id"].astype(str)
    if "setting_id" not in out.columns:
        out["setting_id"] = out["combination_id"]
    out["setting_id"] = [str(s) if not is_missing(s) else c for s, c in zip(out["setting_id"], out["combination_id"], strict=True)]
    for column in ("model", "seed"):
        values = pd.to_numeric(out[column], errors="coerce") if column in out.columns else pd.Series(0, index=out.index)
        out[column] = values.fillna(0).astype(int)
    # another method's pseudo-combination (the bridge contrast) has no setting columns: never scvi-tools' default
    out["is_default"] = [is_default_setting(row) and (is_missing(row.get("method")) or row.get("method") == "scvi")
                         for _, row in out.iterrows()]
    return out


def classify_plan(plan: pd.DataFrame, tables: dict[str, pd.DataFrame], comparisons: pd.DataFrame,
                  profiles: dict[str, ExpressionProfile], *, top_n: int = CLASSIFIED_TOP_N, thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    """``gene_patterns.csv``: the classified top genes of every combination of the plan, in plan order.

    Columns :data:`ID_COLUMNS`, then those of :func:`desweep.diagnose.classify.classify_setting`.
    """
    plan = replicate_plan(plan)
    by_id = comparisons.set_index("comparison_id")
    calls: dict[tuple[str, str, str], ComparisonCalls] = {}
    tops: dict[tuple[str, str, str], list[pd.DataFrame]] = {}
    for _, row in plan.iterrows():  # every comparison's top genes first: their calls are computed together
        if row["combination_id"] not in tables:
            continue
        key = (row["comparison_id"], str(row["group1"]), str(row["group2"]))
        if key not in calls:
            calls[key] = ComparisonCalls(oriented_comparison(by_id.loc[key[0]], key[1], key[2]), profiles, thresholds)
        tops.setdefault(key, []).append(top_genes(tables[row["combination_id"]], top_n))
    for key, frames in tops.items():
        union = pd.concat(frames, ignore_index=True)
        calls[key].prepare(union["gene"], table_lfc(union))
    frames = []
    for _, row in plan.iterrows():
        cid = row["combination_id"]
        if cid not in tables:
            logger.warning("no DE table for %s: skipped", cid)
            continue
        key = (row["comparison_id"], str(row["group1"]), str(row["group2"]))
        part = classify_setting(tables[cid], calls[key].comparison, profiles, top_n=top_n, thresholds=thresholds, calls=calls[key])
        for i, column in enumerate(ID_COLUMNS):
            part.insert(i, column, row[column])
        frames.append(part)
    if not frames:
        return pd.DataFrame(columns=[*ID_COLUMNS, "gene", "rank", "pattern"])
    logger.info("classified the top %d genes of %d combinations", top_n, len(frames))
    return pd.concat(frames, ignore_index=True)


def sd(values: pd.Series) -> float:
    """Sample standard deviation; NaN for fewer than two values."""
    values = values.dropna()
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")

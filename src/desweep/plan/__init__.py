"""The DE sweep plan: every scvi-tools ``differential_expression`` setting to run, per comparison.

A *grid* (YAML; default shipped as ``desweep/data/default_grid.yaml``) lists values
for the settings that change scvi-tools' answer; :func:`make_plan` crosses them
with the comparisons of ``composition/comparisons.csv`` and returns

- the plan: one row per combination, with a stable, readable ``combination_id``;
- the skipped combinations, each with the reason it cannot or need not run.

Grid keys
---------
``batch_correction``
    ``true``/``false``. ``false`` decodes every cell in its own batch
    (``decoding = observed``, ``batchid1``/``batchid2`` empty).
``mode``
    ``vanilla`` and/or ``change``.
``delta``
    Positive numbers; change mode only.
``batchids``
    With ``batch_correction: true``, the batches each group is decoded in:
    ``all`` (``batchid1 = batchid2 = None``: every batch of the model, scvi's
    default), ``each`` (both groups in one batch, for each batch either group
    occurs in) and ``own`` (each group in the batches it occurs in, from
    ``group1_batches`` / ``group2_batches`` of comparisons.csv).
``weights``
    ``uniform`` and/or ``importance``.
``filter_outlier_cells``
    ``true``/``false``.
``fdr_target``
    Numbers in (0, 1).
``seeds``
    Non-negative integers; one posterior-sampling replicate each.

Model replicates
----------------
``models`` (not a grid key: a run parameter, ``desweep plan --models K``): the
plan repeats every combination for each of ``K`` trained scVI models (column
``model``, 0 to ``K - 1``; model ``k`` is trained with seed ``seed + k``).

Identifiers
-----------
``combination_id`` = ``<comparison>__<decoding>__<mode>__<weights>__fdr<f>[__model<k>]__seed<s>`` with
decoding ``nobc`` | ``bc-all`` | ``bc-in-<batch>`` | ``bc-own``, mode ``vanilla`` |
``change-d<delta>``, weights ``uniform`` | ``importance`` (``-filtered`` appended
with ``filter_outlier_cells``); ``__model<k>`` only with more than one model.
``setting_id`` is the same without ``__model<k>__seed<s>`` (the replicates of one
setting share it); ``sampling_key`` drops mode and FDR target: rows with one
sampling key share their posterior samples (and their model).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from desweep.errors import DesweepInputError, ParameterError
from desweep.names import encode_name, join_names, split_names
from desweep.plan.grid import check_grid, default_grid, default_grid_text
from desweep.plan.row import (
    BATCHIDS, DESCRIBE_COLUMNS, GRID_KEYS, MODES, PLAN_COLUMNS, SAMPLING_FIELDS, SCVI_DEFAULTS, SETTING_COLUMNS, WEIGHTS,
    BatchIds, Mode, SweepRow, Weights, rows_by_sampling_key, sampling_keys,
)

__all__ = [
    "BATCHIDS", "COMPARISON_COLUMNS", "DEFAULT_MAX_COMBINATIONS", "DESCRIBE_COLUMNS", "GRID_KEYS", "MODES", "PLAN_COLUMNS",
    "SAMPLING_FIELDS", "SCVI_DEFAULTS", "SETTING_COLUMNS", "SKIPPED_COLUMNS", "WARN_COMBINATIONS", "WEIGHTS", "BatchIds", "Mode",
    "SweepRow", "Weights", "check_grid", "check_plan_size", "default_grid", "default_grid_text", "make_plan",
    "rows_by_sampling_key", "sampling_keys",
]

logger = logging.getLogger(__name__)

#: the columns :func:`make_plan` reads from comparisons.csv
COMPARISON_COLUMNS = ("comparison_id", "group1", "group2", "group1_batches", "group2_batches")
SKIPPED_COLUMNS = PLAN_COLUMNS + ["reason"]
#: plans larger than this are logged as a warning (each combination is one DE table)
WARN_COMBINATIONS = 2000
#: default of ``desweep plan --max-combinations``
DEFAULT_MAX_COMBINATIONS = 20000


def check_plan_size(plan: pd.DataFrame, *, max_combinations: int = DEFAULT_MAX_COMBINATIONS,
                    source: str | Path = "comparisons.csv") -> None:
    """Warn above :data:`WARN_COMBINATIONS` combinations; refuse more than ``max_combinations``."""
    n, n_comparisons = len(plan), plan["comparison_id"].nunique()
    if n > max_combinations:
        raise DesweepInputError(source, "--max-combinations", f"the plan has {n:,} combinations ({n_comparisons:,} comparisons x the grid), "
                                f"more than {max_combinations:,}: give fewer comparisons or a smaller grid, or raise "
                                "--max-combinations (desweep run: --set plan.max_combinations=...)")
    if n > WARN_COMBINATIONS:
        logger.warning("the plan has %d combinations (%d comparisons x the grid): one DE table each", n, n_comparisons)


def _num(value: float) -> str:
    return f"{value:g}"


def _decodings(row: pd.Series, batchids: list[str], all_batches: list[str] | None) -> list[tuple[str, str, list[str] | None, list[str] | None, str]]:
    """Decoding choices for batch_correction=True: ``(name, label, batchid1, batchid2, skip_reason)``."""
    b1, b2 = split_names(row["group1_batches"]), split_names(row["group2_batches"])
    out: list[tuple[str, str, list[str] | None, list[str] | None, str]] = []
    for choice in batchids:
        if choice == "all":
            out.append(("all", "bc-all", None, None, ""))
        elif choice == "each":
            union = sorted(set(b1) | set(b2))
            if not union:
                out.append(("single", "bc-each", [], [], "neither group is present in any batch (comparisons.csv group batches empty)"))
            for batch in union:
                out.append(("single", f"bc-in-{encode_name(batch)}", [batch], [batch], ""))
        elif choice == "own":
            reason = ""
            if not b1 or not b2:
                reason = "a group is present in no batch (comparisons.csv group1_batches/group2_batches empty), so it has no own batches"
            elif set(b1) & set(b2) and set(b1) != set(b2):
                reason = (f"batchid1 ({join_names(b1)}) and batchid2 ({join_names(b2)}) overlap without being equal: scvi-tools then "
                          "pairs samples across batches and warns that batch correction is not trustworthy")
            out.append(("own", "bc-own", b1, b2, reason))
    # the same batches twice (e.g. own == a single batch, or own == every batch of the model) run once
    seen: dict[tuple, str] = {}
    result: list[tuple[str, str, list[str] | None, list[str] | None, str]] = []
    for name, label, batchid1, batchid2, reason in out:
        canonical = (None, None) if batchid1 is None else (tuple(sorted(batchid1)), tuple(sorted(batchid2 or [])))
        if all_batches is not None and batchid1 is not None and set(batchid1) == set(batchid2 or []) == set(all_batches):
            canonical = (None, None)
        if not reason and canonical in seen:
            reason = f"decodes in the same batches as '{seen[canonical]}'"
        elif not reason:
            seen[canonical] = label
        result.append((name, label, batchid1, batchid2, reason))
    return result


def make_plan(
    comparisons: pd.DataFrame, grid: dict[str, list] | None = None, *, batches: list[str] | None = None,
    models: int = 1, source: str | Path = "comparisons.csv",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross the grid with the comparisons.

    Parameters
    ----------
    comparisons
        ``composition/comparisons.csv``: ``comparison_id, group1, group2,
        group1_batches, group2_batches`` (``;``-joined) and ``design``.
    grid
        A grid checked by :func:`check_grid`; the default grid when ``None``.
    batches
        Every batch of the model (``composition/cluster_batch_counts.csv``
        columns), when known: an explicit list of every batch for both groups is
        then recognised as a duplicate of ``all``.
    models
        Trained scVI models (replicates); every combination runs on each.
    source
        Name of the comparisons file, for error messages.

    Returns
    -------
    ``(plan, skipped)``: columns :data:`PLAN_COLUMNS`, and the same plus
    ``reason``. Rows are ordered comparison, model, seed, decoding, weights,
    filter, mode/delta, FDR target, so the rows of a sampling key are contiguous
    and equal inputs give equal plans.
    """
    if isinstance(models, bool) or not isinstance(models, int) or models < 1:
        raise ParameterError("models", "models", f"must be a positive integer, got {models!r}")
    grid = check_grid(grid, source="grid") if grid is not None else default_grid()
    missing = [c for c in COMPARISON_COLUMNS if c not in comparisons.columns]
    if missing:
        raise DesweepInputError(source, missing[0], "column missing")
    if comparisons.empty:
        raise DesweepInputError(source, "comparison_id", "no comparisons: nothing to plan")
    duplicated = comparisons["comparison_id"].astype(str)[comparisons["comparison_id"].astype(str).duplicated()]
    if not duplicated.empty:
        raise DesweepInputError(source, "comparison_id", f"'{duplicated.iloc[0]}' appears twice")

    modes: list[tuple[Mode, float | None, str]] = []  # (mode, delta, skip reason)
    for mode in grid["mode"]:
        if mode == "change":
            modes += [("change", delta, "") for delta in grid["delta"]]
        else:
            modes.append(("vanilla", None, ""))
            modes += [("vanilla", delta, "delta applies to mode=change only; vanilla runs once, without delta")
                      for delta in grid["delta"]]

    rows, skipped = [], []
    for _, comp in comparisons.iterrows():
        cid = str(comp["comparison_id"])
        decodings: list[tuple[bool, str, str, list[str] | None, list[str] | None, str]] = []
        for bc in grid["batch_correction"]:
            if not bc:
                decodings.append((False, "observed", "nobc", None, None, ""))
                for choice in grid["batchids"]:
                    if choice != "all":
                        decodings.append((False, choice, f"nobc-{choice}", None, None,
                                          f"batchids={choice} needs batch_correction=true "
                                          "(scvi-tools raises 'Inconsistent batch policy' for batchid1/batchid2 without it)"))
            else:
                decodings += [(True, *choice) for choice in _decodings(comp, grid["batchids"], batches)]
        for model, seed in [(m, s) for m in range(models) for s in grid["seeds"]]:
            replicate = f"__model{model}__seed{seed}" if models > 1 else f"__seed{seed}"
            for bc, decoding, label, batchid1, batchid2, dec_reason in decodings:
                for weights in grid["weights"]:
                    for filt in grid["filter_outlier_cells"]:
                        wlabel = weights + ("-filtered" if filt else "")
                        key = f"{cid}__{label}__{wlabel}{replicate}"
                        for mode, delta, mode_reason in modes:
                            mlabel = "vanilla" if mode == "vanilla" else f"change-d{_num(delta)}"  # type: ignore[arg-type]  # change has a delta
                            if mode == "vanilla" and delta is not None:
                                mlabel = f"vanilla-d{_num(delta)}"
                            for fdr in grid["fdr_target"]:
                                setting = f"{cid}__{label}__{mlabel}__{wlabel}__fdr{_num(fdr)}"
                                row = SweepRow(
                                    combination_id=f"{setting}{replicate}", sampling_key=key, setting_id=setting,
                                    comparison_id=cid, group1=str(comp["group1"]), group2=str(comp["group2"]),
                                    design=str(comp.get("design", "")), batch_correction=bc, decoding=decoding,
                                    batchid1=join_names(batchid1 or []), batchid2=join_names(batchid2 or []),
                                    mode=mode, delta=delta, weights=weights, filter_outlier_cells=filt,
                                    fdr_target=fdr, model=model, seed=seed,
                                ).record()
                                reason = dec_reason or mode_reason
                                if reason:
                                    skipped.append({**row, "reason": reason})
                                else:
                                    rows.append(row)
    plan = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    skipped_df = pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
    clash = plan["combination_id"][plan["combination_id"].duplicated()]
    if not clash.empty:
        raise DesweepInputError(source, "comparison_id", f"two combinations get the id '{clash.iloc[0]}' "
                                "(two batch or group names share the 8-digit hash of their encoding); rename one")
    if plan.empty:
        first = skipped_df["reason"].iloc[0] if len(skipped_df) else "no combination"
        raise DesweepInputError(source, "grid", f"every combination is invalid ({len(skipped_df)} skipped), e.g.: {first}")
    logger.info("plan: %d combinations in %d sampling keys (%d model(s)), %d skipped", len(plan), plan["sampling_key"].nunique(),
                models, len(skipped_df))
    return plan, skipped_df

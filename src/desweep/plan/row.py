"""One row of the DE sweep plan (:class:`SweepRow`) and everything derived from its fields.

The plan's columns, how ``plan.csv`` is parsed back, the grid keys and the type
of their values, which columns a sampling key shares, which describe a setting
and scvi-tools' defaults: all read from the fields of :class:`SweepRow`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from desweep.choices import literal_values
from desweep.errors import DesweepInputError
from desweep.names import split_names

Mode = Literal["vanilla", "change"]
BatchIds = Literal["all", "each", "own"]
Weights = Literal["uniform", "importance"]
Role = Literal["id", "comparison", "setting", "replicate"]


def column(role: Role, *, sampling: bool = False, grid: str = "", grid_type: Any = None,
           check: tuple[Callable[[Any], bool], str] | None = None, describe: bool = True,
           scvi_default: Any = None) -> Any:
    """A :class:`SweepRow` field: one plan column and what derives from it.

    Parameters
    ----------
    role
        ``id`` (names of the row), ``comparison`` (from comparisons.csv),
        ``setting`` (a ``differential_expression`` argument: copied into
        setting_scores.csv) or ``replicate`` (model and seed).
    sampling
        Rows that share a sampling key share this value (they share posterior samples).
    grid
        The grid key whose values fill this column (``""``: none).
    grid_type
        The type of the grid's values when it is not the column's (``batchids`` fills ``decoding``).
    check
        ``(predicate, message)`` a grid value must pass, e.g. ``(lambda v: v > 0, "must be positive")``.
    describe
        Part of a setting's description in words (:data:`DESCRIBE_COLUMNS`).
    scvi_default
        scvi-tools' default of the argument, for :data:`SCVI_DEFAULTS` (``None``: not compared).
    """
    return dataclasses.field(metadata={"role": role, "sampling": sampling, "grid": grid, "grid_type": grid_type,
                                       "check": check, "describe": describe, "scvi_default": scvi_default})


@dataclass(frozen=True)
class SweepRow:
    """One row of ``plan.csv``: one ``differential_expression`` call (a *combination*).

    The plan's columns, their parsing and checks, the grid keys, the sampling key's
    settings and a setting's description are derived from these fields (in this order).
    Adding a grid setting: one field here and its place in :func:`make_plan`'s loop.
    """

    combination_id: str = column("id")
    sampling_key: str = column("id")
    setting_id: str = column("id")
    comparison_id: str = column("comparison", sampling=True)
    group1: str = column("comparison", sampling=True)
    group2: str = column("comparison", sampling=True)
    design: str = column("comparison")
    batch_correction: bool = column("setting", sampling=True, grid="batch_correction", scvi_default=False)
    #: ``observed`` (no batch correction), ``all``, ``single`` or ``own``; filled from the grid's ``batchids``
    decoding: str = column("setting", grid="batchids", grid_type=BatchIds)
    batchid1: str = column("setting", sampling=True)
    batchid2: str = column("setting", sampling=True)
    mode: Mode = column("setting", grid="mode", scvi_default="vanilla")
    delta: float | None = column("setting", grid="delta", check=(lambda v: v > 0, "must be positive"))
    weights: Weights = column("setting", sampling=True, grid="weights", scvi_default="uniform")
    filter_outlier_cells: bool = column("setting", sampling=True, grid="filter_outlier_cells", scvi_default=False)
    fdr_target: float = column("setting", grid="fdr_target", check=(lambda v: 0 < v < 1, "must be between 0 and 1"),
                               describe=False, scvi_default=0.05)
    model: int = column("replicate", sampling=True)
    seed: int = column("replicate", sampling=True, grid="seeds", check=(lambda v: v >= 0, "must be a non-negative integer"))

    @property
    def batches1(self) -> tuple[str, ...] | None:
        """``batchid1`` as scvi-tools takes it: the batches, or ``None`` (every batch of the model)."""
        return tuple(split_names(self.batchid1)) or None

    @property
    def batches2(self) -> tuple[str, ...] | None:
        """``batchid2`` as scvi-tools takes it."""
        return tuple(split_names(self.batchid2)) or None

    def record(self) -> dict[str, Any]:
        """The row as a plan-CSV record (:data:`PLAN_COLUMNS` order)."""
        return {name: getattr(self, name) for name in PLAN_COLUMNS}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SweepRow:
        """A row of a plan checked by :func:`desweep.de.check_plan` (typed values)."""
        return cls(**{name: record[name] for name in PLAN_COLUMNS})


_FIELDS = dataclasses.fields(SweepRow)
#: the type of each plan column (``typing`` objects: ``str``, ``bool``, ``Mode``, ``float | None``, ...)
COLUMN_TYPES: dict[str, Any] = typing.get_type_hints(SweepRow)
PLAN_COLUMNS = [f.name for f in _FIELDS]
#: plan columns that rows sharing a sampling key share (their posterior samples)
SAMPLING_FIELDS = tuple(f.name for f in _FIELDS if f.metadata["sampling"])
#: plan columns that describe a setting (copied into setting_scores.csv)
SETTING_COLUMNS = tuple(f.name for f in _FIELDS if f.metadata["role"] == "setting")
#: the plan columns that describe a setting in words
DESCRIBE_COLUMNS = tuple(f.name for f in _FIELDS if f.metadata["role"] == "setting" and f.metadata["describe"])
#: scvi-tools' defaults of ``differential_expression`` (``batch_correction=False``, vanilla, ...)
SCVI_DEFAULTS = {f.name: f.metadata["scvi_default"] for f in _FIELDS if f.metadata["scvi_default"] is not None}
GRID_FIELDS = {f.metadata["grid"]: f for f in _FIELDS if f.metadata["grid"]}
GRID_KEYS = tuple(GRID_FIELDS)
MODES = literal_values(Mode)
BATCHIDS = literal_values(BatchIds)
WEIGHTS = literal_values(Weights)


def value_type(kind: Any) -> Any:
    """The type of a column's values: ``float`` for ``float | None``; a ``Literal`` as it is."""
    if typing.get_origin(kind) is Literal:
        return kind
    return next((k for k in typing.get_args(kind) if k is not type(None)), kind)


def sampling_keys(plan: pd.DataFrame) -> list[str]:
    """The sampling keys of a plan, in plan order."""
    return list(dict.fromkeys(plan["sampling_key"]))


def rows_by_sampling_key(plan: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """``(sampling_key, its rows)`` in plan order: the unit of work of one ``desweep de --sampling-key`` call.

    The rows of one key share posterior samples (their :data:`SAMPLING_FIELDS`),
    so a scheduler that splits a sweep splits it between keys, never inside one.
    """
    yield from plan.groupby("sampling_key", sort=False)


def parse_columns(plan: pd.DataFrame, *, source: str | Path) -> pd.DataFrame:
    """:data:`PLAN_COLUMNS` of a plan read as text, typed by their :class:`SweepRow` field.

    Text columns stay text (missing: ``""``), booleans accept ``True``/``False``/``1``/``0``,
    numbers parse (``float | None`` may be empty: NaN), ``Literal`` columns must hold one of
    their values.

    Raises
    ------
    DesweepInputError
        A value that does not parse, naming the column.
    """
    out = plan[PLAN_COLUMNS].copy()
    for name in PLAN_COLUMNS:
        declared = COLUMN_TYPES[name]
        kind = value_type(declared)
        if kind is bool:
            out[name] = [_parse_bool(v, source, name) for v in out[name]]
        elif kind in (int, float):
            allow_empty = type(None) in typing.get_args(declared)
            values = [_parse_float(v, source, name, allow_empty=allow_empty) for v in out[name]]
            out[name] = [int(v) for v in values] if kind is int else values
        else:
            out[name] = out[name].fillna("").astype(str)
            if typing.get_origin(kind) is Literal:
                allowed = literal_values(kind)
                bad = out.loc[~out[name].isin(allowed), name]
                if not bad.empty:
                    raise DesweepInputError(source, name, f"'{bad.iloc[0]}' is not one of {', '.join(allowed)}")
    return out


def _parse_bool(value: Any, source: str | Path, column: str) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise DesweepInputError(source, column, f"'{value}' is not True or False")


def _parse_float(value: Any, source: str | Path, column: str, *, allow_empty: bool = False) -> float:
    if value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and np.isnan(value)):
        if allow_empty:
            return float("nan")
        raise DesweepInputError(source, column, "empty value")
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise DesweepInputError(source, column, f"'{value}' is not a number") from err

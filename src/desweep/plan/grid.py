"""The sweep grid: which values of each setting to cross (YAML; the default ships as ``desweep/data/default_grid.yaml``)."""

from __future__ import annotations

import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from desweep.choices import literal_values
from desweep.errors import DesweepInputError
from desweep.plan.row import COLUMN_TYPES, GRID_FIELDS, GRID_KEYS, value_type

DEFAULT_GRID_RESOURCE = "data/default_grid.yaml"


def default_grid_text() -> str:
    """The shipped default grid, as YAML text (with its comments)."""
    return resources.files("desweep").joinpath(DEFAULT_GRID_RESOURCE).read_text()


def default_grid() -> dict[str, list]:
    """The shipped default grid, checked."""
    import yaml

    return check_grid(yaml.safe_load(default_grid_text()), source="default_grid.yaml", fill_defaults=False)


def check_grid(raw: Any, *, source: str | Path = "grid", fill_defaults: bool = True) -> dict[str, list]:
    """Check a grid read from YAML; return it with every key as a list of values.

    Parameters
    ----------
    raw
        The parsed YAML document.
    source
        The file name, for error messages.
    fill_defaults
        Give keys left out the value of the default grid.

    Raises
    ------
    DesweepInputError
        Not a mapping, empty, an unknown key, an empty list, or a value of the
        wrong type or out of range; the error names the file and the key.
    """
    if raw is None or (isinstance(raw, dict) and not raw):
        raise DesweepInputError(source, "grid", f"is empty; give at least one of: {', '.join(GRID_KEYS)}")
    if not isinstance(raw, dict):
        raise DesweepInputError(source, "grid", f"must be a mapping of setting -> list of values, got {type(raw).__name__}")
    unknown = [str(k) for k in raw if k not in GRID_KEYS]
    if unknown:
        raise DesweepInputError(source, unknown[0], f"unknown grid key (allowed: {', '.join(GRID_KEYS)})")
    grid: dict[str, list] = {}
    for key in GRID_KEYS:
        if key not in raw:
            continue
        values = raw[key] if isinstance(raw[key], list) else [raw[key]]
        if not values:
            raise DesweepInputError(source, key, "is an empty list; give at least one value or leave the key out")
        grid[key] = _dedupe([_check_value(source, key, v) for v in values])
    if fill_defaults:
        defaults = default_grid()
        grid = {key: grid.get(key, defaults[key]) for key in GRID_KEYS}
    return grid


def _check_value(source: str | Path, key: str, value: Any) -> Any:
    """A grid value checked against the type (and check) of the :class:`SweepRow` field it fills."""
    spec = GRID_FIELDS[key]
    kind = value_type(spec.metadata["grid_type"] or COLUMN_TYPES[spec.name])
    predicate, message = spec.metadata["check"] or (lambda _v: True, "")

    def fail(expected: str) -> DesweepInputError:
        return DesweepInputError(source, key, f"{expected}, got {value!r}")

    if kind is bool:
        if not isinstance(value, bool):
            raise fail("must be true or false")
    elif typing.get_origin(kind) is Literal:
        if not isinstance(value, str) or value not in literal_values(kind):
            raise fail(f"must be one of {', '.join(literal_values(kind))}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("must be a number")
        value = float(value)
    elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise fail(message or "must be an integer")
    if not predicate(value):
        raise fail(message)
    return value


def _dedupe(values: list) -> list:
    seen: list = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def read_grid(grid_path: str | Path | None) -> dict | None:
    """The checked grid in a YAML file (``None``: no file, the default grid)."""
    from desweep.io import read_yaml

    return check_grid(read_yaml(grid_path, what="grid"), source=grid_path) if grid_path is not None else None

"""Choices written once, as ``Literal`` aliases, and checked at run time from them (scanpy's ``get_literal_vals``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from desweep.errors import DesweepInputError


def literal_values(alias: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` alias, in the order written: ``literal_values(Literal["a", "b"]) == ("a", "b")``."""
    values = get_args(alias)
    if not values:
        raise TypeError(f"{alias!r} is not a Literal")
    return values


def check_choice(value: Any, alias: Any, *, source: str | Path, field: str) -> None:
    """Raise a one-line :class:`~desweep.errors.DesweepInputError` unless ``value`` is one of the ``Literal``'s values.

    The message lists the valid values: ``--sampling: sampling: must be one of shared, scvi, got 'x'``.
    """
    allowed = literal_values(alias)
    if value not in allowed:
        raise DesweepInputError(source, field, f"must be one of {', '.join(allowed)}, got {value!r}")

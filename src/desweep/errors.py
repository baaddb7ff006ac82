"""Errors that the command line turns into one line each."""

from __future__ import annotations

from pathlib import Path


class DesweepInputError(ValueError):
    """Bad user input, reported as ``<file>: <field>: <problem>``.

    Parameters
    ----------
    source
        The file (or the option) the problem was found in, as the user gave it.
    field
        The field inside it: an obs column, a CSV column, a YAML key, an option.
    problem
        What is wrong and, where possible, what to do about it.
    """

    def __init__(self, source: str | Path, field: str, problem: str) -> None:
        self.source = str(source)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.source}: {field}: {problem}")

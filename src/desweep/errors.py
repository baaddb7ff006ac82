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


class ParameterError(DesweepInputError):
    """A bad value of a library function's parameter, reported as ``<parameter>: <problem>``.

    The command line reports it under the option that sets the parameter
    (:meth:`for_option`), e.g. ``--top-n: top_n: must be at least 1``.

    Parameters
    ----------
    parameter
        The function's parameter, as the function names it (``top_n``).
    field
        The part of the value at fault: the parameter itself, or one item of a list value.
    problem
        What is wrong.
    """

    def __init__(self, parameter: str, field: str, problem: str) -> None:
        super().__init__(parameter, field, problem)
        self.parameter = parameter
        ValueError.__init__(self, f"{parameter}: {problem}" if field == parameter else f"{parameter}: {field}: {problem}")

    def for_option(self, option: str | None = None) -> DesweepInputError:
        """The same error under the command-line option that sets the parameter (default: ``--<parameter with dashes>``)."""
        return DesweepInputError(option or "--" + self.parameter.replace("_", "-"), self.field, self.problem)

"""``python -m desweep.cli``."""

from desweep.cli import cli

cli()

"""The ``desweep`` command: one subcommand per pipeline step.

Subcommands are imported lazily, so ``desweep --help`` does not import torch.
``bin/desweep-<step>`` calls the same Click command that ``desweep <step>`` runs,
so Nextflow, the embedded runner and users share one option list.
"""

from __future__ import annotations

import importlib

import click

from desweep import __version__

#: subcommand name -> "module:attribute" under desweep.cli, in pipeline order (the order of ``desweep --help``)
COMMANDS: dict[str, str] = {
    "simulate": "desweep.cli.simulate:simulate",
    "validate": "desweep.cli.validate:validate",
    "integrate": "desweep.cli.integrate:integrate",
    "cluster": "desweep.cli.cluster:cluster",
    "composition": "desweep.cli.composition:composition",
    "plan": "desweep.cli.plan:plan",
    "de": "desweep.cli.de:de",
    "normalize": "desweep.cli.normalize:normalize",
    "diagnose": "desweep.cli.diagnose:diagnose",
    "baselines": "desweep.cli.baselines:baselines",
    "report": "desweep.cli.report:report",
    "run": "desweep.cli.run:run",
    "dev": "desweep.cli.dev:dev",
}


class LazyGroup(click.Group):
    """A Click group that imports a subcommand's module only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="desweep", message="%(version)s")  # bare: modules eval() it
def cli() -> None:
    """desweep: which genes really differ between two clusters when the data
    came from several batches and a cluster exists in only one of them?

    Each subcommand is one pipeline step, listed in pipeline order; desweep
    run chains them.
    """

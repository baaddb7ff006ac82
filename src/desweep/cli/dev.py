"""``desweep dev``: commands for desweep's developers (hidden from ``desweep --help``)."""

from __future__ import annotations

from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[3]


@click.group(name="dev", hidden=True)
def dev() -> None:
    """Commands for desweep's developers."""


@dev.command(name="sync-nextflow")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=REPO, show_default=True,
              help="The desweep repository whose files to write.")
@click.option("--check", is_flag=True, help="Write nothing; fail when a file is stale.")
def sync_nextflow(repo: Path, check: bool) -> None:
    """Write the Nextflow files generated from desweep.params (the schema, the params, the modules' ext.args, the docs table).

    Example:

    \b
        desweep dev sync-nextflow --check
    """
    from desweep.io import write_text
    from desweep.nextflow_sync import GENERATED

    stale = []
    for name, generate in GENERATED.items():
        path = repo / name
        current = path.read_text() if path.exists() else ""
        new = generate(current)
        if new != current:
            stale.append(name)
            if not check:
                write_text(new, path)
    if check and stale:
        raise click.ClickException(f"stale: {', '.join(stale)}; run `desweep dev sync-nextflow`")
    click.echo(("wrote " if stale else "up to date: ") + ", ".join(stale or GENERATED))

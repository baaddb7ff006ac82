#!/usr/bin/env python3
"""Remake tests/data/nf_fixtures/: the inputs the module nf-tests start from.

Each module test (modules/local/*/tests/main.nf.test) starts from these files instead of
replaying validate -> integrate -> ... in its setup. They are one small ``desweep run`` on
500 simulated cells x 80 genes (scVI trained 5 epochs, two comparisons, a 2-setting grid, top 10 genes),
laid out as the output contract (``<step>/<file>``), without what no module reads (the
report, plots, run records). Rerun after a change to a step's outputs, then regenerate the
module snapshots (docs/usage.md, "Tests"):

    .venv/bin/python scripts/make_nf_fixtures.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from desweep import keys
from desweep.cli import cli

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data" / "nf_fixtures"

SIMULATE = ["--n-cells", "500", "--n-genes", "80", "--n-batches", "3", "--n-shared-clusters", "2",
            "--n-specific-clusters", "2", "--markers-per-cluster", "4", "--batch-wide-genes", "4", "--seed", "1"]
GRID = "batch_correction: [false, true]\nmode: [vanilla]\ndelta: [0.5]\nbatchids: [all]\nseeds: [0]\n"
RUN_OPTIONS = ["--batch-key", "batch", "--labels-key", "cell_type", "--seed", "0", "--threads", "1",
               "--set", "integrate.max_epochs=5", "--set", "integrate.n_top_genes=0",
               "--set", "composition.comparisons=only_batch0:shared0;only_batch0:only_batch1",
               # the layers of normalized.h5ad and markers.h5ad hold the top genes: 10, to keep them small
               "--set", "normalize.top_n=10", "--set", "diagnose.top_n=10", "--set", "baselines.top_n=10"]
#: what the fixtures keep of a run's output folder: everything but these (no module reads them)
LEFT_OUT = (keys.STEP_REPORT, f"{keys.STEP_DIAGNOSE}/plots", f"{keys.PIPELINE_INFO}/desweep_run.log")


def call(*args: str) -> None:
    """One desweep command in this process; a failure stops the script."""
    cli.main(list(args), prog_name="desweep", standalone_mode=False)


def kept(path: Path, outdir: Path) -> bool:
    relative = path.relative_to(outdir).as_posix()
    return not path.name.startswith(".") and not any(relative == p or relative.startswith(f"{p}/") for p in LEFT_OUT)


def make_fixtures(destination: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "grid.yaml").write_text(GRID)
        call("simulate", "-o", str(work / "input.h5ad"), *SIMULATE)
        call("run", "-i", str(work / "input.h5ad"), "-o", str(work / "out"), *RUN_OPTIONS,
             "--set", f"plan.grid={work / 'grid.yaml'}")
        shutil.rmtree(destination, ignore_errors=True)
        destination.mkdir(parents=True)
        shutil.copy2(work / "input.h5ad", destination / "input.h5ad")
        shutil.copy2(work / "grid.yaml", destination / "grid.yaml")
        out = work / "out"
        for path in sorted(p for p in out.rglob("*") if p.is_file() and kept(p, out)):
            target = destination / path.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    make_fixtures(FIXTURES)
    sizes = sorted((p.stat().st_size, p.relative_to(FIXTURES).as_posix()) for p in FIXTURES.rglob("*") if p.is_file())
    for size, name in sizes:
        print(f"{size:>9,d}  {name}")
    print(f"{sum(s for s, _ in sizes):>9,d}  in all ({len(sizes)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

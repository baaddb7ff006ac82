#!/usr/bin/env python3
"""How each step's wall time and peak memory grow with the number of cells.

Simulates 2,000 / 10,000 / 50,000 (and optionally 100,000) cells x 2,000 genes,
runs every step of `desweep run` in its own process with the same arguments the
runner uses (integrate with a fixed number of epochs, the 16-combination grid
benchmarks/grid16.yaml on the confounded comparison), and prints wall time, peak memory and the growth
exponent between consecutive sizes (1.0 = linear in cells).

    .venv/bin/python benchmarks/scaling.py --sizes 2000,10000,50000,100000 --epochs 5 --threads 2
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _timing import Measurement, run_step  # noqa: E402

from desweep.runner import available_steps, load_config, step_arguments  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,10000,50000", help="Comma-separated cell counts.")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=5, help="Fixed training epochs (no early stopping).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="desweep-scaling-"))
    results: dict[int, dict[str, Measurement]] = {}
    for n_cells in sizes:
        results[n_cells] = measure(n_cells, args, workdir / f"n{n_cells}")
        print_table(results, sizes[: len(results)])
    print(f"\nworkdir: {workdir}")


def measure(n_cells: int, args: argparse.Namespace, outdir: Path) -> dict[str, Measurement]:
    data = outdir / "input.h5ad"
    measured = {"simulate": run_step(["simulate", "-o", str(data), "--n-cells", str(n_cells), "--n-genes", str(args.genes)])}
    config = load_config(None, {
        "input": str(data), "outdir": str(outdir), "labels_key": "cell_type", "threads": args.threads,
        "steps": {
            "integrate": {"max_epochs": args.epochs, "early_stopping": False, "n_top_genes": 0},
            "composition": {"comparisons": "only_batch0:only_batch1"},
            "plan": {"grid": str(Path(__file__).parent / "grid16.yaml")},
        },
    })
    for step in available_steps():
        measured[step.name] = run_step([step.name, *step_arguments(step, config, outdir)])
        print(f"  {n_cells:>7} cells  {step.name:<12} {measured[step.name].seconds:8.1f} s {measured[step.name].peak_mib:8.0f} MiB", flush=True)
    return measured


def print_table(results: dict[int, dict[str, Measurement]], sizes: list[int]) -> None:
    steps = list(results[sizes[0]])
    header = f"{'step':<12}" + "".join(f"{n:>10} s {n:>8} MiB" for n in sizes)
    header += "".join(f"  exp {a}->{b}" for a, b in zip(sizes, sizes[1:]))
    print("\n" + header)
    for step in steps:
        row = f"{step:<12}" + "".join(f"{results[n][step].seconds:12.1f} {results[n][step].peak_mib:12.0f}" for n in sizes)
        for a, b in zip(sizes, sizes[1:]):
            row += f"  {growth(results[a][step].seconds, results[b][step].seconds, a, b):>12.2f}"
        print(row)


def growth(t1: float, t2: float, n1: int, n2: int) -> float:
    """Exponent k in t ~ n^k between two sizes."""
    return math.log(max(t2, 1e-3) / max(t1, 1e-3)) / math.log(n2 / n1)


if __name__ == "__main__":
    main()

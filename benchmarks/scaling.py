#!/usr/bin/env python3
"""How each step's wall time and peak memory grow with the number of cells.

Simulates 10,000 / 50,000 / 100,000 cells (or --sizes) x 2,000 genes, runs every
step of `desweep run` in its own process with the same arguments the runner
uses (integrate with a fixed number of epochs, the default grid on the
confounded comparison), and prints wall time, peak memory and the growth
exponent between consecutive sizes (1.0 = linear in cells). Two extra rows run
on the same inputs: `cluster` with the exact kNN search (`--neighbors exact`)
and `normalize --all-genes` (layers for every gene, what normalize wrote
before it kept the DE tables' top genes), with the size of normalized.h5ad.

    .venv/bin/python benchmarks/scaling.py --sizes 10000,50000,100000 --epochs 2 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _timing import Measurement, run_step

from desweep import keys
from desweep.runner import load_config, resolve_steps

#: extra rows: (name, the step's options as `desweep run --set` items), each written under OUTDIR/variants/<name>
EXTRA = {"cluster": ("cluster_exact", ("cluster.neighbors=exact",)), "normalize": ("normalize_all", ("normalize.all_genes=true",))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,50000,100000", help="Comma-separated cell counts.")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2, help="Fixed training epochs (no early stopping).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", type=Path, default=None, help="DE grid YAML (default: desweep's default grid).")
    parser.add_argument("--no-extra", action="store_true", help="Skip the exact-kNN cluster and --all-genes normalize rows.")
    parser.add_argument("--project", type=int, default=1_000_000,
                        help="Project time and memory to this many cells from the last two sizes' exponents (0: no projection).")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--from-step", default=None,
                        help="Continue an interrupted run of one size in --workdir from this step (the earlier steps' "
                             "outputs must be there; their rows are in the interrupted run's log).")
    parser.add_argument("--until-step", default=None,
                        help="Stop after this step (with --from-step: run a large size one step at a time).")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if (args.from_step or args.until_step) and (len(sizes) != 1 or args.workdir is None):
        parser.error("--from-step and --until-step run part of one size in an existing --workdir")
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(variable, str(args.threads))  # every library in the children on --threads cores
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="desweep-scaling-"))
    results: dict[int, dict[str, Measurement]] = {}
    files: dict[int, dict[str, float]] = {}
    for n_cells in sizes:
        results[n_cells], files[n_cells] = measure(n_cells, args, workdir / f"n{n_cells}")
        print_table(results, files, sizes[: len(results)])
    if args.project and len(sizes) >= 2:
        print_projection(results, sizes[-2], sizes[-1], args.project)
    print(f"\nworkdir: {workdir}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def measure(n_cells: int, args: argparse.Namespace, outdir: Path) -> tuple[dict[str, Measurement], dict[str, float]]:
    data = outdir / "input.h5ad"
    measured = {}
    if not args.from_step or args.from_step == "simulate":
        measured["simulate"] = report(n_cells, "simulate", run_step(["simulate", "-o", str(data), "--n-cells",
                                                                     str(n_cells), "--n-genes", str(args.genes)]))
    if args.until_step == "simulate":
        return measured, {}
    values = {"input": str(data), "outdir": str(outdir), "labels_key": "cell_type", "threads": args.threads}
    options = (f"integrate.max_epochs={args.epochs}", "integrate.early_stopping=false", "integrate.n_top_genes=0",
               "composition.comparisons=only_batch0:only_batch1", *([f"plan.grid={args.grid}"] if args.grid else []))
    resolved = resolve_steps(load_config(None, values, options))
    names = list(resolved)
    first = names.index(args.from_step) if args.from_step in names else 0
    last = names.index(args.until_step) + 1 if args.until_step else len(names)
    for item in list(resolved.values())[first:last]:
        step = item.step
        measured[step.name] = report(n_cells, step.name, run_step([step.command_name, *item.args]))
        if step.name in EXTRA and not args.no_extra:
            name, variant_options = EXTRA[step.name]
            arguments = list(resolve_steps(load_config(None, values, options + variant_options))[step.name].args)
            arguments[arguments.index("--outdir") + 1] = str(outdir / "variants" / name)
            measured[name] = report(n_cells, name, run_step([step.command_name, *arguments]))
    if keys.STEP_NORMALIZE not in names[first:last]:
        return measured, {}
    sizes = {"normalized.h5ad MiB": _mib(outdir / keys.STEP_NORMALIZE / keys.NORMALIZED_H5AD)}
    if not args.no_extra:
        sizes["normalized.h5ad --all-genes MiB"] = _mib(outdir / "variants" / EXTRA["normalize"][0] / keys.NORMALIZED_H5AD)
    sizes["layer genes"] = float(len((outdir / keys.STEP_NORMALIZE / keys.LAYER_GENES_CSV).read_text().splitlines()) - 1)
    print(f"  {n_cells:>7} cells  " + ", ".join(f"{k} {v:.0f}" for k, v in sizes.items()), flush=True)
    return measured, sizes


def report(n_cells: int, name: str, measurement: Measurement) -> Measurement:
    print(f"  {n_cells:>7} cells  {name:<14} {measurement.seconds:8.1f} s wall {measurement.cpu_seconds:8.1f} s CPU "
          f"{measurement.peak_mib:8.0f} MiB (load {os.getloadavg()[0]:.1f})", flush=True)
    return measurement


def _mib(path: Path) -> float:
    return path.stat().st_size / 2**20 if path.exists() else float("nan")


def print_table(results: dict[int, dict[str, Measurement]], files: dict[int, dict[str, float]], sizes: list[int]) -> None:
    """Wall s, CPU s and peak MiB per size, then the growth exponents of the CPU time (and of the wall time)."""
    steps = list(results[sizes[0]])
    header = f"{'step':<14}" + "".join(f"{n:>9} wall {n:>9} CPU {n:>7} MiB" for n in sizes)
    header += "".join(f"  exp CPU (wall) {a}->{b}" for a, b in itertools.pairwise(sizes))
    print("\n" + header)
    for step in steps:
        row = f"{step:<14}" + "".join(f"{results[n][step].seconds:14.1f} {results[n][step].cpu_seconds:13.1f} "
                                      f"{results[n][step].peak_mib:11.0f}" for n in sizes)
        for a, b in itertools.pairwise(sizes):
            ra, rb = results[a][step], results[b][step]
            row += f"  {growth(ra.cpu_seconds, rb.cpu_seconds, a, b):>10.2f} ({growth(ra.seconds, rb.seconds, a, b):.2f})"
        print(row)
    for name in files[sizes[0]]:
        print(f"{name:<14}" + "".join(f"{files[n][name]:25.0f}" for n in sizes))


def print_projection(results: dict[int, dict[str, Measurement]], n1: int, n2: int, target: int) -> None:
    """A projection, not a measurement, from the two largest sizes ``n1 < n2``.

    CPU time grows from ``n2`` with the step's ``n1 -> n2`` exponent (below 0
    counts as 0: a cost that did not grow stays); on one core, as measured, it
    is the wall time of an unloaded machine. Peak memory is a fixed part
    (imports, buffers) plus a part linear in cells, both from the two sizes: what
    the data held in memory does.
    """
    print(f"\nPROJECTION to {target} cells from {n1} and {n2} cells (not measured)")
    print(f"{'step':<14}{'CPU time':>12}{'peak memory':>16}")
    for step, b in results[n2].items():
        a = results[n1][step]
        k_time = max(0.0, growth(a.cpu_seconds, b.cpu_seconds, n1, n2))
        seconds = b.cpu_seconds * (target / n2) ** k_time
        per_cell = max(0.0, (b.peak_mib - a.peak_mib) / (n2 - n1))
        mib = b.peak_mib + per_cell * (target - n2)
        print(f"{step:<14}{seconds / 60:10.1f} min{mib / 1024:12.1f} GiB   (time exponent {k_time:.2f}, {per_cell * 1024:.1f} KiB per cell)")


def growth(t1: float, t2: float, n1: int, n2: int) -> float:
    """Exponent k in t ~ n^k between two sizes."""
    return math.log(max(t2, 1e-3) / max(t1, 1e-3)) / math.log(n2 / n1)


if __name__ == "__main__":
    main()

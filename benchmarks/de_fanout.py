#!/usr/bin/env python
"""The Nextflow DE fan-out against one ``desweep de --all``, in one run.

Simulates 4 batches with 3 shared and 4 batch-specific clusters, runs validate,
integrate (a few epochs), cluster (the planted labels), composition (the default
comparisons: batch-specific pairs, at most 10) and plan (the default grid), then
on the same inputs:

- ``desweep de --all``: every sampling key in one process;
- the Nextflow fan-out (``benchmarks/de_fanout/main.nf``: the pipeline's DE_SWEEP
  subworkflow, local executor, one core per task) for each ``--de_split`` asked:
  ``model`` (one task per model, the default), ``seed`` (per model and seed),
  ``comparison`` (per model, comparison and seed) and ``sampling_key`` (one task per
  key, the first default).
  With ``--time-limit S`` a fan-out still running after S seconds is stopped and its
  row extrapolated from the DE tasks that completed (marked as such: CPU and passes
  x tasks planned / tasks completed).

Per run: DE tasks, decoding passes (each ``desweep de`` prints how many it did),
CPU seconds (``de --all``: the child's user + system time; Nextflow: every DE and
DE_MERGE task's ``realtime x %cpu`` from the trace, so PLAN, which ``--all`` does
not run, and Nextflow's own JVM are left out) and the ratio to ``de --all``.

Each row is also written to ``WORKDIR/rows.json``; ``--table-only`` prints the table
of an earlier run from it, ``--summarize SPLIT`` adding the (extrapolated) row of a
fan-out whose run was interrupted.

Usage::

    PATH=$PWD/.venv/bin:$PATH .venv/bin/python benchmarks/de_fanout.py [--splits model,seed,comparison,sampling_key] \\
        [--n-cells 4000] [--n-genes 1000] [--epochs 5] [--threads 1] [--max-forks 2] [--time-limit S] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _timing import run_step

from desweep import keys
from desweep.runner import load_config, resolve_steps

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "benchmarks" / "de_fanout" / "main.nf"
#: the plan columns whose values make one DE task, per --de_split (as subworkflows/local/de_sweep/main.nf groups them)
TASK_COLUMNS = {"model": ("model",), "seed": ("model", "seed"), "comparison": ("model", "comparison_id", "seed"), "sampling_key": ("sampling_key",)}
SPLITS = tuple(TASK_COLUMNS)
ALL = "`desweep de --all`"
PASSES = re.compile(r"sampling keys in [\d.]+ s \(decoding [\d.]+ s in (\d+) passes")


@dataclass(frozen=True)
class FanOut:
    """One way of running the sweep: tasks, decoding passes, CPU seconds (tasks' sum) and wall seconds.

    ``completed`` < ``tasks``: the run was stopped; passes and CPU are scaled from the completed tasks.
    """

    name: str
    tasks: int
    passes: float
    cpu_seconds: float
    wall_seconds: float
    completed: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", default=",".join(SPLITS), help="Comma-separated --de_split values to run.")
    parser.add_argument("--n-cells", type=int, default=4000)
    parser.add_argument("--n-genes", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5, help="Fixed training epochs (no early stopping).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-forks", type=int, default=2, help="Nextflow tasks at once (the local executor's cpus).")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="Stop a fan-out after this many seconds and extrapolate its row from the completed tasks.")
    parser.add_argument("--workdir", type=Path, default=None, help="Reuse the prepared inputs of an earlier run here.")
    parser.add_argument("--skip-all", action="store_true", help="Run only the fan-outs (no `desweep de --all` row, no ratio).")
    parser.add_argument("--table-only", action="store_true", help="Print the table of the earlier run in --workdir.")
    parser.add_argument("--summarize", default=None, help="With --table-only: add the row of this split's interrupted run.")
    args = parser.parse_args()
    splits = args.splits.split(",")
    unknown = [s for s in splits + [args.summarize or "seed"] if s not in SPLITS]
    if unknown:
        parser.error(f"unknown split {unknown[0]!r} (choose from {', '.join(SPLITS)})")
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(variable, str(args.threads))
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="desweep-fanout-"))).resolve()
    outdir = workdir / "results"
    rows_file = workdir / "rows.json"
    if args.table_only:
        plan = list(csv.DictReader((outdir / keys.STEP_DE / keys.PLAN_CSV).read_text().splitlines()))
        results = [FanOut(**row) for row in json.loads(rows_file.read_text())] if rows_file.is_file() else []
        if args.summarize:
            results.append(summarize(args.summarize, plan, workdir / f"nf_{args.summarize}", float("nan")))
        print_table(args, plan, results)
        return
    prepare(args, workdir / "input.h5ad", outdir)
    plan = list(csv.DictReader((outdir / keys.STEP_DE / keys.PLAN_CSV).read_text().splitlines()))
    print(f"plan: {len(plan)} combinations; load {_load()}", flush=True)
    results = [] if args.skip_all else [run_all(outdir, args.threads, workdir / "all")]
    reference = results[0] if results else None
    for split in splits:
        results.append(run_nextflow(split, plan, outdir, workdir / f"nf_{split}", args.max_forks, args.time_limit))
        rows_file.write_text(json.dumps([asdict(r) for r in results]))
        print(_row(results[-1], reference), flush=True)
    print_table(args, plan, results)
    print(f"workdir: {workdir}")


def print_table(args: argparse.Namespace, plan: list[dict[str, str]], results: list[FanOut]) -> None:
    n_comparisons = len({row["comparison_id"] for row in plan})
    n_keys = len({row["sampling_key"] for row in plan})
    print(f"\n{args.n_cells} cells x {args.n_genes} genes, 4 batches, {n_comparisons} comparisons, default grid: "
          f"{len(plan)} combinations in {n_keys} sampling keys; --threads {args.threads}, {args.max_forks} tasks at once")
    print("| run | DE tasks | decoding passes | CPU s | x `de --all` | wall s |")
    print("|---|---|---|---|---|---|")
    reference = results[0] if results and results[0].name == ALL else None
    for result in results:
        print(_row(result, reference))
    print(f"\nload average at the end {_load()}")


def prepare(args: argparse.Namespace, data: Path, outdir: Path) -> None:
    """Simulate, then validate -> plan with `desweep run`'s arguments (skipped when the plan is there)."""
    if (outdir / keys.STEP_DE / keys.PLAN_CSV).is_file():
        return
    outdir.mkdir(parents=True, exist_ok=True)
    run_step(["simulate", "-o", str(data), "--n-cells", str(args.n_cells), "--n-genes", str(args.n_genes), "--n-batches", "4",
              "--n-shared-clusters", "3", "--n-specific-clusters", "4"])
    config = load_config(None, {"input": str(data), "outdir": str(outdir), "labels_key": "cell_type", "threads": args.threads},
                         (f"integrate.max_epochs={args.epochs}", "integrate.early_stopping=false", "integrate.n_top_genes=0"))
    for name, item in resolve_steps(config).items():
        if name == "de":
            break
        measurement = run_step([item.step.command_name, *item.args])
        print(f"  {name:<12} {measurement.seconds:7.1f} s (load {_load()})", flush=True)


def _inputs(outdir: Path) -> dict[str, Path]:
    return {
        "plan": outdir / keys.STEP_DE / keys.PLAN_CSV,
        "comparisons": outdir / keys.STEP_COMPOSITION / keys.COMPARISONS_CSV,
        "batch_counts": outdir / keys.STEP_COMPOSITION / keys.CLUSTER_BATCH_COUNTS_CSV,
        "h5ad": outdir / keys.STEP_CLUSTER / keys.CLUSTERED_H5AD,
        "model": outdir / keys.STEP_INTEGRATE / keys.MODEL_DIR,
    }


def run_all(outdir: Path, threads: int, target: Path) -> FanOut:
    """``desweep de --all`` in a child process, measured with ``wait4``."""
    paths = _inputs(outdir)
    measurement = run_step(["de", "--plan", str(paths["plan"]), "--input", str(paths["h5ad"]), "--model", str(paths["model"]),
                            "--all", "--threads", str(threads), "--accelerator", "cpu", "-o", str(target)],
                           capture_stdout=True)
    return FanOut(ALL, 1, _passes(measurement.stdout), measurement.cpu_seconds, measurement.seconds, 1)


def run_nextflow(split: str, plan: list[dict[str, str]], outdir: Path, launch: Path, max_forks: int,
                 time_limit: float | None) -> FanOut:
    """The DE fan-out through Nextflow's local executor, stopped after ``time_limit`` seconds if given."""
    paths = _inputs(outdir)
    launch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PATH": f"{REPO / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "NXF_ANSI_LOG": "false", "NXF_OFFLINE": "true"}
    command = [str(REPO / "scripts" / "nextflow"), "run", str(WORKFLOW), "--de_split", split, "--max_cpus", str(max_forks),
               "--comparisons_csv", str(paths["comparisons"]), "--batch_counts", str(paths["batch_counts"]),
               "--h5ad", str(paths["h5ad"]), "--model", str(paths["model"]), "--outdir", str(launch / "results")]
    start = time.perf_counter()
    with open(launch / "nextflow.out", "w") as log:
        proc = subprocess.Popen(command, cwd=launch, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:  # stop Nextflow and its tasks; the trace keeps the completed ones
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            returncode = 0
    wall = time.perf_counter() - start
    if returncode != 0:
        raise RuntimeError(f"nextflow ({split}) failed: see {launch / 'nextflow.out'}")
    return summarize(split, plan, launch, wall)


def summarize(split: str, plan: list[dict[str, str]], launch: Path, wall: float) -> FanOut:
    """Tasks, passes and CPU (``realtime x %cpu``) of the DE and DE_MERGE tasks in ``launch``'s trace."""
    planned = len({tuple(row[c] for c in TASK_COLUMNS[split]) for row in plan})
    trace = [row for row in csv.DictReader((launch / "trace.tsv").read_text().splitlines(), delimiter="\t") if row["status"] == "COMPLETED"]
    de_tasks = [row for row in trace if row["process"].endswith(":DE")]
    merge = [row for row in trace if row["process"].endswith(":DE_MERGE")]
    if not de_tasks:
        raise RuntimeError(f"nextflow ({split}): no DE task completed")
    cpu = sum(float(row["realtime"]) / 1000 * float(row["%cpu"]) / 100 for row in de_tasks + merge)
    passes = sum(_passes((Path(row["workdir"]) / ".command.out").read_text()) for row in de_tasks)
    if len(de_tasks) == planned and len(merge) == 1:
        return FanOut(f"Nextflow `--de_split {split}`", planned, passes, cpu, wall, planned)
    scale = planned / len(de_tasks)  # stopped before DE_MERGE: its CPU (about a second here) is left out
    return FanOut(f"Nextflow `--de_split {split}` ({len(de_tasks)} of {planned} tasks run, scaled)", planned,
                  passes * scale, cpu * scale, wall, len(de_tasks))


def _passes(output: str) -> int:
    found = PASSES.findall(output)
    if len(found) != 1:
        raise RuntimeError(f"expected one 'in N passes' line from desweep de, found {len(found)}:\n{output[-2000:]}")
    return int(found[0])


def _row(result: FanOut, reference: FanOut | None) -> str:
    ratio = f"{result.cpu_seconds / reference.cpu_seconds:.2f}" if reference else "-"
    return (f"| {result.name} | {result.tasks} | {result.passes:.0f} | {result.cpu_seconds:.0f} | {ratio} | "
            f"{result.wall_seconds:.0f} |")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""desweep's DE sweep vs a naive loop of ``model.differential_expression`` calls, in one run.

Simulates batched counts (``desweep.simulate``), trains scVI briefly, plans two
comparisons (``only_batch0`` vs ``only_batch1``, confounded; ``only_batch0`` vs
``shared0``, one-specific) on a grid and times, each in its own forked process so
peak memory is measured per approach:

- ``naive``: one ``model.differential_expression`` per combination, seeded with
  ``scvi.settings.seed = seed`` (what a user would loop over);
- ``sweep scvi``: ``desweep.de.run_sweep(sampling="scvi")``: sampling once per
  sampling key with scvi-tools' random stream, so tables must equal ``naive``;
- ``sweep shared``: ``run_sweep(sampling="shared")`` (desweep's default): one
  decoding pass per group, batch and seed; tables must agree with ``naive``
  within Monte Carlo error.

Grids (``--grid``):

- ``default``: desweep's default grid (``desweep/data/default_grid.yaml``: batch
  correction off, over every batch, in each batch and in each group's own batch;
  vanilla and change mode at 3 deltas; seeds 0, 1, 2), every combination of both
  comparisons;
- ``small``: 16 combinations per comparison (batch_correction False, True over
  every batch, True in each single batch; vanilla and change mode with 3
  deltas; one seed).

Usage::

    .venv/bin/python benchmarks/sweep_vs_naive.py [--grid default] [--n-cells 5000] [--n-genes 2000] [--epochs 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd

GROUP_KEY = "cell_type"
BATCH_KEY = "batch"
STATE: dict = {}  # the data, model and plan, inherited by the forked workers


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _measured(fn):
    """Run ``fn`` in this (forked) process; return its result, wall and CPU seconds and peak RSS growth (MiB)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
            fh.write("5")
    except OSError:
        pass
    start_rss = _rss_kib("VmRSS:")
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result, wall, cpu, (_rss_kib("VmHWM:") - start_rss) / 1024


def _naive():
    import scvi

    from desweep.compute import safe_batch_size
    from desweep.de import DEFAULT_BATCH_SIZE

    model, plan, sizes = STATE["model"], STATE["plan"], STATE["adata"].obs[GROUP_KEY].astype(str).value_counts()
    tables = {}
    for _, row in plan.iterrows():
        # the minibatch size desweep's scvi sampler uses (128, unless a group would end in a minibatch of 1-2 cells)
        batch_size = safe_batch_size([int(sizes[row["group1"]]), int(sizes[row["group2"]])], DEFAULT_BATCH_SIZE)
        scvi.settings.seed = int(row["seed"])
        kwargs = {"delta": float(row["delta"])} if row["mode"] == "change" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tables[row["combination_id"]] = model.differential_expression(
                groupby=GROUP_KEY, group1=[row["group1"]], group2=row["group2"], mode=row["mode"],
                batch_correction=bool(row["batch_correction"]),
                batchid1=row["batchid1"].split(";") if row["batchid1"] else None,
                batchid2=row["batchid2"].split(";") if row["batchid2"] else None,
                fdr_target=float(row["fdr_target"]), weights=row["weights"],
                filter_outlier_cells=bool(row["filter_outlier_cells"]), batch_size=batch_size, silent=True, **kwargs,
            )
    return tables


def _sweep(sampling: str):
    from desweep.de import run_sweep

    result = run_sweep(STATE["adata"], STATE["model"], STATE["plan"], group_key=GROUP_KEY, n_samples=STATE["n_samples"],
                       batch_size=128, sampling=sampling)
    return result.tables


def _in_child(name: str):
    fn = {"naive": _naive, "sweep scvi": lambda: _sweep("scvi"), "sweep shared": lambda: _sweep("shared")}[name]
    return _measured(fn)


def _agreement(ours: dict[str, pd.DataFrame], naive: dict[str, pd.DataFrame], plan: pd.DataFrame, n: int) -> dict[str, float]:
    """Largest differences over every gene of every combination, and how many genes exceed the Monte Carlo tolerance."""
    worst_exact, worst_z, n_out, n_de_diff = 0.0, 0.0, 0, 0
    for _, row in plan.iterrows():
        ref = naive[row["combination_id"]]
        table = ours[row["combination_id"]].set_index("gene").loc[ref.index.astype(str)]
        proba = "proba_de" if row["mode"] == "change" else "proba_m1"
        columns = [proba, "scale1", "scale2"] + (["lfc_mean", "lfc_std"] if row["mode"] == "change" else [])
        for column in columns:
            worst_exact = max(worst_exact, float(np.max(np.abs(table[column].to_numpy() - ref[column].to_numpy()))))
        p = ref[proba].to_numpy()
        se = np.sqrt(2 * p * (1 - p) / n)
        excess = np.abs(table[proba].to_numpy() - p) - 0.01
        z = np.where(excess > 0, excess / np.maximum(se, 1e-12), 0.0)
        worst_z = max(worst_z, float(z.max()))
        n_out += int((z > 6).sum())
        if row["mode"] == "change":
            n_de_diff = max(n_de_diff, abs(int(table["is_de_fdr"].sum()) - int(ref[f"is_de_fdr_{row['fdr_target']}"].sum())))
    return {"max_abs_diff": worst_exact, "worst_excess_z": worst_z, "genes_beyond_6se": n_out, "max_n_de_diff": n_de_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-cells", type=int, default=5000)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", choices=["default", "small"], default="default")
    parser.add_argument("--profile", action="store_true", help="Also profile the shared sweep (cProfile, top 25 by cumulative time).")
    args = parser.parse_args()

    import scvi

    from desweep import compute
    from desweep import composition as comp
    from desweep.de import check_plan
    from desweep.integrate import train_scvi
    from desweep.plan import default_grid, make_plan
    from desweep.simulate import SimulationParams, simulate

    compute.configure(threads=args.threads, seed=args.seed)
    t0 = time.perf_counter()
    adata = simulate(SimulationParams(n_cells=args.n_cells, n_genes=args.n_genes, n_batches=2, n_shared_clusters=3,
                                      n_specific_clusters=2, seed=args.seed))
    model, history, _ = train_scvi(adata, batch_key=BATCH_KEY, max_epochs=args.epochs, early_stopping=False, seed=args.seed)
    print(f"simulated {adata.n_obs} cells x {adata.n_vars} genes, trained {len(history)} epochs in {time.perf_counter() - t0:.0f} s")

    counts = comp.cluster_batch_counts(adata.obs, group_key=GROUP_KEY, batch_key=BATCH_KEY)
    status = comp.cluster_status(counts)
    comparisons = comp.comparison_table(status, [("only_batch0", "only_batch1"), ("only_batch0", "shared0")])
    if args.grid == "default":
        grid = default_grid()
    else:
        grid = {"batch_correction": [False, True], "batchids": ["all", "each"], "mode": ["vanilla", "change"],
                "delta": [0.25, 0.5, 1.0], "seeds": [args.seed], "weights": ["uniform"], "filter_outlier_cells": [False]}
    plan, _ = make_plan(comparisons, grid, batches=list(counts.columns))
    plan = check_plan(plan)
    per_comparison = plan.groupby("comparison_id").size().to_dict()
    print(f"plan: {per_comparison} combinations, {plan['sampling_key'].nunique()} sampling keys; "
          f"designs {dict(zip(comparisons['comparison_id'], comparisons['design'], strict=True))}")
    STATE.update(adata=adata, model=model, plan=plan, n_samples=args.n_samples)

    results = {}
    context = mp.get_context("fork")
    for name in ("naive", "sweep scvi", "sweep shared"):
        with context.Pool(1) as pool:
            tables, wall, cpu, peak = pool.apply(_in_child, (name,))
        results[name] = {"tables": tables, "wall": wall, "cpu": cpu, "peak": peak}
        print(f"{name:13s} {wall:7.1f} s wall  {cpu:7.1f} s CPU  peak RSS +{peak:6.0f} MiB")

    naive = results["naive"]
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}, {platform.python_version()}, "
          f"scvi-tools {scvi.__version__}; load average {os.getloadavg()[0]:.1f}")
    for name in ("sweep scvi", "sweep shared"):
        res = results[name]
        agree = _agreement(res["tables"], naive["tables"], plan, args.n_samples)
        exact = agree["max_abs_diff"] == 0.0
        verdict = "identical" if exact else ("agree within Monte Carlo error" if agree["genes_beyond_6se"] == 0 else "DISAGREE")
        print(f"{name}: speed-up {naive['wall'] / res['wall']:.1f}x wall, {naive['cpu'] / res['cpu']:.1f}x CPU; tables {verdict} "
              f"(max |diff| {agree['max_abs_diff']:.3g}, worst excess {agree['worst_excess_z']:.1f} SE, "
              f"n_de differs by <= {agree['max_n_de_diff']})")
    print(f"process peak RSS (whole run): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(_sweep, "shared")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Time and peak memory of `desweep normalize` (the export, not the training).

Simulates data (``desweep.simulate``), trains scVI for 1-2 epochs only on at
most ``--train-cells`` cells (the model's quality does not change the export
cost; the model is then loaded against every cell), writes a clustered.h5ad and
the model, then runs what `desweep normalize` runs (read, load, export, write)
in a fresh process and reports its wall time, the time of the export itself and
the process's peak resident memory.

    .venv/bin/python benchmarks/normalize_memory.py --cells 20000 --genes 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # peak so far, GiB

from desweep import compute, keys
from desweep.integrate import load_model
from desweep.cli.normalize import write_normalized_h5ad
from desweep.io import read_h5ad, write_csv
from desweep.normalize import export_normalized
args = json.loads(sys.argv[1])
compute.configure(threads=args["threads"], seed=0)
adata = read_h5ad(args["adata"])
model = load_model(args["model"], adata, accelerator=args["accelerator"])
t1 = time.perf_counter()
peak_load = rss()
out, means = export_normalized(adata, model, choices=args["choices"], n_samples=args["n_samples"],
                               library_size=1e4, max_memory_gb=args["max_memory_gb"], seed=0)
t2 = time.perf_counter()
peak_export = rss()
write_normalized_h5ad(out, args["outdir"] + "/" + keys.NORMALIZED_H5AD)
write_csv(means, args["outdir"] + "/" + keys.CLUSTER_BATCH_MEANS_CSV)
t3 = time.perf_counter()
info = out.uns[keys.UNS_NORMALIZE]
print(json.dumps({"load_s": t1 - t0, "export_s": t2 - t1, "write_s": t3 - t2, "layers": len(out.layers),
                  "chunk_size": int(info["chunk_size"]), "means_rows": len(means),
                  "peak_load_gib": peak_load, "peak_export_gib": peak_export}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-cells", type=int, default=20_000,
                        help="Train on the first N cells only (the export runs on every cell; its cost does not depend on training).")
    parser.add_argument("--n-samples", type=int, default=1)
    parser.add_argument("--choices", default="own_batch,each_batch,mean_all_batches")
    parser.add_argument("--max-memory-gb", type=float, default=16.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from desweep import compute
    from desweep.datakeys import DataKeys, set_keys
    from desweep.integrate import train_scvi
    from desweep.simulate import SimulationParams, simulate

    compute.configure(threads=args.threads, seed=0)
    t0 = time.perf_counter()
    adata = simulate(SimulationParams(n_cells=args.cells, n_genes=args.genes, n_batches=args.batches, seed=1))
    set_keys(adata, DataKeys(batch_key="batch", labels_key="cell_type", group_key="cell_type"))
    train = adata[: min(args.train_cells, adata.n_obs)].copy()
    model, _, _ = train_scvi(train, batch_key="batch", max_epochs=args.epochs, early_stopping=False,
                             accelerator=args.accelerator, seed=0)
    del train
    prep_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="desweep-bench-") as tmp:
        tmp = Path(tmp)
        adata_path = tmp / "clustered.h5ad"
        adata.write_h5ad(adata_path)
        model.save(str(tmp / "model"), save_anndata=False)
        del adata, model
        child_args = {"adata": str(adata_path), "model": str(tmp / "model"), "outdir": str(tmp),
                      "choices": args.choices.split(","), "n_samples": args.n_samples, "threads": args.threads,
                      "max_memory_gb": args.max_memory_gb, "accelerator": args.accelerator}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(child_args)], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"normalize failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        size_gb = (tmp / "normalized.h5ad").stat().st_size / 2**30
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB on Linux
    layers_gib = result["layers"] * args.cells * args.genes * 4 / 2**30
    print(
        f"normalize: {args.cells} cells x {args.genes} genes, {args.batches} batches, {result['layers']} layers "
        f"({args.choices}), n_samples={args.n_samples}, chunk {result['chunk_size']}, {args.threads} thread(s), "
        f"{args.accelerator}: export {result['export_s']:.1f} s, step {wall:.1f} s (read+load {result['load_s']:.1f} s, "
        f"write {result['write_s']:.1f} s), peak RSS {peak_gib:.2f} GiB (after read+load {result['peak_load_gib']:.2f}, "
        f"after export {result['peak_export_gib']:.2f}; layers {layers_gib:.2f} GiB), "
        f"h5ad {size_gb:.2f} GiB, means {result['means_rows']} rows; data+training {prep_s:.0f} s "
        f"({min(args.train_cells, args.cells)} cells, {args.epochs} epoch(s)); "
        f"{platform.node() or 'host'} {os.cpu_count()} cpus"
    )


if __name__ == "__main__":
    main()

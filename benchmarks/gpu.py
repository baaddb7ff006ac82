#!/usr/bin/env python3
"""scVI training on one GPU against the same machine's CPU cores, and what the larger GPU batch does to results.

Simulates cells with planted truth (the ``hard`` preset when ``desweep simulate``
has it, else the default simulator), then trains three models with a fixed
number of epochs, one after the other so that each has the machine to itself:

- ``cpu_b128``: the CPU cores, batch size 128 (scvi-tools' default);
- ``gpu_b128``: the GPU, batch size 128;
- ``gpu_auto``: the GPU, desweep's automatic batch size (1024 from about 40,000 cells).

Then, for each model (the three side by side, not timed against each other):
cluster, the confounded comparison (composition's first), the 16-combination
grid ``benchmarks/grid16.yaml``, normalize and diagnose. The table gives per
model: seconds per epoch (desweep's training log), the whole integrate step,
the held-out (validation) ELBO of the last epoch, the integration metrics, the
recommended setting and the share of planted markers of either group among the
top 50 genes of its tables (mean over the setting's seeds).

    python benchmarks/gpu.py --cells 50000 --epochs 10 --threads 16 --table gpu_table.csv

Needs a CUDA device; tests never run it. benchmarks/gpu_run.sh installs what the
GPU machine lacks and runs it there in one call. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from _timing import run_step

from desweep import keys

GRID = Path(__file__).parent / "grid16.yaml"
TOP_N = 50
RUNS = {"cpu_b128": ("cpu", "128"), "gpu_b128": ("gpu", "128"), "gpu_auto": ("gpu", None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=50_000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--preset", default="auto", help="Simulator preset: auto (hard when available, else default), or a name.")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--table", type=Path, default=None, help="Write the table here as CSV too.")
    parser.add_argument("--smoke-test-on-cpu", action="store_true",
                        help="Run every 'gpu' run on the CPU (checks this script where there is no GPU; its times mean nothing).")
    args = parser.parse_args()
    import torch

    if args.smoke_test_on_cpu:
        RUNS.update({name: ("cpu", batch) for name, (_, batch) in RUNS.items()})
    elif not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA device")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="desweep-gpu-"))
    data = workdir / "input.h5ad"
    preset = simulator_preset(args.preset)
    run_step(["simulate", "-o", str(data), "--n-cells", str(args.cells), "--n-genes", str(args.genes), "--seed", "0",
              *(["--preset", preset] if preset != "default" else [])])
    run_step(["validate", "-i", str(data), "--labels-key", "cell_type", "-o", str(workdir / "validate")])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (smoke test)"
    device = f"{gpu}, {args.cells} cells x {args.genes} genes ({preset} preset), {args.epochs} epochs, " \
             f"{args.threads} CPU threads"
    rows = {name: train(name, accelerator, batch, args, workdir) for name, (accelerator, batch) in RUNS.items()}
    write(rows, args.table, device)  # the training figures, in case the rest runs out of time
    with ThreadPoolExecutor(len(RUNS)) as pool:
        done = pool.map(lambda name: downstream(name, RUNS[name][0], args, workdir, data), RUNS)
        for name, results in zip(RUNS, done, strict=True):
            rows[name].update(results)
    write(rows, args.table, device)


def simulator_preset(requested: str) -> str:
    """``requested``, or for ``auto`` the hard preset when ``desweep simulate`` offers it."""
    if requested != "auto":
        return requested
    import click

    from desweep.cli import cli

    simulate = cli.get_command(click.Context(cli), "simulate")
    preset = next((p for p in simulate.params if p.name == "preset"), None)
    return "hard" if preset is not None and "hard" in getattr(preset.type, "choices", ["hard"]) else "default"


def train(name: str, accelerator: str, batch_size: str | None, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    out = workdir / name
    command = ["integrate", "-i", str(workdir / "validate" / keys.VALIDATED_H5AD), "--max-epochs", str(args.epochs),
               "--no-early-stopping", "--n-top-genes", "0", "--threads", str(args.threads), "--accelerator", accelerator,
               "--no-gpu-fallback", "-o", str(out / keys.STEP_INTEGRATE)]
    if batch_size:
        command += ["--batch-size", batch_size]
    measured = run_step(command)
    per_epoch = re.findall(r"trained \d+ epochs in [\d.]+ s \(([\d.]+) s/epoch\)", measured.log)
    history = pd.read_csv(out / keys.STEP_INTEGRATE / keys.HISTORY_CSV)
    metrics = pd.read_csv(out / keys.STEP_INTEGRATE / keys.METRICS_CSV).query("embedding == 'X_scVI'").set_index("metric")["value"]
    row = {"batch_size": int(metrics.get("batch_size")), "s_per_epoch": float(per_epoch[-1]) if per_epoch else float("nan"),
           "integrate_s": measured.seconds, "elbo_validation": float(history["elbo_validation"].iloc[-1])}
    row.update({m: float(metrics.get(m, float("nan"))) for m in ("batch_entropy", "batch_asw", "label_asw", "label_knn_purity")})
    print(f"{name}: {row}", flush=True)
    return row


def downstream(name: str, accelerator: str, args: argparse.Namespace, workdir: Path, data: Path) -> dict[str, object]:
    out = workdir / name
    threads = ["--threads", str(max(1, args.threads // len(RUNS)))]
    clustered = str(out / keys.STEP_CLUSTER / keys.CLUSTERED_H5AD)
    model = str(out / keys.STEP_INTEGRATE / keys.MODEL_DIR)
    plan = str(out / keys.STEP_DE / keys.PLAN_CSV)
    run_step(["cluster", "-i", str(out / keys.STEP_INTEGRATE / keys.INTEGRATED_H5AD), "-o", str(out / keys.STEP_CLUSTER)])
    run_step(["composition", "-i", clustered, "--max-comparisons", "1", "-o", str(out / keys.STEP_COMPOSITION)])
    comparisons = str(out / keys.STEP_COMPOSITION / keys.COMPARISONS_CSV)
    run_step(["plan", "--comparisons", comparisons, "--batch-counts", str(out / keys.STEP_COMPOSITION / keys.CLUSTER_BATCH_COUNTS_CSV),
              "--grid", str(GRID), "-o", str(out / keys.STEP_DE)])
    sweep = run_step(["de", "--plan", plan, "--input", clustered, "--model", model, "--all", "--accelerator", accelerator, *threads,
                      "-o", str(out / keys.STEP_DE)])
    run_step(["normalize", "--input", clustered, "--model", model, "--plan", plan, "--top-n", str(TOP_N), "--accelerator", accelerator,
              *threads, "-o", str(out / keys.STEP_NORMALIZE)])
    run_step(["diagnose", "--input", clustered, "--plan", plan, "--comparisons", comparisons, "--top-n", str(TOP_N), "--no-plots",
              "--means", str(out / keys.STEP_NORMALIZE / keys.CLUSTER_BATCH_MEANS_CSV), "-o", str(out / keys.STEP_DIAGNOSE)])
    setting, share = recommended_marker_share(out, data)
    return {"sweep_s (3 side by side)": sweep.seconds, "recommended_setting": setting, f"top{TOP_N}_planted_markers": share}


def recommended_marker_share(out: Path, data: Path) -> tuple[str, float]:
    """The recommended setting of the first comparison and the share of planted markers of either group in its top genes."""
    import anndata as ad

    var = ad.read_h5ad(data, backed="r").var
    plan = pd.read_csv(out / keys.STEP_DE / keys.PLAN_CSV, dtype=str, keep_default_na=False)
    rec = pd.read_csv(out / keys.STEP_DIAGNOSE / keys.RECOMMENDATIONS_CSV, dtype=str, keep_default_na=False).iloc[0]
    if rec.get("recommended_setting_id"):
        setting = rec["recommended_setting_id"]
    else:
        setting = plan.loc[plan["combination_id"] == rec["best_combination_id"], "setting_id"].iloc[0]
    if "truth_cluster" not in var:
        return setting, float("nan")
    markers = set(var.index[var["truth_cluster"].isin([rec["group1"], rec["group2"]])].astype(str))
    shares = []
    for cid in plan.loc[plan["setting_id"] == setting, "combination_id"]:
        table = pd.read_csv(out / keys.STEP_DE / keys.DE_TABLES_DIR / f"{cid}.csv", dtype={"gene": str}).nsmallest(TOP_N, "rank")
        shares.append(float(table["gene"].isin(markers).mean()))
    return setting, sum(shares) / len(shares)


def write(rows: dict[str, dict[str, object]], path: Path | None, device: str) -> None:
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("run")
    base = table.loc["cpu_b128"]
    table["epoch_speedup_vs_cpu"] = base["s_per_epoch"] / table["s_per_epoch"]
    pd.set_option("display.width", 250)
    print(f"\n{device}\n{table.round(3).to_string()}", flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path)
        path.with_suffix(".txt").write_text(f"{device}\n{table.round(3).to_string()}\n")


if __name__ == "__main__":
    main()

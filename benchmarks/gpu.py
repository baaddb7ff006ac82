#!/usr/bin/env python3
"""integrate + DE sweep on one GPU against the same machine's CPU cores.

Simulates 50,000 cells x 2,000 genes, then runs `desweep integrate` (fixed
epochs) and `desweep plan` + `desweep de --all` (16 combinations of one
confounded comparison) three times: on the CPU with scvi-tools' batch size 128,
on the GPU with batch size 128, and on the GPU with desweep's automatic batch
size (1024 at this size). Prints wall times, the GPU/CPU ratios, the final
validation ELBO, the integration metrics and, against the planted truth, the
share of planted markers among the top 50 genes of the recommended setting, so
that the effect of the larger batch on results is visible beside its speed.

    python benchmarks/gpu.py --cells 50000 --epochs 20 --threads 16

Needs a CUDA device; tests never run it. See docs/benchmarks.md for results.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from _timing import run_step  # noqa: E402

from desweep import keys  # noqa: E402

COMPARISON = "only_batch0:only_batch1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA device")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="desweep-gpu-"))
    data = workdir / "input.h5ad"
    run_step(["simulate", "-o", str(data), "--n-cells", str(args.cells), "--seed", "0"])
    run_step(["validate", "-i", str(data), "--labels-key", "cell_type", "-o", str(workdir / "validate")])
    runs = {"cpu_b128": ("cpu", "128"), "gpu_b128": ("gpu", "128"), "gpu_auto": ("gpu", None)}
    rows = [measure(name, device, batch, args, workdir) for name, (device, batch) in runs.items()]
    table = pd.DataFrame(rows).set_index("run")
    table["integrate_speedup_vs_cpu"] = table.loc["cpu_b128", "integrate_s"] / table["integrate_s"]
    table["sweep_speedup_vs_cpu"] = table.loc["cpu_b128", "sweep_s"] / table["sweep_s"]
    table["total_s"] = table["integrate_s"] + table["sweep_s"]
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    print(f"\n{torch.cuda.get_device_name(0)}, {args.cells} cells, {args.epochs} epochs, {args.threads} CPU threads")


def measure(name: str, device: str, batch_size: str | None, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    out = workdir / name
    common = ["--threads", str(args.threads), "--accelerator", device]
    integrate = ["integrate", "-i", str(workdir / "validate" / keys.VALIDATED_H5AD), "--max-epochs", str(args.epochs),
                 "--no-early-stopping", "--n-top-genes", "0", *common, "-o", str(out / "integrate")]
    if batch_size:
        integrate += ["--batch-size", batch_size]
    t_integrate = run_step(integrate).seconds
    run_step(["cluster", "-i", str(out / "integrate" / keys.INTEGRATED_H5AD), "-o", str(out / "cluster")])
    run_step(["composition", "-i", str(out / "cluster" / keys.CLUSTERED_H5AD), "--comparisons", COMPARISON, "-o", str(out / "composition")])
    run_step(["plan", "--comparisons", str(out / "composition" / keys.COMPARISONS_CSV),
              "--batch-counts", str(out / "composition" / keys.CLUSTER_BATCH_COUNTS_CSV), "-o", str(out / "de")])
    t_sweep = run_step(["de", "--plan", str(out / "de" / keys.PLAN_CSV), "--adata", str(out / "cluster" / keys.CLUSTERED_H5AD),
                        "--model", str(out / "integrate" / keys.MODEL_DIR), "--all", *common, "-o", str(out / "de")]).seconds
    history = pd.read_csv(out / "integrate" / keys.HISTORY_CSV)
    metrics = pd.read_csv(out / "integrate" / keys.METRICS_CSV).query("embedding == 'X_scVI'").set_index("metric")["value"]
    return {
        "run": name, "integrate_s": t_integrate, "sweep_s": t_sweep,
        "batch_size": metrics.get("batch_size"), "elbo_validation": history["elbo_validation"].iloc[-1],
        "batch_entropy": metrics.get("batch_entropy"), "label_asw": metrics.get("label_asw"),
        "top50_planted_markers": planted_marker_share(out, workdir / "input.h5ad"),
    }


def planted_marker_share(out: Path, data: Path, top_n: int = 50) -> float:
    """Share of planted markers of either group among the top genes of the batch-corrected, all-batch setting."""
    import anndata as ad

    var = ad.read_h5ad(data, backed="r").var
    markers = set(var.index[var["truth_cluster"].isin(["only_batch0", "only_batch1"])])
    plan = pd.read_csv(out / "de" / keys.PLAN_CSV)
    chosen = plan[(plan["batch_correction"].astype(str) == "True") & plan["batchid1"].isna()].iloc[0]
    table = pd.read_csv(out / "de" / keys.DE_TABLES_DIR / f"{chosen['combination_id']}.csv").nsmallest(top_n, "rank")
    return float(table["gene"].isin(markers).mean())


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The classifier, the recommendation and the consensus markers against planted truth.

For each preset (``hard``: 1,000 cells x 10,000 sparse genes, small groups, log2
effects 0.5-2; ``default``: the bundled example) and simulator seed, runs the
pipeline steps the answer needs (validate, integrate with K models, cluster,
composition with 3 comparisons, plan with the default grid, DE, diagnose) with the
runner's own arguments, each step in its own process, then scores the outputs:

- recall: of the planted markers of a comparison's groups that reach any
  combination's top N, the share classified cluster_specific (gene x combination rows);
- cross-errors: planted batch-wide genes called cluster_specific, planted markers
  called batch_wide (rows);
- the recommended setting's planted-marker share in its top N (mean over its
  replicates) against the best swept setting's, and against the best setting
  whose top N holds at most 5 % planted batch-wide genes; its batch-wide share
  (planted, and as classified);
- the consensus markers' top N against the recommended setting's own top N
  (planted-marker share);
- with K > 1 models: each model alone (diagnose on that model's rows) against
  the consensus over models: the recommended setting's planted-marker share and
  its between-model SD;
- the share of ``other`` among all classified top genes.

Steps whose outputs exist in the work folder are not rerun, so the script can be
stopped and resumed; step wall times are kept in ``timings.json``.

    .venv/bin/python benchmarks/planted_truth.py --workdir /tmp/planted --presets hard,default --seeds 0,1,2 \\
        --models hard=3,default=1 --epochs hard=200,default=100 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from _timing import run_step

from desweep import keys
from desweep.runner import load_config, resolve_steps

STEPS = ("validate", "integrate", "cluster", "composition", "plan", "de", "diagnose")
TOP_N = 50
#: a setting whose top N holds at most this share of planted batch-wide genes is "clean"
CLEAN = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--presets", default="hard,default")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default="hard=3,default=1", help="preset=K: scVI models trained per run.")
    parser.add_argument("--epochs", default="hard=200,default=100", help="preset=E: max training epochs (early stopping on).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-cells", default="", help="preset=N: simulate N cells instead of the preset's number "
                        "(the same preset at two sizes shows whether the answer degrades with size).")
    args = parser.parse_args()
    models, epochs, n_cells = _per_preset(args.models), _per_preset(args.epochs), _per_preset(args.n_cells)
    rows = []
    for preset in args.presets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            size = f"_n{n_cells[preset]}" if preset in n_cells else ""
            outdir = args.workdir / f"{preset}{size}_seed{seed}"
            run_pipeline(outdir, preset=preset, seed=seed, models=models.get(preset, 1), epochs=epochs.get(preset, 100),
                         threads=args.threads, n_cells=n_cells.get(preset))
            rows += score_run(outdir, preset=f"{preset}{size}", seed=seed)
            report(pd.DataFrame(rows), args.workdir)


def _per_preset(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (item.split("=") for item in text.split(",") if item)}


# --------------------------------------------------------------------------- running
def run_pipeline(outdir: Path, *, preset: str, seed: int, models: int, epochs: int, threads: int,
                 n_cells: int | None = None) -> None:
    data = outdir / "input.h5ad"
    timings_path = outdir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    if not data.exists():
        size = ["--n-cells", str(n_cells)] if n_cells else []
        timings["simulate"] = run_step(["simulate", "-o", str(data), "--preset", preset, "--seed", str(seed), *size]).seconds
    config = load_config(None, {
        "input": str(data), "outdir": str(outdir), "labels_key": "cell_type", "threads": threads, "seed": 0,
        "accelerator": "cpu", "models": models,
    }, (f"integrate.max_epochs={epochs}", "composition.max_comparisons=3", "diagnose.plots=false"))
    for item in resolve_steps(config).values():
        step = item.step
        if step.command_name not in STEPS:
            continue
        folder = outdir / step.folder
        if all((folder / name).exists() for name in step.outputs):
            continue
        measured = run_step([step.command_name, *item.args])
        timings[step.name] = measured.seconds
        print(f"{outdir.name:<16} {step.name:<24} {measured.seconds:8.1f} s {measured.peak_mib:7.0f} MiB "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
        timings_path.write_text(json.dumps(timings, indent=1))


# --------------------------------------------------------------------------- scoring
def planted(var: pd.DataFrame, comparison: pd.Series) -> tuple[set[str], set[str]]:
    """The planted markers of the comparison's groups, and every planted batch-wide gene."""
    groups = {str(comparison["group1"]), str(comparison["group2"])}
    markers = set(var.index[(var["truth_pattern"] == "marker") & var["truth_cluster"].isin(groups)])
    batch_wide = set(var.index[var["truth_pattern"] == "batch_wide"])
    return markers, batch_wide


def diagnose_subset(outdir: Path, plan: pd.DataFrame, tables: dict, comparisons: pd.DataFrame, adata) -> dict:
    from desweep.diagnose import diagnose

    return diagnose(adata, plan, {c: tables[c] for c in plan["combination_id"] if c in tables}, comparisons, top_n=TOP_N)


def planted_share(patterns: pd.DataFrame, genes: set[str]) -> pd.Series:
    """Per combination: the share of its top genes in ``genes``."""
    return patterns.assign(hit=patterns["gene"].isin(genes)).groupby("combination_id")["hit"].mean()


def setting_planted_shares(patterns: pd.DataFrame, genes: set[str]) -> pd.Series:
    """Per setting: the mean over its replicates of the share of its top genes in ``genes``."""
    per_combination = planted_share(patterns, genes)
    setting_of = patterns.drop_duplicates("combination_id").set_index("combination_id")["setting_id"]
    return per_combination.groupby(setting_of.reindex(per_combination.index)).mean()


def score_run(outdir: Path, *, preset: str, seed: int) -> list[dict]:
    from desweep.io import read_csv, read_h5ad

    diag = outdir / keys.STEP_DIAGNOSE
    adata = read_h5ad(outdir / keys.STEP_CLUSTER / keys.CLUSTERED_H5AD)
    var = read_h5ad(outdir / "input.h5ad", backed=True).var
    comparisons = read_csv(outdir / keys.STEP_COMPOSITION / keys.COMPARISONS_CSV).astype({"comparison_id": str})
    patterns = pd.read_csv(diag / keys.GENE_PATTERNS_CSV, dtype={"gene": str, "setting_id": str})
    rec = pd.read_csv(diag / keys.RECOMMENDATIONS_CSV).set_index("comparison_id")
    markers = pd.read_csv(diag / keys.MARKERS_CSV, dtype={"gene": str})
    plan = pd.read_csv(outdir / keys.STEP_DE / keys.PLAN_CSV, dtype={"batchid1": str, "batchid2": str})
    n_models = int(plan["model"].max()) + 1
    single = {}
    if n_models > 1:
        tables = {c: pd.read_csv(outdir / keys.STEP_DE / keys.DE_TABLES_DIR / f"{c}.csv", dtype={"gene": str})
                  for c in plan["combination_id"]}
        single = {k: diagnose_subset(outdir, plan[plan["model"] == k], tables, comparisons, adata) for k in range(n_models)}
    rows = []
    for _, comp in comparisons.iterrows():
        cid = comp["comparison_id"]
        if cid not in rec.index:
            continue
        truth_markers, truth_batch = planted(var, comp)
        part = patterns[patterns["comparison_id"] == cid]
        is_marker, is_batch = part["gene"].isin(truth_markers), part["gene"].isin(truth_batch)
        shares = setting_planted_shares(part, truth_markers)
        batch_shares = setting_planted_shares(part, truth_batch)
        best_setting = rec.loc[cid, "recommended_setting_id"]
        top_markers = markers[markers["comparison_id"] == cid].sort_values("rank").head(TOP_N)
        row = {
            "preset": preset, "seed": seed, "comparison_id": cid, "design": comp["design"], "models": n_models,
            "n_rows": len(part), "recall": float((part.loc[is_marker, "pattern"] == "cluster_specific").mean()),
            "n_marker_rows": int(is_marker.sum()),
            "cross_errors": int(((part["pattern"] == "cluster_specific") & is_batch).sum()
                                + ((part["pattern"] == "batch_wide") & is_marker).sum()),
            "share_other": float((part["pattern"] == "other").mean()),
            "rec_marker_share": float(shares.get(best_setting, np.nan)), "best_marker_share": float(shares.max()),
            "best_clean_marker_share": float(shares[batch_shares.reindex(shares.index) <= CLEAN].max()),
            "rec_batch_share_planted": float(batch_shares.get(best_setting, np.nan)),
            "rec_batch_share_called": float(rec.loc[cid, "share_batch_wide"]),
            "default_batch_share_called": float(rec.loc[cid, "default_share_batch_wide"]),
            "n_markers": int(rec.loc[cid, "n_markers"]),
            "n_planted_markers": int(top_markers["gene"].isin(truth_markers).sum()),
            "consensus_top_marker_share": float(top_markers["gene"].isin(truth_markers).mean()) if len(top_markers) else np.nan,
            "consensus_batch_wide": int(top_markers["gene"].isin(truth_batch).sum()),
            "model_spread_sd": float(rec.loc[cid, "model_spread_sd"]),
        }
        for k, result in single.items():
            srec = result["recommendations"].set_index("comparison_id")
            spat = result["gene_patterns"]
            sshares = setting_planted_shares(spat[spat["comparison_id"] == cid], truth_markers)
            smark = result["markers"][result["markers"]["comparison_id"] == cid].sort_values("rank").head(TOP_N)
            row[f"model{k}_rec_marker_share"] = float(sshares.get(srec.loc[cid, "recommended_setting_id"], np.nan))
            row[f"model{k}_consensus_top_marker_share"] = float(smark["gene"].isin(truth_markers).mean()) if len(smark) else np.nan
            row[f"model{k}_n_markers"] = len(smark)
            row[f"model{k}_n_planted_markers"] = int(smark["gene"].isin(truth_markers).sum())
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- report
def report(results: pd.DataFrame, workdir: Path) -> None:
    results.to_csv(workdir / "planted_truth.csv", index=False)
    pd.set_option("display.width", 250)
    columns = ["preset", "seed", "comparison_id", "recall", "cross_errors", "rec_marker_share", "best_marker_share",
               "best_clean_marker_share", "rec_batch_share_planted", "rec_batch_share_called", "consensus_top_marker_share",
               "n_markers", "share_other"]
    print("\n" + results[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for preset, part in results.groupby("preset", sort=False):
        gap = (part["best_marker_share"] - part["rec_marker_share"]) * 100
        clean_gap = (part["best_clean_marker_share"] - part["rec_marker_share"]) * 100
        print(f"\n{preset}: recall {part['recall'].mean():.1%} (min {part['recall'].min():.1%}), cross-errors "
              f"{int(part['cross_errors'].sum())}, recommended vs best planted-marker share: gap {gap.mean():.1f} points "
              f"(max {gap.max():.1f}); vs the best setting with <= {CLEAN:.0%} planted batch-wide genes: gap "
              f"{clean_gap.mean():.1f} (max {clean_gap.max():.1f}); "
              f"recommended batch-wide share planted {part['rec_batch_share_planted'].max():.1%} max, "
              f"called {part['rec_batch_share_called'].max():.1%} max; consensus top {TOP_N} "
              f"{part['consensus_top_marker_share'].mean():.1%} vs recommended setting's top {TOP_N} "
              f"{part['rec_marker_share'].mean():.1%} planted markers; other {part['share_other'].mean():.1%}")
        singles = [c for c in part.columns if c.startswith("model") and c.endswith("_rec_marker_share")]
        if singles and part[singles].notna().any().any():
            per_model = part[singles]
            print(f"{preset}, {len(singles)} models: single-model recommended planted-marker share {per_model.stack().mean():.1%} "
                  f"(between-model SD {per_model.std(axis=1, ddof=1).mean():.1%} on average, SD over runs "
                  f"{per_model.stack().std(ddof=1):.1%}); consensus over models {part['rec_marker_share'].mean():.1%} "
                  f"(SD over runs {part['rec_marker_share'].std(ddof=1):.1%}); model_spread_sd {part['model_spread_sd'].mean():.1%}")
            tops = part[[c.replace("rec_marker_share", "consensus_top_marker_share") for c in singles]]
            counts = part[[c.replace("rec_marker_share", "n_markers") for c in singles]]
            planted_counts = part[[c.replace("rec_marker_share", "n_planted_markers") for c in singles]]
            print(f"{preset}: consensus markers' top {TOP_N} from one model {tops.stack().mean():.1%} planted "
                  f"(SD {tops.stack().std(ddof=1):.1%}; {counts.stack().mean():.1f} markers, {planted_counts.stack().mean():.1f} "
                  f"planted, per comparison), from all models {part['consensus_top_marker_share'].mean():.1%} "
                  f"(SD {part['consensus_top_marker_share'].std(ddof=1):.1%}; {part['n_markers'].mean():.1f} markers, "
                  f"{part['n_planted_markers'].mean():.1f} planted)")
    print_costs(workdir)
    print(f"load average: {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)


def print_costs(workdir: Path) -> None:
    """Step wall times per run (timings.json): the CPU price of each model replicate."""
    for path in sorted(workdir.glob("*/timings.json")):
        timings = json.loads(path.read_text())
        training = [v for k, v in timings.items() if k.startswith("integrate")]
        print(f"{path.parent.name}: {len(training)} model(s), training {sum(training):.0f} s "
              f"({np.mean(training):.0f} s per model), DE {timings.get('de', float('nan')):.0f} s, "
              f"diagnose {timings.get('diagnose', float('nan')):.0f} s")


if __name__ == "__main__":
    main()

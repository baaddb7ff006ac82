#!/usr/bin/env python3
"""The answer against a truth that is not the classifier's: the user's contrast, group1 vs group2 in a common batch.

Datasets (``--datasets``, comma-separated):

- ``realistic<S>``: ``desweep simulate --preset realistic --seed S`` (batch x cell-type
  interactions, donors, ambient RNA, a related pair of groups; src/desweep/simulate.py);
  the truth of a comparison is the simulator's contrast of the two groups' expected
  expression without batch, interaction, donor or ambient terms;
- ``pbmc_confounded``, ``pbmc_one_specific``: holdouts of the shared PBMC data built by
  benchmarks/holdouts.py (a cell type kept in one batch only); the truth is the
  within-batch DE of the two cell types on the full data.

For each, the pipeline steps the answer needs (validate, integrate with ``--models``
training seeds, cluster with the given labels, composition with the dataset's
comparisons, plan with ``--grid``, DE, normalize, diagnose) run in ``WORKDIR/<dataset>``,
each step in its own process; a step whose outputs exist is not rerun. Then, per
comparison and averaged over training seeds (each model's rows of the DE tables
scored apart):

- precision@50 (share of the top 50 that are true markers) and the batch-wide, null and
  interaction shares of the top 50, for the final list (diagnostics/markers.csv, ranked by ``rank``;
  and its ``confidence == "high"`` rows alone when the column exists), the
  recommended setting, the bridge contrast alone (diagnostics/bridge.csv), scVI's
  default, the ``batch_correction=True, mode=change, delta=0.5`` anchor (all batches)
  and the best single swept setting (chosen with the truth: an upper bound);
- null genes called cluster_specific: the share of classified cluster_specific top
  genes (gene_patterns.csv) that are true nulls;
- interaction genes flagged (simulated data: planted interaction genes of the
  comparison's batches in its top 50 of any setting): heterogeneous in bridge.csv,
  or the comparison not identifiable in bridge_summary.csv;
- coverage: the share of true contrasts of planted (marker) genes within
  ``lfc +- 1.96 se`` of bridge.csv.

Outputs that the code of this checkout does not write yet (bridge.csv,
bridge_summary.csv, markers.csv's ``confidence``) are reported as missing (NaN),
so rerunning diagnose with newer code on the cached runs and rescoring
(``--score-only``) fills them in. The table per dataset is printed and written as
``WORKDIR/answer_truth_<dataset>.csv`` (one row per comparison x estimator,
``answer_truth.csv`` for all).

    .venv/bin/python benchmarks/answer_truth.py --workdir /work/cache/bench --datasets realistic0,pbmc_confounded \\
        --models 2 --epochs 150 --threads 1
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

REPO = Path(__file__).resolve().parents[1]
STEPS = ("validate", "integrate", "cluster", "composition", "plan", "de", "normalize", "diagnose")
TOP_N = 50
Z = 1.96
PBMC = Path(os.environ.get("DESWEEP_SHARED_DATA", REPO.parent / "shared" / "data")) / "pbmc_3tech.h5ad"
#: the comparisons of each real-data holdout (benchmarks/holdouts.py)
HOLDOUT_COMPARISONS = {"pbmc_confounded": "B cells:Monocytes", "pbmc_one_specific": "B cells:Monocytes"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--datasets", default="realistic0,pbmc_confounded,pbmc_one_specific")
    parser.add_argument("--models", type=int, default=2, help="scVI models (training seeds 0..K-1) per dataset.")
    parser.add_argument("--epochs", type=int, default=150, help="max training epochs (early stopping on).")
    parser.add_argument("--grid", type=Path, default=Path(__file__).parent / "grid16.yaml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pbmc", type=Path, default=PBMC, help="The shared PBMC data (holdouts).")
    parser.add_argument("--score-only", action="store_true", help="Score the cached outputs; run nothing.")
    parser.add_argument("--rerun", default="", help="Comma-separated steps (e.g. diagnose) to run again on the cached runs, and "
                        "no other step: for rescoring with newer diagnose code.")
    args = parser.parse_args()
    names = args.datasets.split(",")
    if not args.score_only:
        for name in names:
            data, comparisons = prepare_dataset(name, args.workdir / "data", args.pbmc)
            run_pipeline(args.workdir / name, data, comparisons, models=args.models, epochs=args.epochs, grid=args.grid,
                         threads=args.threads, rerun=tuple(s for s in args.rerun.split(",") if s))
    frames = []
    for name in names:
        outdir = args.workdir / name
        truth = read_truth(name, args.workdir / "data")
        if not (outdir / keys.STEP_DIAGNOSE / keys.GENE_PATTERNS_CSV).exists():
            print(f"{name}: no diagnose outputs in {outdir}; not scored", flush=True)
            continue
        table, checks = score_run(outdir, truth, args.workdir / "data" / f"{name}.h5ad")
        for frame in (table, checks):
            frame.insert(0, "dataset", name)
        table.to_csv(args.workdir / f"answer_truth_{name}.csv", index=False)
        checks.to_csv(args.workdir / f"answer_truth_checks_{name}.csv", index=False)
        print_table(name, table, checks)
        frames.append((table, checks))
    if frames:
        tables = pd.concat([t for t, _ in frames], ignore_index=True)
        tables.to_csv(args.workdir / "answer_truth.csv", index=False)
        pd.concat([c for _, c in frames], ignore_index=True).to_csv(args.workdir / "answer_truth_checks.csv", index=False)
        summary = summarize(tables)
        summary.to_csv(args.workdir / "answer_truth_summary.csv")
        print("\nmean over comparisons: precision@50 / batch-wide share / null share\n" + summary.to_string(), flush=True)
    print_costs(args.workdir, args.datasets.split(","))


# --------------------------------------------------------------------------- data
def prepare_dataset(name: str, datadir: Path, pbmc: Path) -> tuple[Path, str]:
    """The input .h5ad of dataset ``name`` (built once under ``datadir``) and its comparisons."""
    datadir.mkdir(parents=True, exist_ok=True)
    path = datadir / f"{name}.h5ad"
    if name.startswith("realistic"):
        if not path.exists():
            run_step(["simulate", "-o", str(path), "--preset", "realistic", "--seed", name.removeprefix("realistic")])
        if not truth_path(name, datadir).exists():
            from desweep.io import read_h5ad
            from desweep.simulate_realistic import contrast_truth

            contrast_truth(read_h5ad(path, backed=True)).to_csv(truth_path(name, datadir), index=False)
        return path, ";".join(f"{a}:{b}" for a, b in _simulated_comparisons(datadir, name))
    if name in HOLDOUT_COMPARISONS:
        if not path.exists():
            import holdouts

            holdouts.build(pbmc, datadir, tuple(h for h in holdouts.PBMC_HOLDOUTS if h.name == name))
        return path, HOLDOUT_COMPARISONS[name]
    raise SystemExit(f"unknown dataset {name!r}")


def truth_path(name: str, datadir: Path) -> Path:
    return datadir / f"{name}_truth.csv"


def _simulated_comparisons(datadir: Path, name: str) -> list[tuple[str, str]]:
    truth = read_truth(name, datadir)
    return list(truth[["group1", "group2"]].drop_duplicates().itertuples(index=False, name=None))


def read_truth(name: str, datadir: Path) -> pd.DataFrame:
    """One row per comparison x gene: group1, group2, gene, truth_pattern, truth_log2fc (and more)."""
    return pd.read_csv(truth_path(name, datadir), dtype={"gene": str, "comparison_id": str}, keep_default_na=False,
                       na_values={"truth_log2fc": ["", "nan"]})


# --------------------------------------------------------------------------- running
def run_pipeline(outdir: Path, data: Path, comparisons: str, *, models: int, epochs: int, grid: Path, threads: int,
                 rerun: tuple[str, ...] = ()) -> None:
    """Run the steps whose outputs are missing, each in its own process; wall times go to ``timings.json``.

    With ``rerun``, run those steps (by name) again and no other.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    timings_path = outdir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    config = load_config(None, {
        "input": str(data), "outdir": str(outdir), "labels_key": "cell_type", "threads": threads, "seed": 0,
        "accelerator": "cpu", "models": models,
    }, (f"integrate.max_epochs={epochs}", f"composition.comparisons={comparisons}", f"plan.grid={grid}",
        "diagnose.plots=false"))
    for item in resolve_steps(config).values():
        step = item.step
        if step.command_name not in STEPS:
            continue
        folder = outdir / step.folder
        if rerun and step.name not in rerun:
            continue
        if not rerun and all((folder / name).exists() for name in step.outputs):
            continue
        measured = run_step([step.command_name, *item.args])
        timings[step.name] = measured.seconds
        timings[f"{step.name}_cpu"] = measured.cpu_seconds
        print(f"{outdir.name:<20} {step.name:<24} {measured.seconds:8.1f} s wall {measured.cpu_seconds:8.1f} s CPU "
              f"{measured.peak_mib:7.0f} MiB (load {os.getloadavg()[0]:.1f})", flush=True)
        timings_path.write_text(json.dumps(timings, indent=1))


# --------------------------------------------------------------------------- scoring
#: the prototype's expression floor: counts per million in the higher group
MIN_CPM = 10.0


def pseudobulk_log2_cpm(adata, *, batch_key: str = "batch", labels_key: str = "cell_type") -> pd.DataFrame:
    """log2(CPM + 1) of the summed counts of every cluster x batch with at least 10 cells (columns ``(cluster, batch)``)."""
    obs = adata.obs
    columns, sums = [], []
    for (cluster, batch), index in obs.groupby([labels_key, batch_key], observed=True).indices.items():
        if len(index) >= 10:
            columns.append((str(cluster), str(batch)))
            sums.append(np.asarray(adata.X[index].sum(axis=0)).ravel())
    counts = np.column_stack(sums)
    cpm = counts / counts.sum(axis=0, keepdims=True) * 1e6
    return pd.DataFrame(np.log2(cpm + 1), index=adata.var_names, columns=pd.MultiIndex.from_tuples(columns))


def prototype_bridge(profile: pd.DataFrame, group1: str, group2: str) -> list[str]:
    """The issue's 30-line check: genes ranked by |group1 - group2 - shift|, the shift averaged over bridge clusters.

    For each batch b1 of group1 and b2 of group2, the contrast is
    ``g1[b1] - g2[b2] - mean over bridges c of (c[b1] - c[b2])`` (no shift when b1 == b2),
    averaged over the pairs; genes below MIN_CPM in the higher group are left out. No
    training, no replicates, no error bars: a reference for the bridge contrast.
    """
    clusters = {c for c, _ in profile.columns}
    batches_of = {c: [b for cc, b in profile.columns if cc == c] for c in clusters}
    estimates = []
    for b1 in batches_of.get(group1, []):
        for b2 in batches_of.get(group2, []):
            bridges = [c for c in clusters - {group1, group2} if b1 in batches_of[c] and b2 in batches_of[c]]
            if b1 != b2 and not bridges:
                continue
            shift = np.mean([profile[(c, b1)] - profile[(c, b2)] for c in bridges], axis=0) if b1 != b2 else 0.0
            estimates.append(profile[(group1, b1)] - profile[(group2, b2)] - shift)
    if not estimates:
        return []
    contrast = pd.concat(estimates, axis=1).mean(axis=1)
    high1 = profile[[(group1, b) for b in batches_of[group1]]].mean(axis=1)
    high2 = profile[[(group2, b) for b in batches_of[group2]]].mean(axis=1)
    expressed = np.where(contrast > 0, high1, high2) >= np.log2(MIN_CPM + 1)
    return contrast[expressed].abs().sort_values(ascending=False, kind="stable").index.astype(str).tolist()


def _read(path: Path, **kwargs) -> pd.DataFrame | None:
    return pd.read_csv(path, **kwargs) if path.exists() else None


def top_share(genes: list[str], labels: pd.Series) -> dict[str, float]:
    """Precision@N (true markers), batch-wide and null shares of a top list, given each gene's truth label."""
    found = labels.reindex(genes)
    n = len(genes)
    share = (lambda p: float((found == p).sum() / n)) if n else (lambda p: float("nan"))
    return {"precision_at_50": share("marker"), "batch_wide_share": share("batch_wide"), "null_share": share("null"),
            "interaction_share": share("interaction"), "n_genes": n}


def setting_scores(plan: pd.DataFrame, tables_dir: Path, labels: pd.Series) -> pd.DataFrame:
    """Per setting and model: the top-N shares averaged over the posterior-sampling seeds, then over models."""
    rows = []
    for _, combo in plan.iterrows():
        path = tables_dir / f"{combo['combination_id']}.csv"
        if not path.exists():
            continue
        table = pd.read_csv(path, dtype={"gene": str}, usecols=lambda c: c in ("gene", "rank"))
        top = table.sort_values("rank", kind="stable")["gene"].head(TOP_N).tolist() if "rank" in table else table["gene"].head(TOP_N).tolist()
        rows.append({"setting_id": combo["setting_id"], "model": combo["model"], **top_share(top, labels)})
    per_model = pd.DataFrame(rows).groupby(["setting_id", "model"]).mean(numeric_only=True)
    return per_model.groupby("setting_id").agg(["mean", "std"])


def _setting_row(scores: pd.DataFrame, setting_id: str | None) -> dict[str, float]:
    if setting_id is None or setting_id not in scores.index:
        return {"setting_id": setting_id}
    row = scores.loc[setting_id]
    metrics = ("precision_at_50", "batch_wide_share", "null_share", "interaction_share", "n_genes")
    return {"setting_id": setting_id, **{m: float(row[(m, "mean")]) for m in metrics},
            "precision_sd_over_models": float(row[("precision_at_50", "std")])}


def _anchor_id(plan: pd.DataFrame) -> str | None:
    hit = plan[plan["batch_correction"].astype(str).str.lower().eq("true") & (plan["decoding"] == "all") & (plan["mode"] == "change")
               & np.isclose(pd.to_numeric(plan["delta"], errors="coerce"), 0.5)]
    return str(hit["setting_id"].iloc[0]) if len(hit) else None


def _default_id(plan: pd.DataFrame) -> str | None:
    hit = plan[plan["batch_correction"].astype(str).str.lower().eq("false") & (plan["mode"] == "vanilla")]
    return str(hit["setting_id"].iloc[0]) if len(hit) else None


def score_run(outdir: Path, truth: pd.DataFrame, data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per comparison x estimator (top-N shares), and one row per comparison of checks (module docstring)."""
    from desweep.io import read_h5ad

    profile = pseudobulk_log2_cpm(read_h5ad(data))
    de, diag = outdir / keys.STEP_DE, outdir / keys.STEP_DIAGNOSE
    plan = pd.read_csv(de / keys.PLAN_CSV, dtype={"batchid1": str, "batchid2": str, "setting_id": str, "combination_id": str,
                                                    "comparison_id": str})
    rec = _read(diag / keys.RECOMMENDATIONS_CSV, dtype={"comparison_id": str, "recommended_setting_id": str, "default_setting_id": str})
    markers = _read(diag / keys.MARKERS_CSV, dtype={"comparison_id": str, "gene": str})
    patterns = _read(diag / keys.GENE_PATTERNS_CSV, dtype={"comparison_id": str, "gene": str, "setting_id": str})
    bridge = _read(diag / "bridge.csv", dtype={"comparison_id": str, "gene": str})
    summary = _read(diag / "bridge_summary.csv", dtype={"comparison_id": str})
    comparisons = plan.drop_duplicates("comparison_id")[["comparison_id", "group1", "group2"]]
    rows, checks = [], []
    for _, comp in comparisons.iterrows():
        cid, g1, g2 = comp["comparison_id"], str(comp["group1"]), str(comp["group2"])
        part_truth = truth[((truth["group1"] == g1) & (truth["group2"] == g2)) | ((truth["group1"] == g2) & (truth["group2"] == g1))]
        flip = -1.0 if len(part_truth) and part_truth["group1"].iloc[0] != g1 else 1.0
        labels = part_truth.set_index("gene")["truth_pattern"]
        true_lfc = part_truth.set_index("gene")["truth_log2fc"] * flip
        sub = plan[plan["comparison_id"] == cid]
        scores = setting_scores(sub, de / keys.DE_TABLES_DIR, labels)
        base = {"comparison_id": cid, "group1": g1, "group2": g2, "n_true_markers": int((labels == "marker").sum())}
        rec_row = rec[rec["comparison_id"] == cid].iloc[0] if rec is not None and (rec["comparison_id"] == cid).any() else None
        final = markers[markers["comparison_id"] == cid].sort_values("rank") if markers is not None else None
        rows.append({**base, "estimator": "final_list",
                     **(top_share(final["gene"].head(TOP_N).tolist(), labels) if final is not None else {}),
                     "n_listed": len(final) if final is not None else 0,
                     "note": "" if final is not None and "confidence" in final else "consensus markers only (markers.csv has no confidence column)"})
        if final is not None and "confidence" in final:
            high = final[final["confidence"].astype(str) == "high"]
            rows.append({**base, "estimator": "final_list_high", **top_share(high["gene"].head(TOP_N).tolist(), labels),
                         "n_listed": len(high), "note": "confidence == high"})
        rows.append({**base, "estimator": "recommended", **_setting_row(scores, None if rec_row is None else str(rec_row["recommended_setting_id"]))})
        bridge_part = bridge[bridge["comparison_id"] == cid].sort_values("rank") if bridge is not None else None
        rows.append({**base, "estimator": "bridge", **(top_share(bridge_part["gene"].head(TOP_N).tolist(), labels)
                                                       if bridge_part is not None else {}),
                     "note": "" if bridge is not None else "no bridge.csv"})
        rows.append({**base, "estimator": "scvi_default", **_setting_row(scores, _default_id(sub))})
        rows.append({**base, "estimator": "anchor_bc_change_0.5", **_setting_row(scores, _anchor_id(sub))})
        best = scores[("precision_at_50", "mean")].idxmax() if len(scores) else None
        rows.append({**base, "estimator": "best_swept", **_setting_row(scores, best), "note": "chosen with the truth"})
        rows.append({**base, "estimator": "bridge_prototype", **top_share(prototype_bridge(profile, g1, g2)[:TOP_N], labels),
                     "note": "pseudobulk log2 CPM, shift averaged over bridges (every gene, no training)"})
        checks.append({**base, **_checks(cid, patterns, bridge_part, summary, labels, true_lfc)})
    return pd.DataFrame(rows), pd.DataFrame(checks)


def _checks(cid: str, patterns: pd.DataFrame | None, bridge: pd.DataFrame | None, summary: pd.DataFrame | None,
            labels: pd.Series, true_lfc: pd.Series) -> dict[str, float]:
    out: dict[str, float] = {}
    if patterns is not None:
        called = patterns[(patterns["comparison_id"] == cid) & (patterns["pattern"] == "cluster_specific")]
        is_null = labels.reindex(called["gene"]).eq("null").to_numpy()
        per_model = pd.Series(is_null).groupby(called["model"].to_numpy() if "model" in called else np.zeros(len(called))).mean()
        out.update(null_called_cluster_specific=float(per_model.mean()) if len(per_model) else float("nan"),
                   n_cluster_specific_rows=len(called))
    identifiable = None
    if summary is not None and (summary["comparison_id"] == cid).any():
        identifiable = bool(summary.loc[summary["comparison_id"] == cid, "identifiable"].astype(str).str.lower().eq("true").iloc[0])
        out["identifiable"] = identifiable
    interaction = labels.index[labels == "interaction"]
    out["n_interaction_genes"] = len(interaction)
    if bridge is not None and len(interaction):
        het = bridge.set_index("gene")["heterogeneous"].astype(str).str.lower().eq("true").reindex(interaction, fill_value=False)
        out["interaction_flagged"] = float(1.0 if identifiable is False else het.mean())
    if bridge is not None and {"lfc", "se"} <= set(bridge.columns):
        planted = bridge[bridge["gene"].map(labels).eq("marker")]
        truth = planted["gene"].map(true_lfc)
        inside = (truth - planted["lfc"]).abs() <= Z * planted["se"]
        out.update(coverage_markers=float(inside.mean()) if len(inside) else float("nan"), n_coverage=len(inside))
        allg = bridge["gene"].map(true_lfc)
        ok = allg.notna()
        out["coverage_all_genes"] = float(((allg[ok] - bridge.loc[ok, "lfc"]).abs() <= Z * bridge.loc[ok, "se"]).mean())
    return out


def summarize(tables: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and estimator: ``precision / batch-wide / null`` shares of the top 50, means over comparisons (percent)."""
    order = list(dict.fromkeys(tables["estimator"]))
    means = tables.groupby(["dataset", "estimator"], sort=False)[["precision_at_50", "batch_wide_share", "null_share"]].mean() * 100
    text = means.apply(lambda r: " / ".join("-" if np.isnan(v) else f"{v:.0f}" for v in r), axis=1)
    return text.unstack("estimator").reindex(columns=order)


def print_table(name: str, table: pd.DataFrame, checks: pd.DataFrame) -> None:
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    hidden = ["dataset", "comparison_id", "setting_id", "note"]
    print(f"\n{name} (setting ids and notes in the CSV)\n" + table.drop(columns=hidden, errors="ignore").to_string(index=False, float_format=fmt),
          flush=True)
    print(checks.drop(columns=["dataset", "comparison_id"]).to_string(index=False, float_format=fmt), flush=True)


def print_costs(workdir: Path, names: list[str]) -> None:
    """Step wall and CPU times per dataset (timings.json)."""
    for name in names:
        path = workdir / name / "timings.json"
        if path.exists():
            timings = json.loads(path.read_text())
            print(f"{name}: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if not k.endswith("_cpu")))
    print(f"load average: {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    main()

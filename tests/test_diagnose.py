"""Diagnostics: top-gene classification against the planted truth, scores, concordance, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from desweep import keys
from desweep.cli import cli

# --------------------------------------------------------------------------- helpers (also used by test_report.py)
TOP_N = 50


def planted_adata(sim):
    """``sim_small`` as ``desweep cluster`` leaves it: keys recorded, planted labels as groups, a UMAP."""
    from desweep.datakeys import DataKeys, set_keys

    adata = sim.copy()
    set_keys(adata, DataKeys(batch_key="batch", labels_key="cell_type", group_key="cell_type"))
    rng = np.random.default_rng(0)
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    adata.obsm[keys.X_UMAP] = np.column_stack([np.cos(codes) * 5, np.sin(codes) * 5]) + rng.normal(0, 0.6, (adata.n_obs, 2))
    return adata


def planted_comparisons(adata) -> pd.DataFrame:
    from desweep import composition as comp

    counts = comp.cluster_batch_counts(adata.obs, group_key="cell_type", batch_key="batch")
    status = comp.cluster_status(counts)
    pairs = [("only_batch0", "only_batch1"), ("only_batch0", "shared1"), ("shared2", "only_batch1")]
    return comp.comparison_table(status, pairs)


def truth_table(adata, comparison: pd.Series, kind: str, seed: int) -> pd.DataFrame:
    """A DE table like ``desweep de`` writes, built from the planted truth plus noise.

    ``corrected``: planted markers of both groups first (signed by group);
    ``naive``: also the batch-wide genes of the groups' own batches (as an
    uncorrected, confounded comparison would rank them); ``noise``: no signal.
    """
    var = adata.var
    rng = np.random.default_rng(seed)
    g1, g2 = comparison["group1"], comparison["group2"]
    b1, b2 = set(comparison["group1_batches"].split(";")), set(comparison["group2_batches"].split(";"))
    lfc = np.zeros(adata.n_vars)
    if kind in ("corrected", "naive"):
        for group, sign in ((g1, 1), (g2, -1)):
            hit = ((var["truth_pattern"] == "marker") & (var["truth_cluster"] == group)).to_numpy()
            lfc[hit] = sign * var["truth_lfc"].to_numpy()[hit] / math.log(2)
    if kind == "naive":
        for own, other, sign in ((b1, b2, 1), (b2, b1, -1)):
            hit = ((var["truth_pattern"] == "batch_wide") & var["truth_batch"].isin(own - other)).to_numpy()
            lfc[hit] += sign * 1.5 * var["truth_lfc"].to_numpy()[hit] / math.log(2)
    lfc += rng.normal(0, 0.3, adata.n_vars)
    order = np.argsort(-np.abs(lfc), kind="stable")
    proba = 1 / (1 + np.exp(-4 * (np.abs(lfc[order]) - 1)))
    return pd.DataFrame({
        "gene": adata.var_names[order], "rank": np.arange(1, adata.n_vars + 1), "proba_de": proba,
        "bayes_factor": np.log(proba / (1 - proba + 1e-9) + 1e-9), "lfc_mean": lfc[order], "lfc_std": 0.2,
        "scale1": 1e-3, "scale2": 1e-3,
    })


KINDS = {"corrected": ("True", "change"), "naive": ("False", "change"), "noise": ("True", "vanilla")}


def planted_plan(comparisons: pd.DataFrame, adata) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    rows, tables = [], {}
    for i, (_, comp) in enumerate(comparisons.iterrows()):
        for j, (kind, (bc, mode)) in enumerate(KINDS.items()):
            cid = f"{comp['comparison_id']}__{kind}"
            rows.append({"combination_id": cid, "comparison_id": comp["comparison_id"], "group1": comp["group1"],
                         "group2": comp["group2"], "batch_correction": bc, "mode": mode, "delta": 0.25,
                         "batchid1": "", "batchid2": "", "seed": 0, "sampling_key": ""})
            tables[cid] = truth_table(adata, comp, kind, seed=10 * i + j)
    return pd.DataFrame(rows), tables


def truth_of(gene_patterns: pd.DataFrame, comparisons: pd.DataFrame, var: pd.DataFrame) -> pd.Series:
    """The planted-truth class of each row: marker of a group -> cluster_specific, batch-wide of the groups' batches -> batch_wide."""
    comp = comparisons.set_index("comparison_id")
    out = []
    for cid, gene in zip(gene_patterns["comparison_id"], gene_patterns["gene"], strict=True):
        c, v = comp.loc[cid], var.loc[gene]
        batches = set(c["group1_batches"].split(";")) | set(c["group2_batches"].split(";"))
        if v["truth_pattern"] == "marker" and v["truth_cluster"] in (c["group1"], c["group2"]):
            out.append("cluster_specific")
        elif v["truth_pattern"] == "batch_wide" and v["truth_batch"] in batches:
            out.append("batch_wide")
        else:
            out.append("other")
    return pd.Series(out, index=gene_patterns.index)


def write_planted_results(outdir: Path, adata, comparisons, plan, tables) -> dict[str, Path]:
    """An OUTDIR with cluster/, composition/ and de/ as the pipeline writes them (no training)."""
    from desweep import composition as comp
    from desweep.io import write_csv, write_h5ad

    paths = {"clustered": outdir / keys.STEP_CLUSTER / keys.CLUSTERED_H5AD,
             "comparisons": outdir / keys.STEP_COMPOSITION / keys.COMPARISONS_CSV,
             "counts": outdir / keys.STEP_COMPOSITION / keys.CLUSTER_BATCH_COUNTS_CSV,
             "plan": outdir / keys.STEP_DE / keys.PLAN_CSV}
    write_h5ad(adata, paths["clustered"])
    counts = comp.cluster_batch_counts(adata.obs, group_key="cell_type", batch_key="batch")
    write_csv(counts, paths["counts"], index=True)
    write_csv(comp.cluster_status(counts), outdir / keys.STEP_COMPOSITION / keys.CLUSTER_STATUS_CSV, index=True)
    write_csv(comparisons, paths["comparisons"])
    write_csv(plan, paths["plan"])
    for cid, table in tables.items():
        write_csv(table, outdir / keys.STEP_DE / keys.DE_TABLES_DIR / f"{cid}.csv")
    summary = plan[["combination_id", "comparison_id", "batch_correction", "mode"]].copy()
    summary["n_de"] = [int((tables[c]["proba_de"] > 0.9).sum()) for c in summary["combination_id"]]
    write_csv(summary, outdir / keys.STEP_DE / keys.DE_SUMMARY_CSV)
    history = pd.DataFrame({"epoch": range(20), "elbo_train": 900 - 10 * np.arange(20) ** 0.8,
                            "elbo_validation": 905 - 9 * np.arange(20) ** 0.8, "kl_local_train": 12 + 0.1 * np.arange(20)})
    write_csv(history, outdir / keys.STEP_INTEGRATE / keys.HISTORY_CSV)
    paths["history"] = outdir / keys.STEP_INTEGRATE / keys.HISTORY_CSV
    return paths


def planted_inputs(sim, make_plan=planted_plan) -> tuple:
    """``(adata, comparisons, plan, tables)`` of a simulation, the plan and tables from ``make_plan``."""
    adata = planted_adata(sim)
    comparisons = planted_comparisons(adata)
    return adata, comparisons, *make_plan(comparisons, adata)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def planted(sim_small):
    return planted_inputs(sim_small)


@pytest.fixture(scope="module")
def diagnosed(planted):
    from desweep.diagnose import diagnose

    adata, comparisons, plan, tables = planted
    return diagnose(adata, plan, tables, comparisons, top_n=TOP_N)


# --------------------------------------------------------------------------- classification
def test_classification_agrees_with_planted_truth(planted, diagnosed):
    adata, comparisons, _, _ = planted
    patterns = diagnosed["gene_patterns"]
    assert list(patterns.columns[:7]) == ["combination_id", "comparison_id", "setting_id", "model", "seed", "gene", "rank"]
    assert set(patterns["pattern"]) <= {"cluster_specific", "batch_wide", "other"}
    truth = truth_of(patterns, comparisons, adata.var)
    agreement = float((truth == patterns["pattern"]).mean())
    assert agreement >= 0.9, f"agreement {agreement:.2%}"
    # every planted class occurs among the top genes, so the test is not trivial
    assert {"cluster_specific", "batch_wide", "other"} <= set(truth)
    # per setting too
    for cid, part in patterns.groupby("combination_id"):
        assert (truth[part.index] == part["pattern"]).mean() >= 0.9, cid


def test_genes_up_in_group2_are_classified_by_sign(planted, diagnosed):
    adata, _comparisons, _, _ = planted
    patterns = diagnosed["gene_patterns"]
    part = patterns[patterns["combination_id"] == "only_batch0_vs_only_batch1__corrected"]
    markers2 = part[part["gene"].map(adata.var["truth_cluster"]) == "only_batch1"]
    assert len(markers2) >= 10
    assert (markers2["lfc"] < 0).all()
    assert (markers2["high_group"] == "only_batch1").all()
    assert (markers2["pattern"] == "cluster_specific").mean() >= 0.9
    assert (markers2["within_lfc"] > 1).all()


def test_scores_are_scale_free(planted):
    """Multiplying the counts by a constant leaves every score and call unchanged."""
    from desweep.diagnose import build_profiles, classify_setting

    adata, comparisons, _, tables = planted
    comp = comparisons.iloc[0]
    table = tables[f"{comp['comparison_id']}__naive"]
    calls = []
    for factor in (1, 7):
        scaled = adata.copy()
        scaled.X = scaled.X * factor
        profiles = build_profiles(scaled, None, group_key="cell_type", batch_key="batch")
        calls.append(classify_setting(table, comp, profiles, top_n=30))
    pd.testing.assert_frame_equal(calls[0], calls[1], check_exact=False, rtol=1e-6)


def test_recommended_setting_is_mostly_planted_markers(planted, diagnosed):
    adata, comparisons, _, _ = planted
    rec = diagnosed["recommendations"].set_index("comparison_id")
    patterns = diagnosed["gene_patterns"]
    for comparison_id in comparisons["comparison_id"]:
        best = rec.loc[comparison_id, "recommended_setting_id"]
        assert best.endswith("__corrected"), (comparison_id, best)
        assert rec.loc[comparison_id, "status"] == "ok"
        top = patterns[patterns["setting_id"] == best]
        planted_marker = top["gene"].map(adata.var["truth_cluster"]).isin([rec.loc[comparison_id, "group1"], rec.loc[comparison_id, "group2"]])
        assert planted_marker.mean() >= 0.7
        assert "cluster-specific" in rec.loc[comparison_id, "reason"]
    assert "confounded" in rec.loc["only_batch0_vs_only_batch1", "reason"]


def test_setting_scores_rank_settings(diagnosed):
    scores = diagnosed["setting_scores"]
    for column in ("setting_id", "comparison_id", "setting", "batch_correction", "mode", "share_cluster_specific_mean",
                   "share_batch_wide_mean", "share_other_mean", "specificity_score_mean", "rank_in_comparison", "recommended"):
        assert column in scores.columns
    shares = scores[["share_cluster_specific_mean", "share_batch_wide_mean", "share_other_mean"]].sum(axis=1)
    assert np.allclose(shares, 1.0)
    for _, part in scores.groupby("comparison_id"):
        ordered = part.sort_values("rank_in_comparison")
        assert list(ordered["rank_in_comparison"]) == list(range(1, len(part) + 1))
        assert ordered["specificity_score_mean"].is_monotonic_decreasing
        naive = part[part["setting_id"].str.endswith("__naive")].iloc[0]
        assert naive["share_batch_wide_mean"] >= 0.3  # the uncorrected setting's top genes are batch effects
        assert not naive["recommended"]


def test_concordance_pairs(planted, diagnosed):
    _, comparisons, plan, tables = planted
    conc = diagnosed["concordance"]
    assert len(conc) == 3 * len(comparisons)  # 3 settings -> 3 pairs per comparison
    per_setting = diagnosed["concordance_settings"]
    assert len(per_setting) == len(conc) and (per_setting["n_pairs"] == 1).all()
    assert np.allclose(per_setting["jaccard_top_mean"], conc["jaccard_top"])
    assert conc["jaccard_top"].between(0, 1).all()
    row = conc[(conc["combination_id_1"].str.endswith("__corrected")) & (conc["combination_id_2"].str.endswith("__naive"))].iloc[0]
    assert row["jaccard_top"] > 0.2 and row["spearman_lfc_top"] > 0.5 and row["spearman_lfc"] > 0.1
    noise = conc[conc["combination_id_2"].str.endswith("__noise")]
    assert (noise["spearman_lfc"].abs() < 0.2).all()
    from desweep.diagnose import concordance

    same = concordance(plan.iloc[:1].assign(combination_id="a"), {"a": tables[plan["combination_id"].iloc[0]]})
    assert same.empty


def test_confounded_without_shared_cluster_is_not_measurable():
    """A gene whose batch shift cannot be measured is never called batch-wide."""
    from desweep.diagnose import ExpressionProfile, classify_genes

    columns = pd.MultiIndex.from_tuples([("A", "b0"), ("C", "b0"), ("B", "b1"), ("D", "b1")], names=["cluster", "batch"])
    means = pd.DataFrame([[40.0, 5.0, 5.0, 5.0],  # marker of A
                          [20.0, 20.0, 2.0, 2.0],  # batch b0 wide
                          [5.0, 5.0, 5.0, 5.0]], index=["m", "bw", "flat"], columns=columns)
    n_cells = pd.DataFrame({"b0": [50, 50, 0, 0], "b1": [0, 0, 50, 50]}, index=["A", "C", "B", "D"])
    profile = ExpressionProfile("raw", means, n_cells)
    calls = classify_genes(profile, ["m", "bw", "flat"], np.array([1.0, 1.0, -1.0]), group1="A", group2="B")
    assert calls.loc["m", "pattern"] == "cluster_specific"
    assert calls.loc["bw", "pattern"] == "other"  # no cluster in both batches: shift not measurable
    assert np.isnan(calls.loc["bw", "batch_shift_lfc"])
    assert "neither" in calls.loc["bw", "reason"] or "not measurable" in calls.loc["bw", "reason"]
    assert calls.loc["flat", "pattern"] == "other"


def test_scvi_means_choices_are_scored(planted):
    """cluster_batch_means.csv gives one pattern column per normalized choice."""
    from desweep.diagnose import diagnose, raw_profile

    adata, comparisons, plan, tables = planted
    raw = raw_profile(adata, group_key="cell_type", batch_key="batch")
    long = raw.means.stack(["cluster", "batch"], future_stack=True).rename("mean").reset_index().rename(columns={"level_0": "gene"})
    long["choice"] = "own_batch"
    # a "decoded in batch0" choice: every batch-wide difference removed
    flat = raw.means.T.groupby(level="cluster").transform("mean").T
    long2 = flat.stack(["cluster", "batch"], future_stack=True).rename("mean").reset_index().rename(columns={"level_0": "gene"})
    long2["choice"] = "batch__batch0"
    means = pd.concat([long, long2], ignore_index=True)[["gene", "cluster", "batch", "choice", "mean"]]
    sub = plan[plan["comparison_id"] == comparisons["comparison_id"].iloc[0]]
    out = diagnose(adata, sub, tables, comparisons, means, top_n=20)["gene_patterns"]
    assert {"pattern__own_batch", "pattern__batch__batch0", "within_lfc__own_batch"} <= set(out.columns)
    assert (out["pattern__own_batch"] == out["pattern"]).mean() >= 0.95
    naive = out[out["combination_id"].str.endswith("__naive") & (out["pattern"] == "batch_wide")]
    assert len(naive) and (naive["pattern__batch__batch0"] != "batch_wide").all()


def test_bad_inputs_raise_one_line_errors(planted):
    from desweep.diagnose import diagnose
    from desweep.errors import DesweepInputError

    adata, comparisons, plan, tables = planted
    with pytest.raises(DesweepInputError, match="no DE table"):
        diagnose(adata, plan, {}, comparisons)
    with pytest.raises(DesweepInputError, match="not in"):
        diagnose(adata, plan.assign(comparison_id="nope"), tables, comparisons)
    with pytest.raises(DesweepInputError, match="top_n"):
        diagnose(adata, plan, tables, comparisons, top_n=0)


# --------------------------------------------------------------------------- CLI
def test_cli_writes_every_output_and_plots(planted, tmp_path):
    adata, comparisons, plan, tables = planted
    sub_ids = set(comparisons["comparison_id"].iloc[:2])
    plan = plan[plan["comparison_id"].isin(sub_ids)]
    paths = write_planted_results(tmp_path, adata, comparisons, plan, {c: tables[c] for c in plan["combination_id"]})
    out = tmp_path / keys.STEP_DIAGNOSE
    args = ["diagnose", "--input", str(paths["clustered"]), "--plan", str(paths["plan"]), "--comparisons", str(paths["comparisons"]),
            "--history", str(paths["history"]), "--counts", str(paths["counts"]), "--top-n", "30", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for name in (keys.GENE_PATTERNS_CSV, keys.SETTING_SCORES_CSV, keys.CONCORDANCE_CSV, keys.RECOMMENDATIONS_CSV,
                 keys.DIAGNOSE_THRESHOLDS_CSV, keys.TOP_GENE_EXPRESSION_CSV, keys.MARKERS_CSV, keys.REJECTED_CSV,
                 keys.MARKERS_H5AD, keys.SETTING_SCORES_BY_REPLICATE_CSV, keys.RECOMMENDED_SETTINGS_CSV,
                 keys.CONCORDANCE_SETTINGS_CSV, keys.BRIDGE_CSV, keys.BRIDGE_SUMMARY_CSV):
        assert (out / name).stat().st_size > 0, name
    from desweep.io import read_csv

    markers = read_csv(out / keys.MARKERS_CSV)
    assert set(markers["comparison_id"]) == sub_ids and len(markers) > 20
    assert "only_batch0_vs_only_batch1__corrected" in result.output  # the recommended setting is named
    plots = out / keys.PLOTS_DIR
    from desweep.plots import first_seed_combinations

    drawn = first_seed_combinations(plan)
    assert len(drawn) == (plan["setting_id"].nunique() if "setting_id" in plan else len(plan))
    for cid in drawn:
        assert (plots / keys.PLOT_TOP_GENES_DIR / f"{cid}.png").read_bytes()[:4] == b"\x89PNG"
        assert (plots / keys.PLOT_VOLCANO_DIR / f"{cid}.png").exists()
    assert len(list((plots / keys.PLOT_VOLCANO_DIR).glob("*.png"))) == len(drawn)
    for cmp_id in sub_ids:
        assert (plots / keys.PLOT_CONCORDANCE_DIR / f"{cmp_id}.png").exists()
        assert (plots / keys.PLOT_SCORES_DIR / f"{cmp_id}.png").exists()
    for name in (keys.PLOT_TRAINING, keys.PLOT_UMAP, keys.PLOT_COMPOSITION):
        assert (plots / name).exists(), name
    assert "only_batch0_vs_only_batch1" in result.output
    # byte-identical tables on a rerun
    result = CliRunner().invoke(cli, args[:-2] + ["--no-plots", "-o", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    for name in (keys.GENE_PATTERNS_CSV, keys.MARKERS_CSV, keys.REJECTED_CSV, keys.SETTING_SCORES_CSV,
                 keys.RECOMMENDATIONS_CSV, keys.CONCORDANCE_SETTINGS_CSV, keys.BRIDGE_CSV, keys.BRIDGE_SUMMARY_CSV):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name


def test_cli_errors_are_one_line(planted, tmp_path):
    adata, comparisons, plan, tables = planted
    paths = write_planted_results(tmp_path, adata, comparisons, plan.iloc[:1], {plan["combination_id"].iloc[0]: tables[plan["combination_id"].iloc[0]]})
    base = ["diagnose", "--input", str(paths["clustered"]), "--comparisons", str(paths["comparisons"]), "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*base, "--plan", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1
    assert "Error:" in result.output and "does not exist" in result.output and "Traceback" not in result.output
    empty = tmp_path / "empty_tables"
    empty.mkdir()
    result = CliRunner().invoke(cli, [*base, "--plan", str(paths["plan"]), "--tables", str(empty)])
    assert result.exit_code == 1
    assert "no <combination_id>.csv" in result.output
    # without --tables: the error names the tables/ folder beside the plan
    lone = tmp_path / "lone_plan"
    (lone / keys.DE_TABLES_DIR).mkdir(parents=True)
    (lone / keys.PLAN_CSV).write_bytes(paths["plan"].read_bytes())
    result = CliRunner().invoke(cli, [*base, "--plan", str(lone / keys.PLAN_CSV)])
    assert result.exit_code == 1
    assert f"{lone / keys.DE_TABLES_DIR}: tables: no <combination_id>.csv" in result.output, result.output
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- real pipeline outputs
CONFOUNDED = "only_batch0_vs_only_batch1"


@pytest.mark.slow
def test_on_real_scvi_de_tables(pipeline_dirs, tmp_path):
    """`desweep plan` + `desweep de` on the trained fixture (small grid), then diagnose: planted truth on scVI output."""
    from desweep.io import is_true, read_csv, read_h5ad

    runner = CliRunner()
    comparisons_path = pipeline_dirs[keys.STEP_COMPOSITION] / keys.COMPARISONS_CSV
    comparisons = read_csv(comparisons_path)
    assert comparisons.loc[comparisons["comparison_id"] == CONFOUNDED, "design"].item() == "confounded"
    chosen = tmp_path / keys.COMPARISONS_CSV
    comparisons[comparisons["comparison_id"] == CONFOUNDED].to_csv(chosen, index=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text("batch_correction: [false, true]\nbatchids: [all]\nmode: [vanilla, change]\ndelta: [0.25]\nseeds: [0, 1]\n")
    de_dir = tmp_path / keys.STEP_DE
    clustered = pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD
    for args in (["plan", "--comparisons", str(chosen), "--grid", str(grid), "-o", str(de_dir)],
                 ["de", "--plan", str(de_dir / keys.PLAN_CSV), "--input", str(clustered),
                  "--model", str(pipeline_dirs[keys.STEP_INTEGRATE] / keys.MODEL_DIR), "--all", "--threads", "1",
                  "--n-samples", "2000", "-o", str(de_dir)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, f"{args[0]}: {result.output}"
    out = tmp_path / keys.STEP_DIAGNOSE
    result = runner.invoke(cli, ["diagnose", "--input", str(clustered), "--plan", str(de_dir / keys.PLAN_CSV),
                                 "--comparisons", str(comparisons_path), "--no-plots", "-o", str(out)])
    assert result.exit_code == 0, result.output
    patterns = read_csv(out / keys.GENE_PATTERNS_CSV)
    adata = read_h5ad(clustered, backed=True)
    truth = truth_of(patterns, comparisons, adata.var)
    agreement = (truth == patterns["pattern"]).mean()
    assert agreement >= 0.9, f"agreement with the planted truth {agreement:.2%}"
    plan = read_csv(de_dir / keys.PLAN_CSV)
    rec = read_csv(out / keys.RECOMMENDATIONS_CSV).set_index("comparison_id").loc[CONFOUNDED]
    best = plan.drop_duplicates("setting_id").set_index("setting_id").loc[rec["recommended_setting_id"]]
    assert str(best["batch_correction"]).lower() == "true"
    top = patterns[patterns["setting_id"] == rec["recommended_setting_id"]]
    marker = top["gene"].map(adata.var["truth_cluster"]).isin(["only_batch0", "only_batch1"])
    assert marker.mean() >= 0.6, f"recommended setting: {marker.mean():.0%} planted markers"
    scores = read_csv(out / keys.SETTING_SCORES_CSV).set_index("setting_id")
    default = f"{CONFOUNDED}__nobc__vanilla__uniform__fdr0.05"
    assert rec["default_setting_id"] == default and bool(scores.loc[default, "is_default"])
    assert scores.loc[default, "share_batch_wide_mean"] > scores.loc[rec["recommended_setting_id"], "share_batch_wide_mean"]
    settings = scores[scores["method"] == "scvi"]
    assert len(settings) == plan["setting_id"].nunique() and (settings["n_replicates"] == 2).all()
    # the bridge contrast is scored and ranked beside the settings, never recommended
    bridge = scores.loc[f"{CONFOUNDED}__bridge"]
    assert bridge["method"] == "bridge" and bridge["n_replicates"] == 1 and not is_true(bridge["recommended"])
    assert bridge["rank_in_comparison"] >= 1 and bridge["share_cluster_specific_mean"] >= 0.5
    assert rec["recommended_setting_id"] != f"{CONFOUNDED}__bridge"
    summary = read_csv(out / keys.BRIDGE_SUMMARY_CSV).set_index("comparison_id").loc[CONFOUNDED]
    assert summary["verdict"] in ("identifiable", "single_bridge") and summary["n_units"] >= 4
    bridge_table = read_csv(out / keys.BRIDGE_CSV)
    assert (bridge_table["comparison_id"] == CONFOUNDED).sum() == adata.n_vars
    # the answer from a trained model's tables: planted markers, never a planted batch-wide gene
    markers = read_csv(out / keys.MARKERS_CSV)
    assert len(markers) == 50 and rec["n_markers"] == len(markers)
    truth = markers["gene"].map(adata.var["truth_pattern"])
    planted = markers["gene"].map(adata.var["truth_cluster"]).isin(["only_batch0", "only_batch1"])
    n_planted = int(adata.var["truth_cluster"].isin(["only_batch0", "only_batch1"]).sum())
    assert planted[: n_planted].mean() >= 0.9  # as many ranks as planted markers: nearly all planted
    high = markers["confidence"] == "high"
    assert high.sum() >= 20 and planted[high].mean() >= 0.9
    # a batch effect of this comparison: batch-wide in one of the two groups' batches (batch2's are null genes here)
    shifted = truth.eq("batch_wide") & markers["gene"].map(adata.var["truth_batch"]).isin(["batch0", "batch1"])
    assert not shifted[markers["confidence"] != "low"].any() and shifted.mean() <= 0.05
    rejected = read_csv(out / keys.REJECTED_CSV)
    assert len(rejected) >= 5 and rejected["gene"].map(adata.var["truth_pattern"]).eq("batch_wide").mean() >= 0.8
    # the scanpy calls of docs/diagnostics.md, as written, on this run's markers.h5ad; with --top-n 20 it holds
    # fewer genes than scanpy's 50 principal components, where scanpy 1.11 computed the dendrogram from the sparse X and failed
    result = runner.invoke(cli, ["diagnose", "--input", str(clustered), "--plan", str(de_dir / keys.PLAN_CSV), "--comparisons",
                                 str(comparisons_path), "--no-plots", "--top-n", "20", "-o", str(tmp_path / "few")])
    assert result.exit_code == 0, result.output
    markers_h5ad = tmp_path / "few" / keys.MARKERS_H5AD
    assert read_h5ad(markers_h5ad).n_vars < 50
    run_documented_scanpy_calls(markers_h5ad, CONFOUNDED)


def run_documented_scanpy_calls(markers_h5ad: Path, comparison_id: str) -> None:
    """Run the python block of docs/diagnostics.md that reads markers.h5ad, with the file and a comparison id filled in."""
    import re

    import matplotlib

    matplotlib.use("Agg")
    docs = (Path(__file__).resolve().parents[1] / "docs" / "diagnostics.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", docs, re.S) if "rank_genes_groups_dotplot" in b)
    code = block.replace("OUTDIR/diagnostics/markers.h5ad", str(markers_h5ad))
    code = re.sub(r'key="desweep_markers__[^"]+"', f'key="desweep_markers__{comparison_id}"', code)
    assert code.count("rank_genes_groups_dotplot") == 2 and str(markers_h5ad) in code
    exec(compile(code, "docs/diagnostics.md", "exec"), {})


# --------------------------------------------------------------------------- the per-gene test
def _counts_adata(means_by_group: dict[tuple[str, str], float], n_by_group: dict[tuple[str, str], int], *, seed: int,
                  n_genes: int = 40):
    """Poisson counts of ``n_genes`` genes (gene 0 at the given means, the rest at 5) per (cluster, batch)."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    blocks, clusters, batches = [], [], []
    for (cluster, batch), n in n_by_group.items():
        rates = np.full(n_genes, 5.0)
        rates[0] = means_by_group[(cluster, batch)]
        blocks.append(rng.poisson(rates, size=(n, n_genes)))
        clusters += [cluster] * n
        batches += [batch] * n
    obs = pd.DataFrame({"cell_type": clusters, "batch": batches}, index=[f"c{i}" for i in range(len(clusters))])
    return ad.AnnData(sp.csr_matrix(np.vstack(blocks).astype(np.float32)), obs=obs,
                      var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))


def test_standard_errors_match_the_sampling_noise():
    """The delta-method SE of group_lfc is the spread of group_lfc over repeated draws of the same cells."""
    from desweep.diagnose import classify_genes, raw_profile

    groups = {("A", "b0"): 40, ("C", "b0"): 200, ("B", "b1"): 30, ("D", "b1"): 200}
    means = {("A", "b0"): 0.6, ("C", "b0"): 0.3, ("B", "b1"): 0.3, ("D", "b1"): 0.3}
    lfcs, ses = [], []
    for seed in range(60):
        adata = _counts_adata(means, groups, seed=seed)
        profile = raw_profile(adata, group_key="cell_type", batch_key="batch")
        calls = classify_genes(profile, ["g0"], np.array([1.0]), group1="A", group2="B")
        lfcs.append(calls.loc["g0", "group_lfc"])
        ses.append(calls.loc["g0", "se_group_lfc"])
    empirical, predicted = float(np.std(lfcs, ddof=1)), float(np.mean(ses))
    assert 0.75 < predicted / empirical < 1.33, (predicted, empirical)


def test_the_call_follows_each_genes_own_noise():
    """The same means: clear with many cells (cluster-specific), not clear with few (other). No global floor."""
    from desweep.diagnose import ExpressionProfile, classify_genes

    columns = pd.MultiIndex.from_tuples([("A", "b0"), ("C", "b0"), ("B", "b1"), ("C", "b1")], names=["cluster", "batch"])
    means = pd.DataFrame([[3.0, 2.0, 2.0, 2.0]] * 2, index=["g", "other"], columns=columns)  # A up 1.5x: log2 0.58

    def call(n_a: int) -> pd.Series:
        n_cells = pd.DataFrame({"b0": [n_a, 200, 0], "b1": [0, 200, n_a]}, index=["A", "C", "B"])
        counts = pd.Series([n_a, 200, n_a, 200], index=columns)
        rel_var = means.rdiv(1.0).div(counts, axis=1)  # Poisson: var(x)/n/mean^2 = 1/(n mean)
        profile = ExpressionProfile("raw", means, n_cells, eps=0.01, rel_var=rel_var)
        return classify_genes(profile, ["g"], np.array([1.0]), group1="A", group2="B").loc["g"]

    many, few = call(400), call(8)
    assert many["pattern"] == "cluster_specific" and many["se_group_lfc"] < 0.1
    assert few["pattern"] == "other" and "not clear" in few["reason"] and few["se_group_lfc"] > 0.25
    assert many["group_lfc"] == pytest.approx(few["group_lfc"])


@pytest.fixture(scope="module")
def hard_planted():
    from desweep.simulate import preset_params, simulate

    return planted_inputs(simulate(preset_params("hard", seed=1)))


def test_hard_preset_keeps_planted_markers_without_cross_errors(hard_planted):
    """Small groups, sparse genes, log2 effects 0.5-2: most planted markers in the top genes are called
    cluster-specific, and no planted batch-wide gene is called cluster-specific (nor the reverse)."""
    from desweep.diagnose import diagnose

    adata, comparisons, plan, tables = hard_planted
    patterns = diagnose(adata, plan, tables, comparisons, top_n=TOP_N)["gene_patterns"]
    truth = truth_of(patterns, comparisons, adata.var)
    marker = truth == "cluster_specific"
    assert marker.sum() >= 100
    recall = float((patterns.loc[marker, "pattern"] == "cluster_specific").mean())
    # the call is on the net contrast d - s, whose error includes the batch shift measured in two or three small
    # bridges: for sparse markers that error is real, and some stay unclear (`other`, never batch-wide)
    assert recall >= 0.7, f"recall {recall:.1%}"
    planted_batch = patterns["gene"].map(adata.var["truth_pattern"]).eq("batch_wide")
    assert planted_batch.sum() >= 30
    assert not ((patterns["pattern"] == "cluster_specific") & planted_batch).any()
    assert not ((patterns["pattern"] == "batch_wide") & marker).any()


def test_a_within_batch_difference_must_be_clear():
    """Within-batch specificity that reaches half the difference but is not clear (few cells) is no marker call."""
    from desweep.diagnose import ExpressionProfile, classify_genes

    # no cluster in both batches: the batch shift is not measurable and within-batch specificity decides
    columns = pd.MultiIndex.from_tuples([("A", "b0"), ("C", "b0"), ("B", "b1")], names=["cluster", "batch"])
    means = pd.DataFrame([[4.0, 2.4, 2.0]], index=["g"], columns=columns)
    counts = pd.Series([4, 500, 500], index=columns)
    n_cells = pd.DataFrame({"b0": [4, 500, 0], "b1": [0, 0, 500]}, index=["A", "C", "B"])
    profile = ExpressionProfile("raw", means, n_cells, eps=0.01, rel_var=means.rdiv(1.0).div(counts, axis=1))
    call = classify_genes(profile, ["g"], np.array([1.0]), group1="A", group2="B").loc["g"]
    assert call["group_lfc"] >= 2.33 * call["se_group_lfc"]  # a clear difference
    assert 0.5 * call["group_lfc"] <= call["within_lfc"] < 2.33 * call["se_within_lfc"]  # half of it, not clearly
    assert call["pattern"] == "other" and "not clearly" in call["reason"]


def test_a_hidden_shift_must_explain_the_tables_fold_change():
    """No clear group difference but a clear batch shift: batch-wide only if the shift explains half the table's |lfc|."""
    from desweep.diagnose import ExpressionProfile, classify_genes

    # A (b0) against B spread over b0 and b1: the gene is 3 / 2.2 higher in b0 in every cluster, so pooling B
    # over both batches leaves A against B below log2 1.2, while the shift between b0 and b1 is clear
    columns = pd.MultiIndex.from_tuples([("A", "b0"), ("C", "b0"), ("B", "b0"), ("B", "b1"), ("C", "b1")],
                                        names=["cluster", "batch"])
    means = pd.DataFrame([[3.0, 3.0, 3.0, 2.2, 2.2]], index=["g"], columns=columns)
    n_cells = pd.DataFrame({"b0": [100, 1000, 1000], "b1": [0, 1000, 1000]}, index=["A", "C", "B"])
    profile = ExpressionProfile("raw", means, n_cells, eps=0.01, rel_var=means * 0 + 1e-4)
    small, large = (classify_genes(profile, ["g"], np.array([lfc]), group1="A", group2="B").loc["g"] for lfc in (0.5, 3.0))
    assert small["group_lfc"] < np.log2(1.2)
    assert small["between_batch_lfc"] == pytest.approx(np.log2(3.0 / 2.2), abs=0.01)
    assert small["pattern"] == "batch_wide" and "not clear" in small["reason"]
    assert large["pattern"] == "other" and "does not clearly explain" in large["reason"]

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


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def planted(sim_small):
    adata = planted_adata(sim_small)
    comparisons = planted_comparisons(adata)
    plan, tables = planted_plan(comparisons, adata)
    return adata, comparisons, plan, tables


@pytest.fixture(scope="module")
def diagnosed(planted):
    from desweep.diagnose import diagnose

    adata, comparisons, plan, tables = planted
    return diagnose(adata, plan, tables, comparisons, top_n=TOP_N)


# --------------------------------------------------------------------------- classification
def test_classification_agrees_with_planted_truth(planted, diagnosed):
    adata, comparisons, _, _ = planted
    patterns = diagnosed["gene_patterns"]
    assert list(patterns.columns[:4]) == ["combination_id", "comparison_id", "gene", "rank"]
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
    adata, comparisons, _, _ = planted
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
        best = rec.loc[comparison_id, "best_combination_id"]
        assert best.endswith("__corrected"), (comparison_id, best)
        assert rec.loc[comparison_id, "status"] == "ok"
        top = patterns[patterns["combination_id"] == best]
        planted_marker = top["gene"].map(adata.var["truth_cluster"]).isin([rec.loc[comparison_id, "group1"], rec.loc[comparison_id, "group2"]])
        assert planted_marker.mean() >= 0.7
        assert "cluster-specific" in rec.loc[comparison_id, "reason"]
    assert "confounded" in rec.loc["only_batch0_vs_only_batch1", "reason"]


def test_setting_scores_rank_settings(diagnosed):
    scores = diagnosed["setting_scores"]
    for column in ("combination_id", "comparison_id", "batch_correction", "mode", "share_cluster_specific",
                   "share_batch_wide", "share_other", "specificity_score", "rank_in_comparison"):
        assert column in scores.columns
    shares = scores[["share_cluster_specific", "share_batch_wide", "share_other"]].sum(axis=1)
    assert np.allclose(shares, 1.0)
    for _, part in scores.groupby("comparison_id"):
        ordered = part.sort_values("rank_in_comparison")
        assert list(ordered["rank_in_comparison"]) == list(range(1, len(part) + 1))
        assert ordered["specificity_score"].is_monotonic_decreasing
        naive = part[part["combination_id"].str.endswith("__naive")].iloc[0]
        assert naive["share_batch_wide"] >= 0.3  # the uncorrected setting's top genes are batch effects


def test_concordance_pairs(planted, diagnosed):
    _, comparisons, plan, tables = planted
    conc = diagnosed["concordance"]
    assert len(conc) == 3 * len(comparisons)  # 3 settings -> 3 pairs per comparison
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
    calls = classify_genes(profile, ["m", "bw", "flat"], np.array([1.0, 1.0, -1.0]), group1="A", group2="B", min_lfc=0.5)
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
    args = ["diagnose", "--adata", str(paths["clustered"]), "--plan", str(paths["plan"]), "--comparisons", str(paths["comparisons"]),
            "--history", str(paths["history"]), "--counts", str(paths["counts"]), "--top-n", "30", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for name in (keys.GENE_PATTERNS_CSV, keys.SETTING_SCORES_CSV, keys.CONCORDANCE_CSV, keys.RECOMMENDATIONS_CSV,
                 keys.DIAGNOSE_THRESHOLDS_CSV, keys.TOP_GENE_EXPRESSION_CSV):
        assert (out / name).stat().st_size > 0, name
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
    first = (out / keys.GENE_PATTERNS_CSV).read_bytes()
    result = CliRunner().invoke(cli, args[:-2] + ["--no-plots", "-o", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / keys.GENE_PATTERNS_CSV).read_bytes() == first


def test_cli_errors_are_one_line(planted, tmp_path):
    adata, comparisons, plan, tables = planted
    paths = write_planted_results(tmp_path, adata, comparisons, plan.iloc[:1], {plan["combination_id"].iloc[0]: tables[plan["combination_id"].iloc[0]]})
    base = ["diagnose", "--adata", str(paths["clustered"]), "--comparisons", str(paths["comparisons"]), "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*base, "--plan", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1
    assert "Error:" in result.output and "does not exist" in result.output and "Traceback" not in result.output
    empty = tmp_path / "empty_tables"
    empty.mkdir()
    result = CliRunner().invoke(cli, [*base, "--plan", str(paths["plan"]), "--tables", str(empty)])
    assert result.exit_code == 1
    assert "no <combination_id>.csv" in result.output
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- real pipeline outputs
CONFOUNDED = "only_batch0_vs_only_batch1"


@pytest.mark.slow
def test_on_real_scvi_de_tables(pipeline_dirs, tmp_path):
    """`desweep plan` + `desweep de` on the trained fixture (small grid), then diagnose: planted truth on scVI output."""
    from desweep.io import read_csv, read_h5ad

    runner = CliRunner()
    comparisons_path = pipeline_dirs[keys.STEP_COMPOSITION] / keys.COMPARISONS_CSV
    comparisons = read_csv(comparisons_path)
    assert comparisons.loc[comparisons["comparison_id"] == CONFOUNDED, "design"].item() == "confounded"
    chosen = tmp_path / keys.COMPARISONS_CSV
    comparisons[comparisons["comparison_id"] == CONFOUNDED].to_csv(chosen, index=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text("batch_correction: [false, true]\nbatchids: [all]\nmode: [change]\ndelta: [0.25]\nseeds: [0]\n")
    de_dir = tmp_path / keys.STEP_DE
    clustered = pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD
    for args in (["plan", "--comparisons", str(chosen), "--grid", str(grid), "-o", str(de_dir)],
                 ["de", "--plan", str(de_dir / keys.PLAN_CSV), "--adata", str(clustered),
                  "--model", str(pipeline_dirs[keys.STEP_INTEGRATE] / keys.MODEL_DIR), "--all", "--threads", "1",
                  "--n-samples", "2000", "-o", str(de_dir)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, f"{args[0]}: {result.output}"
    out = tmp_path / keys.STEP_DIAGNOSE
    result = runner.invoke(cli, ["diagnose", "--adata", str(clustered), "--plan", str(de_dir / keys.PLAN_CSV),
                                 "--comparisons", str(comparisons_path), "--no-plots", "-o", str(out)])
    assert result.exit_code == 0, result.output
    patterns = read_csv(out / keys.GENE_PATTERNS_CSV)
    adata = read_h5ad(clustered, backed=True)
    truth = truth_of(patterns, comparisons, adata.var)
    agreement = (truth == patterns["pattern"]).mean()
    assert agreement >= 0.9, f"agreement with the planted truth {agreement:.2%}"
    plan = read_csv(de_dir / keys.PLAN_CSV)
    rec = read_csv(out / keys.RECOMMENDATIONS_CSV).set_index("comparison_id").loc[CONFOUNDED]
    best = plan.set_index("combination_id").loc[rec["best_combination_id"]]
    assert str(best["batch_correction"]).lower() == "true"
    top = patterns[patterns["combination_id"] == rec["best_combination_id"]]
    marker = top["gene"].map(adata.var["truth_cluster"]).isin(["only_batch0", "only_batch1"])
    assert marker.mean() >= 0.6, f"recommended setting: {marker.mean():.0%} planted markers"
    scores = read_csv(out / keys.SETTING_SCORES_CSV).set_index("combination_id")
    uncorrected = plan.loc[plan["batch_correction"].astype(str).str.lower() == "false", "combination_id"].item()
    assert scores.loc[uncorrected, "share_batch_wide"] > scores.loc[rec["best_combination_id"], "share_batch_wide"]

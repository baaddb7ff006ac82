"""Baselines: Wilcoxon and pseudobulk DESeq2, estimability, classification like the scVI settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from desweep import keys
from desweep.cli import cli
from test_diagnose import planted_adata, planted_comparisons, truth_of, write_planted_results


@pytest.fixture(scope="module")
def planted(sim_small):
    adata = planted_adata(sim_small)
    return adata, planted_comparisons(adata)


def _row(comparisons: pd.DataFrame, design: str) -> pd.Series:
    return comparisons[comparisons["design"] == design].iloc[0]


def test_wilcoxon_ranks_both_directions_and_flags_confounding(planted):
    from desweep.baselines import WILCOXON_COLUMNS, wilcoxon

    adata, comparisons = planted
    comp = _row(comparisons, "confounded")
    table = wilcoxon(adata, comp, group_key="cell_type")
    assert list(table.columns) == WILCOXON_COLUMNS
    assert len(table) == adata.n_vars and list(table["rank"]) == list(range(1, adata.n_vars + 1))
    assert table["score"].abs().is_monotonic_decreasing
    top = table.head(40)
    assert (top["logfoldchanges"] > 0).any() and (top["logfoldchanges"] < 0).any()  # genes up in group2 rank too
    assert table["batch_confounded"].all() and "confounded" in table["note"].iloc[0]
    assert table[["pct_group1", "pct_group2"]].notna().all().all()


def test_pseudobulk_confounded_gives_no_numbers(planted):
    from desweep.baselines import pseudobulk_deseq2

    adata, comparisons = planted
    out = pseudobulk_deseq2(adata, _row(comparisons, "confounded"), group_key="cell_type", batch_key="batch")
    assert len(out) == 1
    assert out["status"].iloc[0] == "confounded"
    assert "not estimable" in out["note"].iloc[0]
    assert out[["log2FoldChange", "pvalue", "padj"]].isna().all().all()


def test_pseudobulk_estimability_rules(planted):
    from desweep.baselines import estimability, pseudobulk_counts, pseudobulk_deseq2

    adata, comparisons = planted
    comp = _row(comparisons, "one_specific")
    # per batch: the specific group has one unit, every coefficient is used up
    out = pseudobulk_deseq2(adata, comp, group_key="cell_type", batch_key="batch")
    assert out["status"].iloc[0] == "not_estimable" and "residual" in out["note"].iloc[0]
    # per sample: two samples per batch leave residual degrees of freedom
    with_samples = adata.copy()
    half = np.arange(adata.n_obs) % 2
    with_samples.obs["sample"] = with_samples.obs["batch"].astype(str) + "_s" + pd.Series(half, index=adata.obs_names).astype(str)
    counts, meta, unit = pseudobulk_counts(with_samples, comp, group_key="cell_type", batch_key="batch")
    assert unit == "obs['sample']"
    assert counts.shape[0] == len(meta) and (counts.to_numpy() >= 0).all()
    assert counts.to_numpy().sum() == int(with_samples[with_samples.obs["cell_type"].isin([comp["group1"], comp["group2"]])].X.sum())
    ok, formula, why = estimability(meta)
    assert ok and formula == "~batch + group" and why == ""
    # groups in different batches only: group effect not estimable whatever the units
    meta2 = pd.DataFrame({"group": ["group1", "group1", "group2", "group2"], "batch": ["a", "a", "b", "b"]})
    assert estimability(meta2)[0] is False and "confounded" in estimability(meta2)[2]


def test_run_baselines_classifies_like_the_sweep(planted):
    from desweep.baselines import run_baselines

    adata, comparisons = planted
    comps = comparisons[comparisons["design"].isin(["confounded", "one_specific"])].drop_duplicates("design")
    out = run_baselines(adata, comps, top_n=40, pseudo_replicates=3, threads=1)
    scores = out["baseline_scores"].set_index("combination_id")
    confounded_id = comps.loc[comps["design"] == "confounded", "comparison_id"].iloc[0]
    specific_id = comps.loc[comps["design"] == "one_specific", "comparison_id"].iloc[0]
    assert scores.loc[f"{confounded_id}__pseudobulk", "status"] == "confounded"
    assert np.isnan(scores.loc[f"{confounded_id}__pseudobulk", "share_cluster_specific"])
    assert scores.loc[f"{specific_id}__pseudobulk", "status"] == "ok"
    assert "pseudo-replicates" in out["pseudobulk"].loc[out["pseudobulk"]["comparison_id"] == specific_id, "unit"].iloc[0]
    # naive cell-level Wilcoxon on a confounded comparison finds batch effects among its top genes
    assert scores.loc[f"{confounded_id}__wilcoxon", "share_batch_wide"] >= 0.2
    # ~ batch + group removes them
    assert scores.loc[f"{specific_id}__pseudobulk", "share_batch_wide"] <= 0.1
    patterns = out["baseline_patterns"]
    assert {"combination_id", "comparison_id", "gene", "rank", "pattern", "within_lfc", "batch_shift_lfc"} <= set(patterns.columns)
    truth = truth_of(patterns, comparisons, adata.var)
    assert (truth == patterns["pattern"]).mean() >= 0.9


def test_cli_writes_tables_and_reports_errors(planted, tmp_path):
    adata, comparisons = planted
    paths = write_planted_results(tmp_path, adata, comparisons, pd.DataFrame(
        columns=["combination_id", "comparison_id", "group1", "group2", "batch_correction", "mode"]), {})
    out = tmp_path / keys.STEP_BASELINES
    result = CliRunner().invoke(cli, ["baselines", "--input", str(paths["clustered"]), "--comparisons", str(paths["comparisons"]),
                                      "--methods", "wilcoxon,pseudobulk", "--top-n", "20", "--threads", "1",
                                      "--means", str(tmp_path / "no_such_means.csv"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    for name in (keys.WILCOXON_CSV, keys.PSEUDOBULK_CSV, keys.BASELINE_PATTERNS_CSV, keys.BASELINE_SCORES_CSV):
        assert len(pd.read_csv(out / name)) > 0, f"{name} has no rows"  # a header alone is an empty output
    pseudobulk = pd.read_csv(out / keys.PSEUDOBULK_CSV)
    assert set(pseudobulk["status"]) == {"confounded", "not_estimable"}  # no samples, no pseudo-replicates
    result = CliRunner().invoke(cli, ["baselines", "--input", str(paths["clustered"]), "--comparisons", str(paths["comparisons"]),
                                      "--methods", "t-test", "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "Error:" in result.output and "unknown method 't-test'" in result.output
    assert not (tmp_path / "x").exists()

"""Diagnose rules on hand-built expression profiles and scores.

One test per branch of the per-gene call (:func:`desweep.diagnose.classify_genes`)
and of the recommendation (:mod:`desweep.diagnose.rank`), on profiles and
replicate scores written down by hand, so each expected call follows from the
module docstring's rule and not from a simulation. Branches tested elsewhere:

- raw difference not clear with few cells, clear with many:
  test_diagnose.py::test_the_call_follows_each_genes_own_noise;
- within-batch specificity reaching half the difference, not clearly:
  test_diagnose.py::test_a_within_batch_difference_must_be_clear;
- hidden shift (pooled difference not clear, batch shift clear), and the table's fold change it must explain:
  test_diagnose.py::test_a_hidden_shift_must_explain_the_tables_fold_change;
- batch shift not measurable (no cluster in both sides' batches):
  test_diagnose.py::test_confounded_without_shared_cluster_is_not_measurable;
- every setting agreeing: test_markers.py::test_every_setting_agreeing_is_said;
- end to end on DE tables from a trained scVI model: test_diagnose.py::test_on_real_scvi_de_tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

# A (batch b0 only) against B (batch b1 only); C is in both batches, so it measures the batch shift.
LAYOUT = [("A", "b0"), ("C", "b0"), ("B", "b1"), ("C", "b1")]
CELLS = pd.DataFrame({"b0": [200, 200, 0], "b1": [0, 200, 200]}, index=["A", "C", "B"])
#: squared relative SE of every mean when nothing else is said: every difference below is clear
PRECISE = 1e-4

#: gene -> means in LAYOUT order; d = log2(A / B), w = log2(A / C_b0), s = log2(C_b0 / C_b1); f d = d / 2
PROFILE_GENES = {
    "marker": [8.0, 2.0, 2.0, 2.0],  # d 2, w 2, s 0
    "batch_wide": [8.0, 8.0, 2.0, 2.0],  # d 2, w 0, s 2
    "both": [16.0, 4.0, 2.0, 1.0],  # d 3, w 2, s 2: each explains half
    "shift_unclear": [16.0, 4.0, 2.0, 1.0],  # as "both", with C in b1 too noisy for a clear shift
    "also_in_c": [8.0, 6.0, 2.0, 6.0],  # d 2, w 0.42, s 0: a marker of A against B that C expresses too
    "flat": [2.1, 2.0, 2.0, 2.0],  # d 0.07: below log2 1.2
    "marker_of_b": [2.0, 2.0, 8.0, 2.0],  # d -2: higher in B, against C of b1
}


def profile(genes: dict[str, list[float]] = PROFILE_GENES, layout=LAYOUT, n_cells: pd.DataFrame = CELLS,
            noisy: dict[tuple[str, tuple[str, str]], float] | None = None):
    """An :class:`ExpressionProfile` with the given means, every mean's relative variance :data:`PRECISE`
    except ``noisy[(gene, (cluster, batch))]``."""
    from desweep.diagnose import ExpressionProfile

    columns = pd.MultiIndex.from_tuples(layout, names=["cluster", "batch"])
    means = pd.DataFrame(list(genes.values()), index=list(genes), columns=columns)
    rel_var = means * 0 + PRECISE
    for (gene, column), value in (noisy or {}).items():
        rel_var.loc[gene, column] = value
    return ExpressionProfile("raw", means, n_cells, eps=0.01, rel_var=rel_var)


def call(genes: list[str], direction, prof=None, **kwargs) -> pd.DataFrame:
    from desweep.diagnose import classify_genes

    prof = prof if prof is not None else profile(noisy={("shift_unclear", ("C", "b1")): 1.0})
    return classify_genes(prof, genes, np.asarray(direction, dtype=float), group1="A", group2="B", **kwargs)


# --------------------------------------------------------------------------- the per-gene call
def test_within_batch_specificity_alone_is_cluster_specific():
    row = call(["marker"], [2.0]).loc["marker"]
    assert row["group_lfc"] == pytest.approx(2.0, abs=0.01) and row["within_lfc"] == pytest.approx(2.0, abs=0.01)
    assert row["batch_shift_lfc"] == pytest.approx(0.0, abs=0.01)
    assert row["pattern"] == "cluster_specific" and row["high_group"] == "A" and row["direction_agrees"]


def test_batch_shift_alone_is_batch_wide():
    row = call(["batch_wide"], [2.0]).loc["batch_wide"]
    assert row["batch_shift_lfc"] == pytest.approx(2.0, abs=0.01) and row["within_lfc"] == pytest.approx(0.0, abs=0.01)
    assert row["pattern"] == "batch_wide" and "same shift between batches" in row["reason"]


def test_both_explanations_are_neither_call():
    """A clear difference net of the shift, and a shift clearly explaining half the difference: no call."""
    row = call(["both"], [3.0]).loc["both"]
    d, s, net = row["group_lfc"], row["batch_shift_lfc"], row["net_lfc"]
    assert net == pytest.approx(d - s) and net >= 2.33 * row["se_net_lfc"]
    assert s >= d / 2 and s - 2.33 * row["se_batch_shift_lfc"] >= d / 2
    assert row["pattern"] == "other" and row["reason"].startswith("both a clear difference")


def test_an_unclear_shift_reaching_half_blocks_the_call():
    """The batch shift reaches half the difference but is not clear, nor is the net contrast: no call."""
    row = call(["shift_unclear"], [3.0]).loc["shift_unclear"]
    d, s, se_s = row["group_lfc"], row["batch_shift_lfc"], row["se_batch_shift_lfc"]
    assert s >= d / 2 and s < 2.33 * se_s and row["net_lfc"] < 2.33 * row["se_net_lfc"]
    assert row["pattern"] == "other" and "not clearly" in row["reason"]


def test_a_marker_also_expressed_in_a_third_cluster_is_cluster_specific():
    """A against B net of a zero batch shift is 2 log2; C expresses it too, so it is not high only in its own cluster.

    The question is A against B: the call follows the net contrast, ``own_cluster_only`` says the rest.
    """
    row = call(["also_in_c"], [2.0]).loc["also_in_c"]
    assert row["within_lfc"] < row["group_lfc"] / 2 and row["batch_shift_lfc"] == pytest.approx(0.0, abs=0.01)
    assert row["net_lfc"] == pytest.approx(2.0, abs=0.01)
    assert row["pattern"] == "cluster_specific" and not row["own_cluster_only"]
    assert call(["marker"], [2.0]).loc["marker", "own_cluster_only"]


# Three bridges C1-C3 in both batches. "disagree": the bridges shift by 0, 0 and 3 log2, each measured precisely;
# "agree": all three shift by 1. A = 2 * 2^3.5 against B = 2: d = 3.5.
BRIDGES = [("A", "b0"), ("C1", "b0"), ("C2", "b0"), ("C3", "b0"), ("B", "b1"), ("C1", "b1"), ("C2", "b1"), ("C3", "b1")]
BRIDGE_CELLS = pd.DataFrame({"b0": [200, 200, 200, 200, 0], "b1": [0, 200, 200, 200, 200]}, index=["A", "C1", "C2", "C3", "B"])
HIGH = 2 * 2**3.5
BRIDGE_GENES = {"disagree": [HIGH, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.25], "agree": [HIGH, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0]}


def test_bridges_that_disagree_leave_the_groups_shift_undetermined():
    """Shifts 0, 0 and 3: the pooled shift is 1, but an unseen cluster's could be 0 or 3 (prediction SE 2): no call.

    A fixed-effect average gives 1 +- 0.01 and a clear net contrast of 2.5.
    """
    rows = call(["disagree", "agree"], [3.5, 3.5], profile(BRIDGE_GENES, layout=BRIDGES, n_cells=BRIDGE_CELLS))
    row = rows.loc["disagree"]
    # (eps = 0.01 makes the third bridge's shift log2(2.01 / 0.26) = 2.95)
    assert row["batch_shift_lfc"] == pytest.approx(1.0, abs=0.03) and row["n_shift_clusters"] == 3
    assert row["se_batch_shift_lfc"] == pytest.approx(2.0, abs=0.05) and row["shift_tau2"] == pytest.approx(3.0, abs=0.1)
    assert row["shift_i2"] > 0.99 and row["shift_heterogeneous"]
    assert row["pattern"] == "other" and row["reason"].startswith("neither")
    agree = rows.loc["agree"]
    assert agree["batch_shift_lfc"] == pytest.approx(1.0, abs=0.01) and agree["shift_tau2"] == pytest.approx(0.0)
    assert not agree["shift_heterogeneous"] and agree["pattern"] == "cluster_specific"


def test_one_bridge_cannot_measure_the_spread():
    row = call(["marker"], [2.0]).loc["marker"]
    assert row["n_shift_clusters"] == 1 and np.isnan(row["shift_tau2"]) and not row["shift_heterogeneous"]
    assert row["se_batch_shift_lfc"] == pytest.approx(np.sqrt(2 * PRECISE) / np.log(2), rel=0.01)


def test_the_shift_is_measured_with_the_groups_own_mix_of_batches():
    """B spans b0 (100 cells) and b1 (300), A only b0; the gene is 4 times higher in b1 in every cluster.

    B against A is log2(6.5 / 2) = 1.70, all of it batch: C seen with B's mix (6.5) against A's (2) shifts by
    as much, so the net contrast is 0 and the gene batch-wide. C's b1 against b0 alone would say 2.
    """
    layout = [("A", "b0"), ("C", "b0"), ("B", "b0"), ("B", "b1"), ("C", "b1")]
    cells = pd.DataFrame({"b0": [100, 200, 100], "b1": [0, 200, 300]}, index=["A", "C", "B"])
    prof = profile({"g": [2.0, 2.0, 2.0, 8.0, 8.0]}, layout=layout, n_cells=cells)
    row = call(["g"], [-1.7], prof).loc["g"]
    assert row["high_group"] == "B" and row["group_lfc"] == pytest.approx(np.log2(6.5 / 2), abs=0.01)
    assert row["batch_shift_lfc"] == pytest.approx(row["group_lfc"], abs=0.01) and row["net_lfc"] == pytest.approx(0, abs=0.01)
    assert row["between_batch_lfc"] == pytest.approx(2.0, abs=0.01)
    assert row["pattern"] == "batch_wide"


# No bridge: A, C and D in b0, B alone in b1. d = log2(16 / 2) = 3; f d = 1.5.
NO_BRIDGE = [("A", "b0"), ("C", "b0"), ("D", "b0"), ("B", "b1")]
NO_BRIDGE_CELLS = pd.DataFrame({"b0": [200, 200, 200, 0], "b1": [0, 0, 0, 200]}, index=["A", "C", "D", "B"])
NO_BRIDGE_GENES = {
    "mean_reference": [16.0, 2.0, 8.0, 2.0],  # w = 4 - (1 + 3) / 2 = 2 against the mean log; 1 against the highest
    "noisy_others": [16.0, 4.0, 4.0, 2.0],  # w = 2, C and D each with relative variance 0.5
    "low_within": [16.0, 8.0, 8.0, 2.0],  # w = 1 < f d
}


def no_bridge_call(gene: str):
    noisy = {("noisy_others", ("C", "b0")): 0.5, ("noisy_others", ("D", "b0")): 0.5}
    prof = profile(NO_BRIDGE_GENES, layout=NO_BRIDGE, n_cells=NO_BRIDGE_CELLS, noisy=noisy)
    return call([gene], [3.0], prof).loc[gene]


def test_without_bridges_the_within_batch_rule_decides_against_the_mean_of_the_others():
    row = no_bridge_call("mean_reference")
    assert np.isnan(row["batch_shift_lfc"]) and row["n_shift_clusters"] == 0
    assert row["within_lfc"] == pytest.approx(2.0, abs=0.01) and row["within_lfc_vs_next"] == pytest.approx(1.0, abs=0.01)
    assert row["pattern"] == "cluster_specific" and "batch shift not measurable" in row["reason"]
    low = no_bridge_call("low_within")
    assert low["pattern"] == "other" and "does not clearly reach" in low["reason"]


def test_the_within_batch_error_averages_the_other_clusters():
    """Two noisy others (relative variance 0.5 each) enter as their mean: variance (0.5 + 0.5) / 2^2 (ln units).

    se_w = 0.72 log2 and w = 2 >= 2.33 se_w: clear. Divided by 2 instead of 4, se_w = 1.02 and w is not clear.
    """
    row = no_bridge_call("noisy_others")
    expected = np.sqrt(PRECISE + (0.5 + 0.5) / 4) / np.log(2)
    assert row["se_within_lfc"] == pytest.approx(expected, rel=0.01)
    assert row["pattern"] == "cluster_specific"


# --------------------------------------------------------------------------- error bars from counts
def counts_adata(counts: dict[str, list[float]], cells: list[tuple[str, str, int]], samples: list[str] | None = None):
    """AnnData of raw counts: ``cells`` (cluster, batch, n) in order, ``counts[gene]`` one value per cell."""
    import anndata as ad

    obs = pd.DataFrame({"cell_type": [c for c, _, n in cells for _ in range(n)], "batch": [b for _, b, n in cells for _ in range(n)]})
    if samples is not None:
        obs["sample"] = samples
    obs.index = [f"cell{i}" for i in range(len(obs))]
    x = np.column_stack([np.asarray(v, dtype=float) for v in counts.values()])
    return ad.AnnData(x, obs=obs, var=pd.DataFrame(index=list(counts)))


def test_a_few_single_counts_are_not_exact():
    """3 single counts in 20 cells of A, none elsewhere (an exact test: p = 0.125): not a marker.

    20 cells of A, C, B and C per batch; a housekeeping gene of 20 counts and ten genes seen in every tenth cell
    (the median gene mean 0.1 sets eps 0.01). Without a count floor the zero means have no error and d = 4 is clear.
    60 counts in A against none stays clear.
    """
    from desweep.diagnose import classify_genes, raw_profile

    cells = [("A", "b0", 20), ("C", "b0", 20), ("B", "b1", 20), ("C", "b1", 20)]
    n = 80
    counts = {"hk": [20.0] * n, **{f"s{g}": [float(i % 10 == g) for i in range(n)] for g in range(10)},
              "null": [1.0 if i < 3 else 0.0 for i in range(n)], "real": [3.0 if i < 20 else 0.0 for i in range(n)]}
    prof = raw_profile(counts_adata(counts, cells), group_key="cell_type", batch_key="batch")
    calls = classify_genes(prof, ["null", "real"], np.array([1.0, 1.0]), group1="A", group2="B")
    assert calls.loc["null", "pattern"] == "other" and calls.loc["null", "reason"].startswith("raw group difference not clear")
    assert calls.loc["real", "pattern"] == "cluster_specific"


def test_donors_are_the_replicates_when_a_sample_column_exists():
    """A's two donors (20 cells each) express the gene at 10 and 1 counts, B's and C's at 1: one donor's marker.

    Counting cells as replicates, A's mean 5.5 is precise and the call clear; with the donors as replicates its
    error is the donors' spread (10 against 1), and no call.
    """
    from desweep.diagnose import classify_genes, raw_profile

    cells = [("A", "b0", 40), ("C", "b0", 40), ("B", "b1", 40), ("C", "b1", 40)]
    n = 160
    gene = [10.0 if i < 20 else 1.0 for i in range(n)]
    samples = [f"donor{i // 20}" for i in range(n)]
    adata = counts_adata({"hk": [200.0] * n, **{f"s{g}": [1.0] * n for g in range(10)}, "m": gene}, cells, samples)  # eps 0.1
    by_donor = raw_profile(adata, group_key="cell_type", batch_key="batch")
    by_cell = raw_profile(adata, group_key="cell_type", batch_key="batch", sample_key=None)
    calls = {name: classify_genes(prof, ["m"], np.array([1.0]), group1="A", group2="B").loc["m"]
             for name, prof in (("donor", by_donor), ("cell", by_cell))}
    assert calls["cell"]["group_lfc"] > 2  # about log2(5.4 / 1.1)
    assert calls["cell"]["pattern"] == "cluster_specific"
    assert calls["donor"]["pattern"] == "other" and calls["donor"]["se_group_lfc"] > 3 * calls["cell"]["se_group_lfc"]


def test_no_clear_raw_difference_is_other():
    row = call(["flat"], [1.0]).loc["flat"]
    assert abs(row["group_lfc"]) < np.log2(1.2)
    assert row["pattern"] == "other" and row["reason"].startswith("raw group difference not clear")


def test_a_gene_higher_in_group2_is_judged_from_group2():
    row = call(["marker_of_b"], [-2.0]).loc["marker_of_b"]
    assert row["high_group"] == "B" and row["group_lfc"] == pytest.approx(2.0, abs=0.01)
    assert row["pattern"] == "cluster_specific" and row["direction_agrees"]


def test_the_tables_direction_decides_when_the_raw_data_are_not_clear():
    """A gene the DE table has higher in B, with no clear raw difference, is judged with B as its high group."""
    rows = call(["flat", "flat"], [1.0, -1.0])
    assert list(rows["high_group"]) == ["A", "B"] and rows["direction_agrees"].all()


def test_a_contrary_direction_uses_the_raw_data_and_says_so():
    """The DE table has the A marker higher in B; the raw data clearly say A: judged from A, flagged."""
    row = call(["marker"], [-2.0]).loc["marker"]
    assert row["high_group"] == "A" and not row["direction_agrees"]
    assert row["pattern"] == "cluster_specific" and "the other way round" in row["reason"]


def test_no_other_cluster_in_the_high_groups_batch_is_other():
    """A alone in its batch: within-batch specificity cannot be measured, so no call, whatever the difference."""
    cells = pd.DataFrame({"b0": [200, 0], "b1": [0, 200]}, index=["A", "B"])
    prof = profile({"g": [8.0, 2.0]}, layout=[("A", "b0"), ("B", "b1")], n_cells=cells)
    row = call(["g"], [2.0], prof).loc["g"]
    assert np.isnan(row["within_lfc"]) and np.isnan(row["batch_shift_lfc"])
    assert row["pattern"] == "other" and "no other cluster in the high group's batch" in row["reason"]


def test_a_gene_outside_the_profile_or_a_group_without_cells_is_other():
    from desweep.diagnose import classify_genes

    assert call(["unknown"], [2.0]).loc["unknown", "reason"] == "gene not in the expression profile"
    row = classify_genes(profile(), ["marker"], np.array([2.0]), group1="A", group2="Z").loc["marker"]
    assert row["pattern"] == "other" and "no cells" in row["reason"]


# --------------------------------------------------------------------------- the recommendation
N_TOP = 50
COMPARISON = "A_vs_B"


def scored(settings: dict[str, list[tuple[float, float]]], *, default: str | None = None) -> dict[str, pd.DataFrame]:
    """Scores, tie band and recommendation from hand-written replicate shares.

    ``settings``: setting id -> per replicate (seed 0, 1, ...) ``(share cluster-specific, share batch-wide)``;
    ``default``: the setting that is scvi-tools' default call (batch_correction=False, vanilla).
    """
    from desweep.diagnose import rank

    plan, reps = [], []
    for setting_id, shares in settings.items():
        for seed, (cs, bw) in enumerate(shares):
            combination = f"{setting_id}__seed{seed}"
            is_default = setting_id == default
            plan.append({"combination_id": combination, "comparison_id": COMPARISON, "setting_id": setting_id,
                         "group1": "A", "group2": "B", "batch_correction": not is_default,
                         "mode": "vanilla" if is_default else "change", "delta": np.nan if is_default else 0.25,
                         "model": 0, "seed": seed})
            n_cs, n_bw = round(cs * N_TOP), round(bw * N_TOP)
            reps.append({"combination_id": combination, "comparison_id": COMPARISON, "setting_id": setting_id,
                         "model": 0, "seed": seed, "n_top": N_TOP, "n_cluster_specific": n_cs, "n_batch_wide": n_bw,
                         "n_other": N_TOP - n_cs - n_bw, "share_cluster_specific": cs, "share_batch_wide": bw,
                         "share_other": 1 - cs - bw, "specificity_score": cs - bw, "status": "ok",
                         "mean_within_lfc_cluster_specific": 1.0})
    plan = pd.DataFrame(plan)
    by_replicate = pd.DataFrame(reps).reindex(columns=rank.REPLICATE_COLUMNS)
    scores = rank.setting_scores(by_replicate, plan)
    comparisons = pd.DataFrame([{"comparison_id": COMPARISON, "group1": "A", "group2": "B", "design": "batch_specific"}])
    rec = rank.recommendations(scores, by_replicate, comparisons)
    return {"scores": scores.set_index("setting_id"), "rec": rec.iloc[0], "band": rank.recommended_settings(scores)}


def test_settings_are_ranked_by_their_mean_over_seeds():
    """A setting that is best in one seed only loses to one that is good in every seed."""
    out = scored({"lucky": [(0.9, 0.0), (0.1, 0.0)], "steady": [(0.6, 0.0), (0.6, 0.0)]})
    assert out["rec"]["recommended_setting_id"] == "steady"
    assert out["scores"].loc["lucky", "share_cluster_specific_mean"] == pytest.approx(0.5)
    assert out["scores"].loc["lucky", "share_cluster_specific_sd"] == pytest.approx(np.std([0.9, 0.1], ddof=1))


def test_the_tie_band_is_one_standard_error_with_no_more_batch_wide_genes():
    """Best 60 % of 50: SE 6.9 points. 56 % ties, 56 % with more batch-wide genes does not, 50 % does not."""
    out = scored({"best": [(0.60, 0.04)] * 2, "close": [(0.56, 0.04)] * 2, "close_dirtier": [(0.56, 0.06)] * 2,
                  "far": [(0.50, 0.0)] * 2})
    recommended = out["scores"]["recommended"]
    assert recommended.to_dict() == {"best": True, "close": True, "close_dirtier": False, "far": False}
    rec = out["rec"]
    assert rec["recommended_setting_id"] == "best" and rec["n_recommended_settings"] == 2 and not rec["all_settings_agree"]
    assert "1 more setting(s) within one standard error" in rec["reason"]
    band = out["band"].set_index("setting_id")
    assert list(band.index) == ["best", "close"] and band["is_best"].to_dict() == {"best": True, "close": False}


def test_a_lone_best_setting_is_recommended_alone():
    out = scored({"best": [(0.8, 0.0)] * 2, "other": [(0.4, 0.1)] * 2})
    assert out["scores"]["recommended"].to_dict() == {"best": True, "other": False}
    assert out["rec"]["n_recommended_settings"] == 1 and "within one standard error" not in out["rec"]["reason"]


def test_status_is_ok_from_half_cluster_specific():
    ok, weak = scored({"s": [(0.5, 0.0)] * 2}), scored({"s": [(0.48, 0.0)] * 2})
    assert ok["rec"]["status"] == "ok" and "Fewer than half" not in ok["rec"]["reason"]
    assert weak["rec"]["status"] == "weak" and "Fewer than half" in weak["rec"]["reason"]


def test_no_table_for_any_setting_is_no_settings():
    from desweep.diagnose import rank

    out = scored({"s": [(0.7, 0.0)]})
    scores = out["scores"].reset_index().assign(status="no_table")
    by_replicate = pd.DataFrame([{"combination_id": "s__seed0", "comparison_id": COMPARISON, "setting_id": "s", "model": 0,
                                  "seed": 0, "status": "no_table"}]).reindex(columns=rank.REPLICATE_COLUMNS)
    comparisons = pd.DataFrame([{"comparison_id": COMPARISON, "group1": "A", "group2": "B", "design": "batch_specific"}])
    rec = rank.recommendations(scores, by_replicate, comparisons).iloc[0]
    assert rec["status"] == "no_settings" and rec["n_recommended_settings"] == 0 and rec["reason"] == "No DE table for this comparison."


def test_the_defaults_batch_wide_share_is_reported():
    out = scored({"corrected": [(0.7, 0.0)] * 2, "default": [(0.3, 0.4), (0.3, 0.5)]}, default="default")
    rec = out["rec"]
    assert rec["default_setting_id"] == "default" and rec["default_share_batch_wide"] == pytest.approx(0.45)
    assert rec["default_n_batch_wide"] == pytest.approx(22.5) and "45% batch-wide genes in its top 50" in rec["reason"]
    missing = scored({"corrected": [(0.7, 0.0)] * 2})["rec"]
    assert missing["default_setting_id"] == "" and "not part of the sweep" in missing["reason"]

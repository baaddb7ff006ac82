"""Diagnose rules on hand-built expression profiles and scores (issue #19, item 4).

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
    "neither": [8.0, 6.0, 2.0, 6.0],  # d 2, w 0.42, s 0
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
    """Within-batch specificity and batch shift each clearly explain half the difference: no call."""
    row = call(["both"], [3.0]).loc["both"]
    d, w, s = row["group_lfc"], row["within_lfc"], row["batch_shift_lfc"]
    assert w >= d / 2 and s >= d / 2 and s - 2.33 * row["se_batch_shift_lfc"] >= d / 2
    assert row["pattern"] == "other" and row["reason"].startswith("both cluster-specific")


def test_an_unclear_rival_explanation_blocks_the_call():
    """Within-batch specificity is clear, the batch shift reaches half the difference but is not clear: no call."""
    row = call(["shift_unclear"], [3.0]).loc["shift_unclear"]
    d, s, se_s = row["group_lfc"], row["batch_shift_lfc"], row["se_batch_shift_lfc"]
    assert s >= d / 2 and s < 2.33 * se_s
    assert row["pattern"] == "other" and "only one of them clearly" in row["reason"]


def test_neither_explanation_is_other():
    row = call(["neither"], [2.0]).loc["neither"]
    assert row["within_lfc"] < row["group_lfc"] / 2 and row["batch_shift_lfc"] < row["group_lfc"] / 2
    assert row["pattern"] == "other" and row["reason"].startswith("neither")


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

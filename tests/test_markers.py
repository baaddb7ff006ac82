"""The answer: settings scored over seeds and models, the recommendation, the ranked answer with its
confidence, rejected genes and markers.h5ad, on planted truth with replicates (models x seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from desweep import keys
from test_diagnose import planted_inputs, truth_table

TOP_N = 50
MODELS, SEEDS = (0, 1), (0, 1)
#: kind of truth table -> (batch_correction, mode): "naive" is scvi-tools' default call
KINDS = {"corrected": (True, "change"), "naive": (False, "vanilla"), "noise": (True, "vanilla")}


def replicated_plan(comparisons: pd.DataFrame, adata, *, kinds=KINDS, models=MODELS, seeds=SEEDS, table=truth_table):
    """A plan of settings x models x seeds; each combination's table from the truth with its own noise."""
    rows, tables = [], {}
    for i, (_, comp) in enumerate(comparisons.iterrows()):
        for j, (kind, (bc, mode)) in enumerate(kinds.items()):
            setting = f"{comp['comparison_id']}__{kind}"
            for model in models:
                for seed in seeds:
                    cid = f"{setting}__model{model}__seed{seed}"
                    rows.append({"combination_id": cid, "setting_id": setting, "comparison_id": comp["comparison_id"],
                                 "group1": comp["group1"], "group2": comp["group2"], "batch_correction": bc, "mode": mode,
                                 "delta": 0.25 if mode == "change" else np.nan, "weights": "uniform",
                                 "filter_outlier_cells": False, "fdr_target": 0.05, "batchid1": "", "batchid2": "",
                                 "model": model, "seed": seed})
                    tables[cid] = table(adata, comp, kind, seed=1000 * i + 100 * j + 10 * model + seed)
    return pd.DataFrame(rows), tables


@pytest.fixture(scope="module")
def planted(sim_small):
    return planted_inputs(sim_small, replicated_plan)


@pytest.fixture(scope="module")
def answer(planted):
    from desweep.diagnose import diagnose

    adata, comparisons, plan, tables = planted
    return diagnose(adata, plan, tables, comparisons, top_n=TOP_N)


def planted_markers(var: pd.DataFrame, comp: pd.Series) -> set[str]:
    return set(var.index[(var["truth_pattern"] == "marker") & var["truth_cluster"].isin([comp["group1"], comp["group2"]])])


# --------------------------------------------------------------------------- settings, not seeds
def test_setting_scores_average_models_and_seeds(planted, answer):
    _, comparisons, plan, _ = planted
    by_rep, scores = answer["setting_scores_by_replicate"], answer["setting_scores"]
    bridges = [f"{cid}__bridge" for cid in comparisons["comparison_id"]]
    # the bridge contrast of each comparison follows the plan's combinations, scored like one more setting
    assert list(by_rep["combination_id"]) == [*plan["combination_id"], *bridges]
    assert (by_rep.set_index("combination_id").loc[bridges, "status"] == "ok").all()
    assert not scores.loc[scores["method"] == "bridge", "recommended"].any()
    scores = scores[scores["method"] == "scvi"]
    assert {"setting_id", "model", "seed", "share_cluster_specific", "status"} <= set(by_rep.columns)
    assert len(scores) == plan["setting_id"].nunique() == 3 * len(comparisons)
    assert (scores["n_replicates"] == len(MODELS) * len(SEEDS)).all()
    for _, row in scores.iterrows():
        reps = by_rep[by_rep["setting_id"] == row["setting_id"]]
        assert row["share_cluster_specific_mean"] == pytest.approx(reps["share_cluster_specific"].mean())
        assert row["share_cluster_specific_sd"] == pytest.approx(reps["share_cluster_specific"].std(ddof=1))
        assert row["share_batch_wide_mean"] == pytest.approx(reps["share_batch_wide"].mean())
        assert row["is_default"] == row["setting_id"].endswith("__naive")
    assert scores["setting"].str.contains("batch_correction=").all() and not scores["setting"].str.contains("seed").any()


def test_recommendation_names_a_setting_with_its_model_spread(planted, answer):
    _, comparisons, _, _ = planted
    rec = answer["recommendations"].set_index("comparison_id")
    by_rep = answer["setting_scores_by_replicate"]
    assert list(rec.index) == list(comparisons["comparison_id"])
    for cid, row in rec.iterrows():
        assert row["recommended_setting_id"] == f"{cid}__corrected" and row["status"] == "ok"
        assert row["default_setting_id"] == f"{cid}__naive" and row["default_share_batch_wide"] >= 0.3
        assert row["n_models"] == 2 and not row["all_settings_agree"] and row["n_recommended_settings"] == 1
        per_model = by_rep[by_rep["setting_id"] == row["recommended_setting_id"]].groupby("model")["share_cluster_specific"].mean()
        assert row["model_spread_sd"] == pytest.approx(per_model.std(ddof=1), abs=1e-12)
        assert "batch-wide genes in its top" in row["reason"] and "with high confidence" in row["reason"]
    no_cell_lists = [c for c in rec.columns if rec[c].astype(str).str.contains(";").any()]
    assert not no_cell_lists


def test_model_spread_is_nan_with_one_model(planted):
    from desweep.diagnose import diagnose

    adata, comparisons, plan, tables = planted
    one = plan[plan["model"] == 0]
    rec = diagnose(adata, one, {c: tables[c] for c in one["combination_id"]}, comparisons, top_n=TOP_N)["recommendations"]
    assert rec["model_spread_sd"].isna().all() and (rec["n_models"] == 1).all()


def test_every_setting_agreeing_is_said(planted):
    """Identical tables for every setting: all in the tie band, and the reason says so."""
    from desweep.diagnose import diagnose

    adata, comparisons, _, _ = planted
    same = {k: v for k, v in KINDS.items() if k != "noise"}
    plan, tables = replicated_plan(comparisons.iloc[:1], adata, kinds=same,
                                   table=lambda a, c, kind, seed: truth_table(a, c, "corrected", seed=seed % 100))
    out = diagnose(adata, plan, tables, comparisons, top_n=TOP_N)
    rec = out["recommendations"].iloc[0]
    assert bool(rec["all_settings_agree"]) and rec["n_recommended_settings"] == 2
    assert "Every setting agrees" in rec["reason"]
    band = out["recommended_settings"]
    assert len(band) == 2 and band["is_best"].sum() == 1
    assert band.loc[band["is_best"], "setting_id"].item() == rec["recommended_setting_id"]


# --------------------------------------------------------------------------- the ranked answer
def consensus(answer: dict, cid: str) -> set[str]:
    """The consensus rule re-derived from gene_patterns: cluster-specific in the top N of half the recommended replicates."""
    patterns, scores, by_rep = answer["gene_patterns"], answer["setting_scores"], answer["setting_scores_by_replicate"]
    band = scores[scores["recommended"] & (scores["comparison_id"] == cid)]
    reps = by_rep[by_rep["setting_id"].isin(band["setting_id"])]
    calls = patterns[patterns["combination_id"].isin(reps["combination_id"]) & (patterns["pattern"] == "cluster_specific")]
    support = calls.groupby("gene")["combination_id"].nunique() / len(reps)
    return set(support.index[support >= 0.5])


def test_high_confidence_is_the_consensus_rule(answer):
    markers = answer["markers"]
    for cid in answer["recommendations"]["comparison_id"]:
        got = markers[markers["comparison_id"] == cid]
        expected = consensus(answer, cid)
        assert len(expected) >= 20 and set(got.loc[got["confidence"] == "high", "gene"]) == expected & set(got["gene"])
        assert len(expected & set(got["gene"])) >= 0.9 * len(expected)  # the pooled ranking keeps the consensus near the top
        assert (got.loc[got["confidence"] == "high", "support"] >= 0.5).all()
        assert (got.loc[got["confidence"] != "high", "support"] < 0.5).all()
        assert (got["n_seeds_supporting"] <= len(SEEDS)).all() and (got["n_models_supporting"] <= len(MODELS)).all()


def test_the_answer_is_a_full_ranked_list_in_pooled_order(answer):
    markers, rec = answer["markers"], answer["recommendations"].set_index("comparison_id")
    for cid, got in markers.groupby("comparison_id"):
        assert len(got) == TOP_N and list(got["rank"]) == list(range(1, TOP_N + 1))
        # genes the bridge contrast supports first, each block best (lowest rank product) first
        unsupported = (got["families"] == "scvi;bridge") & ~(got["bridge_padj"] < 0.05)
        assert not (unsupported.to_numpy()[:-1] & ~unsupported.to_numpy()[1:]).any()
        for _, block in got.groupby(unsupported.to_numpy()):
            assert (block["score"].diff().dropna() >= -1e-12).all()
        assert got["confidence"].isin(["high", "medium", "low"]).all()
        assert rec.loc[cid, "n_markers"] == TOP_N and rec.loc[cid, "n_high_confidence"] == (got["confidence"] == "high").sum()
        summary = answer["bridge_summary"].set_index("comparison_id")
        families = "scvi;bridge" if str(summary.loc[cid, "identifiable"]).lower() == "true" else "scvi"
        assert (got["families"] == families).all() and (got["n_replicates"] == len(MODELS) * len(SEEDS)).all()
        assert got["bridge_lfc"].notna().all() == (families == "scvi;bridge")


def test_a_gene_needs_half_of_the_replicates_for_high_confidence(planted):
    """A marker pushed out of the top N in 3 of 4 replicates loses high confidence; out of 2 of 4, it keeps it."""
    from desweep.diagnose import diagnose

    adata, comparisons, plan, tables = planted
    cid = comparisons["comparison_id"].iloc[0]
    base = diagnose(adata, plan, tables, comparisons, top_n=TOP_N)["markers"]
    first = base[(base["comparison_id"] == cid) & (base["confidence"] == "high")]
    gene_a, gene_b = first["gene"].iloc[0], first["gene"].iloc[1]
    reps = [f"{cid}__corrected__model{m}__seed{s}" for m in MODELS for s in SEEDS]
    edited = dict(tables)
    for rep, genes in zip(reps, ([gene_a, gene_b], [gene_a, gene_b], [gene_a], []), strict=True):
        table = edited[rep].copy()
        moved = table["gene"].isin(genes)
        table = pd.concat([table[~moved], table[moved]], ignore_index=True)  # to the bottom
        edited[rep] = table.assign(rank=np.arange(1, len(table) + 1))
    markers = diagnose(adata, plan, edited, comparisons, top_n=TOP_N)["markers"]
    high = set(markers.loc[(markers["comparison_id"] == cid) & (markers["confidence"] == "high"), "gene"])
    assert gene_a not in high  # in the top N of 1 of 4 replicates
    assert gene_b in high  # 2 of 4
    row = markers[(markers["comparison_id"] == cid) & (markers["gene"] == gene_b)].iloc[0]
    assert row["support"] == 0.5 and row["n_replicates_supporting"] == 2 and row["n_models_supporting"] == 1
    ranks = base.set_index(["comparison_id", "gene"])["rank"]
    assert markers.set_index(["comparison_id", "gene"])["rank"].get((cid, gene_b), np.inf) > ranks[(cid, gene_b)]


def test_high_confidence_answers_are_planted_and_no_answer_is_batch_wide(planted, answer):
    adata, comparisons, _, _ = planted
    var = adata.var
    for _, comp in comparisons.iterrows():
        got = answer["markers"][answer["markers"]["comparison_id"] == comp["comparison_id"]]
        high = got[got["confidence"] == "high"]
        assert high["gene"].isin(planted_markers(var, comp)).mean() >= 0.95
        assert got["gene"].isin(planted_markers(var, comp)).sum() >= 0.9 * len(planted_markers(var, comp))
        truth = got["gene"].map(var["truth_pattern"])
        # planted batch-wide genes may fill the noise tail (low confidence, no family ranks them high), never above it
        assert not truth[got["confidence"] != "low"].eq("batch_wide").any() and truth.eq("batch_wide").mean() <= 0.05
        assert not got["pattern"].eq("batch_wide").any()
        high_of = var.loc[high["gene"], "truth_cluster"].to_numpy()
        assert (high["high_group"].to_numpy() == high_of).mean() >= 0.95


def test_rejected_are_the_defaults_batch_wide_genes(planted, answer):
    adata, _comparisons, _, _ = planted
    rejected, patterns = answer["rejected"], answer["gene_patterns"]
    assert list(rejected.columns[:6]) == ["comparison_id", "group1", "group2", "gene", "default_rank", "high_group"]
    for cid, part in rejected.groupby("comparison_id"):
        default = patterns[(patterns["setting_id"] == f"{cid}__naive") & (patterns["pattern"] == "batch_wide")]
        counts = default.groupby("gene")["combination_id"].nunique()
        assert set(part["gene"]) == set(counts.index[counts >= 2])  # half of the 4 replicates
        assert part["gene"].map(adata.var["truth_pattern"]).eq("batch_wide").mean() >= 0.9
        assert (part["batch_shift_lfc"] > 0).all() and part["reason"].str.len().gt(0).all()
        assert (part["n_replicates"] == 4).all()
    counts = rejected["comparison_id"].value_counts()
    rec = answer["recommendations"].set_index("comparison_id")
    assert (rec["n_rejected"] == counts.reindex(rec.index).fillna(0)).all()


# --------------------------------------------------------------------------- markers.h5ad
def test_markers_h5ad_draws_a_scanpy_dotplot(planted, answer, tmp_path):
    import anndata as ad
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    from desweep.diagnose import markers_adata

    adata, comparisons, _, _ = planted
    normalized = ad.AnnData(X=np.zeros((adata.n_obs, 3), dtype=np.float32), obs=adata.obs[[]],
                            var=pd.DataFrame(index=adata.var_names[:3]))
    normalized.layers[f"{keys.NORM_LAYER_PREFIX}own_batch"] = np.ones((adata.n_obs, 3), dtype=np.float32)
    markers, rejected = answer["markers"], answer["rejected"]
    out = markers_adata(adata, markers, rejected, group_key="cell_type", batch_key="batch", normalized=normalized)
    path = tmp_path / keys.MARKERS_H5AD
    out.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.n_obs == adata.n_obs and set(back.var_names) == set(markers["gene"]) | set(rejected["gene"])
    assert np.array_equal(back.X.toarray(), adata[:, back.var_names].X.toarray())  # raw counts
    assert {"cell_type", "batch"} <= set(back.obs.columns)
    layer = back.layers[f"{keys.NORM_LAYER_PREFIX}own_batch"]
    have = back.var_names.isin(adata.var_names[:3])
    assert np.all(layer[:, have] == 1) and np.isnan(layer[:, ~have]).all()
    uns = back.uns[keys.UNS_MARKERS]
    for group in uns["names"].dtype.names:
        own = markers[markers["high_group"] == group].sort_values(["comparison_id", "rank"]).drop_duplicates("gene")
        n = int(uns["n_markers"][group][0])
        assert n == len(own) and list(uns["names"][group][:n]) == list(own["gene"])
    for cid in comparisons["comparison_id"]:
        assert f"{keys.UNS_MARKERS}__{cid}" in back.uns
    fig = sc.pl.rank_genes_groups_dotplot(back, key=keys.UNS_MARKERS, n_genes=5, show=False, return_fig=True)
    assert fig is not None
    table = sc.get.rank_genes_groups_df(back, group="only_batch0", key=keys.UNS_MARKERS)
    assert list(table["names"][:3]) == list(markers[markers["high_group"] == "only_batch0"].sort_values(
        ["comparison_id", "rank"]).drop_duplicates("gene")["gene"][:3])


def test_normalize_layers_hold_every_consensus_marker(planted, answer):
    """normalize's default layers (every model's DE tables' top N, diagnose's N) hold every high-confidence answer
    and rejected gene, so markers.h5ad gets their layers."""
    from desweep.normalize import select_layer_genes

    _, _, plan, tables = planted
    assert plan["model"].nunique() > 1  # the markers draw on every model's tables, so must the layers
    high = answer["markers"][answer["markers"]["confidence"] == "high"]
    markers = set(high["gene"]) | set(answer["rejected"]["gene"])
    assert len(markers) >= 20 and len(answer["rejected"]) > 0
    layer_genes = set(select_layer_genes(tables, top_n=TOP_N).genes)
    assert markers <= layer_genes, sorted(markers - layer_genes)[:10]


def test_markers_layers_follow_the_cells_by_name():
    import anndata as ad

    from desweep.diagnose.markers import _layer

    cells = pd.Index([f"c{i}" for i in range(5)])
    values = np.arange(10, dtype=np.float32).reshape(5, 2)
    same = ad.AnnData(obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=["g1", "g2"]), layers={"l": values})
    shuffled = same[[3, 0, 4, 1, 2]].copy()
    for normalized in (same, shuffled):
        got = _layer(normalized, "l", cells, ["g2", "gx", "g1"])
        np.testing.assert_array_equal(got[:, [0, 2]], values[:, [1, 0]])
        assert np.isnan(got[:, 1]).all()

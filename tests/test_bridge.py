"""The bridge contrast on hand-built counts whose truth is known."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from desweep import keys
from desweep.bridge import BRIDGE_COLUMNS, SUMMARY_COLUMNS, bridge_contrast, bridge_plan_rows, bridge_tables
from desweep.bridge.shift import bridge_shifts, heterogeneous, shift_table
from desweep.bridge.units import Units, identify
from desweep.io import read_csv, write_csv

N_GENES = 30
BATCH_GENE, MARKER = "g0", "g1"


def counts(layout: dict[str, list[str]], *, shift: dict[tuple[str, str], dict[int, float]] | None = None,
           marker: dict[str, dict[int, float]] | None = None, cells: int = 30, donors: int = 1, donor_sd: float = 0.0,
           seed: int = 0) -> ad.AnnData:
    """Poisson counts: each cluster a base level, times 2**shift in a batch (cluster '*' = every cluster), times 2**marker."""
    rng = np.random.default_rng(seed)
    level = {c: rng.uniform(0, 1, N_GENES) for c in layout}
    blocks, obs = [], []
    for c, batches in layout.items():
        for b in batches:
            for d in range(donors):
                mu = 5.0 * 2 ** level[c]
                for (cc, bb), genes in (shift or {}).items():
                    if bb == b and cc in (c, "*"):
                        for g, v in genes.items():
                            mu[g] *= 2**v
                for g, v in (marker or {}).get(c, {}).items():
                    mu[g] *= 2**v
                if donor_sd:
                    mu = mu * 2 ** rng.normal(0, donor_sd, N_GENES)
                n = cells // donors
                blocks.append(rng.poisson(np.tile(mu, (n, 1))))
                obs += [(c, b, f"{b}:d{d}")] * n
    frame = pd.DataFrame(obs, columns=["cell_type", "batch", "donor"], index=[f"c{i}" for i in range(len(obs))])
    adata = ad.AnnData(sp.csr_matrix(np.vstack(blocks).astype(np.float32)), obs=frame)
    adata.var_names = [f"g{i}" for i in range(N_GENES)]
    return adata


def comparisons(*pairs: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"comparison_id": [f"{a}_vs_{b}" for a, b in pairs], "group1": [a for a, _ in pairs],
                         "group2": [b for _, b in pairs]})


def run(adata, comps, **kwargs):
    return bridge_contrast(adata, comps, group_key="cell_type", batch_key="batch", **kwargs)


CONFOUNDED = {"H": ["b1"], "L": ["b2"], "B1": ["b1", "b2"], "B2": ["b1", "b2"], "B3": ["b1", "b2"]}


@pytest.fixture(scope="module")
def confounded():
    """(a) H only in b1, L only in b2, three bridges; every cluster of b1 shifted 3 log2 in g0; g1 up 3 log2 in H."""
    adata = counts(CONFOUNDED, shift={("*", "b1"): {0: 3.0}}, marker={"H": {1: 3.0}})
    return adata, run(adata, comparisons(("H", "L")))


def test_contrast_is_net_of_the_shared_shift(confounded):
    _, result = confounded
    table = result["bridge"].set_index("gene")
    assert list(result["bridge"].columns) == BRIDGE_COLUMNS and len(table) == N_GENES
    assert table.loc[MARKER, "rank"] == 1 and table.loc[MARKER, "lfc"] == pytest.approx(3.0, abs=0.5)
    assert table.loc[MARKER, "high_group"] == "H" and table.loc[MARKER, "lfc_lower"] > 1.5
    assert 0 < table.loc[MARKER, "lfc_shrunk"] < table.loc[MARKER, "lfc"]
    # the batch-wide gene differs by 8x between the groups' cells, all of it batch
    assert abs(table.loc[BATCH_GENE, "lfc"]) < 0.5 and table.loc[BATCH_GENE, "rank"] > N_GENES // 2
    assert table.loc[BATCH_GENE, "shift_lfc"] > 2 and table.loc[BATCH_GENE, "lfc_lower"] == 0
    assert table.loc[BATCH_GENE, "n_bridges"] == 3 and not table["heterogeneous"].any()
    assert (table["lobo_lfc_min"] <= table["lfc"] + 1e-9).all() and (table["lobo_lfc_max"] >= table["lfc"] - 1e-9).all()
    assert list(result["bridge"]["rank"]) == list(range(1, N_GENES + 1))
    summary = result["bridge_summary"].iloc[0]
    assert list(result["bridge_summary"].columns) == SUMMARY_COLUMNS
    assert (summary["verdict"], summary["n_bridges"], summary["bridges"], summary["n_units"], summary["design"]) == \
        ("identifiable", 3, "B1;B2;B3", 8, "~ batch + cluster")


def test_heterogeneous_bridges_widen_the_prediction():
    """(b) the shift of g0 is 0, 0 and 3 log2 in the three bridges."""
    adata = counts(CONFOUNDED, shift={("B3", "b1"): {0: 3.0}}, marker={"H": {1: 3.0}})
    table = run(adata, comparisons(("H", "L")))["bridge"].set_index("gene")
    g0 = table.loc[BATCH_GENE]
    assert bool(g0["heterogeneous"]) and g0["shift_q_pvalue"] < 0.01 and g0["shift_i2"] > 0.9
    assert g0["se_shift_prediction"] > 1.0 and g0["lobo_lfc_max"] - g0["lobo_lfc_min"] > 0.5
    # leaving out the bridge that shifted (3 of the pooled ~1 log2) raises the contrast most
    assert g0["lobo_lfc_max"] - g0["lfc"] > g0["lfc"] - g0["lobo_lfc_min"] > 0
    assert not bool(table.loc[MARKER, "heterogeneous"])


def test_heterogeneous_is_relative_to_the_contrast():
    lfc = np.array([0.1, 10.0])
    assert list(heterogeneous(lfc, np.array([0.5, 0.5]), np.array([1e-4, 1e-4]), alpha=0.01)) == [True, False]
    assert list(heterogeneous(lfc, np.array([0.5, 0.5]), np.array([0.5, 0.5]), alpha=0.01)) == [False, False]


def test_lower_bound_widens_with_the_shift_spread():
    from desweep.bridge.fit import lower_bound

    lfc, se = np.array([3.0, -3.0, 0.1]), np.array([0.1, 0.1, 0.1])
    assert lower_bound(lfc, se, alpha=0.01) == pytest.approx([3.0 - 0.2576, 3.0 - 0.2576, 0.0], abs=1e-3)
    assert lower_bound(lfc, se, alpha=0.01, extra_var=np.array([1.0, np.nan, 0.0])) == pytest.approx(
        [max(0.0, 3.0 - 2.5758 * np.sqrt(1.01)), 3.0 - 0.2576, 0.0], abs=1e-3)


def test_single_bridge():
    """(c) b1-b2 linked by B alone; C (b1, b3) and D (b2, b3) leave residual degrees of freedom."""
    layout = {"H": ["b1"], "L": ["b2"], "B": ["b1", "b2", "b3"], "C": ["b1", "b3"], "D": ["b2", "b3"]}
    result = run(counts(layout, marker={"H": {1: 3.0}}), comparisons(("H", "L")))
    summary = result["bridge_summary"].iloc[0]
    assert summary["verdict"] == "single_bridge" and summary["n_bridges"] == 1 and "cannot be checked" in summary["reason"]
    table = result["bridge"]
    assert len(table) == N_GENES and (table["n_bridges"] == 1).all()
    for column in ("shift_tau2", "shift_i2", "shift_q_pvalue", "lobo_lfc_min", "lobo_lfc_max"):
        assert table[column].isna().all(), column
    assert table["shift_lfc"].notna().all() and not table["heterogeneous"].any()


def test_no_bridge_gives_no_numbers():
    """(d) H and L in batches no cluster links; another comparison of the same data is still estimated."""
    layout = {"H": ["b1"], "L": ["b2"], "B": ["b1", "b3"], "C": ["b1", "b3"], "D": ["b1", "b3"]}
    result = run(counts(layout), comparisons(("H", "L"), ("H", "B")))
    summary = result["bridge_summary"].set_index("comparison_id")
    assert summary.loc["H_vs_L", "verdict"] == "not_identifiable" and not summary.loc["H_vs_L", "identifiable"]
    assert summary.loc["H_vs_L", "n_units"] == 0 and "no cluster links" in summary.loc["H_vs_L", "reason"]
    assert set(result["bridge"]["comparison_id"]) == {"H_vs_B"}
    assert summary.loc["H_vs_B", "verdict"] == "same_batch"


def test_no_residual_degree_of_freedom_splits_units_into_pseudo_replicates():
    """One bridge between two batches: 4 units for 4 coefficients, so each unit is split into random parts of its
    cells; the planted marker is recovered net of the planted batch shift, and the summary says the p-values are
    cell sampling only."""
    from desweep.bridge import PSEUDO_REPLICATES

    adata = counts({"H": ["b1"], "L": ["b2"], "B": ["b1", "b2"]}, shift={("*", "b1"): {0: 3.0}}, marker={"H": {1: 3.0}},
                   cells=60)
    result = run(adata, comparisons(("H", "L")))
    summary = result["bridge_summary"].iloc[0]
    assert summary["verdict"] == "single_bridge" and summary["identifiable"]
    assert summary["n_units"] == 4 * PSEUDO_REPLICATES and "pseudo-replicates" in summary["design"]
    assert "cell sampling only" in summary["reason"] and summary["bridges"] == "B"
    table = result["bridge"].set_index("gene")
    assert len(table) == N_GENES and table["rank"].min() == 1
    assert table.loc[MARKER, "rank"] == 1 and table.loc[MARKER, "lfc"] == pytest.approx(3.0, abs=0.5)
    assert abs(table.loc[BATCH_GENE, "lfc"]) < 0.5  # the batch shift of every cluster is taken out
    # the same data twice: the random split is seeded
    again = run(adata, comparisons(("H", "L")))["bridge"]
    pd.testing.assert_frame_equal(result["bridge"], again)


def test_pseudo_replicates_deal_each_cluster_batch_into_near_equal_parts():
    from desweep.bridge.units import pseudo_replicate_labels

    cluster = np.array(["A"] * 7 + ["B"] * 3)
    batch = np.array(["b1"] * 10)
    labels = pseudo_replicate_labels(cluster, batch, 3, seed=0)
    assert sorted(pd.Series(labels[:7]).value_counts().tolist()) == [2, 2, 3]
    assert sorted(labels[7:]) == ["rep1", "rep2", "rep3"]
    assert list(labels) == list(pseudo_replicate_labels(cluster, batch, 3, seed=0))


def test_nothing_identifiable_gives_empty_table():
    result = run(counts({"H": ["b1"], "L": ["b2"]}), comparisons(("H", "L")))
    assert result["bridge"].empty and list(result["bridge"].columns) == BRIDGE_COLUMNS
    assert result["bridge_summary"]["verdict"].tolist() == ["not_identifiable"]


def test_groups_sharing_a_batch():
    """(e)"""
    layout = {"H": ["b1", "b2"], "L": ["b1"], "B": ["b1", "b2"]}
    result = run(counts(layout, marker={"H": {1: 3.0}}), comparisons(("H", "L")))
    summary = result["bridge_summary"].iloc[0]
    assert summary["verdict"] == "same_batch" and summary["n_bridges"] == 0 and "b1" in summary["reason"]
    assert result["bridge"].iloc[0]["gene"] == MARKER and result["bridge"]["shift_lfc"].isna().all()


def test_identify_through_a_chain():
    verdict = identify("H", "L", {"H": ["b1"], "L": ["b3"], "B": ["b1", "b2"], "C": ["b2", "b3"]})
    assert verdict.verdict == "identifiable" and verdict.bridges == [] and "other batches" in verdict.reason


def test_all_zero_units_keep_a_finite_weight():
    """(f) a gene with no count anywhere: variance > 0 and finite, pooled SE finite."""
    meta = pd.DataFrame({"cluster": ["B", "B", "C", "C"], "batch": ["b1", "b2", "b1", "b2"], "sample": "",
                         "n_cells": 10, "library_size": [100, 100, 100, 100]}, index=[f"u{i}" for i in range(4)])
    zero = pd.DataFrame({"z": [0, 0, 0, 0], "y": [5, 5, 9, 1]}, index=meta.index)
    units = Units(counts=zero, variance=zero * 0.0, meta=meta,
                  present={"B": ["b1", "b2"], "C": ["b1", "b2"]}, samples=False)
    shifts, variances = bridge_shifts(units, ["B", "C"], ["b1"], ["b2"])
    assert np.all(np.isfinite(variances)) and np.all(variances > 0.5)
    assert shifts[:, 0].tolist() == [0.0, 0.0]
    table = shift_table(np.array([0.0, 1.0]), shifts, variances, alpha=0.01)
    assert np.isfinite(table["se_shift_prediction"]).all() and (table["se_shift_prediction"] > 0.5).all()


def test_samples_change_the_design_and_widen_the_error():
    """(g) a sample column makes samples the units; donors that differ widen the contrast's SE."""
    adata = counts(CONFOUNDED, marker={"H": {1: 3.0}}, cells=60, donors=3, donor_sd=0.5)
    alike = counts(CONFOUNDED, marker={"H": {1: 3.0}}, cells=60, donors=3, donor_sd=0.0)
    comps = comparisons(("H", "L"))
    by_batch = run(adata, comps)
    by_sample = run(adata, comps, sample_key="donor")
    alike_by_sample = run(alike, comps, sample_key="donor")
    assert by_batch["bridge_summary"]["design"].iloc[0] == "~ batch + cluster"
    assert by_sample["bridge_summary"]["design"].iloc[0] == "~ sample + cluster"
    assert by_sample["bridge_summary"]["n_units"].iloc[0] == 3 * by_batch["bridge_summary"]["n_units"].iloc[0]
    assert by_sample["bridge"]["se"].median() > 1.5 * alike_by_sample["bridge"]["se"].median()


def test_samples_must_be_nested_in_batches():
    from desweep.errors import DesweepInputError

    adata = counts(CONFOUNDED)
    adata.obs["donor"] = "same"
    with pytest.raises(DesweepInputError, match="nested"):
        run(adata, comparisons(("H", "L")), sample_key="donor")


def test_deterministic_bytes(tmp_path, confounded):
    """(h)"""
    adata, first = confounded
    second = run(adata.copy(), comparisons(("H", "L")))
    for name in ("bridge", "bridge_summary"):
        write_csv(first[name], tmp_path / f"a_{name}.csv")
        write_csv(second[name], tmp_path / f"b_{name}.csv")
        assert (tmp_path / f"a_{name}.csv").read_bytes() == (tmp_path / f"b_{name}.csv").read_bytes()


def test_hostile_names_survive(tmp_path):
    """(i)"""
    rename = {"H": "NA", "L": "01", "B1": "a;b", "B2": "x y", "B3": "None"}
    adata = counts(CONFOUNDED, marker={"H": {1: 3.0}})
    adata.obs["cell_type"] = adata.obs["cell_type"].map(rename)
    adata.obs["batch"] = adata.obs["batch"].map({"b1": "01", "b2": "NA"})
    result = run(adata, pd.DataFrame({"comparison_id": ["NA_vs_01"], "group1": ["NA"], "group2": ["01"]}))
    write_csv(result["bridge_summary"], tmp_path / keys.BRIDGE_SUMMARY_CSV)
    write_csv(result["bridge"], tmp_path / keys.BRIDGE_CSV)
    summary = read_csv(tmp_path / keys.BRIDGE_SUMMARY_CSV).iloc[0]
    assert (summary["group1"], summary["group2"], summary["verdict"]) == ("NA", "01", "identifiable")
    assert summary["bridges"] == '"a;b";None;x y' or set(summary["bridges"].replace('"a;b"', "").split(";")) >= {"None", "x y"}
    table = read_csv(tmp_path / keys.BRIDGE_CSV)
    assert table.iloc[0]["gene"] == MARKER and table.iloc[0]["high_group"] == "NA" and set(table["group2"]) == {"01"}


def test_bridge_enters_the_sweep(confounded):
    _, result = confounded
    plan = pd.DataFrame({"combination_id": ["H_vs_L__s1"], "comparison_id": ["H_vs_L"], "group1": ["H"], "group2": ["L"],
                         "setting_id": ["H_vs_L__s1"], "model": [0], "seed": [0]})
    rows = bridge_plan_rows(result["bridge_summary"], plan)
    assert rows["method"].tolist() == ["scvi", "bridge"] and rows["combination_id"].iloc[1] == "H_vs_L__bridge"
    tables = bridge_tables(result["bridge"])
    table = tables["H_vs_L__bridge"]
    assert list(table.columns) == ["gene", "rank", "lfc_mean", "proba_de"] and len(table) == N_GENES
    assert table["gene"].iloc[0] == MARKER and table["proba_de"].iloc[0] > 0.99


def test_the_plan_keeps_its_booleans_beside_the_bridge_rows():
    """A bool column meeting the bridge rows' missing values must not turn into 1.0/0.0 (the settings' descriptions read them)."""
    from desweep.bridge.sweep import bridge_plan_rows

    plan = pd.DataFrame({"combination_id": ["a"], "comparison_id": ["c"], "group1": ["x"], "group2": ["y"], "setting_id": ["s"],
                         "model": [0], "seed": [0], "batch_correction": [True], "filter_outlier_cells": [False]})
    summary = pd.DataFrame({"comparison_id": ["c"], "group1": ["x"], "group2": ["y"], "identifiable": [True]})
    out = bridge_plan_rows(summary, plan)
    assert out.loc[0, "batch_correction"] is True and out.loc[0, "filter_outlier_cells"] is False
    assert list(out["method"]) == ["scvi", "bridge"]

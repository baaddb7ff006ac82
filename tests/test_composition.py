"""Composition: batch-specific clusters and design classes against planted truth."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from desweep import composition as comp
from desweep.errors import DesweepInputError


def counts_table(rows: dict[str, list[int]], batches=("b0", "b1", "b2")) -> pd.DataFrame:
    table = pd.DataFrame(rows, index=list(batches)).T
    table.index.name = "cluster"
    return table


def test_planted_batch_specific_clusters_are_found(sim_small):
    counts = comp.cluster_batch_counts(sim_small.obs, group_key="cell_type", batch_key="batch")
    status = comp.cluster_status(counts)
    assert status.loc["only_batch0", "status"] == "specific" and status.loc["only_batch0", "specific_to"] == "batch0"
    assert status.loc["only_batch1", "status"] == "specific" and status.loc["only_batch1", "specific_to"] == "batch1"
    assert (status.loc[["shared0", "shared1", "shared2"], "status"] == "shared").all()


def test_default_comparisons_cover_every_batch_specific_pair_confounded_first(sim_small):
    counts = comp.cluster_batch_counts(sim_small.obs, group_key="cell_type", batch_key="batch")
    status = comp.cluster_status(counts)
    pairs = comp.default_comparisons(status, max_comparisons=100)
    assert pairs[0] == ("only_batch0", "only_batch1")
    assert len(pairs) == 1 + 2 * 3  # the specific pair, and each specific cluster vs each shared one
    table = comp.comparison_table(status, pairs)
    designs = dict(zip(table["comparison_id"], table["design"], strict=True))
    assert designs["only_batch0_vs_only_batch1"] == "confounded"
    assert designs["only_batch0_vs_shared1"] == "one_specific"
    assert list(table.columns[:6]) == ["comparison_id", "group1", "group2", "design", "recommended_batch_correction", "reason"]
    assert comp.default_comparisons(status, max_comparisons=2) == pairs[:2]


def test_a_few_stray_cells_do_not_make_a_cluster_shared():
    counts = counts_table({"A": [300, 12, 0], "B": [400, 1500, 390]})
    status = comp.cluster_status(counts, comp.PresenceRule(min_cells=10, min_enrichment=0.1))
    assert status.loc["A", "status"] == "specific"  # 12 cells are 0.8 % of b1 against 13 % overall
    assert comp.cluster_status(counts, comp.PresenceRule(min_cells=10, min_enrichment=0.05)).loc["A", "status"] == "partial"
    assert status.loc["B", "status"] == "shared"


def test_presence_is_relative_to_batch_size():
    # b2 is tiny: 15 cells of A there are a large share of b2, so A is present in b2
    counts = counts_table({"A": [300, 0, 15], "B": [700, 800, 25]})
    status = comp.cluster_status(counts)
    assert status.loc["A", "batches"] == "b0;b2" and status.loc["A", "status"] == "partial"


def test_fewer_than_min_cells_never_make_a_cluster_present():
    # b2 holds 10 cells: A's 5 there are half of b2 (enriched), but fewer than min_cells=10
    counts = counts_table({"A": [300, 0, 5], "B": [700, 800, 5]})
    status = comp.cluster_status(counts)
    assert status.loc["A", "batches"] == "b0" and status.loc["A", "status"] == "specific"
    assert comp.cluster_status(counts, comp.PresenceRule(min_cells=5)).loc["A", "batches"] == "b0;b2"


@pytest.mark.parametrize(
    ("b1", "b2", "design", "setting"),
    [
        ({"b0", "b1"}, {"b0", "b1", "b2"}, "shared", "True"),
        ({"b0", "b1"}, {"b1", "b2"}, "partially_shared", "True"),
        ({"b0"}, {"b0", "b1"}, "one_specific", "True"),
        ({"b0"}, {"b1"}, "confounded", "True"),
        ({"b0"}, {"b0"}, "single_batch", "False"),
    ],
)
def test_design_classes_and_recommendations(b1, b2, design, setting):
    assert comp.classify(b1, b2) == design
    recommended, reason = comp.recommendation(design, any_shared_cluster=True)
    assert recommended == setting and reason.endswith(".")


def test_confounded_without_any_shared_cluster_is_not_identifiable():
    counts = counts_table({"A": [300, 0, 0], "B": [0, 200, 0], "C": [0, 0, 250]})
    status = comp.cluster_status(counts)
    table = comp.comparison_table(status, [("A", "B")])
    assert table.loc[0, "design"] == "confounded"
    assert table.loc[0, "recommended_batch_correction"] == "none"


def test_comparison_strings():
    assert comp.parse_comparisons("A:B; C:D ;") == [("A", "B"), ("C", "D")]
    assert comp.parse_comparisons('"CD4+:act":B;"a;b":"say ""hi"""') == [("CD4+:act", "B"), ("a;b", 'say "hi"')]
    assert comp.comparison_id("only_batch0", "T cells/NK").startswith("only_batch0_vs_T-cells-NK+")


def test_comparisons_option_tells_pairs_from_files(tmp_path):
    """Pairs longer than a file name (255 bytes) and a group named like a file are pairs; a CSV file is read."""
    from desweep.composition import read_comparisons

    long = ";".join(f"cluster number {i}:cluster number {i + 1}" for i in range(20))
    assert len(long.encode()) > 255 and len(read_comparisons(long)) == 20
    assert read_comparisons("A:B.csv") == [("A", "B.csv")]
    assert read_comparisons('"T cells:act":counts.tsv') == [("T cells:act", "counts.tsv")]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("group1,group2\nA,B\n")
    assert read_comparisons(str(pairs)) == [("A", "B")]
    with pytest.raises(DesweepInputError, match="does not exist"):
        read_comparisons(str(tmp_path / "missing.csv"))


@pytest.mark.parametrize("text, expected", [
    ("A:B;A:B", "'A:B' is given twice"),
    ("A:", "'A:\"\"' is not of the form group1:group2"),
    ("A:B:C", "'A:B:C' is not of the form group1:group2"),
    ('"A:B', "unterminated quote"),
    (";", "no comparison given"),
])
def test_comparison_strings_refused(text: str, expected: str):
    with pytest.raises(DesweepInputError, match=re.escape(expected)):
        comp.parse_comparisons(text)

"""The ranked answer (desweep.diagnose.answer) and the named setting (rank.named_setting) on hand-built inputs.

The profile is test_diagnose_rules' (A in batch b0, B in b1, C in both): ``marker`` is cluster-specific,
``batch_wide`` batch-wide, ``neither`` has a raw difference no explanation covers. Tables are written down
by hand, so every expected rank follows from the module docstring's rule.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from test_diagnose_rules import profile

GENES = ["marker", "batch_wide", "neither", "flat", "marker_of_b"]
COMPARISON = pd.Series({"comparison_id": "A_vs_B", "group1": "A", "group2": "B", "group1_batches": "b0", "group2_batches": "b1"})


def table(order: list[str], lfc: dict[str, float] | None = None) -> pd.DataFrame:
    """A DE table ranking ``order`` first to last (lfc 2, i.e. higher in A, unless given)."""
    lfc = lfc or {}
    return pd.DataFrame({"gene": order, "rank": np.arange(1, len(order) + 1),
                         "lfc_mean": [lfc.get(g, 2.0) for g in order], "proba_de": 0.9})


def bridge(order: list[str], *, lfc: dict[str, float] | None = None, heterogeneous: tuple[str, ...] = (),
           group1: str = "A", group2: str = "B", padj: dict[str, float] | None = None) -> pd.DataFrame:
    lfc, padj = lfc or {}, padj or {}
    return pd.DataFrame({"comparison_id": "A_vs_B", "group1": group1, "group2": group2, "gene": order,
                         "rank": np.arange(1, len(order) + 1), "lfc": [lfc.get(g, 2.0) for g in order],
                         "padj": [padj.get(g, 0.001) for g in order], "heterogeneous": [g in heterogeneous for g in order]})


def patterns(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """gene_patterns rows ``(combination_id, gene, pattern)``, rank 1, model 0, seed from the id."""
    return pd.DataFrame([{"combination_id": c, "gene": g, "pattern": p, "rank": 1, "setting_id": "s", "model": 0,
                          "seed": int(c[-1])} for c, g, p in rows],
                        columns=["combination_id", "gene", "pattern", "rank", "setting_id", "model", "seed"])


def answer(tables: dict[str, pd.DataFrame], gene_patterns: pd.DataFrame | None = None, bridge_table=None, top_n: int = 5):
    from desweep.diagnose import ranked_answer

    gene_patterns = gene_patterns if gene_patterns is not None else patterns([])
    return ranked_answer(COMPARISON, tables, gene_patterns, profile(), bridge_table=bridge_table, top_n=top_n)


def test_families_weigh_the_same_however_many_replicates():
    # four scVI replicates put "marker" first and "marker_of_b" third; the bridge the reverse: a tie
    # (mean ln rank equal), broken by name; weighing tables one by one would put "marker" ahead by far
    tables = {f"r{k}": table(["marker", "flat", "marker_of_b", "neither", "batch_wide"]) for k in range(4)}
    got, _ = answer(tables, bridge_table=bridge(["marker_of_b", "flat", "marker", "neither", "batch_wide"],
                                                lfc={"marker_of_b": -2.0}))
    score = got.set_index("gene")["score"]
    assert score["marker"] == pytest.approx(score["marker_of_b"])
    assert score["marker"] == pytest.approx((math.log(1 / 6) + math.log(3 / 6)) / 2)
    assert score["flat"] == pytest.approx(math.log(2 / 6))
    assert list(got["gene"][:3]) == ["marker", "marker_of_b", "flat"]
    assert (got["families"] == "scvi;bridge").all()


def test_batch_wide_and_heterogeneous_genes_are_vetoed():
    tables = {"r0": table(["batch_wide", "neither", "marker", "flat", "marker_of_b"])}
    got, vetoed = answer(tables)
    assert "batch_wide" not in set(got["gene"]) and vetoed == 1
    assert list(got["gene"][:2]) == ["neither", "marker"] and list(got["rank"]) == list(range(1, len(got) + 1))
    got, vetoed = answer(tables, bridge_table=bridge(["batch_wide", "neither", "marker", "flat", "marker_of_b"],
                                                     heterogeneous=("neither",)))
    assert "neither" not in set(got["gene"]) and "batch_wide" not in set(got["gene"]) and vetoed == 2
    assert got.iloc[0]["gene"] == "marker"


def test_genes_the_bridge_does_not_support_come_last():
    # "marker" first in every table, but the bridge contrast finds no evidence for it (padj 0.2): after the rest
    tables = {f"r{k}": table(["marker", "flat", "marker_of_b", "neither", "batch_wide"]) for k in range(2)}
    got, _ = answer(tables, bridge_table=bridge(["marker", "flat", "marker_of_b", "neither", "batch_wide"],
                                                lfc={"marker_of_b": -2.0}, padj={"marker": 0.2}))
    assert list(got["gene"]) == ["flat", "marker_of_b", "neither", "marker"]
    got, _ = answer(tables)  # without a bridge contrast the pooled score alone orders
    assert got.iloc[0]["gene"] == "marker"


def test_the_list_stops_at_top_n():
    got, _ = answer({"r0": table(GENES)}, top_n=2)
    assert list(got["rank"]) == [1, 2]


def test_confidence_high_medium_low():
    tables = {"r0": table(["neither", "marker", "flat", "marker_of_b", "batch_wide"], lfc={"marker_of_b": -2.0}),
              "r1": table(["neither", "marker", "flat", "marker_of_b", "batch_wide"], lfc={"marker_of_b": -2.0})}
    # "marker" supported (top N, cluster-specific) by 1 of 2 replicates: half, high
    got, _ = answer(tables, patterns([("r0", "marker", "cluster_specific"), ("r1", "marker", "other"),
                                      ("r0", "marker_of_b", "cluster_specific")]))
    conf = got.set_index("gene")["confidence"]
    assert conf["marker"] == "high" and got.set_index("gene").loc["marker", "support"] == 0.5
    assert conf["marker_of_b"] == "high"  # 1 of 2 as well
    assert conf["neither"] == "low"  # the raw call is not cluster-specific
    got, _ = answer(tables)  # no replicate supports anything: the raw call decides between medium and low
    conf = got.set_index("gene")["confidence"]
    assert conf["marker"] == "medium" and conf["marker_of_b"] == "medium" and conf["neither"] == "low"


def test_families_disagreeing_on_the_direction_is_low_and_the_bridge_gives_the_direction():
    tables = {"r0": table(["marker", "neither", "flat", "marker_of_b", "batch_wide"], lfc={"marker": -2.0, "flat": -0.1})}
    got, _ = answer(tables, bridge_table=bridge(["marker", "neither", "flat", "marker_of_b", "batch_wide"]))
    row = got.set_index("gene").loc["marker"]
    assert not row["direction_agrees"] and row["confidence"] == "low" and row["high_group"] == "A"
    # the raw data do not settle "flat" (a 5 % difference): the bridge's direction (A) is the answer's, not scVI's (B)
    assert got.set_index("gene").loc["flat", "high_group"] == "A"


def test_a_bridge_table_in_the_other_orientation_is_turned():
    from desweep.diagnose.answer import _oriented_bridge

    turned = _oriented_bridge(bridge(["marker"], group1="B", group2="A"), "A_vs_B", "A")
    assert turned["lfc"].tolist() == [-2.0]
    assert _oriented_bridge(bridge(["marker"]), "A_vs_B", "A")["lfc"].tolist() == [2.0]
    assert _oriented_bridge(bridge(["marker"]), "other", "A") is None


# --------------------------------------------------------------------------- the named setting
def ranked_settings(robust_in_band: bool) -> pd.DataFrame:
    rows = [{"setting_id": "best", "batch_correction": True, "decoding": "own", "mode": "change", "delta": 1.0,
             "weights": "uniform", "filter_outlier_cells": False, "recommended": True},
            {"setting_id": "robust", "batch_correction": True, "decoding": "all", "mode": "change", "delta": 0.5,
             "weights": "uniform", "filter_outlier_cells": False, "recommended": robust_in_band},
            {"setting_id": "near_robust", "batch_correction": True, "decoding": "all", "mode": "change", "delta": 0.25,
             "weights": "uniform", "filter_outlier_cells": False, "recommended": True}]
    return pd.DataFrame(rows)


def test_the_robust_setting_is_named_when_it_ties_with_the_best():
    from desweep.diagnose.rank import named_setting

    assert named_setting(ranked_settings(True))["setting_id"] == "robust"
    assert named_setting(ranked_settings(False))["setting_id"] == "best"  # outside the band: the best

"""desweep plan: grid checks, completeness, skipped reasons, stable ids (no training)."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from desweep import keys
from desweep.cli import cli
from desweep.errors import DesweepInputError
from desweep.plan import (
    GRID_KEYS, PLAN_COLUMNS, SAMPLING_FIELDS, SKIPPED_COLUMNS, SweepRow, check_grid, default_grid, default_grid_text, make_plan,
)

COMPARISONS = pd.DataFrame([
    # confounded: each group specific to its own batch
    {"comparison_id": "only_batch0_vs_only_batch1", "group1": "only_batch0", "group2": "only_batch1", "design": "confounded",
     "group1_batches": "batch0", "group2_batches": "batch1"},
    # one_specific: own batches overlap without being equal
    {"comparison_id": "only_batch0_vs_shared0", "group1": "only_batch0", "group2": "shared0", "design": "one_specific",
     "group1_batches": "batch0", "group2_batches": "batch0;batch1;batch2"},
    # single_batch: own == each single batch
    {"comparison_id": "a_vs_b", "group1": "a", "group2": "b", "design": "single_batch",
     "group1_batches": "batch2", "group2_batches": "batch2"},
])
GRID = {"batch_correction": [False, True], "mode": ["vanilla", "change"], "delta": [0.25, 0.5], "batchids": ["all", "each", "own"],
        "weights": ["uniform"], "filter_outlier_cells": [False, True], "fdr_target": [0.05], "seeds": [0, 1]}


def test_default_grid_is_documented_and_valid():
    grid = default_grid()
    assert set(grid) == set(GRID_KEYS)
    assert grid["batch_correction"] == [False, True] and grid["weights"] == ["uniform"]
    text = default_grid_text()
    for key in GRID_KEYS:
        assert f"\n{key}:" in text  # every key appears, with its comment above


def test_plan_is_deterministic_and_complete():
    plan, skipped = make_plan(COMPARISONS, GRID)
    again, skipped_again = make_plan(COMPARISONS, GRID)
    pd.testing.assert_frame_equal(plan, again)
    pd.testing.assert_frame_equal(skipped, skipped_again)
    assert list(plan.columns) == PLAN_COLUMNS and list(skipped.columns) == SKIPPED_COLUMNS
    assert plan["combination_id"].is_unique

    # every point of the grid is accounted for exactly once: planned or skipped with a reason
    union = pd.concat([plan["combination_id"], skipped["combination_id"]])
    assert union.is_unique
    assert skipped["reason"].str.len().gt(0).all()
    n_modes = 1 + len(GRID["delta"]) + len(GRID["delta"])  # vanilla, change x delta, vanilla x delta (skipped)
    per_seed_filter = {  # decodings per comparison, bc=False x 3 batchids + bc=True choices
        "only_batch0_vs_only_batch1": 3 + 1 + 2 + 1,  # all, in-batch0, in-batch1, own
        "only_batch0_vs_shared0": 3 + 1 + 3 + 1,  # all, in-batch0..2, own (overlap)
        "a_vs_b": 3 + 1 + 1 + 1,  # all, in-batch2, own (duplicate of in-batch2)
    }
    expected = sum(per_seed_filter.values()) * n_modes * len(GRID["seeds"]) * len(GRID["filter_outlier_cells"])
    assert len(union) == expected

    # planned decodings per comparison and seed/filter, each with 1 vanilla + 2 change rows
    planned = plan[(plan["seed"] == 0) & ~plan["filter_outlier_cells"]]
    per_comparison = planned.groupby("comparison_id")["sampling_key"].nunique().to_dict()
    assert per_comparison == {"only_batch0_vs_only_batch1": 5, "only_batch0_vs_shared0": 5, "a_vs_b": 3}
    assert (planned.groupby("sampling_key").size() == 3).all()
    assert plan.loc[plan["mode"] == "vanilla", "delta"].isna().all()
    assert plan.loc[plan["mode"] == "change", "delta"].notna().all()
    # rows of one sampling key are contiguous and share every sampling setting
    starts = plan["sampling_key"].ne(plan["sampling_key"].shift()).cumsum()
    assert starts.max() == plan["sampling_key"].nunique()
    sampling = ["comparison_id", "batch_correction", "batchid1", "batchid2", "weights", "filter_outlier_cells", "seed"]
    assert (plan.groupby("sampling_key")[sampling].nunique() == 1).all().all()


def test_ids_are_readable_and_decodings_match_comparisons():
    plan, _ = make_plan(COMPARISONS, GRID)
    row = plan.set_index("combination_id").loc["only_batch0_vs_only_batch1__bc-own__change-d0.5__uniform-filtered__fdr0.05__seed1"]
    assert (row["batchid1"], row["batchid2"], row["decoding"], row["batch_correction"]) == ("batch0", "batch1", "own", True)
    assert row["sampling_key"] == "only_batch0_vs_only_batch1__bc-own__uniform-filtered__seed1"
    assert row["setting_id"] == "only_batch0_vs_only_batch1__bc-own__change-d0.5__uniform-filtered__fdr0.05"
    single = plan.set_index("combination_id").loc["only_batch0_vs_only_batch1__bc-in-batch1__vanilla__uniform__fdr0.05__seed0"]
    assert (single["batchid1"], single["batchid2"]) == ("batch1", "batch1")
    nobc = plan[plan["combination_id"].str.contains("__nobc__")]
    assert (nobc["batchid1"] == "").all() and (nobc["decoding"] == "observed").all() and (~nobc["batch_correction"]).all()
    bc_all = plan[plan["decoding"] == "all"]
    assert (bc_all["batchid1"] == "").all() and bc_all["batch_correction"].all()


def test_skipped_combinations_have_reasons():
    _, skipped = make_plan(COMPARISONS, GRID)
    reasons = skipped.set_index("combination_id")["reason"]

    def reason(cid: str) -> str:
        return reasons.loc[cid]

    assert "change only" in reason("a_vs_b__nobc__vanilla-d0.25__uniform__fdr0.05__seed0")
    assert "Inconsistent batch policy" in reason("only_batch0_vs_only_batch1__nobc-each__change-d0.5__uniform__fdr0.05__seed0")
    assert "overlap without being equal" in reason("only_batch0_vs_shared0__bc-own__change-d0.25__uniform__fdr0.05__seed0")
    assert "same batches as 'bc-in-batch2'" in reason("a_vs_b__bc-own__change-d0.25__uniform__fdr0.05__seed1")


def test_explicit_every_batch_is_a_duplicate_of_all_when_batches_are_known():
    comparisons = pd.DataFrame([{"comparison_id": "x_vs_y", "group1": "x", "group2": "y", "design": "shared",
                                 "group1_batches": "b1;b2", "group2_batches": "b1;b2"}])
    grid = {"batch_correction": [True], "batchids": ["all", "own"], "seeds": [0], "mode": ["change"], "delta": [0.5]}
    plan, skipped = make_plan(comparisons, grid)
    assert set(plan["decoding"]) == {"all", "own"}
    plan, skipped = make_plan(comparisons, grid, batches=["b1", "b2"])
    assert set(plan["decoding"]) == {"all"}
    assert "same batches as 'bc-all'" in skipped["reason"].iloc[0]


@pytest.mark.parametrize(("raw", "field", "problem"), [
    ({"mode": ["vanilla", "bayes"]}, "mode", "must be one of vanilla, change"),
    ({"delta": ["big"]}, "delta", "must be a number"),
    ({"delta": [0]}, "delta", "must be positive"),
    ({"batch_correction": ["yes please"]}, "batch_correction", "must be true or false"),
    ({"seeds": [1.5]}, "seeds", "non-negative integer"),
    ({"fdr_target": [1.5]}, "fdr_target", "between 0 and 1"),
    ({"weights": []}, "weights", "empty list"),
    ({"detla": [0.5]}, "detla", "unknown grid key"),
    ({}, "grid", "is empty"),
    (None, "grid", "is empty"),
    (["mode"], "grid", "must be a mapping"),
])
def test_grid_errors_name_file_and_key(raw, field, problem):
    with pytest.raises(DesweepInputError) as err:
        check_grid(raw, source="my_grid.yaml")
    assert err.value.source == "my_grid.yaml" and err.value.field == field and problem in err.value.problem


def test_partial_grid_takes_defaults_and_scalars_are_lists():
    grid = check_grid({"seeds": 3, "mode": "change"})
    assert grid["seeds"] == [3] and grid["mode"] == ["change"]
    assert grid["delta"] == default_grid()["delta"]


def test_cli_plan_writes_plan_and_skipped(tmp_path):
    comparisons = tmp_path / "composition" / keys.COMPARISONS_CSV
    comparisons.parent.mkdir()
    COMPARISONS.to_csv(comparisons, index=False)
    pd.DataFrame({"cluster": ["a"], "batch0": [1], "batch1": [1], "batch2": [1]}).to_csv(
        comparisons.parent / keys.CLUSTER_BATCH_COUNTS_CSV, index=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"seeds": [0], "batchids": ["all", "own"]}))
    out = tmp_path / "de"
    result = CliRunner().invoke(cli, ["plan", "--comparisons", str(comparisons), "--grid", str(grid), "-o", str(out)])
    assert result.exit_code == 0, result.output
    plan = pd.read_csv(out / keys.PLAN_CSV, dtype=str, keep_default_na=False)
    skipped = pd.read_csv(out / keys.PLAN_SKIPPED_CSV)
    assert "combinations in" in result.output and f"{len(skipped)} skipped" in result.output
    assert plan["combination_id"].iloc[0] == "only_batch0_vs_only_batch1__nobc__vanilla__uniform__fdr0.05__seed0"
    # byte-identical on a rerun
    first = (out / keys.PLAN_CSV).read_bytes()
    assert CliRunner().invoke(cli, ["plan", "--comparisons", str(comparisons), "--grid", str(grid), "-o", str(out)]).exit_code == 0
    assert (out / keys.PLAN_CSV).read_bytes() == first


def test_cli_plan_bad_grid_is_one_line(tmp_path):
    comparisons = tmp_path / keys.COMPARISONS_CSV
    COMPARISONS.to_csv(comparisons, index=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text("mode: [vanilla]\nbatch_corection: [true]\n")
    result = CliRunner().invoke(cli, ["plan", "--comparisons", str(comparisons), "--grid", str(grid), "-o", str(tmp_path / "de")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {grid}: batch_corection: unknown grid key (allowed: {', '.join(GRID_KEYS)})"
    assert not (tmp_path / "de").exists()


def test_cli_show_default_grid():
    result = CliRunner().invoke(cli, ["plan", "--show-default-grid"])
    assert result.exit_code == 0 and result.output == default_grid_text()


def test_every_grid_point_is_planned_or_skipped_for_every_small_grid():
    values = {"batch_correction": [[False], [True], [False, True]], "mode": [["vanilla"], ["change"]],
              "batchids": [["all"], ["each"], ["own"], ["all", "each", "own"]]}
    for bc, mode, batchids in itertools.product(*values.values()):
        grid = {"batch_correction": bc, "mode": mode, "batchids": batchids, "seeds": [0], "delta": [0.5]}
        try:
            plan, skipped = make_plan(COMPARISONS, grid)
        except DesweepInputError as err:  # nothing valid at all: the error says why
            assert "every combination is invalid" in err.problem
            continue
        assert pd.concat([plan["combination_id"], skipped["combination_id"]]).is_unique


# --------------------------------------------------------------------------- model replicates
def test_models_repeat_every_combination_once_per_model():
    one, _ = make_plan(COMPARISONS, GRID)
    three, _skipped = make_plan(COMPARISONS, GRID, models=3)
    assert (one["model"] == 0).all() and not one["combination_id"].str.contains("__model").any()  # ids as before
    assert len(three) == 3 * len(one) and sorted(three["model"].unique()) == [0, 1, 2]
    assert three["combination_id"].is_unique
    row = three[(three["model"] == 2) & (three["seed"] == 1)].iloc[0]
    assert row["combination_id"] == f"{row['setting_id']}__model2__seed1"
    assert row["sampling_key"].endswith("__model2__seed1")
    # a setting's replicates share its setting_id; a sampling key never mixes models
    assert three.groupby("setting_id")["model"].nunique().eq(3).all()
    assert three.groupby("sampling_key")["model"].nunique().eq(1).all()
    assert set(three["setting_id"]) == set(one["setting_id"])
    # rows ordered comparison, model, seed
    first = three[three["comparison_id"] == COMPARISONS["comparison_id"].iloc[0]]
    assert list(first["model"]) == sorted(first["model"])
    with pytest.raises(DesweepInputError, match="models"):
        make_plan(COMPARISONS, GRID, models=0)


def test_cli_plan_models(tmp_path):
    COMPARISONS.to_csv(tmp_path / keys.COMPARISONS_CSV, index=False)
    result = CliRunner().invoke(cli, ["plan", "--comparisons", str(tmp_path / keys.COMPARISONS_CSV), "--models", "2",
                                      "-o", str(tmp_path / "de")])
    assert result.exit_code == 0, result.output
    plan = pd.read_csv(tmp_path / "de" / keys.PLAN_CSV)
    assert sorted(plan["model"].unique()) == [0, 1]


def test_old_plans_without_a_model_column_still_check():
    from desweep.de import check_plan

    plan, _ = make_plan(COMPARISONS, GRID)
    checked = check_plan(plan.drop(columns="model").astype(str))
    assert (checked["model"] == 0).all()


def test_runner_trains_one_integrate_per_model_with_its_seed(tmp_path):
    from desweep.runner import load_config, resolve_steps

    config = load_config(None, {"input": str(tmp_path / "x.h5ad"), "outdir": str(tmp_path / "out"), "seed": 4, "models": 3},
                         ("integrate.max_epochs=7",))
    resolved = resolve_steps(config)
    names = list(resolved)
    assert names.index("integrate") < names.index("integrate_replicate1") < names.index("integrate_replicate2") < names.index("cluster")
    out = tmp_path / "out"
    for k, name in ((0, "integrate"), (1, "integrate_replicate1"), (2, "integrate_replicate2")):
        args = resolved[name].args
        assert resolved[name].params["seed"] == 4 + k and resolved[name].params["max_epochs"] == 7  # integrate options apply to every replicate
        folder = out / keys.STEP_INTEGRATE / (keys.replicate_dir(k) if k else "")
        assert args[args.index("--outdir") + 1] == str(folder).rstrip("/")
    de = resolved["de"].args
    assert [de[i + 1] for i, a in enumerate(de) if a == "--model"] == [
        str(out / keys.STEP_INTEGRATE / keys.MODEL_DIR),
        *(str(out / keys.STEP_INTEGRATE / keys.replicate_dir(k) / keys.MODEL_DIR) for k in (1, 2))]
    assert {"integrate_replicate1", "integrate_replicate2"} <= set(resolved["de"].step.depends)
    assert resolved["plan"].params["models"] == 3
    for models in (0, "x"):
        with pytest.raises(DesweepInputError, match="models"):
            load_config(None, {"input": "x.h5ad", "models": models})


def test_rows_share_a_sampling_key_exactly_when_they_share_the_sampling_fields():
    """The sampling key and SweepRow's ``sampling`` fields say the same thing: the rows that share posterior samples."""
    plan, _ = make_plan(COMPARISONS, {**GRID, "weights": ["uniform", "importance"]}, models=2)
    assert (plan.groupby("sampling_key")[list(SAMPLING_FIELDS)].nunique() == 1).all().all()
    assert (plan.groupby(list(SAMPLING_FIELDS), dropna=False)["sampling_key"].nunique() == 1).all()
    assert {"mode", "delta", "fdr_target"}.isdisjoint(SAMPLING_FIELDS)  # step 3 only: computed from the same samples


def test_plan_csv_reads_back_as_the_plan_it_was_written_from(tmp_path):
    """``plan.csv`` parsed by the types of SweepRow's fields gives back the planned values and dtypes."""
    from desweep.de import check_plan
    from desweep.io import read_csv, write_csv

    plan, _ = make_plan(COMPARISONS, GRID, models=2)
    write_csv(plan, tmp_path / keys.PLAN_CSV)
    back = check_plan(read_csv(tmp_path / keys.PLAN_CSV, what="plan", all_text=True))
    pd.testing.assert_frame_equal(back, plan)
    row = SweepRow.from_record(back.iloc[-1])
    assert row.record() == plan.iloc[-1].to_dict() and list(row.record()) == PLAN_COLUMNS


def test_a_bad_plan_value_is_named_by_its_column():
    from desweep.de import check_plan

    plan, _ = make_plan(COMPARISONS, GRID)
    for column, value, problem in (("weights", "heavy", "is not one of uniform, importance"), ("seed", "x", "is not a number"),
                                   ("batch_correction", "maybe", "is not True or False"), ("fdr_target", "", "empty value")):
        bad = plan.astype(str).assign(**{column: value})
        with pytest.raises(DesweepInputError, match=f"plan.csv: {column}: .*{problem}"):
            check_plan(bad)

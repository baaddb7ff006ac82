"""desweep de: tables equal scvi-tools', shared sampling within Monte Carlo error, CLI fan-out and merge, planted truth."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from desweep import keys
from desweep.cli import cli

pytestmark = pytest.mark.slow

GROUP_KEY = "cell_type"  # the shared fixture validates with --labels-key cell_type
CONFOUNDED = "only-batch0_vs_only-batch1"  # only_batch0 lives in batch0 only, only_batch1 in batch1 only
N_SAMPLES = 5000
BATCH_SIZE = 128


@pytest.fixture(scope="module")
def fitted(pipeline_dirs):
    """The clustered data, the trained model and the comparisons of the shared pipeline fixture."""
    from desweep import compute
    from desweep.datakeys import get_keys
    from desweep.integrate import load_model
    from desweep.io import read_h5ad

    compute.configure(threads=1)
    path = pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD
    adata = read_h5ad(path)
    assert get_keys(adata, path, need_groups=True).group_key == GROUP_KEY
    model = load_model(str(pipeline_dirs[keys.STEP_INTEGRATE] / keys.MODEL_DIR), adata)
    comparisons = pd.read_csv(pipeline_dirs[keys.STEP_COMPOSITION] / keys.COMPARISONS_CSV, dtype=str, keep_default_na=False)
    return adata, model, comparisons


@pytest.fixture(scope="module")
def small_plan(fitted):
    """The confounded comparison: every decoding, both modes, with and without the outlier filter, one seed."""
    from desweep.de import check_plan
    from desweep.plan import make_plan

    _, _, comparisons = fitted
    chosen = comparisons[comparisons["comparison_id"] == CONFOUNDED]
    grid = {"seeds": [0], "delta": [0.25, 0.5], "batchids": ["all", "each", "own"], "filter_outlier_cells": [False, True]}
    plan, _ = make_plan(chosen, grid, batches=["batch0", "batch1", "batch2"])
    return check_plan(plan)


def scvi_reference(model, row: pd.Series, batch_size: int = BATCH_SIZE) -> pd.DataFrame:
    """The same combination straight from scvi-tools, seeded like desweep's scvi sampler."""
    import scvi

    scvi.settings.seed = int(row["seed"])
    kwargs = {"delta": float(row["delta"])} if row["mode"] == "change" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.differential_expression(
            groupby=GROUP_KEY, group1=[row["group1"]], group2=row["group2"], mode=row["mode"],
            batch_correction=bool(row["batch_correction"]),
            batchid1=row["batchid1"].split(";") if row["batchid1"] else None,
            batchid2=row["batchid2"].split(";") if row["batchid2"] else None,
            fdr_target=float(row["fdr_target"]), weights=row["weights"], filter_outlier_cells=bool(row["filter_outlier_cells"]),
            batch_size=batch_size, silent=True, **kwargs,
        )


CHECKED = [  # (decoding, mode label, filtered)
    ("nobc", "change-d0.25", False),
    ("nobc", "vanilla", False),
    ("bc-all", "change-d0.5", False),
    ("bc-in-batch0", "vanilla", True),
    ("bc-own", "change-d0.25", False),
]


def _row(plan: pd.DataFrame, decoding: str, mode: str, filtered: bool, comparison: str = CONFOUNDED) -> pd.Series:
    weights = "uniform-filtered" if filtered else "uniform"
    return plan[plan["combination_id"] == f"{comparison}__{decoding}__{mode}__{weights}__fdr0.05__seed0"].iloc[0]


@pytest.fixture(scope="module")
def sweeps(fitted, small_plan):
    """The small plan with the shared sampler; the sampling keys of the checked rows with the scvi sampler."""
    from desweep.de import run_sweep

    adata, model, _ = fitted
    checked_keys = {_row(small_plan, *choice)["sampling_key"] for choice in CHECKED}
    plans = {"shared": small_plan, "scvi": small_plan[small_plan["sampling_key"].isin(checked_keys)]}
    return {sampling: run_sweep(adata, model, plan, group_key=GROUP_KEY, n_samples=N_SAMPLES, batch_size=BATCH_SIZE,
                                sampling=sampling) for sampling, plan in plans.items()}


@pytest.mark.parametrize(("decoding", "mode", "filtered"), CHECKED)
def test_scvi_sampler_equals_scvi_tools(fitted, small_plan, sweeps, decoding, mode, filtered):
    """Same seed, same settings: the very numbers of model.differential_expression."""
    _, model, _ = fitted
    row = _row(small_plan, decoding, mode, filtered)
    used = sweeps["scvi"].summary.set_index("combination_id").loc[row["combination_id"], "batch_size"]
    ref = scvi_reference(model, row, batch_size=int(used))
    table = sweeps["scvi"].tables[row["combination_id"]].set_index("gene").loc[ref.index.astype(str)]
    columns = ["bayes_factor", "scale1", "scale2", "raw_mean1", "raw_mean2", "non_zeros_proportion1"]
    columns += ["proba_de", "proba_not_de", "lfc_mean", "lfc_median", "lfc_std", "lfc_min", "lfc_max", "pseudocounts", "delta"] \
        if row["mode"] == "change" else ["proba_m1", "proba_m2"]
    for column in columns:
        np.testing.assert_array_equal(table[column].to_numpy(), ref[column].to_numpy(), err_msg=column)
    if row["mode"] == "change":
        flag = ref["is_de_fdr_0.05"]
        assert table["is_de_fdr"].sum() == flag.sum()
        # the same genes, except which of the genes tied at the cut-off proba_de scvi-tools' unstable sort takes
        boundary = table.loc[table["is_de_fdr"], "proba_de"].min()
        differ = table["is_de_fdr"].to_numpy() != flag.to_numpy()
        assert (table.loc[differ, "proba_de"] == boundary).all()


@pytest.mark.parametrize(("decoding", "mode", "filtered"), CHECKED)
def test_shared_sampler_agrees_with_scvi_tools_within_monte_carlo_error(fitted, small_plan, sweeps, decoding, mode, filtered):
    """Different samples of the same estimator: differences stay within Monte Carlo error.

    Each side averages ``n = 5000`` posterior draws per group, so the difference of two
    independent estimates of a probability ``p`` has standard error ``sqrt(2 p (1-p) / n)``,
    and of ``lfc_mean`` ``lfc_std * sqrt(2 / n)``. Draws repeat cells (groups of ~120
    cells), which inflates the error; we allow 6 standard errors plus 0.01 (proba) /
    0.02 (log2 fold change) and check every gene.
    """
    _, model, _ = fitted
    row = _row(small_plan, decoding, mode, filtered)
    ref = scvi_reference(model, row)
    table = sweeps["shared"].tables[row["combination_id"]].set_index("gene").loc[ref.index.astype(str)]
    proba = "proba_de" if row["mode"] == "change" else "proba_m1"
    p = ref[proba].to_numpy()
    assert np.all(np.abs(table[proba].to_numpy() - p) <= 6 * np.sqrt(2 * p * (1 - p) / N_SAMPLES) + 0.01)
    if row["mode"] == "change":
        lfc, sd = ref["lfc_mean"].to_numpy(), ref["lfc_std"].to_numpy()
        assert np.all(np.abs(table["lfc_mean"].to_numpy() - lfc) <= 6 * sd * np.sqrt(2 / N_SAMPLES) + 0.02)
        assert abs(int(table["is_de_fdr"].sum()) - int(ref["is_de_fdr_0.05"].sum())) <= 0.05 * ref["is_de_fdr_0.05"].sum() + 3
    np.testing.assert_allclose(table["scale1"].to_numpy(), ref["scale1"].to_numpy(), rtol=0.1, atol=1e-5)


def test_tables_are_ranked_with_the_documented_tie_break(sweeps, small_plan):
    from desweep.de import TABLE_COLUMNS

    for cid, table in sweeps["shared"].tables.items():
        assert list(table.columns) == TABLE_COLUMNS
        assert table["rank"].tolist() == list(range(1, len(table) + 1))
        expected = table.assign(abs_lfc=table["lfc_mean"].abs()).sort_values(
            ["proba_de", "abs_lfc", "gene"], ascending=[False, False, True], kind="mergesort")
        assert expected["gene"].tolist() == table["gene"].tolist(), cid
        n_de = int(table["is_de_fdr"].sum())
        assert table["is_de_fdr"].tolist() == [True] * n_de + [False] * (len(table) - n_de)
    tied = sweeps["shared"].summary["n_tied_top"]
    assert (tied >= 1).all() and (tied > 1).any()  # ties at proba_de 1.0 happen


def test_summary_rows_and_out_of_distribution(sweeps, small_plan):
    summary = sweeps["shared"].summary.set_index("combination_id")
    assert list(summary.index) == list(small_plan["combination_id"])
    nobc = summary.loc[f"{CONFOUNDED}__nobc__change-d0.25__uniform__fdr0.05__seed0"]
    assert not nobc["out_of_distribution"] and nobc["ood_decoding"] == ""
    in0 = summary.loc[f"{CONFOUNDED}__bc-in-batch0__change-d0.25__uniform__fdr0.05__seed0"]
    assert in0["out_of_distribution"] and in0["ood_decoding"] == "group2@batch0"
    own = summary.loc[f"{CONFOUNDED}__bc-own__change-d0.25__uniform__fdr0.05__seed0"]
    assert not own["out_of_distribution"]
    everything = summary.loc[f"{CONFOUNDED}__bc-all__change-d0.25__uniform__fdr0.05__seed0"]
    assert everything["ood_decoding"] == "group1@batch1;group1@batch2;group2@batch0;group2@batch2"
    assert (summary["design"].loc[summary["comparison_id"] == CONFOUNDED] == "confounded").all()
    table = sweeps["shared"].tables[nobc.name]
    assert nobc["top_genes"] == ";".join(table["gene"].head(10)) and nobc["n_de"] == table["is_de_fdr"].sum()


def test_one_key_alone_gives_the_same_tables_as_the_whole_sweep(fitted, small_plan, sweeps):
    """A Nextflow task (one key, its own decoding passes) reproduces the sweep's shared passes bit for bit."""
    from desweep.de import run_group

    adata, model, _ = fitted
    key = f"{CONFOUNDED}__nobc__uniform__seed0"  # in the sweep its pool is gathered from the per-batch passes
    tables, summary = run_group(adata, model, small_plan, key, group_key=GROUP_KEY, n_samples=N_SAMPLES, batch_size=BATCH_SIZE)
    assert set(tables) == set(summary["combination_id"])
    for cid, table in tables.items():
        pd.testing.assert_frame_equal(table, sweeps["shared"].tables[cid])


def test_planted_batch_wide_genes_rank_higher_without_batch_correction(fitted, sweeps):
    """Confounded design (only_batch0 vs only_batch1): genes up in all of batch0 or batch1 look DE.

    What the data show: without batch correction, planted batch-wide genes of the
    two batches fill many more of the top 40 genes (the number of planted markers
    of the two groups) than with ``batch_correction=True`` over every batch; the
    group markers rank better with correction. Correction does not remove them,
    though: with a fully confounded pair the model learns the batch effects from
    the shared clusters only, and most batch-wide genes stay DE at the FDR target
    in both settings.
    """
    adata, _, _ = fitted
    var = adata.var
    batch_wide = set(var.index[(var["truth_pattern"] == "batch_wide") & var["truth_batch"].isin(["batch0", "batch1"])])
    markers = set(var.index[(var["truth_pattern"] == "marker") & var["truth_cluster"].isin(["only_batch0", "only_batch1"])])
    tables = sweeps["shared"].tables

    def top(decoding: str, n: int = 40) -> pd.Series:
        return tables[f"{CONFOUNDED}__{decoding}__change-d0.25__uniform__fdr0.05__seed0"]["gene"].head(n)

    without, with_bc = top("nobc").isin(batch_wide).sum(), top("bc-all").isin(batch_wide).sum()
    assert without > with_bc + 5, (without, with_bc)
    assert top("bc-all").isin(markers).sum() > top("nobc").isin(markers).sum()


def test_stability_counts_seeds(fitted, small_plan, sweeps):
    from desweep.de import stability

    tables = sweeps["shared"].tables
    cid = f"{CONFOUNDED}__nobc__change-d0.25__uniform__fdr0.05__seed0"
    twin = cid.replace("seed0", "seed1")
    fake = tables[cid].copy()
    fake["is_de_fdr"] = False
    fake["rank"] = fake["rank"][::-1].to_numpy()
    plan = small_plan[small_plan["combination_id"] == cid]
    plan = pd.concat([plan, plan.assign(combination_id=twin, seed=1)], ignore_index=True)
    result = stability({cid: tables[cid], twin: fake}, plan, top_n=10).set_index("gene")
    assert (result["n_runs"] == 2).all()
    assert (result["frac_de"] == 0.5).sum() == tables[cid]["is_de_fdr"].sum()
    top = tables[cid]["gene"].head(10)
    assert (result.loc[top, "frac_top"] == 0.5).all()


def test_cli_fan_out_and_merge_equal_all(pipeline_dirs, tmp_path):
    """Per-key runs + --merge write the same bytes as --all; unknown keys and missing partials are one line."""
    runner = CliRunner()
    comparisons = pipeline_dirs[keys.STEP_COMPOSITION] / keys.COMPARISONS_CSV
    grid = tmp_path / "grid.yaml"
    grid.write_text("batch_correction: [true]\nbatchids: [own]\nmode: [change]\ndelta: [0.5, 1.0]\nseeds: [0, 1]\n")
    one = pd.read_csv(comparisons, dtype=str, keep_default_na=False)
    one = one[one["comparison_id"] == CONFOUNDED]
    one.to_csv(tmp_path / keys.COMPARISONS_CSV, index=False)
    outs = {name: tmp_path / name / keys.STEP_DE for name in ("all", "fan")}
    inputs = ["--adata", str(pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD),
              "--model", str(pipeline_dirs[keys.STEP_INTEGRATE] / keys.MODEL_DIR), "--threads", "1", "--n-samples", "1000"]
    for out in outs.values():
        result = runner.invoke(cli, ["plan", "--comparisons", str(tmp_path / keys.COMPARISONS_CSV), "--grid", str(grid), "-o", str(out)])
        assert result.exit_code == 0, result.output
    plan_all, plan_fan = (str(out / keys.PLAN_CSV) for out in outs.values())
    result = runner.invoke(cli, ["de", "--plan", plan_all, *inputs, "--all", "-o", str(outs["all"])])
    assert result.exit_code == 0, result.output

    result = runner.invoke(cli, ["de", "--plan", plan_fan, *inputs, "--sampling-key", "no_such_key", "-o", str(outs["fan"])])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {plan_fan}: sampling_key: 'no_such_key' is not in this plan (2 keys, e.g. ")
    assert len(result.output.strip().splitlines()) == 1
    assert not (outs["fan"] / keys.DE_TABLES_DIR).exists()

    keys_ = list(dict.fromkeys(pd.read_csv(plan_fan)["sampling_key"]))
    result = runner.invoke(cli, ["de", "--plan", plan_fan, *inputs, "--sampling-key", keys_[1], "-o", str(outs["fan"])])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["de", "--plan", plan_fan, "--merge", "-o", str(outs["fan"])])
    assert result.exit_code == 1 and "no summary for 1 of 2 sampling keys" in result.output
    result = runner.invoke(cli, ["de", "--plan", plan_fan, *inputs, "--sampling-key", keys_[0], "-o", str(outs["fan"])])
    assert result.exit_code == 0, result.output
    assert (outs["fan"] / keys.DE_PARTIAL_SUMMARY_DIR / f"{keys_[0]}.csv").is_file()
    result = runner.invoke(cli, ["de", "--plan", plan_fan, "--merge", "-o", str(outs["fan"])])
    assert result.exit_code == 0, result.output

    for name in (keys.DE_SUMMARY_CSV, keys.DE_STABILITY_CSV):
        assert (outs["all"] / name).read_bytes() == (outs["fan"] / name).read_bytes(), name
    tables = sorted(p.name for p in (outs["all"] / keys.DE_TABLES_DIR).iterdir())
    assert len(tables) == 4
    for name in tables:
        assert (outs["all"] / keys.DE_TABLES_DIR / name).read_bytes() == (outs["fan"] / keys.DE_TABLES_DIR / name).read_bytes()
    stab = pd.read_csv(outs["all"] / keys.DE_STABILITY_CSV)
    assert set(stab["n_runs"]) == {2} and stab["frac_top"].between(0, 1).all()

    result = runner.invoke(cli, ["de", "--plan", plan_fan, *inputs, "--all", "--merge", "-o", str(outs["fan"])])
    assert result.exit_code == 1 and "give exactly one of them" in result.output


def test_cli_runs_each_model_replicate_with_its_model(pipeline_dirs, tmp_path):
    """A 2-model plan: one --model per model, in model order; a task of one model's keys takes one --model."""
    runner = CliRunner()
    comparisons = pd.read_csv(pipeline_dirs[keys.STEP_COMPOSITION] / keys.COMPARISONS_CSV, dtype=str, keep_default_na=False)
    comparisons[comparisons["comparison_id"] == CONFOUNDED].to_csv(tmp_path / keys.COMPARISONS_CSV, index=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text("batch_correction: [true]\nbatchids: [all]\nmode: [change]\ndelta: [0.5]\nseeds: [0]\n")
    out = tmp_path / keys.STEP_DE
    result = runner.invoke(cli, ["plan", "--comparisons", str(tmp_path / keys.COMPARISONS_CSV), "--grid", str(grid),
                                 "--models", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    plan = pd.read_csv(out / keys.PLAN_CSV)
    model = str(pipeline_dirs[keys.STEP_INTEGRATE] / keys.MODEL_DIR)
    inputs = ["--plan", str(out / keys.PLAN_CSV), "--adata", str(pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD),
              "--threads", "1", "--n-samples", "1000"]
    result = runner.invoke(cli, ["de", *inputs, "--model", model, "--all", "-o", str(out)])
    assert result.exit_code == 1 and "give one --model per model the rows run use, in model order: 2 (model 0, 1), got 1" in result.output
    model1_key = plan.loc[plan["model"] == 1, "sampling_key"].iloc[0]
    result = runner.invoke(cli, ["de", *inputs, "--model", model, "--sampling-key", model1_key, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.stem for p in (out / keys.DE_TABLES_DIR).glob("*.csv")} == set(plan.loc[plan["model"] == 1, "combination_id"])
    # the second --model is model 1's: a missing folder there fails (model 0 alone would run)
    result = runner.invoke(cli, ["de", *inputs, "--model", model, "--model", str(tmp_path / "no_model"), "--all", "-o", str(out)])
    assert result.exit_code == 1 and "no_model" in result.output
    result = runner.invoke(cli, ["de", *inputs, "--model", model, "--model", model, "--all", "-o", str(out)])
    assert result.exit_code == 0, result.output
    # the same trained model given as both replicates, the same seeds: the same tables
    for setting, part in plan.groupby("setting_id"):
        first, second = (pd.read_csv(out / keys.DE_TABLES_DIR / f"{c}.csv") for c in part.sort_values("model")["combination_id"])
        pd.testing.assert_frame_equal(first, second)
    summary = pd.read_csv(out / keys.DE_SUMMARY_CSV)
    assert sorted(summary["model"].unique()) == [0, 1]

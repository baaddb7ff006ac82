"""desweep de: tables equal scvi-tools', shared sampling within Monte Carlo error, CLI fan-out and merge, planted truth."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from desweep import keys
from desweep.cli import cli

pytestmark = pytest.mark.slow

GROUP_KEY = "cell_type"  # the shared fixture validates with --labels-key cell_type
CONFOUNDED = "only_batch0_vs_only_batch1"  # only_batch0 lives in batch0 only, only_batch1 in batch1 only
SPANNING = "only_batch0_vs_shared2"  # shared2 has cells in every batch
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
    """The confounded comparison: every decoding, both modes, with and without the outlier filter, one seed;
    and a comparison with a group in every batch, without and with batch correction over all batches."""
    from desweep.de import check_plan
    from desweep.plan import make_plan

    _, _, comparisons = fitted
    grids = {
        CONFOUNDED: {"seeds": [0], "delta": [0.25, 0.5], "batchids": ["all", "each", "own"], "filter_outlier_cells": [False, True]},
        SPANNING: {"seeds": [0], "delta": [0.25], "batchids": ["all"], "filter_outlier_cells": [False]},
    }
    plans = [make_plan(comparisons[comparisons["comparison_id"] == cid], grid, batches=["batch0", "batch1", "batch2"])[0]
             for cid, grid in grids.items()]
    return check_plan(pd.concat(plans, ignore_index=True))


def scvi_reference(model, row: pd.Series, batch_size: int = BATCH_SIZE, *, adata=None, group_key: str = GROUP_KEY,
                   n_samples: int = N_SAMPLES, **kwargs) -> pd.DataFrame:
    """The same combination straight from scvi-tools, seeded like desweep's scvi sampler.

    ``kwargs`` go to scvi-tools' ``get_bayes_factors`` (e.g. ``m1_domain_fn``).
    """
    import scvi

    scvi.settings.seed = int(row["seed"])
    if row["mode"] == "change":
        kwargs["delta"] = float(row["delta"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.differential_expression(
            adata, groupby=group_key, group1=[row["group1"]], group2=row["group2"], mode=row["mode"],
            batch_correction=bool(row["batch_correction"]),
            batchid1=row["batchid1"].split(";") if row["batchid1"] else None,
            batchid2=row["batchid2"].split(";") if row["batchid2"] else None,
            fdr_target=float(row["fdr_target"]), weights=row["weights"], filter_outlier_cells=bool(row["filter_outlier_cells"]),
            batch_size=batch_size, silent=True, n_samples_overall=n_samples, **kwargs,
        )


def change_side_probabilities(model, row: pd.Series, **kwargs) -> tuple[pd.Series, pd.Series]:
    """scvi-tools' ``P(lfc >= delta)`` and ``P(lfc < -delta)`` (desweep's change-mode ``proba_m1``, ``proba_m2``).

    With a domain function whose second region is empty, scvi-tools' ``proba_de``
    (``max`` of the two regions) is the first region's probability; the same seed
    gives the same samples as :func:`scvi_reference`.
    """
    up = scvi_reference(model, row, m1_domain_fn=lambda s: (s >= float(row["delta"]), np.zeros(s.shape, dtype=bool)), **kwargs)
    down = scvi_reference(model, row, m1_domain_fn=lambda s: (np.zeros(s.shape, dtype=bool), s < -float(row["delta"])), **kwargs)
    return up["proba_de"], down["proba_de"]


CHECKED = [  # (comparison, decoding, mode label, filtered)
    (CONFOUNDED, "nobc", "change-d0.25", False),
    (CONFOUNDED, "nobc", "vanilla", False),
    (CONFOUNDED, "bc-all", "change-d0.5", False),
    (CONFOUNDED, "bc-all", "change-d0.5", True),
    (CONFOUNDED, "bc-in-batch0", "vanilla", True),
    (CONFOUNDED, "bc-own", "change-d0.25", False),
    (SPANNING, "nobc", "change-d0.25", False),
]


def _row(plan: pd.DataFrame, comparison: str, decoding: str, mode: str, filtered: bool, weights: str = "uniform") -> pd.Series:
    label = f"{weights}-filtered" if filtered else weights
    return plan[plan["combination_id"] == f"{comparison}__{decoding}__{mode}__{label}__fdr0.05__seed0"].iloc[0]


def several_batches(row: pd.Series) -> bool:
    """Whether both groups are decoded in more than one batch (scvi-tools then pairs samples batch by batch)."""
    return bool(row["batch_correction"]) and all(not row[c] or ";" in row[c] for c in ("batchid1", "batchid2"))


@pytest.fixture(scope="module")
def sweeps(fitted, small_plan):
    """The small plan with the shared sampler; the sampling keys of the checked rows with the scvi sampler."""
    from desweep.de import run_sweep

    adata, model, _ = fitted
    checked_keys = {_row(small_plan, *choice)["sampling_key"] for choice in CHECKED}
    plans = {"shared": small_plan, "scvi": small_plan[small_plan["sampling_key"].isin(checked_keys)]}
    return {sampling: run_sweep(adata, model, plan, group_key=GROUP_KEY, n_samples=N_SAMPLES, batch_size=BATCH_SIZE,
                                sampling=sampling) for sampling, plan in plans.items()}


def assert_equals_scvi_tools(table: pd.DataFrame, ref: pd.DataFrame, row: pd.Series, side: tuple[pd.Series, pd.Series] | None) -> None:
    """Every column of a scvi-sampler table against scvi-tools' call with the same seed.

    ``side``: :func:`change_side_probabilities` (change mode). Where both groups are
    decoded in several batches, ``lfc_mean`` and ``lfc_std`` sum the same samples in
    sorted batch order and scvi-tools in its (hash-seeded) set order: equal up to
    rounding (desweep.de.statistics.pair_samples).
    """
    table = table.set_index("gene").loc[ref.index.astype(str)]
    exact = ["bayes_factor", "scale1", "scale2", "raw_mean1", "raw_mean2", "non_zeros_proportion1", "non_zeros_proportion2",
             "raw_normalized_mean1", "raw_normalized_mean2"]
    if row["mode"] == "change":
        exact += ["proba_de", "proba_not_de", "lfc_median", "lfc_min", "lfc_max", "pseudocounts", "delta"]
        summed = ["lfc_mean", "lfc_std"]
        if not several_batches(row):
            exact, summed = exact + summed, []
        for column in summed:
            np.testing.assert_allclose(table[column].to_numpy(), ref[column].to_numpy(), rtol=1e-6, atol=1e-9, err_msg=column)
        np.testing.assert_array_equal(table["proba_m1"].to_numpy(), side[0].loc[ref.index].to_numpy(), err_msg="proba_m1")
        np.testing.assert_array_equal(table["proba_m2"].to_numpy(), side[1].loc[ref.index].to_numpy(), err_msg="proba_m2")
    else:
        exact += ["proba_m1", "proba_m2"]
        np.testing.assert_array_equal(table["proba_de"].to_numpy(), np.maximum(ref["proba_m1"], ref["proba_m2"]).to_numpy())
    for column in exact:
        np.testing.assert_array_equal(table[column].to_numpy(), ref[column].to_numpy(), err_msg=column)
    if row["mode"] == "change":
        flag = ref[f"is_de_fdr_{row['fdr_target']}"]
        assert table["is_de_fdr"].sum() == flag.sum()
        # the same genes, except which of the genes tied at the cut-off proba_de scvi-tools' unstable sort takes
        boundary = table.loc[table["is_de_fdr"], "proba_de"].min()
        differ = table["is_de_fdr"].to_numpy() != flag.to_numpy()
        assert (table.loc[differ, "proba_de"] == boundary).all()


@pytest.mark.parametrize(("comparison", "decoding", "mode", "filtered"), CHECKED)
def test_scvi_sampler_equals_scvi_tools(fitted, small_plan, sweeps, comparison, decoding, mode, filtered):
    """Same seed, same settings: the very numbers of model.differential_expression, in every column."""
    _, model, _ = fitted
    row = _row(small_plan, comparison, decoding, mode, filtered)
    used = int(sweeps["scvi"].summary.set_index("combination_id").loc[row["combination_id"], "batch_size"])
    ref = scvi_reference(model, row, batch_size=used)
    side = change_side_probabilities(model, row, batch_size=used) if row["mode"] == "change" else None
    assert_equals_scvi_tools(sweeps["scvi"].tables[row["combination_id"]], ref, row, side)


@pytest.fixture(scope="module")
def importance(fitted):
    """Importance weights on two groups of 20 cells (scvi-tools' importance weights cost grows with the cells).

    The groups are a column of a copy of the data (``importance_group``): the first 20
    cells of ``only_batch0`` and of ``only_batch1``; 1,000 samples.
    """
    from desweep import composition as comp
    from desweep.de import check_plan, run_sweep
    from desweep.plan import make_plan

    adata, model, _ = fitted
    adata = adata.copy()
    labels = np.full(adata.n_obs, "other", dtype=object)
    for group in ("only_batch0", "only_batch1"):
        labels[np.flatnonzero(adata.obs[GROUP_KEY].astype(str).to_numpy() == group)[:20]] = f"small_{group}"
    adata.obs["importance_group"] = pd.Categorical(labels)
    status = comp.cluster_status(comp.cluster_batch_counts(adata.obs, group_key="importance_group", batch_key="batch"))
    comparisons = comp.comparison_table(status, comp.parse_comparisons("small_only_batch0:small_only_batch1"))
    grid = {"batch_correction": [False], "mode": ["change"], "delta": [0.25], "weights": ["importance"], "seeds": [0]}
    plan = check_plan(make_plan(comparisons, grid, batches=["batch0", "batch1", "batch2"])[0])
    result = run_sweep(adata, model, plan, group_key="importance_group", n_samples=1000, batch_size=BATCH_SIZE)
    return adata, plan, result


def test_importance_weights_row_equals_scvi_tools(fitted, importance):
    """weights=importance: the scvi sampler (always), every column equal to scvi-tools' importance-weighted call."""
    _, model, _ = fitted
    adata, plan, result = importance
    (cid,) = plan["combination_id"]
    row = plan.iloc[0]
    summary = result.summary.set_index("combination_id").loc[cid]
    assert summary["sampling"] == "scvi" and summary["n_cells1"] == summary["n_cells2"] == 20
    used = int(summary["batch_size"])
    kwargs = {"adata": adata, "group_key": "importance_group", "n_samples": 1000, "batch_size": used}
    ref = scvi_reference(model, row, **kwargs)
    assert_equals_scvi_tools(result.tables[cid], ref, row, change_side_probabilities(model, row, **kwargs))
    uniform_row = row.copy()
    uniform_row["weights"] = "uniform"
    uniform = scvi_reference(model, uniform_row, **kwargs)
    assert not np.array_equal(uniform["lfc_mean"].to_numpy(), ref["lfc_mean"].to_numpy()), "importance weights changed nothing"


def test_outlier_filter_drops_cells_in_the_shared_sampler(fitted, small_plan, sweeps):
    """filter_outlier_cells: the shared sampler keeps fewer cells, as many as scvi-tools' filter keeps."""
    adata, _, _ = fitted
    sizes = adata.obs[GROUP_KEY].astype(str).value_counts()
    shared = sweeps["shared"].summary.set_index("combination_id")
    scvi = sweeps["scvi"].summary.set_index("combination_id")
    for decoding, mode in (("bc-all", "change-d0.5"), ("bc-in-batch0", "vanilla")):
        kept, unfiltered = (shared.loc[_row(small_plan, CONFOUNDED, decoding, mode, f)["combination_id"]] for f in (True, False))
        reference = scvi.loc[_row(small_plan, CONFOUNDED, decoding, mode, True)["combination_id"]]
        for n, group in (("n_cells1", "only_batch0"), ("n_cells2", "only_batch1")):
            assert unfiltered[n] == sizes[group]
            assert kept[n] < sizes[group], f"{decoding} {mode}: {n} {kept[n]} of {sizes[group]} kept"
            assert kept[n] == reference[n], f"{decoding} {mode}: {n} {kept[n]} kept, scvi-tools {reference[n]}"


#: Monte Carlo bounds of the shared sampler against scvi-tools (``n`` draws per group on each side)
MC_STANDARD_ERRORS = 6


@pytest.mark.parametrize(("comparison", "decoding", "mode", "filtered"), CHECKED)
def test_shared_sampler_agrees_with_scvi_tools_within_monte_carlo_error(fitted, small_plan, sweeps, comparison, decoding, mode, filtered):
    """Different samples of the same estimator: every column within Monte Carlo error of scvi-tools.

    Each side averages ``n = 5000`` posterior draws per group. The difference of two
    independent estimates of a probability ``p`` has standard error ``sqrt(2 p (1-p) / n)``
    (``proba_*``; ``bayes_factor`` through the probability it encodes,
    ``1 / (1 + exp(-bayes_factor))``); of ``lfc_mean`` ``sd sqrt(2 / n)`` (``sd =
    lfc_std``); of ``lfc_median`` about 1.25 times that (a normal's median); of
    ``lfc_std`` ``sd / sqrt(n)``. Draws repeat cells (groups of ~120-350 cells), which
    inflates the error: we allow 6 standard errors plus 0.01 (proba) / 0.02 (log2 fold
    change) and check every gene. The extremes ``lfc_min`` / ``lfc_max`` have no such
    error: the fold changes' tails are heavier than a normal's (a few extreme cells,
    drawn again and again), so the normal bound ``pi sd / sqrt(6 ln n)`` (two Gumbel
    maxima) is too tight; they must agree within half scvi-tools' range ``lfc_max -
    lfc_min`` (a swap or a truncated sample breaks that). ``scale1``/``scale2`` (means of
    normalized expression) within 10%, ``pseudocounts`` (a quantile of per-gene maxima)
    within 50%. Count statistics and ``delta`` do not depend on the samples: equal.
    """
    _, model, _ = fitted
    row = _row(small_plan, comparison, decoding, mode, filtered)
    ref = scvi_reference(model, row)
    table = sweeps["shared"].tables[row["combination_id"]].set_index("gene").loc[ref.index.astype(str)]
    k, n = MC_STANDARD_ERRORS, N_SAMPLES

    def within_proba(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
        bound = k * np.sqrt(2 * theirs * (1 - theirs) / n) + 0.01
        worst = np.argmax(np.abs(ours - theirs) - bound)
        assert np.all(np.abs(ours - theirs) <= bound), f"{what}: {table.index[worst]} {ours[worst]:.4f} vs {theirs[worst]:.4f}"

    def probability(bayes_factor: pd.Series) -> np.ndarray:
        return 1 / (1 + np.exp(-bayes_factor.to_numpy()))

    within_proba(probability(table["bayes_factor"]), probability(ref["bayes_factor"]), "bayes_factor")
    if row["mode"] == "change":
        for column, theirs in zip(("proba_de", "proba_m1", "proba_m2"), (ref["proba_de"], *change_side_probabilities(model, row)), strict=True):
            within_proba(table[column].to_numpy(), theirs.loc[ref.index].to_numpy(), column)
        within_proba(table["proba_not_de"].to_numpy(), ref["proba_not_de"].to_numpy(), "proba_not_de")
        sd = ref["lfc_std"].to_numpy()
        half_range = (ref["lfc_max"] - ref["lfc_min"]).to_numpy() / 2
        lfc_bounds = {"lfc_mean": k * sd * np.sqrt(2 / n), "lfc_median": k * 1.25 * sd * np.sqrt(2 / n),
                      "lfc_std": k * sd / np.sqrt(n), "lfc_min": half_range, "lfc_max": half_range}
        for column, bound in lfc_bounds.items():
            excess = np.abs(table[column].to_numpy() - ref[column].to_numpy()) - bound - 0.02
            assert np.all(excess <= 0), f"{column}: {table.index[np.argmax(excess)]} off by {np.max(excess):.3g} more than allowed"
        assert abs(int(table["is_de_fdr"].sum()) - int(ref["is_de_fdr_0.05"].sum())) <= 0.05 * ref["is_de_fdr_0.05"].sum() + 3
        np.testing.assert_array_equal(table["delta"].to_numpy(), ref["delta"].to_numpy())
        np.testing.assert_allclose(table["pseudocounts"].to_numpy(), ref["pseudocounts"].to_numpy(), rtol=0.5)
    else:
        for column in ("proba_m1", "proba_m2"):
            within_proba(table[column].to_numpy(), ref[column].to_numpy(), column)
        within_proba(table["proba_de"].to_numpy(), np.maximum(ref["proba_m1"], ref["proba_m2"]).to_numpy(), "proba_de")
    for column in ("scale1", "scale2"):
        np.testing.assert_allclose(table[column].to_numpy(), ref[column].to_numpy(), rtol=0.1, atol=1e-5, err_msg=column)
    for column in ("raw_mean1", "raw_mean2", "non_zeros_proportion1", "non_zeros_proportion2", "raw_normalized_mean1", "raw_normalized_mean2"):
        np.testing.assert_array_equal(table[column].to_numpy(), ref[column].to_numpy(), err_msg=column)


def test_vanilla_rows_carry_their_sampling_keys_fold_change_summary(small_plan, sweeps):
    """Vanilla tables hold the lfc_* columns (scvi-tools has none there) of the change rows drawn from the same samples."""
    lfc = ["lfc_mean", "lfc_median", "lfc_std", "lfc_min", "lfc_max", "scale1", "scale2"]
    checked = 0
    for sweep in sweeps.values():
        for _, rows in small_plan[small_plan["combination_id"].isin(list(sweep.tables))].groupby("sampling_key"):
            change = rows.loc[rows["mode"] == "change", "combination_id"]
            for vanilla in rows.loc[rows["mode"] == "vanilla", "combination_id"]:
                ours = sweep.tables[vanilla].set_index("gene")[lfc]
                pd.testing.assert_frame_equal(ours, sweep.tables[change.iloc[0]].set_index("gene").loc[ours.index, lfc])
                checked += 1
    assert checked >= 4


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


@pytest.mark.parametrize("comparison", [CONFOUNDED, SPANNING])
def test_one_key_alone_gives_the_same_tables_as_the_whole_sweep(fitted, small_plan, sweeps, comparison):
    """A Nextflow task (one key, its own decoding passes) reproduces the sweep's shared passes bit for bit.

    Without batch correction each cell is decoded in its own batch: alone, in one pass;
    in the sweep, gathered from the passes in each batch that batch-corrected keys of the
    same groups need (only_batch0: one batch; shared2: every batch, cell by cell).
    """
    from desweep.de import run_group

    adata, model, _ = fitted
    key = f"{comparison}__nobc__uniform__seed0"
    tables, summary = run_group(adata, model, small_plan, key, group_key=GROUP_KEY, n_samples=N_SAMPLES, batch_size=BATCH_SIZE)
    assert set(tables) == set(summary["combination_id"]) == set(small_plan.loc[small_plan["sampling_key"] == key, "combination_id"])
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
    inputs = ["--input", str(pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD),
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


def test_cli_keys_of_one_seed_share_the_decoding_passes_of_all(pipeline_dirs, tmp_path):
    """The claim behind Nextflow's default DE split (one task per model and seed, docs/benchmarks.md):
    the keys of one seed run together decode as often as that seed's share of --all, one key per run more."""
    runner = CliRunner()
    grid = tmp_path / "grid.yaml"
    grid.write_text("batch_correction: [true]\nbatchids: [all, each]\nmode: [change]\ndelta: [0.5]\nseeds: [0, 1]\n")
    comparisons = pd.read_csv(pipeline_dirs[keys.STEP_COMPOSITION] / keys.COMPARISONS_CSV, dtype=str, keep_default_na=False)
    comparisons[comparisons["comparison_id"] == CONFOUNDED].to_csv(tmp_path / keys.COMPARISONS_CSV, index=False)
    out = tmp_path / keys.STEP_DE
    result = runner.invoke(cli, ["plan", "--comparisons", str(tmp_path / keys.COMPARISONS_CSV), "--grid", str(grid), "-o", str(out)])
    assert result.exit_code == 0, result.output
    plan = pd.read_csv(out / keys.PLAN_CSV)
    inputs = ["--plan", str(out / keys.PLAN_CSV), "--input", str(pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD),
              "--model", str(pipeline_dirs[keys.STEP_INTEGRATE] / keys.MODEL_DIR), "--threads", "1", "--n-samples", "200", "-o", str(out)]

    def passes(*selection: str) -> int:
        result = runner.invoke(cli, ["de", *inputs, *selection])
        assert result.exit_code == 0, result.output
        return int(re.search(r"in (\d+) passes", result.output).group(1))

    seed0 = list(dict.fromkeys(plan.loc[plan["seed"] == 0, "sampling_key"]))
    assert len(seed0) >= 3  # all batches and at least two single batches
    n_all = passes("--all")
    assert n_all > 0 and n_all % 2 == 0
    assert passes(*[arg for key in seed0 for arg in ("--sampling-key", key)]) == n_all // 2
    assert sum(passes("--sampling-key", key) for key in seed0) > n_all // 2


def hand_plan(**changes) -> pd.DataFrame:
    """A one-row plan as ``desweep plan`` writes it (strings), with ``changes`` applied."""
    row = {"combination_id": "a_vs_b__bc-all__change-d0.25__uniform__fdr0.05__seed0", "sampling_key": "a_vs_b__bc-all__uniform__seed0",
           "setting_id": "a_vs_b__bc-all__change-d0.25__uniform__fdr0.05", "comparison_id": "a_vs_b", "group1": "a", "group2": "b",
           "design": "confounded", "batch_correction": "True", "decoding": "all", "batchid1": "", "batchid2": "", "mode": "change",
           "delta": "0.25", "weights": "uniform", "filter_outlier_cells": "False", "fdr_target": "0.05", "seed": "0"}
    return pd.DataFrame([row | changes])


def test_hand_edited_plan_with_batchids_but_no_batch_correction_is_refused():
    from desweep.de import check_plan
    from desweep.errors import DesweepInputError

    assert len(check_plan(hand_plan())) == 1
    with pytest.raises(DesweepInputError, match="batchid1/batchid2 need batch_correction=True"):
        check_plan(hand_plan(batch_correction="False", decoding="observed", batchid1="batch0", batchid2="batch0"))


def test_merge_refuses_summaries_with_a_sampling_key_missing():
    from desweep.de import SUMMARY_COLUMNS, check_plan, merge_summaries
    from desweep.errors import DesweepInputError

    plan = check_plan(pd.concat([hand_plan(), hand_plan(combination_id="a_vs_b__bc-all__change-d0.25__uniform__fdr0.05__seed1",
                                                         sampling_key="a_vs_b__bc-all__uniform__seed1", seed="1")]))
    partials = [pd.DataFrame([{c: row.get(c, 0) for c in SUMMARY_COLUMNS}]) for row in plan.to_dict("records")]
    assert merge_summaries(partials, plan)["combination_id"].tolist() == plan["combination_id"].tolist()
    with pytest.raises(DesweepInputError, match="no summary for 1 sampling key"):
        merge_summaries(partials[:1], plan)

def test_fast_statistics_equal_scvi_tools_expressions_on_the_same_samples():
    """compare(exact=False) (the shared sampler's float32, blocked path) against scvi-tools' own expressions.

    The same samples on both sides: the fold changes differ only by float32 rounding
    (~1e-6), so every lfc summary agrees to 1e-5 and a probability moves by at most a
    few samples whose fold change lies within rounding of +-delta.
    """
    from desweep.de import compare

    rng = np.random.default_rng(0)
    n, n_genes = 5000, 50
    batch = np.repeat(np.array(["b0", "b1"]), n // 2)
    scale = {name: rng.lognormal(mean=rng.normal(-7, 1, n_genes), sigma=0.5, size=(n, n_genes)).astype(np.float32) for name in "xy"}
    s1, s2 = ({"scale": scale[name], "batch": batch} for name in "xy")
    zero = scale["x"].mean(0) < np.quantile(scale["x"].mean(0), 0.2)  # "genes without counts": a real pseudocount
    settings = [("vanilla", None), ("change", 0.25), ("change", 1.0)]
    exact, fast = (compare(s1, s2, use_observed=False, where_zero1=zero, where_zero2=zero, settings=settings, exact=flag)
                   for flag in (True, False))
    assert exact[settings[0]]["pseudocounts"][0] > 1e-4
    for setting in settings:
        assert sorted(exact[setting]) == sorted(fast[setting])
        for column, theirs in exact[setting].items():
            ours = fast[setting][column]
            if column.startswith("lfc_"):
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5, err_msg=f"{setting} {column}")
            elif column.startswith("proba"):
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=3 / n, err_msg=f"{setting} {column}")
            elif column != "bayes_factor":
                np.testing.assert_array_equal(ours, theirs, err_msg=f"{setting} {column}")


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
    inputs = ["--plan", str(out / keys.PLAN_CSV), "--input", str(pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD),
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
    for _setting, part in plan.groupby("setting_id"):
        first, second = (pd.read_csv(out / keys.DE_TABLES_DIR / f"{c}.csv") for c in part.sort_values("model")["combination_id"])
        pd.testing.assert_frame_equal(first, second)
    summary = pd.read_csv(out / keys.DE_SUMMARY_CSV)
    assert sorted(summary["model"].unique()) == [0, 1]


class _RecordingModel:
    """Stands in for scVI: records how many cells each decoding pass decodes."""

    def __init__(self, n_genes: int) -> None:
        self.n_genes, self.decoded = n_genes, []

    def get_normalized_expression(self, adata, *, indices, n_samples, **kwargs):
        self.decoded.append(len(indices))
        return np.ones((n_samples, len(indices), self.n_genes), dtype=np.float32)


def test_a_group_larger_than_n_samples_decodes_only_n_samples_cells():
    from desweep.de.sampling import SweepContext, _draw, _pool

    groups = np.array(["big"] * 900 + ["small"] * 30, dtype=object)
    ctx = SweepContext(adata=None, model=_RecordingModel(4), group_key="g", n_samples=100, batch_names=["b0", "b1"],
                       batch_codes=np.arange(groups.size) % 2, groups=groups)
    big = _pool(ctx, "big", False, 0, None)
    small = _pool(ctx, "small", False, 0, "b0")
    assert big.shape == (2, 100, 4) and small.shape == (4, 30, 4)  # every small cell; n_samples of the big group
    assert ctx.model.decoded == [100, 30]
    assert _draw(ctx, "big", False, 0, None, role="1")["scale"].shape == (100, 4)

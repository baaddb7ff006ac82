"""desweep normalize: what scvi-tools returns for each transform_batch choice, and the export.

The scvi-tools tests pin down the semantics documented in docs/normalized_expression.md
(the shape table there is parsed and checked here); the export tests check that
desweep's layers agree with scvi-tools' decoder, with each other, and across
chunk sizes and seeds.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from desweep import keys
from desweep.errors import DesweepInputError, ParameterError

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[1] / "docs" / "normalized_expression.md"
BATCHES = ["batch0", "batch1", "batch2"]
PREFIX = keys.NORM_LAYER_PREFIX


@pytest.fixture(scope="module")
def loaded(pipeline_dirs):
    """(clustered AnnData, scVI model) from the shared pipeline fixture, on 1 thread."""
    from desweep import compute
    from desweep.integrate import load_model
    from desweep.io import read_h5ad

    compute.configure(threads=1, seed=0)
    adata = read_h5ad(pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD)
    model = load_model(str(pipeline_dirs[keys.STEP_INTEGRATE] / keys.MODEL_DIR), adata)
    return adata, model


@pytest.fixture(scope="module")
def export_all(loaded):
    """Every choice, 2 posterior samples, 40 genes, seed 3."""
    from desweep.normalize import export_normalized

    adata, model = loaded
    return export_normalized(adata, model, choices=["all"], genes=list(adata.var_names[:40]), n_samples=2, seed=3)


@pytest.fixture
def posterior_mean(monkeypatch):
    """Make every Normal draw return its mean, so scvi-tools' output is deterministic."""
    import torch
    from torch.distributions import Normal

    def loc(self, sample_shape=torch.Size()):  # noqa: B008
        return self.loc.expand(self._extended_shape(sample_shape))

    monkeypatch.setattr(Normal, "rsample", loc)
    monkeypatch.setattr(Normal, "sample", loc)


def _doc_shape_rows() -> list[tuple[dict, str, tuple]]:
    rows = []
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| `(\{.*\})` \| `(\w+)` \| `(\(.*\))` \|", line)
        if m:
            rows.append((ast.literal_eval(m.group(1)), m.group(2), ast.literal_eval(m.group(3))))
    return rows


# --- what scvi-tools returns ------------------------------------------------------------


def test_doc_shape_table_matches_scvi_tools(loaded):
    """Each row of the doc's shape table: the call returns that type and shape."""
    import warnings

    adata, model = loaded
    rows = _doc_shape_rows()
    assert len(rows) >= 8
    for kwargs, kind, shape in rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            result = model.get_normalized_expression(adata, indices=np.arange(10), gene_list=list(adata.var_names[:5]), **kwargs)
        assert type(result).__name__ == kind, kwargs
        assert result.shape == shape, kwargs


def test_scvi_tools_n_samples_overall_needs_return_numpy(loaded):
    adata, model = loaded
    with pytest.raises(ValueError, match="Shape of passed values"):
        model.get_normalized_expression(adata, indices=np.arange(10), n_samples_overall=20)


def test_scvi_tools_return_mean_averages_posterior_samples(loaded):
    """Same seed: return_mean=True equals the mean over axis 0 of return_mean=False."""
    import torch

    adata, model = loaded
    kwargs = dict(indices=np.arange(50), transform_batch=BATCHES, n_samples=4, library_size=1e4)
    torch.manual_seed(11)
    samples = model.get_normalized_expression(adata, return_mean=False, **kwargs)
    torch.manual_seed(11)
    mean = model.get_normalized_expression(adata, return_mean=True, return_numpy=True, **kwargs)
    assert samples.shape == (4, 50, adata.n_vars)
    np.testing.assert_allclose(mean, samples.mean(axis=0), rtol=1e-6)
    assert not np.allclose(samples[0], samples[1])  # the samples really differ


def test_scvi_tools_samples_z_on_every_call(loaded):
    adata, model = loaded
    first = model.get_normalized_expression(adata, indices=np.arange(50), transform_batch="batch0").to_numpy()
    second = model.get_normalized_expression(adata, indices=np.arange(50), transform_batch="batch0").to_numpy()
    assert not np.allclose(first, second)


def test_scvi_tools_list_of_batches_is_always_averaged(loaded, posterior_mean):
    """With z fixed at its posterior mean: a list of batches gives the mean of the single-batch outputs,
    and return_mean=False keeps a sample axis, never a batch axis."""
    adata, model = loaded
    idx = np.arange(50)
    singles = np.stack([model.get_normalized_expression(adata, indices=idx, transform_batch=b).to_numpy() for b in BATCHES])
    assert not np.allclose(singles[0], singles[1])  # the decoder does depend on the batch
    listed = model.get_normalized_expression(adata, indices=idx, transform_batch=BATCHES).to_numpy()
    np.testing.assert_allclose(listed, singles.mean(axis=0), rtol=1e-5)
    kept = model.get_normalized_expression(adata, indices=idx, transform_batch=BATCHES, n_samples=3, return_mean=False)
    assert kept.shape == (3, idx.size, adata.n_vars)
    for sample in kept:
        np.testing.assert_allclose(sample, singles.mean(axis=0), rtol=1e-5)
    same = model.get_normalized_expression(adata, indices=idx, transform_batch=BATCHES, return_mean=False).to_numpy()
    np.testing.assert_allclose(same, listed, rtol=1e-6)  # n_samples=1: return_mean changes nothing


# --- the export ---------------------------------------------------------------------------


@pytest.mark.parametrize("library_size", [1e4, "latent"])
def test_export_matches_scvi_tools_decoder(loaded, posterior_mean, library_size):
    """latent='mean' decodes z's posterior mean: equal to scvi-tools with deterministic z."""
    from desweep.normalize import export_normalized

    adata, model = loaded
    out, _ = export_normalized(adata, model, library_size=library_size, latent="mean", chunk_size=500)
    expected = {
        f"{PREFIX}own_batch": None,
        f"{PREFIX}batch__batch1": "batch1",
        f"{PREFIX}mean_all_batches": BATCHES,
    }
    for layer, transform_batch in expected.items():
        ref = model.get_normalized_expression(adata, transform_batch=transform_batch, library_size=library_size).to_numpy()
        np.testing.assert_allclose(out.layers[layer], ref, rtol=1e-5, atol=1e-6 * float(np.abs(ref).max()))


def test_sampled_z_is_loc_plus_scale_times_the_noise(loaded, monkeypatch):
    """latent='sample' draws z = loc + scale * eps: with eps = 1 in both, equal to scvi-tools' draw at loc + scale."""
    import torch
    from torch.distributions import Normal

    from desweep.normalize import decode, export_normalized

    def one_sd(self, sample_shape=torch.Size()):  # noqa: B008
        return (self.loc + self.scale).expand(self._extended_shape(sample_shape))

    monkeypatch.setattr(Normal, "rsample", one_sd)
    monkeypatch.setattr(Normal, "sample", one_sd)
    monkeypatch.setattr(decode, "latent_noise", lambda seed, start, stop, *, n_samples, n_dims, stream=0:
                        np.ones((n_samples, stop - start, n_dims), dtype=np.float32))
    adata, model = loaded
    out, _ = export_normalized(adata, model, choices=["own_batch"], library_size=1e4, latent="sample", n_samples=1, chunk_size=500)
    ref = model.get_normalized_expression(adata, library_size=1e4, n_samples=1).to_numpy()
    np.testing.assert_allclose(out.layers[f"{PREFIX}own_batch"], ref, rtol=1e-5, atol=1e-6 * float(np.abs(ref).max()))
    at_mean, _ = export_normalized(adata, model, choices=["own_batch"], library_size=1e4, latent="mean", chunk_size=500)
    assert np.abs(at_mean.layers[f"{PREFIX}own_batch"] - ref).max() > 10 * 1e-6 * float(np.abs(ref).max())  # the draw matters


def test_export_layers_and_semantics(loaded, export_all):
    adata, _ = loaded
    out, _ = export_all
    assert out.shape == (adata.n_obs, 40)
    assert list(out.layers) == (
        [f"{PREFIX}own_batch"] + [f"{PREFIX}batch__{b}" for b in BATCHES]
        + [f"{PREFIX}mean_all_batches", f"{PREFIX}mean_all_batches__sample_0", f"{PREFIX}mean_all_batches__sample_1"]
    )
    for layer in out.layers.values():
        assert layer.dtype == np.float32 and layer.shape == (adata.n_obs, 40) and np.isfinite(layer).all() and (layer > 0).all()
    per_batch = np.stack([out.layers[f"{PREFIX}batch__{b}"] for b in BATCHES])
    mean = out.layers[f"{PREFIX}mean_all_batches"]
    # the mean over the per-batch layers is the list-of-batches (return_mean=True) output
    np.testing.assert_allclose(per_batch.mean(axis=0), mean, rtol=1e-5)
    # the posterior samples (return_mean=False) average to it
    samples = np.stack([out.layers[f"{PREFIX}mean_all_batches__sample_{k}"] for k in range(2)])
    np.testing.assert_allclose(samples.mean(axis=0), mean, rtol=1e-6)
    assert not np.allclose(samples[0], samples[1])
    # a cell decoded in its own batch equals the same cell decoded in batch b, for the cells of b
    own = out.layers[f"{PREFIX}own_batch"]
    for code, batch in enumerate(BATCHES):
        cells = (adata.obs["batch"] == batch).to_numpy()
        np.testing.assert_array_equal(own[cells], per_batch[code][cells])
        assert not np.allclose(own[~cells], per_batch[code][~cells])
    dense = lambda m: m.toarray() if hasattr(m, "toarray") else np.asarray(m)  # noqa: E731
    np.testing.assert_array_equal(dense(out.X), dense(adata[:, out.var_names].X))  # raw counts of the exported genes
    info = out.uns[keys.UNS_NORMALIZE]
    assert info["n_samples"] == 2 and info["library_size"] == "10000.0" and info["batches"] == BATCHES
    assert list(info["layers"]["layer"]) == list(out.layers)
    assert list(info["layers"]["transform_batch"][:4]) == ["None", *BATCHES]


def test_export_chunked_equals_unchunked_and_is_seeded(loaded, export_all):
    from desweep.normalize import export_normalized

    adata, model = loaded
    genes = list(adata.var_names[:40])
    whole, _ = export_normalized(adata, model, choices=["all"], genes=genes, n_samples=2, seed=3, chunk_size=adata.n_obs)
    last_one_cell, _ = export_normalized(adata, model, choices=["all"], genes=genes, n_samples=2, seed=3,
                                         chunk_size=adata.n_obs - 1)  # the last chunk has a single cell
    small, _ = export_normalized(adata, model, choices=["all"], genes=genes, n_samples=2, seed=3, chunk_size=97)
    other_seed, _ = export_normalized(adata, model, choices=["mean_all_batches"], genes=genes, n_samples=2, seed=4)
    reference = export_all[0]
    for layer in reference.layers:
        for variant in (whole, last_one_cell, small):
            np.testing.assert_allclose(variant.layers[layer], reference.layers[layer], rtol=1e-5)
    assert not np.allclose(other_seed.layers[f"{PREFIX}mean_all_batches"], reference.layers[f"{PREFIX}mean_all_batches"])


def test_export_decodes_at_most_one_chunk_at_a_time(loaded, monkeypatch):
    from desweep.normalize import export_normalized

    adata, model = loaded
    shapes = []
    generative = model.module.generative

    def spy(*args, **kwargs):
        shapes.append(tuple(kwargs["z"].shape))
        return generative(*args, **kwargs)

    monkeypatch.setattr(model.module, "generative", spy)
    export_normalized(adata, model, choices=["each_batch"], genes=list(adata.var_names[:5]), n_samples=3, chunk_size=256)
    assert max(s[1] for s in shapes) == 256 and {s[0] for s in shapes} == {3}
    assert sum(s[1] for s in shapes) == 3 * adata.n_obs  # 3 batches x every cell once


def test_export_only_own_batch_and_batch_subset(loaded):
    from desweep.normalize import export_normalized

    adata, model = loaded
    genes = list(adata.var_names[:10])
    own, _ = export_normalized(adata, model, choices=["own_batch"], genes=genes, seed=3)
    full, _ = export_normalized(adata, model, choices=["own_batch", "each_batch"], genes=genes, seed=3)
    np.testing.assert_allclose(own.layers[f"{PREFIX}own_batch"], full.layers[f"{PREFIX}own_batch"], rtol=1e-5)
    sub, _ = export_normalized(adata, model, choices=["each_batch", "mean_all_batches"], batches=["batch2", "batch0"],
                               genes=genes, seed=3)
    assert list(sub.layers) == [f"{PREFIX}batch__batch2", f"{PREFIX}batch__batch0", f"{PREFIX}mean_all_batches"]
    np.testing.assert_allclose(sub.layers[f"{PREFIX}batch__batch0"], full.layers[f"{PREFIX}batch__batch0"], rtol=1e-5)


def test_cluster_batch_means(loaded, export_all):
    adata, _ = loaded
    out, means = export_all
    assert list(means.columns) == ["gene", "cluster", "batch", "choice", "mean", "n_cells"]
    combos = adata.obs.groupby(["cell_type", "batch"], observed=True).size()
    assert len(means) == len(combos) * adata.n_vars * 5  # every modelled gene; own, 3 batches, mean: samples are left out
    assert set(means["choice"]) == {"own_batch", "batch__batch0", "batch__batch1", "batch__batch2", "mean_all_batches"}
    assert not means.duplicated(["gene", "cluster", "batch", "choice"]).any()
    # batch-specific clusters appear with their own batch only
    only0 = means[means["cluster"] == "only_batch0"]
    assert set(only0["batch"]) == {"batch0"}
    row = means[(means["gene"] == out.var_names[7]) & (means["cluster"] == "shared1") & (means["batch"] == "batch2")
                & (means["choice"] == "batch__batch0")].iloc[0]
    cells = ((adata.obs["cell_type"] == "shared1") & (adata.obs["batch"] == "batch2")).to_numpy()
    assert row["n_cells"] == cells.sum()
    assert row["mean"] == pytest.approx(float(out.layers[f"{PREFIX}batch__batch0"][cells, 7].mean()), rel=1e-5)


def test_cluster_batch_means_by_hand_with_a_single_cell_combination():
    import anndata as ad

    from desweep.normalize import LayerSpec, cluster_batch_means

    obs = pd.DataFrame({"cluster": ["A", "A", "A", "B"], "batch": ["b0", "b0", "b1", "b1"]}, index=[f"c{i}" for i in range(4)])
    values = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0], [7.0, 70.0]], dtype=np.float32)
    adata = ad.AnnData(np.zeros((4, 2), dtype=np.float32), obs=obs, var=pd.DataFrame(index=["g1", "g2"]),
                       layers={f"{PREFIX}own_batch": values})
    means = cluster_batch_means(adata, group_key="cluster", batch_key="batch",
                                layers=[LayerSpec(f"{PREFIX}own_batch", "own_batch", "None", True)])
    got = {(r.cluster, r.batch, r.gene): (r.mean, r.n_cells) for r in means.itertuples()}
    assert got == {("A", "b0", "g1"): (2.0, 2), ("A", "b0", "g2"): (20.0, 2), ("A", "b1", "g1"): (5.0, 1),
                   ("A", "b1", "g2"): (50.0, 1), ("B", "b1", "g1"): (7.0, 1), ("B", "b1", "g2"): (70.0, 1)}
    assert set(means["choice"]) == {"own_batch"}


def test_means_cover_every_gene_whatever_the_layers_hold(loaded, export_all):
    """cluster_batch_means.csv is the same, to the byte, for a 40-gene export and an every-gene export,
    and equals the means of the stored every-gene layers."""
    from desweep.io import write_csv
    from desweep.normalize import cluster_batch_means, export_normalized

    adata, model = loaded
    few, few_means = export_all
    every, every_means = export_normalized(adata, model, choices=["all"], n_samples=2, seed=3)
    assert few.n_vars == 40 and every.n_vars == adata.n_vars
    pd.testing.assert_frame_equal(few_means, every_means, check_exact=True)
    stored = cluster_batch_means(every, group_key="cell_type", batch_key="batch",
                                 layers=[s for s in _layer_specs(every) if s.sample < 0])
    pd.testing.assert_frame_equal(every_means, stored, check_exact=True)
    paths = [write_csv(m, Path(tmp) / "means.csv") for m, tmp in ((few_means, _tmp()), (every_means, _tmp()))]
    assert paths[0].read_bytes() == paths[1].read_bytes()


def _layer_specs(normalized):
    from desweep.normalize import LayerSpec

    return [LayerSpec(**row) for row in normalized.uns[keys.UNS_NORMALIZE]["layers"].to_dict("records")]


def _tmp() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="desweep-means-")


def test_select_layer_genes_is_the_union_of_top_genes_and_requested():
    from desweep.normalize import describe_layer_genes, select_layer_genes

    tables = {
        "a": pd.DataFrame({"gene": ["g3", "g1", "g2", "g9"], "rank": [1, 2, 3, 4]}),
        "b": pd.DataFrame({"gene": ["g4", "g1", "g5"], "rank": [2, 1, 3]}),
    }
    selection = select_layer_genes(tables, top_n=2, requested=["g7", "g3", " "])
    assert selection.top_counts == {"g3": 1, "g1": 2, "g4": 1} and selection.requested == ("g7", "g3")
    assert selection.genes == ["g3", "g1", "g4", "g7"]
    assert select_layer_genes(tables, top_n=2, all_genes=True).genes is None
    with pytest.raises(DesweepInputError, match="nothing to export: give --plan"):
        select_layer_genes(None)
    with pytest.raises(ParameterError, match=r"^top_n: must be at least 1"):  # the CLI names the flag (test_layers.py)
        select_layer_genes(tables, top_n=0)

    import anndata as ad

    normalized = ad.AnnData(np.zeros((2, 4), dtype=np.float32), var=pd.DataFrame(index=["g1", "g3", "g4", "g7"]))
    table = describe_layer_genes(normalized, selection)
    assert table.to_dict("list") == {"gene": ["g1", "g3", "g4", "g7"], "n_top_tables": [2, 1, 1, 0],
                                     "requested": [False, True, False, True]}
    assert list(normalized.var["desweep_n_top_tables"]) == [2, 1, 1, 0]
    assert normalized.uns[keys.UNS_NORMALIZE]["gene_selection"] == {
        "rule": "de_top_union", "top_n": 2, "n_tables": 2, "n_requested": 2, "n_genes": 4}


def test_gene_names_empty_or_with_outer_spaces_keep_their_layers():
    """Genes named "" or " CD3 " are modelled genes: their layers and layer_genes.csv rows stay (never stripped)."""
    import anndata as ad

    from desweep.normalize import describe_layer_genes, gene_positions, select_layer_genes

    var_names = ["", " CD3 ", "CD3", "CD8"]
    tables = {"a": pd.DataFrame({"gene": ["", " CD3 ", "CD3", "CD8"], "rank": [1, 2, 3, 4]})}
    selection = select_layer_genes(tables, top_n=3, requested=[" CD3 "])
    assert selection.genes == ["", " CD3 ", "CD3"] and selection.requested == (" CD3 ",)
    idx, missing = gene_positions(var_names, selection.genes)
    assert idx.tolist() == [0, 1, 2] and missing == []
    normalized = ad.AnnData(np.zeros((2, 3), dtype=np.float32), var=pd.DataFrame(index=[var_names[i] for i in idx]))
    table = describe_layer_genes(normalized, selection)
    assert table["gene"].tolist() == ["", " CD3 ", "CD3"] and table["n_top_tables"].tolist() == [1, 1, 1]
    assert table["requested"].tolist() == [False, True, False]


def test_doc_export_example_matches(loaded):
    """The worked example in the doc: its layer table is what the export writes."""
    from desweep.normalize import export_normalized

    adata, model = loaded
    out, means = export_normalized(adata[:300].copy(), model, choices=["all"], genes=list(adata.var_names[:40]),
                                   n_samples=2, seed=3)
    rows = re.findall(r"^\| `(scvi_norm__\w+)` \| `\((\d+), (\d+)\)` \|", DOC.read_text(), flags=re.M)
    assert [r[0] for r in rows] == list(out.layers)
    assert {(int(r[1]), int(r[2])) for r in rows} == {out.shape} == {(300, 40)}
    combos = out.obs.groupby(["cell_type", "batch"], observed=True).ngroups
    assert len(means) == combos * adata.n_vars * 5
    assert f"{combos} x {adata.n_vars} x 5 = {len(means):,} rows" in DOC.read_text()


# --- memory plan and input errors ---------------------------------------------------------


def test_plan_memory_100k_cells_fits_24_gib():
    from desweep.normalize import DEFAULT_MAX_MEMORY_GB, layer_plan, plan_memory

    specs = layer_plan(["own_batch", "each_batch", "mean_all_batches"], ["a", "b", "c"], n_samples=1)
    plan = plan_memory(n_cells=100_000, n_genes_model=2000, n_genes_out=2000, n_layers=len(specs), n_samples=1)
    assert plan.output_bytes == 5 * 100_000 * 2000 * 4
    assert plan.chunk_size == 4096 and plan.total_bytes < DEFAULT_MAX_MEMORY_GB * 2**30 < 24 * 2**30
    small = plan_memory(n_cells=100_000, n_genes_model=2000, n_genes_out=2000, n_layers=5, n_samples=25, max_memory_gb=4.5)
    assert small.chunk_size < 4096 and small.total_bytes <= 4.5 * 2**30
    with pytest.raises(DesweepInputError, match=r"need 3\.73 GiB"):
        plan_memory(n_cells=100_000, n_genes_model=2000, n_genes_out=2000, n_layers=5, n_samples=1, max_memory_gb=2)
    with pytest.raises(DesweepInputError, match="chunk_size: 100000 cells need"):
        plan_memory(n_cells=100_000, n_genes_model=2000, n_genes_out=2000, n_layers=5, n_samples=1, max_memory_gb=4,
                    chunk_size=100_000)


def test_latent_noise_does_not_depend_on_chunks():
    from desweep.normalize import latent_noise

    whole = latent_noise(5, 0, 3000, n_samples=2, n_dims=4)
    parts = np.concatenate([latent_noise(5, a, b, n_samples=2, n_dims=4) for a, b in [(0, 7), (7, 1100), (1100, 3000)]], axis=1)
    np.testing.assert_array_equal(whole, parts)
    assert whole.shape == (2, 3000, 4)


def test_export_input_errors(loaded, caplog):
    from desweep.normalize import export_normalized, parse_library_size

    adata, model = loaded
    with pytest.raises(DesweepInputError, match="unknown choice"):
        export_normalized(adata, model, choices=["own"])
    with pytest.raises(DesweepInputError, match="not a batch of the model"):
        export_normalized(adata, model, batches=["batch9"])
    with pytest.raises(DesweepInputError, match="none of the 1 genes is modelled"):
        export_normalized(adata, model, genes=["NOPE"])
    with pytest.raises(DesweepInputError, match="use --n-samples 1"):
        export_normalized(adata, model, latent="mean", n_samples=3)
    with pytest.raises(DesweepInputError, match="needs --latent sample"):
        export_normalized(adata, model, latent="mean", choices=["all_batches_samples"])
    with pytest.raises(DesweepInputError, match="'latent' or a positive number"):
        parse_library_size("-1")
    assert parse_library_size("LATENT") == "latent" and parse_library_size("1e4") == 1e4
    out, _ = export_normalized(adata, model, choices=["own_batch"], genes=["NOPE", adata.var_names[3]])
    assert list(out.var_names) == [adata.var_names[3]] and out.uns[keys.UNS_NORMALIZE]["genes_missing"] == ["NOPE"]
    assert "1 of 2 requested genes are not modelled" in caplog.text


# --- command line -----------------------------------------------------------------------------


def test_cli_normalize_writes_outputs(pipeline_dirs, loaded, tmp_path):
    import anndata as ad
    from click.testing import CliRunner

    from desweep.cli import cli

    adata, _ = loaded
    genes_file = tmp_path / "genes.txt"
    genes_file.write_text(f"# markers\n{adata.var_names[2]}\n{adata.var_names[0]}\n\nNOT_MODELLED\n")
    outdir = tmp_path / keys.STEP_NORMALIZE
    args = ["normalize", "--input", str(pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD),
            "--model", str(pipeline_dirs[keys.STEP_INTEGRATE] / keys.MODEL_DIR), "--genes", str(genes_file),
            "--choices", "all", "--n-samples", "2", "--library-size", "latent", "--threads", "1", "--seed", "1",
            "-o", str(outdir)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"7 layers of {adata.n_obs} cells x 2 genes:" in result.output and f"  {PREFIX}mean_all_batches__sample_1" in result.output
    written = ad.read_h5ad(outdir / keys.NORMALIZED_H5AD)
    assert list(written.var_names) == [adata.var_names[0], adata.var_names[2]]
    assert len(written.layers) == 7 and written.uns[keys.UNS_NORMALIZE]["library_size"] == "latent"
    means = pd.read_csv(outdir / keys.CLUSTER_BATCH_MEANS_CSV)
    assert list(means.columns) == ["gene", "cluster", "batch", "choice", "mean", "n_cells"]
    assert means["gene"].nunique() == adata.n_vars  # the means cover every gene
    layer_genes = pd.read_csv(outdir / keys.LAYER_GENES_CSV)
    assert layer_genes.to_dict("list") == {"gene": [adata.var_names[0], adata.var_names[2]], "n_top_tables": [0, 0],
                                           "requested": [True, True]}
    # equal inputs and seed give byte-identical tables
    again = tmp_path / "again"
    assert CliRunner().invoke(cli, [*args[:-1], str(again)]).exit_code == 0
    assert (again / keys.CLUSTER_BATCH_MEANS_CSV).read_bytes() == (outdir / keys.CLUSTER_BATCH_MEANS_CSV).read_bytes()


def _de_outputs(folder: Path, var_names) -> Path:
    """A plan of two combinations and their DE tables (genes in reverse and forward model order)."""
    from desweep.io import write_csv

    genes = [str(g) for g in var_names]
    write_csv(pd.DataFrame({"combination_id": ["c1", "c2"]}), folder / keys.PLAN_CSV)
    for cid, order in (("c1", genes[::-1]), ("c2", genes)):
        write_csv(pd.DataFrame({"gene": order, "rank": np.arange(1, len(order) + 1)}), folder / keys.DE_TABLES_DIR / f"{cid}.csv")
    return folder / keys.PLAN_CSV


def test_cli_normalize_keeps_the_de_top_genes_and_every_gene_in_the_means(pipeline_dirs, loaded, tmp_path):
    import anndata as ad
    from click.testing import CliRunner

    from desweep.cli import cli

    adata, _ = loaded
    plan = _de_outputs(tmp_path / "de", adata.var_names)
    base = ["normalize", "--input", str(pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD),
            "--model", str(pipeline_dirs[keys.STEP_INTEGRATE] / keys.MODEL_DIR), "--threads", "1"]
    top = tmp_path / "top"
    result = CliRunner().invoke(cli, [*base, "--plan", str(plan), "--top-n", "3", "--genes", str(adata.var_names[10]),
                                      "-o", str(top)])
    assert result.exit_code == 0, result.output
    written = ad.read_h5ad(top / keys.NORMALIZED_H5AD)
    expected = [0, 1, 2, 10, adata.n_vars - 3, adata.n_vars - 2, adata.n_vars - 1]
    assert list(written.var_names) == [adata.var_names[i] for i in expected]  # model order
    assert written.uns[keys.UNS_NORMALIZE]["gene_selection"]["rule"] == "de_top_union"
    layer_genes = pd.read_csv(top / keys.LAYER_GENES_CSV)
    assert list(layer_genes["n_top_tables"]) == [1, 1, 1, 0, 1, 1, 1] and layer_genes["requested"].sum() == 1

    every = tmp_path / "every"
    result = CliRunner().invoke(cli, [*base, "--plan", str(plan), "--all-genes", "-o", str(every)])
    assert result.exit_code == 0, result.output
    assert ad.read_h5ad(every / keys.NORMALIZED_H5AD, backed="r").n_vars == adata.n_vars
    assert (every / keys.CLUSTER_BATCH_MEANS_CSV).read_bytes() == (top / keys.CLUSTER_BATCH_MEANS_CSV).read_bytes()
    assert (top / keys.NORMALIZED_H5AD).stat().st_size * 5 < (every / keys.NORMALIZED_H5AD).stat().st_size

    result = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "none")])
    assert result.exit_code == 1 and "Error: desweep normalize: genes: nothing to export: give --plan" in result.output
    result = CliRunner().invoke(cli, [*base, "--plan", str(plan), "--tables", str(tmp_path / "nope"), "-o", str(tmp_path / "none")])
    assert result.exit_code == 1 and "--tables: folder does not exist" in result.output
    assert not (tmp_path / "none").exists()


def test_cli_normalize_errors_are_one_line(pipeline_dirs, tmp_path):
    from click.testing import CliRunner

    from desweep.cli import cli

    base = ["normalize", "--input", str(pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD),
            "--model", str(pipeline_dirs[keys.STEP_INTEGRATE] / keys.MODEL_DIR), "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, [*base, "--library-size", "big"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --library-size: library_size: must be 'latent' or a positive number, got 'big'"
    result = CliRunner().invoke(cli, [*base, "--choices", "own_batch,nope"])
    assert result.exit_code == 1 and "Error: --choices: nope: unknown choice" in result.output
    result = CliRunner().invoke(cli, [*base, "--genes", "missing/genes.txt"])
    assert result.exit_code == 1 and "Error: missing/genes.txt: --genes: file does not exist" in result.output
    result = CliRunner().invoke(cli, [*base, "--all-genes", "--max-memory-gb", "0.001", "--threads", "1"])
    assert result.exit_code == 1 and "Error: --max-memory-gb: max_memory_gb:" in result.output
    assert not (tmp_path / "out").exists()  # nothing written on errors


def test_counts_of_genes_from_a_backed_file_equal_the_in_memory_columns(tmp_path):
    """The exported genes' counts, read from a backed X in blocks of 7 cells, equal the in-memory column subset."""
    import anndata as ad
    import scipy.sparse as sp

    from desweep.normalize import _counts_of_genes

    x = sp.random(40, 12, density=0.4, format="csr", dtype=np.float32, random_state=3)
    ad.AnnData(x).write_h5ad(tmp_path / "x.h5ad")
    backed = ad.read_h5ad(tmp_path / "x.h5ad", backed="r")
    genes = np.array([0, 5, 11])
    assert (_counts_of_genes(backed.X, genes, chunk_size=7) != x[:, genes]).nnz == 0
    assert (_counts_of_genes(x, genes) != x[:, genes]).nnz == 0

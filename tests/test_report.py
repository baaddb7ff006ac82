"""The MultiQC report: every section id present, missing inputs noted, offline and self-contained."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from desweep import keys
from desweep.cli import cli
from test_diagnose import planted_adata, planted_comparisons, planted_plan, write_planted_results

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results_dir(sim_small, tmp_path_factory) -> Path:
    """A full OUTDIR (no training): planted DE tables, diagnostics, baselines, provenance; normalized/ missing."""
    from desweep.baselines import run_baselines
    from desweep.diagnose import diagnose
    from desweep.io import write_csv
    from desweep.plots import save_png, umap

    outdir = tmp_path_factory.mktemp("results")
    adata = planted_adata(sim_small)
    comparisons = planted_comparisons(adata)
    plan, tables = planted_plan(comparisons, adata)
    write_planted_results(outdir, adata, comparisons, plan, tables)
    res = diagnose(adata, plan, tables, comparisons, top_n=30)
    diag = outdir / keys.STEP_DIAGNOSE
    for name, table in (("gene_patterns", keys.GENE_PATTERNS_CSV), ("setting_scores", keys.SETTING_SCORES_CSV),
                        ("concordance", keys.CONCORDANCE_CSV), ("recommendations", keys.RECOMMENDATIONS_CSV),
                        ("thresholds", keys.DIAGNOSE_THRESHOLDS_CSV), ("top_gene_expression", keys.TOP_GENE_EXPRESSION_CSV)):
        write_csv(res[name], diag / table)
    save_png(umap(adata.obsm[keys.X_UMAP], adata.obs["batch"], adata.obs["cell_type"]), diag / keys.PLOTS_DIR / keys.PLOT_UMAP)
    base = run_baselines(adata, comparisons.iloc[:1], methods=["wilcoxon", "pseudobulk"], top_n=30)
    for name, table in (("wilcoxon", keys.WILCOXON_CSV), ("pseudobulk", keys.PSEUDOBULK_CSV),
                        ("baseline_patterns", keys.BASELINE_PATTERNS_CSV), ("baseline_scores", keys.BASELINE_SCORES_CSV)):
        write_csv(base[name], outdir / keys.STEP_BASELINES / table)
    validate = outdir / keys.STEP_VALIDATE
    validate.mkdir()
    (validate / keys.VALIDATION_REPORT).write_text(json.dumps({
        "input": "sim.h5ad", "n_cells": adata.n_obs, "n_genes": adata.n_vars, "batch_key": "batch", "labels_key": "cell_type",
        "cells_per_batch": adata.obs["batch"].value_counts().sort_index().to_dict(), "notes": ["a note"], "checksum": "abc"}))
    write_csv(pd.DataFrame({"metric": ["batch_entropy", "batch_entropy", "label_asw"], "embedding": ["X_scVI", "X_pca", "X_scVI"],
                            "value": [0.9, 0.2, 0.7]}), outdir / keys.STEP_INTEGRATE / keys.METRICS_CSV)
    info = outdir / keys.PIPELINE_INFO
    info.mkdir()
    (info / keys.PARAMS_YAML).write_text(yaml.safe_dump({"input": "sim.h5ad", "seed": 0, "steps": {"integrate": {"max_epochs": 40}}}))
    (info / keys.SOFTWARE_VERSIONS_YML).write_text(yaml.safe_dump({"desweep": "0.1.0", "multiqc": "1.35"}))
    return outdir


@pytest.fixture(scope="module")
def report_html(results_dir) -> str:
    result = CliRunner().invoke(cli, ["report", "--results", str(results_dir), "-o", str(results_dir / keys.STEP_REPORT)])
    assert result.exit_code == 0, result.output
    path = results_dir / keys.STEP_REPORT / keys.MULTIQC_REPORT
    assert path.is_file() and path.stat().st_size > 100_000
    return path.read_text()


def test_report_holds_every_section_id(report_html):
    from desweep.report import SECTION_IDS

    assert len(SECTION_IDS) == 10
    for section in SECTION_IDS:
        assert f'id="{section}"' in report_html, section
    order = [report_html.index(f'id="{s}"') for s in SECTION_IDS]
    assert order == sorted(order)  # in the documented order
    for title in ("Input summary", "Setting scores and recommendations", "Parameters and software versions"):
        assert title in report_html


def test_report_parts_and_missing_inputs(results_dir, report_html):
    # interactive parts are there, by their stable ids
    for part in ("desweep_input_summary", "desweep_integration_history", "desweep_integration_metrics", "desweep_composition_counts",
                 "desweep_sweep_summary", "desweep_scores_recommendations", "desweep_scores_table", "desweep_scores_shares",
                 "desweep_scores_scatter", "desweep_concordance_heatmap_00", "desweep_top_genes_heatmap_00",
                 "desweep_top_genes_volcano_00", "desweep_baselines_scores", "desweep_provenance_params", "desweep_provenance_versions"):
        assert part in report_html, part
    # the UMAP image is embedded, not linked
    assert "data:image/png;base64," in report_html
    # normalized/ was never written: the section says so
    assert "Not available:" in report_html and "normalized export" in report_html
    # offline and self-contained: no external scripts or stylesheets
    assert not re.search(r'<script[^>]+src="https?://', report_html)
    assert not re.search(r'<link[^>]+href="https?://[^"]+\.css', report_html)
    out = results_dir / keys.STEP_REPORT
    assert (out / "multiqc_data").is_dir()
    assert sorted((out / keys.MULTIQC_CUSTOM_CONTENT_DIR).glob("*_mqc.yaml"))


def test_report_with_nothing_but_a_folder(tmp_path):
    """Every input missing: the report still builds and each section says what is missing."""
    from desweep.report import SECTION_IDS, build_report

    empty = tmp_path / "results"
    empty.mkdir()
    path = build_report(empty, tmp_path / "mq")
    text = path.read_text()
    for section in SECTION_IDS:
        assert f'id="{section}"' in text, section
    assert text.count("Not available:") >= len(SECTION_IDS)


def test_custom_content_items(results_dir):
    from desweep.report import SECTION_IDS, custom_content

    items = custom_content(results_dir)
    ids = [item.id for item in items]
    assert len(ids) == len(set(ids))
    assert {item.section for item in items} == set(SECTION_IDS)
    sweep = next(i for i in items if i.id == "desweep_sweep_summary")
    plan = pd.read_csv(results_dir / keys.STEP_DE / keys.PLAN_CSV)
    assert sorted(sweep.data) == sorted(plan["combination_id"])  # one row per combination
    assert sweep.plot_type == "table"
    conc = next(i for i in items if i.id == "desweep_concordance_heatmap_00")
    assert conc.plot_type == "heatmap" and len(conc.data) == len(conc.extra["xcats"]) == 3
    baselines = next(i for i in items if i.id == "desweep_baselines_scores")
    assert any("confounded" in str(row.get("status", "")) for row in baselines.data.values())


def test_shipped_config_matches_builtin():
    from desweep.report import DEFAULT_CONFIG, SECTION_IDS

    shipped = yaml.safe_load((REPO / "assets" / keys.MULTIQC_CONFIG).read_text())
    assert shipped == DEFAULT_CONFIG
    assert shipped["custom_content"]["order"] == list(SECTION_IDS)
    assert shipped["no_version_check"] is True and shipped["no_ai"] is True


def test_cli_errors(tmp_path):
    result = CliRunner().invoke(cli, ["report", "--results", str(tmp_path / "nope"), "-o", str(tmp_path / "mq")])
    assert result.exit_code == 1 and "Error:" in result.output and "does not exist" in result.output
    result = CliRunner().invoke(cli, ["report", "--results", str(tmp_path), "--config", str(tmp_path / "c.yml"), "-o", str(tmp_path / "mq")])
    assert result.exit_code == 1 and "--config" in result.output
    assert not (tmp_path / "mq").exists()


def _normalized_outdir(tmp_path: Path, layer_genes: pd.DataFrame) -> Path:
    import anndata as ad
    import numpy as np

    folder = tmp_path / keys.STEP_NORMALIZE
    folder.mkdir(parents=True)
    genes = list(layer_genes["gene"])
    adata = ad.AnnData(np.zeros((4, len(genes)), dtype=np.float32), var=pd.DataFrame(index=genes))
    adata.layers[f"{keys.NORM_LAYER_PREFIX}own_batch"] = adata.X.copy()
    adata.write_h5ad(folder / keys.NORMALIZED_H5AD)
    layer_genes.to_csv(folder / keys.LAYER_GENES_CSV, index=False)
    return tmp_path


@pytest.mark.parametrize(("n_top_tables", "requested", "expected"), [
    ([3, 1, 0], [False, False, True], "The layers hold 3 genes, the union of 2 among the top genes of at least one DE "
                                      "table, 1 requested with --genes"),
    ([3, 0, 0], [False, False, False], "The layers hold every modelled gene (3, --all-genes): 1 among the top genes"),
])
def test_report_says_which_genes_the_normalized_layers_hold(tmp_path, n_top_tables, requested, expected):
    """Issue #17: the layers hold the DE top genes and --genes by default; the report says which, from layer_genes.csv."""
    from desweep.report import _normalized_section

    table = pd.DataFrame({"gene": ["g1", "g2", "g3"], "n_top_tables": n_top_tables, "requested": requested})
    layers = next(item for item in _normalized_section(_normalized_outdir(tmp_path, table)) if item.part == "layers")
    assert expected in layers.description, layers.description

"""The MultiQC report: the verdict first, sections built from tables, missing inputs noted, offline and self-contained."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from contract_outdir import NO_TABLES, RECOMMENDED_TEXT, TOP_N, write_contract_outdir

from desweep import keys
from desweep.cli import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results_dir(sim_small, tmp_path_factory) -> Path:
    """A full OUTDIR following the output contract (no training), with baselines and a UMAP; normalized/ missing."""
    from desweep.baselines import run_baselines
    from desweep.io import write_csv
    from desweep.plots import save_png, umap

    outdir = tmp_path_factory.mktemp("results")
    write_contract_outdir(outdir, sim_small)
    adata = sim_small.copy()
    from desweep.datakeys import DataKeys, set_keys

    set_keys(adata, DataKeys(batch_key="batch", labels_key="cell_type", group_key="cell_type"))
    comparisons = pd.read_csv(outdir / keys.STEP_COMPOSITION / keys.COMPARISONS_CSV)
    base = run_baselines(adata, comparisons.iloc[:1], methods=["wilcoxon", "pseudobulk"], top_n=TOP_N)
    for name, file in (("wilcoxon", keys.WILCOXON_CSV), ("pseudobulk", keys.PSEUDOBULK_CSV),
                       ("baseline_patterns", keys.BASELINE_PATTERNS_CSV), ("baseline_scores", keys.BASELINE_SCORES_CSV)):
        write_csv(base[name], outdir / keys.STEP_BASELINES / file)
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    coords = np.column_stack([np.cos(codes), np.sin(codes)]) * 5 + np.random.default_rng(0).normal(0, 0.6, (adata.n_obs, 2))
    save_png(umap(coords, adata.obs["batch"], adata.obs["cell_type"]), outdir / keys.STEP_DIAGNOSE / keys.PLOTS_DIR / keys.PLOT_UMAP)
    return outdir


@pytest.fixture(scope="module")
def inputs(results_dir):
    from desweep.report import load_results

    return load_results(results_dir)


@pytest.fixture(scope="module")
def items(inputs):
    from desweep.report import custom_content

    return {item.id: item for item in custom_content(inputs)}


@pytest.fixture(scope="module")
def report_path(results_dir) -> Path:
    result = CliRunner().invoke(cli, ["report", "--results", str(results_dir), "-o", str(results_dir / keys.STEP_REPORT)])
    assert result.exit_code == 0, result.output
    path = results_dir / keys.STEP_REPORT / keys.MULTIQC_REPORT
    assert path.is_file() and path.stat().st_size > 100_000
    return path


def _recommendations(results_dir) -> pd.DataFrame:
    return pd.read_csv(results_dir / keys.STEP_DIAGNOSE / keys.RECOMMENDATIONS_CSV)


# --------------------------------------------------------------------------- structure
def test_sections_in_order_verdict_first(report_path):
    from desweep.report import SECTION_IDS

    text = report_path.read_text()
    assert SECTION_IDS[0] == "desweep_verdict"
    positions = [text.index(f'id="{s}"') for s in SECTION_IDS]
    assert positions == sorted(positions)
    assert "Section could not be built" not in text
    # offline and self-contained: no external scripts or stylesheets
    assert not re.search(r'<script[^>]+src="https?://', text)
    assert not re.search(r'<link[^>]+href="https?://[^"]+\.css', text)
    out = report_path.parent
    assert (out / "multiqc_data").is_dir() and sorted((out / keys.MULTIQC_CUSTOM_CONTENT_DIR).glob("*_mqc.yaml"))


def test_every_section_built_and_parts_present(items):
    from desweep.report import SECTION_IDS

    assert not [i for i in items if i.endswith("_error")]
    assert {item.section for item in items.values()} == set(SECTION_IDS)
    for part in ("desweep_verdict_cards", "desweep_verdict_rejected", "desweep_markers_table", "desweep_markers_dotplot_00",
                 "desweep_top_genes_heatmaps_00", "desweep_top_genes_volcano_00", "desweep_scores_scatter", "desweep_scores_table",
                 "desweep_scores_models", "desweep_concordance_heatmap_00", "desweep_sweep_summary", "desweep_sweep_skipped",
                 "desweep_baselines_scores", "desweep_integration_umap", "desweep_provenance_versions"):
        assert part in items, part
    # normalized/ was never written: its section says so
    assert "desweep_normalized_missing_normalized_export" in items


# --------------------------------------------------------------------------- the verdict
def test_verdict_cards_carry_the_answer(items, results_dir):
    cards = items["desweep_verdict_cards"].data
    rec = _recommendations(results_dir)
    for row in rec.itertuples():
        start = cards.index(f"data-comparison='{row.comparison_id}'")
        card = cards[start:cards.find("data-comparison=", start + 1)]
        assert html.escape(row.status) in card
        if row.status == "no_settings":
            assert html.escape(row.reason) in card
            continue
        assert f"<span class='setting'>{html.escape(row.recommended_setting)}</span>" in card
        assert f">{row.n_markers}</span>genes in the answer, {int(row.n_high_confidence)} with high confidence" in card
        assert f">{row.default_share_batch_wide:.0%}</span>of scVI's default top {TOP_N}" in card
        assert "<b>Bridge contrast</b> (desweep's own estimate, no training): identifiable: 3 clusters present" in card
    assert RECOMMENDED_TEXT in html.unescape(cards)


def test_rejected_genes_follow_the_cards(items, results_dir):
    ids = list(items)
    assert ids.index("desweep_verdict_rejected") == ids.index("desweep_verdict_cards") + 1
    rejected = pd.read_csv(results_dir / keys.STEP_DIAGNOSE / keys.REJECTED_CSV)
    table = items["desweep_verdict_rejected"].data
    assert sorted(table) == sorted(f"{a} vs {b} | {g}" for a, b, g in zip(rejected["group1"], rejected["group2"], rejected["gene"], strict=True))
    first = rejected.iloc[0]
    row = table[f"{first['group1']} vs {first['group2']} | {first['gene']}"]
    assert row["reason"] == first["reason"] and row["comparison_id"] == first["comparison_id"]
    # the card names the default's first rejected genes too
    assert str(first["gene"]) in items["desweep_verdict_cards"].data


def test_markers_table_and_dotplots(items, results_dir):
    markers = pd.read_csv(results_dir / keys.STEP_DIAGNOSE / keys.MARKERS_CSV)
    table = items["desweep_markers_table"]
    assert table.plot_type == "table"
    assert sorted(table.data) == sorted(f"{a} vs {b} | {g}" for a, b, g in zip(markers["group1"], markers["group2"], markers["gene"], strict=True))
    dotplots = [i for i in items if i.startswith("desweep_markers_dotplot_")]
    assert len(dotplots) == 2  # the comparison without tables has no markers and no rejected genes
    assert all("data:image/png;base64," in items[i].data for i in dotplots)


def test_marker_expression_from_markers_h5ad(inputs, results_dir):
    expression = inputs.marker_expression
    markers = pd.read_csv(results_dir / keys.STEP_DIAGNOSE / keys.MARKERS_CSV)
    assert "scvi_norm__own_batch" in inputs.marker_expression_source
    assert set(markers["gene"]) <= set(expression["gene"])
    # only clusters present in a batch: the batch-specific clusters have one batch each
    assert expression.loc[expression["cluster"] == "only_batch0", "batch"].unique().tolist() == ["batch0"]
    assert expression["frac_expressing"].between(0, 1).all()


def test_cluster_batch_expression_uses_present_cells_only():
    """A stray cell of a batch-specific cluster in another batch gets no column; fractions and means are per cell."""
    import anndata as ad

    from desweep.report.load import cluster_batch_expression

    cluster = ["A"] * 20 + ["A"] + ["B"] * 40
    batch = ["b0"] * 20 + ["b1"] + ["b0"] * 20 + ["b1"] * 20
    x = np.zeros((61, 2))
    x[:10, 0] = 3.0  # half of A in b0 expresses g0
    x[20, 0] = 9.0  # the stray
    x[41:, 1] = 1.0  # every B cell of b1 expresses g1
    adata = ad.AnnData(x, obs=pd.DataFrame({"c": cluster, "b": batch}, index=[f"c{i}" for i in range(61)]),
                       var=pd.DataFrame(index=["g0", "g1"]))
    out = cluster_batch_expression(adata, group_key="c", batch_key="b").set_index(["gene", "cluster", "batch"])
    assert ("g0", "A", "b1") not in out.index
    assert sorted({(c, b) for _, c, b in out.index}) == [("A", "b0"), ("B", "b0"), ("B", "b1")]
    assert out.loc[("g0", "A", "b0"), "frac_expressing"] == 0.5
    assert out.loc[("g0", "A", "b0"), "mean"] == pytest.approx(np.log1p(3.0) / 2)
    assert out.loc[("g1", "B", "b1"), "frac_expressing"] == 1.0 and out.loc[("g1", "B", "b0"), "frac_expressing"] == 0.0


# --------------------------------------------------------------------------- the evidence
def test_default_and_recommended_side_by_side(items, results_dir):
    rec = _recommendations(results_dir)
    body = items["desweep_top_genes_heatmaps_00"].data
    assert body.count("data:image/png;base64,") == 2
    assert rec["default_setting_id"].iloc[0] in body and rec["recommended_setting_id"].iloc[0] in body
    # scVI's default ends its top N inside a tie of proba_de = 1; the recommended setting does not
    assert "scVI&#x27;s default: the top 20 is cut inside a tie" in body
    assert "Recommended: the top" not in body
    no_tables = rec.index[rec["comparison_id"] == NO_TABLES][0]
    assert f"desweep_top_genes_heatmaps_{no_tables:02d}" not in items


def test_tie_at_cut():
    from desweep.report.evidence import tie_at_cut

    table = pd.DataFrame({"gene": list("abcdef"), "rank": range(1, 7), "proba_de": [1.0, 1.0, 1.0, 1.0, 0.9, 0.8]})
    assert tie_at_cut(table, 2) == ({"a", "b"}, 4, 1.0)
    assert tie_at_cut(table, 4)[0] == set()  # the cut falls where proba_de changes
    assert tie_at_cut(table, 6)[0] == set()


def test_setting_labels_are_short_and_unique(inputs):
    from desweep.plots import short_setting_labels

    scores = inputs.get("setting_scores")
    labels = short_setting_labels(scores)
    assert labels.groupby(scores["comparison_id"]).apply(lambda s: s.is_unique).all()
    assert set(labels[scores["comparison_id"] == scores["comparison_id"].iloc[0]]) == {
        "bc=False \u00b7 vanilla", "bc=True (all) \u00b7 change \u03b4=0.25", "bc=True (own) \u00b7 change \u03b4=0.25",
        "bc=True (batch0) \u00b7 change \u03b4=0.5"}
    varied = scores.assign(fdr_target=np.where(np.arange(len(scores)) % 2 == 0, 0.05, 0.1))
    assert short_setting_labels(varied).str.contains("FDR").all()
    # the bridge contrast has no scVI parameters: named by its method, and the settings' labels do not change
    first = scores[scores["comparison_id"] == scores["comparison_id"].iloc[0]]
    bridge = first.iloc[[0]].assign(setting_id="bridge", method="bridge", batch_correction=np.nan, mode=np.nan, delta=np.nan)
    with_bridge = short_setting_labels(pd.concat([first.assign(method="scvi"), bridge], ignore_index=True))
    assert with_bridge.iloc[-1] == "bridge contrast" and list(with_bridge.iloc[:-1]) == list(labels[first.index])


def test_scores_table_flags_ties_and_hides_parameters(items, results_dir):
    table = items["desweep_scores_table"]
    rec = _recommendations(results_dir)
    first = rec.iloc[0]
    default = next(v for k, v in table.data.items() if k.startswith(f"{first['group1']} vs {first['group2']} |") and "bc=False" in k)
    assert default["top_n_cut_in_tie"] == "True" and default["n_tied_top_max"] == int(1.6 * TOP_N)
    assert table.extra["headers"]["batch_correction"]["hidden"] and not table.extra["headers"]["rank_in_comparison"]["hidden"]


def test_skipped_settings_counted_by_reason(items, results_dir):
    skipped = pd.read_csv(results_dir / keys.STEP_DE / keys.PLAN_SKIPPED_CSV)
    data = items["desweep_sweep_skipped"].data
    assert set(data) == set(skipped["reason"])
    for reason, part in skipped.groupby("reason"):
        assert data[reason]["settings"] == part["setting_id"].nunique() and data[reason]["runs"] == len(part)


def test_concordance_labels_are_readable(items):
    heatmap = items["desweep_concordance_heatmap_00"]
    assert heatmap.extra["xcats"][0] == "bc=True (own) \u00b7 change \u03b4=0.25"  # the best setting first
    assert not any("__" in label for label in heatmap.extra["xcats"])


def test_numbers_have_thousands_separators(report_path):
    from desweep.report.items import number_format

    assert number_format("n_samples", pd.Series([5000.0, 3000.0])).format(3000.0) == "3,000"
    assert number_format("proba_de", pd.Series([1.0, 1.0])).format(1.0) == "1.000"
    assert number_format("share_batch_wide", pd.Series([0.25])).format(0.25) == "25.0%"
    assert number_format("default_rank", pd.Series([9.0, 14.5])).format(9.0) == "9.0"
    assert number_format("lfc_mean", pd.Series([2.0, 1.5])).format(2.0) == "2.000"
    text = report_path.read_text()
    # de/summary.csv n_samples as the table shows it: MultiQC draws the thousands separator as a thin space
    assert '"n_samples ">5<span class="mqc_small_space"></span>000</td>' in text
    assert not re.search(r">\s*\d(\.\d+)?e\+0\d\s*<", text)


def test_training_curves_of_every_model(items):
    curves = items["desweep_integration_history"].data
    assert {"model 0: elbo_train", "model 1: elbo_train", "model 1: elbo_validation"} <= set(curves[0])
    assert curves[0]["model 1: elbo_train"][0] == curves[0]["model 0: elbo_train"][0] + 5


def test_report_on_what_diagnose_writes(sim_small, tmp_path):
    """The report against the real ``desweep diagnose`` outputs (planted DE tables, 2 models x 2 seeds), not the fixture."""
    from test_diagnose import planted_adata, planted_comparisons, write_planted_results
    from test_markers import replicated_plan

    from desweep.io import read_csv
    from desweep.report import custom_content, load_results

    adata = planted_adata(sim_small)
    comparisons = planted_comparisons(adata).iloc[:2]
    plan, tables = replicated_plan(comparisons, adata)
    paths = write_planted_results(tmp_path, adata, comparisons, plan, tables)
    result = CliRunner().invoke(cli, ["diagnose", "--input", str(paths["clustered"]), "--plan", str(paths["plan"]),
                                      "--comparisons", str(paths["comparisons"]), "--counts", str(paths["counts"]), "--top-n", "30",
                                      "--no-plots", "-o", str(tmp_path / keys.STEP_DIAGNOSE)])
    assert result.exit_code == 0, result.output
    built = {item.id: item for item in custom_content(load_results(tmp_path))}
    assert not [i for i in built if i.endswith("_error")]
    rec = read_csv(tmp_path / keys.STEP_DIAGNOSE / keys.RECOMMENDATIONS_CSV)
    for setting in rec["recommended_setting"]:
        assert f"<span class='setting'>{html.escape(setting)}</span>" in built["desweep_verdict_cards"].data
    markers = read_csv(tmp_path / keys.STEP_DIAGNOSE / keys.MARKERS_CSV)
    assert len(built["desweep_markers_table"].data) == len(markers) > 0
    for part in ("desweep_verdict_rejected", "desweep_markers_dotplot_00", "desweep_top_genes_heatmaps_00", "desweep_scores_scatter",
                 "desweep_scores_models", "desweep_concordance_heatmap_00"):
        assert part in built, part
    # beside scVI's default and the recommended setting, the bridge contrast of the identifiable comparison
    summary = read_csv(tmp_path / keys.STEP_DIAGNOSE / keys.BRIDGE_SUMMARY_CSV).set_index("comparison_id")
    first = rec["comparison_id"].iloc[0]
    assert str(summary.loc[first, "identifiable"]).lower() == "true"
    heatmaps = built["desweep_top_genes_heatmaps_00"].data
    assert heatmaps.count("data:image/png;base64,") == 3 and f"{first}__bridge" in heatmaps
    assert built["desweep_verdict_cards"].data.count("<b>Bridge contrast</b>") == len(rec)


# --------------------------------------------------------------------------- layers
def test_sections_read_no_files(inputs, monkeypatch):
    """The builders work from :class:`ReportInputs` alone: any file read during them fails the test."""
    import anndata
    import h5py

    from desweep.report import custom_content

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a section read a file: {args[:1]}")

    for target, name in ((pd, "read_csv"), (Path, "read_text"), (Path, "read_bytes"), (anndata, "read_h5ad"), (h5py, "File")):
        monkeypatch.setattr(target, name, forbidden)
    built = custom_content(inputs)
    assert not [i.id for i in built if i.id.endswith("_error")]


def test_report_with_nothing_but_a_folder(tmp_path):
    """Every input missing: the report still builds and each section says what is missing."""
    from desweep.report import SECTION_IDS, build_report

    empty = tmp_path / "results"
    empty.mkdir()
    text = build_report(empty, tmp_path / "mq").read_text()
    for section in SECTION_IDS:
        assert f'id="{section}"' in text, section
    assert text.count("Not available:") >= len(SECTION_IDS)


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


# --------------------------------------------------------------------------- in a browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: measures the rendered page once it has loaded: the sections in the order they are drawn, and the cards
PROBE = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const top = e => e.getBoundingClientRect().top + window.scrollY;
  const visible = e => e.offsetParent !== null;
  const sections = [...document.querySelectorAll('.mqc-module-section')].filter(visible)
    .map(e => ({id: e.dataset.moduleAnchor, top: top(e)})).sort((a, b) => a.top - b.top);
  const cards = [...document.querySelectorAll('.desweep-card')].map(e => ({comparison: e.dataset.comparison, top: top(e),
    bottom: top(e) + e.getBoundingClientRect().height, setting: (e.querySelector('.setting') || {}).innerText || ''}));
  const rejected = document.getElementById('desweep_verdict_rejected');
  const out = document.createElement('pre');
  out.id = 'desweep-probe';
  out.textContent = JSON.stringify({sections, cards, rejected_top: rejected ? top(rejected) : null, height: window.innerHeight});
  document.body.appendChild(out);
}, 1000));
</script>"""


ALERT_TRAP = "<script>window.desweepAlerts = []; window.alert = m => window.desweepAlerts.push(String(m));</script>"
#: what a reader sees of the hostile names: alerts raised, elements injected, and the text of headings, cards and cells
HOSTILE_PROBE = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const texts = sel => [...document.querySelectorAll(sel)].map(e => e.textContent.trim());
  const out = document.createElement('pre');
  out.id = 'desweep-probe';
  out.textContent = JSON.stringify({alerts: window.desweepAlerts, title: document.title,
    injected: document.querySelectorAll('img[onerror], b[onmouseover], [data-desweep-injected]').length,
    cards: texts('.desweep-card h4'), cells: texts('td, th'), headings: texts('h2, h3, .mqc-section-plot h4, #mqc-toc a, .mqc-toc a')});
  document.body.appendChild(out);
}, 1000));
</script>"""


def render_in_chromium(report: Path, workdir: Path, *, width: int = 1920, height: int = 1080, probe: str = PROBE) -> dict:
    """Open ``report`` (a probed copy) in headless Chromium; the probe's measurements.

    ``alert`` is replaced before anything on the page runs, so a script that
    the page should never run leaves its message in ``window.desweepAlerts``.
    """
    page = workdir / "probed.html"
    text = report.read_text()
    end = text.rindex("</body>")  # the last one: bundled scripts spell "</body>" in strings too
    head = text.index("<head>") + len("<head>")
    page.write_text(text[:head] + ALERT_TRAP + text[head:end] + probe + text[end:])
    profile = workdir / "profile"
    profile.mkdir()
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", "--virtual-time-budget=30000", "--dump-dom",
               page.as_uri()]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    found = re.search(r'<pre id="desweep-probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"no probe output (exit {proc.returncode}): {proc.stderr[-500:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install -y chromium)")
def test_verdict_comes_first_in_a_browser(report_path, tmp_path):
    probe = render_in_chromium(report_path, tmp_path)
    ids = [s["id"] for s in probe["sections"]]
    assert ids[0] == "desweep_verdict", ids
    first = probe["cards"][0]
    assert first["comparison"] == "only_batch0_vs_only_batch1"
    assert first["setting"] == RECOMMENDED_TEXT
    # the answer is on the first screen: every card, and the start of the rejected genes
    assert all(card["top"] < probe["height"] for card in probe["cards"])
    assert probe["rejected_top"] is not None and probe["rejected_top"] < probe["height"]


def _normalized_outdir(tmp_path: Path, layer_genes: pd.DataFrame) -> Path:
    import anndata as ad

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
    """The layers hold the DE top genes and --genes by default; the report says which, from layer_genes.csv."""
    from desweep.report.load import load_results
    from desweep.report.runqc import normalized_section

    table = pd.DataFrame({"gene": ["g1", "g2", "g3"], "n_top_tables": n_top_tables, "requested": requested})
    layers = next(item for item in normalized_section(load_results(_normalized_outdir(tmp_path, table))) if item.part == "layers")
    assert expected in layers.description, layers.description


def test_the_bridge_line_scores_the_bridge_beside_the_settings_and_escapes_names():
    from desweep.report.verdict import _bridge_lines

    summary = pd.DataFrame({"comparison_id": ["a", "b"], "verdict": ["identifiable", "not_identifiable"],
                            "reason": ["bridges <b>T</b>", "no cluster links the batches."]})
    scores = pd.DataFrame({"comparison_id": ["a", "a"], "method": ["scvi", "bridge"], "n_top": [50, 50],
                           "share_cluster_specific_mean": [0.5, 0.82], "share_batch_wide_mean": [0.1, 0.02],
                           "rank_in_comparison": [2, 1]})
    lines = _bridge_lines(summary, scores)
    assert "Its top 50: 82% cluster-specific, 2% batch-wide (rank 1 beside the settings)" in lines["a"]
    assert "bridges &lt;b&gt;T&lt;/b&gt;" in lines["a"] and "<b>T</b>" not in lines["a"]
    assert "not_identifiable: no cluster links the batches.</div>" in lines["b"] and "Its top" not in lines["b"]
    assert "bridges &lt;b&gt;T&lt;/b&gt;. Its top 50" in lines["a"]


# --------------------------------------------------------------------------- names from the input are text, never HTML
#: names as a shared .h5ad could carry them: each would run a script if written into the page as given
HOSTILE = {"only_batch0": "<img src=x onerror=alert(1)>", "only_batch1": "<script>alert('b')</script> & \"q\"",
           "batch0": "<b onmouseover=alert(2)>b0", "gene00488": "<svg data-desweep-injected onload=alert(3)>"}
HOSTILE_TITLE = "<script>alert('title')</script> & 'desweep'"


@pytest.fixture(scope="module")
def hostile_report(sim_small, tmp_path_factory) -> Path:
    """The contract OUTDIR with two labels, a batch and a gene renamed to HTML (every table), and a hostile title."""
    outdir = tmp_path_factory.mktemp("hostile")
    write_contract_outdir(outdir, sim_small)
    for path in outdir.rglob("*.csv"):
        pd.read_csv(path, dtype=str, keep_default_na=False).replace(HOSTILE).to_csv(path, index=False)
    result = CliRunner().invoke(cli, ["report", "--results", str(outdir), "-o", str(outdir / keys.STEP_REPORT), "--title", HOSTILE_TITLE])
    assert result.exit_code == 0, result.output
    return outdir / keys.STEP_REPORT / keys.MULTIQC_REPORT


def test_hostile_names_never_reach_the_page_as_html(hostile_report):
    text = hostile_report.read_text()
    for name in [*HOSTILE.values(), HOSTILE_TITLE]:
        assert name not in text, name
    for tag in ("<img src=x", "<script>alert(", "<b onmouseover", "<svg data-desweep-injected"):
        assert tag not in text, tag
    # escaped once: shown as written, never as "&amp;lt;"
    assert html.escape(HOSTILE["only_batch0"]) in text and "&amp;lt;" not in text


def test_every_text_field_of_an_item_is_escaped():
    from desweep.report.items import Item, table

    bad = HOSTILE["only_batch0"]
    df = pd.DataFrame({"comparison": [bad], "gene": [bad], "lfc": [1.5]})
    doc = table("desweep_markers", "table", f"{bad} markers", df, row_id="comparison", titles={"gene": bad}).document()
    assert bad not in json.dumps(doc)
    assert doc["section_name"] == html.escape(f"{bad} markers")
    assert doc["data"] == {html.escape(bad): {"gene": html.escape(bad), "lfc": 1.5}}
    heat = Item("desweep_concordance", "heatmap_00", bad, "heatmap", [[1.0]], extra={"xcats": [bad], "ycats": [bad]}).document()
    assert bad not in json.dumps(heat) and heat["xcats"] == [html.escape(bad)]
    assert bad not in json.dumps(Item("desweep_top_genes", "volcano", bad, "scatter", {bad: {"x": 1, "y": 2}}).document())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install -y chromium)")
def test_hostile_names_shown_as_written_and_never_run_in_a_browser(hostile_report, tmp_path):
    probe = render_in_chromium(hostile_report, tmp_path, probe=HOSTILE_PROBE)
    assert probe["alerts"] == [] and probe["injected"] == 0, probe["alerts"]
    assert probe["title"].startswith(HOSTILE_TITLE)
    assert any(card.startswith(f"{HOSTILE['only_batch0']} vs {HOSTILE['only_batch1']}") for card in probe["cards"]), probe["cards"]
    for name in HOSTILE.values():  # in cells and row names ("comparison | gene")
        assert any(name in cell for cell in probe["cells"]), name


def test_people_read_display_names_machines_read_ids(hostile_report, items, results_dir):
    """Headings, navigation, plot titles and table rows name a comparison as written (``A vs B``); the id stays in a column."""
    from desweep.names import comparison_name

    rec = _recommendations(results_dir)
    first = rec.iloc[0]
    shown = comparison_name(first["group1"], first["group2"])
    assert items["desweep_top_genes_heatmaps_00"].name.startswith(f"{shown}: ")
    assert items["desweep_markers_dotplot_00"].name.startswith(f"{shown}: ")
    assert items["desweep_concordance_heatmap_00"].name == shown
    assert items["desweep_concordance_heatmap_00"].document()["pconfig"]["title"] == f"desweep: concordance, {shown}"
    for part in ("desweep_verdict_rejected", "desweep_markers_table", "desweep_scores_table", "desweep_concordance_pairs"):
        rows = items[part].data
        assert all(not key.startswith(first["comparison_id"]) for key in rows), part
        assert any(key.startswith(f"{shown} | ") and row.get("comparison_id") == first["comparison_id"] for key, row in rows.items()), part
    # in the rendered page (labels that are not file-safe): the names as written in headings and the navigation
    text = hostile_report.read_text()
    hostile = html.escape(comparison_name(HOSTILE["only_batch0"], HOSTILE["only_batch1"]))
    assert f"{hostile}: scVI&#x27;s default, the recommended setting and the bridge contrast" in text
    nav = re.findall(r'<a[^>]*href="#desweep_top_genes_heatmaps_00"[^>]*>(.*?)</a>', text, re.S)
    assert nav and all(hostile in a for a in nav), nav

"""The answer first: one card per comparison, the genes scVI's default would have reported wrongly,
and the answer. Builders take :class:`ReportInputs`, read no files."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from desweep.io import is_true
from desweep.report.figures import marker_dotplot
from desweep.report.items import Item, count, figure_html, missing, note, percent, table, value, text
from desweep.report.load import where

if TYPE_CHECKING:
    from desweep.report.load import ReportInputs

#: genes named on a card (the tables below list them all)
CARD_GENES = 6
#: genes per dotplot block
DOTPLOT_MARKERS = 20
DOTPLOT_REJECTED = 10
STATUS_STYLE = {"ok": "success", "weak": "warning", "no_settings": "secondary"}
STATUS_MEANING = {"ok": "most of the recommended setting's top genes are cluster-specific",
                  "weak": "fewer than half of the recommended setting's top genes are cluster-specific: treat every setting with caution",
                  "no_settings": "no DE setting could be scored for this comparison"}

# The cards' look, and MultiQC's page furniture hidden so the verdict is on the first screen:
# the big logo (the sidebar keeps it) and the welcome banner (a link to an online video; the report is offline).
CSS = """<style>
#page_title, #mqc_welcome { display: none !important; }
.desweep-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; margin-bottom: 8px; }
.desweep-card { border: 1px solid var(--bs-border-color); border-left-width: 6px; border-radius: 6px; padding: 10px 14px; }
.desweep-card.status-ok { border-left-color: var(--bs-success); }
.desweep-card.status-weak { border-left-color: var(--bs-warning); }
.desweep-card.status-no_settings { border-left-color: var(--bs-secondary); }
.desweep-card h4 { font-size: 1.05rem; margin: 0 0 6px 0; }
.desweep-card .setting { font-family: var(--bs-font-monospace); font-size: 0.9rem; }
.desweep-card .numbers { display: grid; grid-template-columns: repeat(3, 1fr); gap: 14px; margin: 8px 0; }
.desweep-card .numbers div { line-height: 1.2; font-size: 0.8rem; }
.desweep-card .big { font-size: 1.5rem; font-weight: 600; display: block; }
.desweep-card .genes { font-size: 0.9rem; margin: 4px 0; }
.desweep-card .reason { font-size: 0.85rem; color: var(--bs-secondary-color); margin-top: 6px; }
</style>"""


# --------------------------------------------------------------------------- the verdict
def verdict_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_verdict"
    rec = inputs.get("recommendations")
    if rec is None:
        return [missing(section, "recommendations", where("recommendations"), "Run `desweep diagnose`.")]
    markers, rejected = inputs.get("markers"), inputs.get("rejected")
    bridges = _bridge_lines(inputs.get("bridge_summary"), inputs.get("setting_scores"))
    cards = "".join(_card(row, _of(markers, row), _of(rejected, row), bridges.get(str(row["comparison_id"]), ""))
                    for row in rec.to_dict("records"))
    items = [Item(section, "cards", "Recommended settings and the answer", "html",
                  f"{CSS}<div class='desweep-cards'>{cards}</div>")]
    if rejected is None:
        items.append(missing(section, "rejected genes", where("rejected")))
    elif rejected.empty:
        items.append(note(section, "rejected", "What scVI's default would have told you",
                          "scVI's default let no batch-wide gene into its top genes in any comparison."))
    else:
        rejected = inputs.with_comparison(rejected).assign(batch_wide_in=[
            f"{count(a)} of {count(b)}" for a, b in zip(rejected["n_replicates_batch_wide"], rejected["n_replicates"], strict=True)])
        items.append(table(section, "rejected", "What scVI's default would have told you, and why not", rejected,
                           row_id=["comparison", "gene"],
                           columns=["default_rank", "high_group", "lfc_mean", "proba_de", "group_lfc", "within_lfc",
                                    "batch_shift_lfc", "batch_wide_in", "reason", "comparison_id"], hidden=("comparison_id",),
                           titles={"default_rank": "rank in the default", "batch_wide_in": "batch-wide in (runs)"},
                           description="Genes in the top N of scvi-tools' default call (batch_correction=False, mode=vanilla) "
                                       "that desweep classifies batch-wide: the same shift between the batches in clusters the "
                                       "batches share (batch_shift_lfc), not specificity within a batch (within_lfc). "
                                       "Log2 fold changes; diagnostics/rejected.csv."))
    return items


def _of(table_: pd.DataFrame | None, row: dict) -> pd.DataFrame | None:
    if table_ is None or "comparison_id" not in table_.columns:
        return None
    return table_[table_["comparison_id"].astype(str) == str(row["comparison_id"])]


def _bridge_lines(summary: pd.DataFrame | None, scores: pd.DataFrame | None) -> dict[str, str]:
    """Per comparison, one line on the bridge contrast: its verdict and how its top genes score beside the settings."""
    if summary is None or summary.empty:
        return {}
    e = text
    rows = scores[scores["method"].astype(str) == "bridge"].set_index("comparison_id") \
        if scores is not None and "method" in scores.columns else pd.DataFrame()
    lines = {}
    for row in summary.to_dict("records"):
        cid = str(row["comparison_id"])
        reason = str(row.get("reason") or "").rstrip(".")
        line = f"{e(str(row.get('verdict') or ''))}: {e(reason)}."
        if cid in rows.index:
            score = rows.loc[cid]
            line += (f" Its top {count(score.get('n_top'))}: {percent(score.get('share_cluster_specific_mean'))} cluster-specific, "
                     f"{percent(score.get('share_batch_wide_mean'))} batch-wide (rank {count(score.get('rank_in_comparison'))} "
                     "beside the settings).")
        lines[cid] = f"<div class='small'><b>Bridge contrast</b> (desweep's own estimate, no training): {line}</div>"
    return lines


def _card(row: dict, markers: pd.DataFrame | None, rejected: pd.DataFrame | None, bridge: str = "") -> str:
    status = str(row.get("status") or "")
    e = text
    head = (f"<h4>{e(str(row['group1']))} vs {e(str(row['group2']))} "
            f"<span class='badge text-bg-{STATUS_STYLE.get(status, 'secondary')}' title='{e(STATUS_MEANING.get(status, ''))}'>"
            f"{e(status)}</span> "
            f"<small class='text-muted'>{e(str(row.get('design') or ''))}</small></h4>")
    setting = row.get("recommended_setting")
    if status == "no_settings" or not isinstance(setting, str) or not setting:
        reason = f"<div class='reason'>{e(str(row.get('reason') or ''))}</div>"
        return f"<div class='desweep-card status-{e(status)}' data-comparison='{e(str(row['comparison_id']))}'>{head}{reason}</div>"
    reason = f"<details class='reason'><summary>Why this setting</summary>{e(str(row.get('reason') or ''))}</details>"
    n_top = count(row.get("n_top"))
    band = int(value(row.get("n_recommended_settings")) or 1)
    if is_true(row.get("all_settings_agree")):
        extra = "Every setting agrees."
    elif band > 1:
        extra = f"{band - 1} more setting{'s' if band > 2 else ''} tie with it."
    else:
        extra = ""
    numbers = (
        f"<div><span class='big'>{count(row.get('n_markers'))}</span>genes in the answer, "
        f"{count(row.get('n_high_confidence'))} with high confidence</div>"
        f"<div><span class='big'>{percent(row.get('default_share_batch_wide'))}</span>of scVI's default top {n_top} "
        f"are batch-wide ({count(row.get('default_n_batch_wide'))} genes)</div>"
        f"<div><span class='big'>{percent(row.get('share_cluster_specific'))}</span>of the recommended top {n_top} "
        f"are cluster-specific ({percent(row.get('share_batch_wide'))} batch-wide)</div>")
    spread = value(row.get("model_spread_sd"))
    n_models = int(value(row.get("n_models")) or 1)
    if n_models > 1 and isinstance(spread, float):
        extra += f" Between {n_models} scVI models its cluster-specific share varies by {spread:.0%} (SD)."
    groups = (str(row["group1"]), str(row["group2"]))
    marker_lines = "".join(_genes_line(f"Higher in {g}", None if markers is None else markers[markers["high_group"].astype(str) == g],
                                       "rank") for g in groups) if markers is not None and len(markers) else \
        "<div class='genes'><b>The answer:</b> no gene</div>"
    return (f"<div class='desweep-card status-{e(status)}' data-comparison='{e(str(row['comparison_id']))}'>{head}"
            f"<div>Recommended setting: <span class='setting'>{e(setting)}</span></div>"
            f"<div class='small'>{e(extra.strip())}</div>{bridge}<div class='numbers'>{numbers}</div>{marker_lines}"
            f"{_genes_line('Rejected (batch-wide, in the default top ' + n_top + ')', rejected, 'default_rank')}{reason}</div>")


def _genes_line(title: str, genes: pd.DataFrame | None, rank: str) -> str:
    """``title: gene, gene, ..., and N more`` (best first), or nothing without the table."""
    if genes is None:
        return ""
    if genes.empty:
        return f"<div class='genes'><b>{text(title)}:</b> none</div>"
    first = genes.sort_values(rank, kind="stable").head(CARD_GENES)
    more = f", and {len(genes) - len(first):,} more" if len(genes) > len(first) else ""
    return f"<div class='genes'><b>{text(title)}:</b> {text(', '.join(first['gene'].astype(str)))}{more}</div>"


# --------------------------------------------------------------------------- the answer
def markers_section(inputs: ReportInputs) -> list[Item]:
    section = "desweep_markers"
    markers = inputs.get("markers")
    if markers is None:
        return [missing(section, "the answer", where("markers"), "Run `desweep diagnose`.")]
    items: list[Item] = []
    if markers.empty:
        items.append(note(section, "table", "The answer", "No gene is in the answer of any comparison."))
    else:
        items.append(table(section, "table", "The answer", inputs.with_comparison(markers), row_id=["comparison", "gene"],
                           columns=["rank", "confidence", "high_group", "lfc_mean", "bridge_lfc", "bridge_padj", "support",
                                    "n_models_supporting", "pattern", "group_lfc", "batch_shift_lfc", "heterogeneous",
                                    "comparison_id"],
                           hidden=("comparison_id",),
                           titles={"high_group": "higher in", "lfc_mean": "scVI lfc", "bridge_lfc": "bridge lfc",
                                   "bridge_padj": "bridge padj", "n_models_supporting": "models"},
                           description="One ranked list per comparison, pooled over the recommended settings' runs (every "
                                       "model and seed) and the bridge contrast, with batch-wide genes and genes whose batch "
                                       "shift differs between bridges left out. Confidence: high = cluster-specific in the top "
                                       "genes of at least half the recommended runs; medium = the expression call agrees; low = "
                                       "ranked by the evidence only (docs/diagnostics.md, diagnostics/markers.csv). "
                                       "Click a header to sort."))
    expression = inputs.marker_expression
    if expression is None:
        items.append(missing(section, "marker expression", where("markers_h5ad")))
        return items
    rec = inputs.get("recommendations")
    comparisons = rec.to_dict("records") if rec is not None else [
        {"comparison_id": c, "group1": g1, "group2": g2}
        for c, g1, g2 in markers[["comparison_id", "group1", "group2"]].drop_duplicates().itertuples(index=False)]
    for i, row in enumerate(comparisons):
        rows = _dotplot_rows(_of(markers, row), _of(inputs.get("rejected"), row), row)
        if rows.empty:
            continue
        name = inputs.comparison_name(row["comparison_id"])
        fig = marker_dotplot(expression, rows, groups=(str(row["group1"]), str(row["group2"])), title=name)
        items.append(Item(section, f"dotplot_{i:02d}", f"{name}: markers across cluster x batch", "html",
                          figure_html(fig, alt=f"dotplot of {name}"),
                          f"The answer's genes (best first) and the rejected genes in every cluster of every batch. "
                          f"Dot size: share of cells with counts; colour: {text(inputs.marker_expression_source)}, "
                          "scaled per gene. A marker is high in its group's columns in every batch; a rejected gene is "
                          "high in a whole batch."))
    return items


def _dotplot_rows(markers: pd.DataFrame | None, rejected: pd.DataFrame | None, row: dict) -> pd.DataFrame:
    frames = []
    if markers is not None and len(markers):
        top = markers.sort_values("rank", kind="stable").head(DOTPLOT_MARKERS)
        for group in (str(row["group1"]), str(row["group2"])):
            genes = top[top["high_group"].astype(str) == group]["gene"]
            frames.append(pd.DataFrame({"gene": genes, "block": f"up in {group}"}))
    if rejected is not None and len(rejected):
        genes = rejected.sort_values("default_rank", kind="stable").head(DOTPLOT_REJECTED)["gene"]
        frames.append(pd.DataFrame({"gene": genes, "block": "rejected: batch-wide"}))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["gene", "block"])
    return out.drop_duplicates("gene")

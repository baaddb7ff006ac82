"""Static plots (matplotlib, Agg) of the sweep and its diagnostics.

Every function returns a :class:`matplotlib.figure.Figure` and writes nothing;
:func:`diagnostic_figures` yields ``(relative path, figure)`` pairs that
``desweep diagnose`` saves as PNG files under ``OUTDIR/diagnostics/plots/``
(the report embeds some of them; all are usable on their own).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from desweep import keys
from desweep.io import is_true
from desweep.names import natural_key
from desweep.plan import SETTING_COLUMNS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

PATTERN_COLOURS = {"cluster_specific": "#1b9e77", "batch_wide": "#d95f02", "other": "#7570b3"}
NOT_TOP_COLOUR = "#c8c8c8"
DPI = 110


def new_figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def palette(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def cluster_batch_columns(cluster: pd.Series, batch: pd.Series) -> list[tuple[str, str]]:
    """The ``(cluster, batch)`` pairs present, batch by batch (then cluster), in natural order."""
    pairs = {(str(c), str(b)) for c, b in zip(cluster, batch, strict=True)}
    return sorted(pairs, key=lambda cb: (natural_key(cb[1]), natural_key(cb[0])))


def draw_cluster_batch_axis(ax, columns: list[tuple[str, str]], *, groups: tuple[str, ...] = (), fontsize: float = 7) -> None:
    """Label the x axis of cluster x batch ``columns``: clusters below, each batch above its block, lines between batches.

    The compared ``groups`` are written in bold, so their columns stand out in every batch.
    """
    ax.set_xticks(range(len(columns)), [c for c, _ in columns], rotation=90, fontsize=fontsize)
    for label, (cluster, _) in zip(ax.get_xticklabels(), columns, strict=True):
        if cluster in groups:
            label.set_fontweight("bold")
    starts = [i for i in range(len(columns)) if i == 0 or columns[i][1] != columns[i - 1][1]]
    for i in starts[1:]:
        ax.axvline(i - 0.5, color="black", linewidth=1.2)
    ends = [*starts[1:], len(columns)]
    top = ax.secondary_xaxis("top")
    top.set_xticks([(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)], [columns[i][1] for i in starts], fontsize=fontsize + 1)
    top.tick_params(length=0)


def top_genes_heatmap(expression: pd.DataFrame, *, title: str = "", tied: frozenset[str] | set[str] = frozenset(),
                      groups: tuple[str, ...] = ()) -> Figure:
    """A setting's top genes (rows, best first) across every present cluster x batch (columns).

    ``expression``: that setting's rows of ``top_gene_expression.csv``
    (:func:`desweep.diagnose.top_gene_expression`). Colour: ``log2(mean + eps)``
    z-scored per gene; the strip left of the rows gives each gene's pattern.
    Columns are grouped by batch (lines between batches, the batch above), so a
    batch-wide gene lights up a whole block and a cluster-specific gene one
    column per batch. Genes in ``tied`` get a dagger (tied at the top-N cut);
    the compared ``groups`` are labelled in bold.
    """
    from matplotlib.patches import Patch

    expression = expression.astype({"gene": str, "cluster": str, "batch": str})
    genes = list(dict.fromkeys(expression.sort_values("rank", kind="stable")["gene"]))
    columns = cluster_batch_columns(expression["cluster"], expression["batch"])
    wide = expression.pivot_table(index="gene", columns=["cluster", "batch"], values="z", aggfunc="mean")
    z = wide.reindex(index=genes, columns=pd.MultiIndex.from_tuples(columns) if columns else None).to_numpy(dtype=float) \
        if genes else np.zeros((0, 0))
    pattern_of = expression.drop_duplicates("gene").set_index("gene")["pattern"]
    fig = new_figure(max(4.5, 0.24 * len(columns) + 2.8), max(3.5, 0.19 * len(genes) + 2.4))
    grid = fig.add_gridspec(1, 2, width_ratios=[0.3, max(len(columns), 1)])
    strip, ax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    colours = np.array([[_rgb(PATTERN_COLOURS.get(pattern_of.get(g, "other"), NOT_TOP_COLOUR))] for g in genes])
    strip.imshow(colours if len(genes) else np.ones((1, 1, 3)), aspect="auto", interpolation="nearest")
    strip.set_xticks([])
    strip.set_yticks(range(len(genes)), [f"{g} \u2020" if g in tied else g for g in genes], fontsize=7)
    image = ax.imshow(z if len(genes) else np.zeros((1, max(len(columns), 1))), aspect="auto", cmap="RdBu_r",
                      vmin=-2.5, vmax=2.5, interpolation="nearest")
    ax.set_yticks([])
    draw_cluster_batch_axis(ax, columns, groups=groups)
    fig.colorbar(image, ax=ax, shrink=0.6, label="z-score of log2 mean")
    fig.legend(handles=[Patch(color=c, label=p.replace("_", "-")) for p, c in PATTERN_COLOURS.items()],
               loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    ax.set_title(title or "top genes", fontsize=8)
    return fig


def _rgb(colour: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(colour)


def volcano_axes(table: pd.DataFrame) -> tuple[pd.Series, pd.Series, str, str]:
    """``(x, y, x label, y label)`` of a volcano plot of a DE table.

    x: the log fold change; y: ``proba_de`` (scVI), else ``log10`` Bayes
    factor, else ``-log10`` adjusted p-value (baselines).
    """
    lfc_column = next((c for c in ("lfc_mean", "lfc", "logfoldchanges", "log2FoldChange") if c in table.columns), None)
    x = pd.to_numeric(table[lfc_column], errors="coerce") if lfc_column else pd.Series(np.zeros(len(table)), index=table.index)
    if "proba_de" in table.columns and pd.to_numeric(table["proba_de"], errors="coerce").notna().any():
        y, ylabel = pd.to_numeric(table["proba_de"], errors="coerce"), "proba_de"
    elif "bayes_factor" in table.columns:
        y, ylabel = pd.to_numeric(table["bayes_factor"], errors="coerce") / np.log(10), "log10 Bayes factor"
    else:
        p = next((c for c in ("padj", "pvals_adj", "pvalue") if c in table.columns), None)
        y = -np.log10(pd.to_numeric(table[p], errors="coerce").clip(lower=1e-300)) if p else pd.Series(np.zeros(len(table)), index=table.index)
        ylabel = f"-log10 {p}" if p else ""
    return x, y, f"{lfc_column or 'lfc'} (group1 vs group2)", ylabel


def volcano_points(table: pd.DataFrame, patterns: pd.DataFrame | None) -> tuple[list[tuple[str, float, float, str]], str, str]:
    """``([(gene, x, y, colour)], x label, y label)``: finite points, top genes coloured by pattern, the rest grey."""
    x, y, xlabel, ylabel = volcano_axes(table)
    pattern_of = _pattern_of(patterns)
    points = [(gene, float(xv), float(yv), PATTERN_COLOURS.get(pattern_of.get(gene), NOT_TOP_COLOUR))
              for gene, xv, yv in zip(table["gene"].astype(str), x, y, strict=True) if np.isfinite(xv) and np.isfinite(yv)]
    return points, xlabel, ylabel


def _pattern_of(patterns: pd.DataFrame | None) -> pd.Series:
    if patterns is None or not len(patterns):
        return pd.Series(dtype=str)
    return patterns.drop_duplicates("gene").set_index(patterns.drop_duplicates("gene")["gene"].astype(str))["pattern"]


def volcano(table: pd.DataFrame, patterns: pd.DataFrame | None = None, *, title: str = "") -> Figure:
    """Log fold change against the DE evidence (:func:`volcano_axes`); top genes coloured by pattern."""
    x, y, xlabel, ylabel = volcano_axes(table)
    fig = new_figure(5.5, 4.2)
    ax = fig.add_subplot()
    genes = table["gene"].astype(str).to_numpy()
    pattern_of = _pattern_of(patterns)
    is_top = np.isin(genes, pattern_of.index)
    ax.scatter(x[~is_top], y[~is_top], s=6, c=NOT_TOP_COLOUR, label="not in top N", linewidths=0)
    for pattern, colour in PATTERN_COLOURS.items():
        hit = np.isin(genes, pattern_of.index[pattern_of == pattern])
        if hit.any():
            ax.scatter(x[hit], y[hit], s=14, c=colour, label=pattern, linewidths=0)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best", frameon=False)
    return fig


def concordance_heatmap(concordance: pd.DataFrame, comparison_id: str, *, labels: dict[str, str] | None = None,
                        value: str = "jaccard_top", ids_from: tuple[str, str] = ("combination_id_1", "combination_id_2")) -> Figure:
    """Symmetric heatmap of ``value`` (top-N Jaccard by default) between the settings of a comparison.

    ``ids_from``: the two id columns (``setting_id_1``, ``setting_id_2`` for ``concordance_settings.csv``).
    """
    first, second = ids_from
    part = concordance[concordance["comparison_id"] == comparison_id].rename(
        columns={first: "combination_id_1", second: "combination_id_2"})
    ids = list(dict.fromkeys(list(part["combination_id_1"]) + list(part["combination_id_2"])))
    matrix = pd.DataFrame(np.eye(len(ids)), index=ids, columns=ids)
    for _, row in part.iterrows():
        matrix.loc[row["combination_id_1"], row["combination_id_2"]] = row[value]
        matrix.loc[row["combination_id_2"], row["combination_id_1"]] = row[value]
    names = [(labels or {}).get(i, i) for i in ids]
    size = max(4.0, 0.35 * len(ids) + 3.0)
    fig = new_figure(size + 1.0, size)
    ax = fig.add_subplot()
    image = ax.imshow(matrix.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(ids)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(ids)), names, fontsize=6)
    fig.colorbar(image, ax=ax, shrink=0.7, label=value)
    ax.set_title(f"{comparison_id}: {value}", fontsize=9)
    return fig


def setting_scores_bars(scores: pd.DataFrame, comparison_id: str, *, labels: dict[str, str] | None = None) -> Figure:
    """Stacked bars: the mean share of each pattern among each setting's top genes (``setting_scores.csv``), best on top."""
    part = scores[(scores["comparison_id"] == comparison_id) & (scores["status"] == "ok")].sort_values("rank_in_comparison", ascending=False)
    fig = new_figure(7.0, max(2.5, 0.3 * len(part) + 1.5))
    ax = fig.add_subplot()
    left = np.zeros(len(part))
    names = [(labels or {}).get(c, c) for c in part["setting_id"]]
    for pattern, colour in PATTERN_COLOURS.items():
        values = part[f"share_{pattern}_mean"].to_numpy(dtype=float)
        ax.barh(names, values, left=left, color=colour, label=pattern)
        left += values
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of top genes")
    ax.tick_params(axis="y", labelsize=6)
    ax.legend(fontsize=7, loc="lower right", frameon=True)
    ax.set_title(f"{comparison_id}: top-gene patterns per setting", fontsize=9)
    return fig


def training_curves(history: pd.DataFrame) -> Figure:
    """Every loss/ELBO column of ``integrate/history.csv`` against the epoch."""
    columns = [c for c in history.columns if c != "epoch" and any(k in c.lower() for k in ("loss", "elbo", "reconstruction", "kl"))]
    columns = columns or [c for c in history.columns if c != "epoch"]
    epoch = history["epoch"] if "epoch" in history.columns else pd.Series(range(len(history)))
    groups = {"elbo / loss": [c for c in columns if "kl" not in c.lower()], "KL": [c for c in columns if "kl" in c.lower()]}
    groups = {k: v for k, v in groups.items() if v}
    fig = new_figure(5.0 * max(len(groups), 1), 3.6)
    for i, (name, cols) in enumerate(groups.items(), start=1):
        ax = fig.add_subplot(1, len(groups), i)
        for column in cols:
            ax.plot(epoch, pd.to_numeric(history[column], errors="coerce"), label=column, linewidth=1.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend(fontsize=6, frameon=False)
    fig.suptitle("scVI training curves", fontsize=10)
    return fig


def umap(coords: np.ndarray, batch: pd.Series, cluster: pd.Series) -> Figure:
    """UMAP coloured by batch (left) and by cluster (right)."""
    fig = new_figure(11.0, 4.8)
    rng = np.random.default_rng(0)
    order = rng.permutation(coords.shape[0])  # no batch painted over the others
    size = float(np.clip(30000 / max(coords.shape[0], 1), 0.5, 8))
    for i, (name, values) in enumerate((("batch", batch), ("cluster", cluster)), start=1):
        ax = fig.add_subplot(1, 2, i)
        levels = sorted(values.astype(str).unique(), key=natural_key)
        colours = dict(zip(levels, palette(len(levels)), strict=False))
        v = values.astype(str).to_numpy()[order]
        ax.scatter(coords[order, 0], coords[order, 1], s=size, c=[colours[x] for x in v], linewidths=0, rasterized=True)
        for level in levels:
            ax.scatter([], [], s=20, color=colours[level], label=level)
        ax.legend(fontsize=6, markerscale=1, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"UMAP by {name}", fontsize=10)
    return fig


def composition_bars(counts: pd.DataFrame) -> Figure:
    """Cells of each cluster (bars) stacked by batch, from ``composition/cluster_batch_counts.csv``."""
    counts = counts.set_index("cluster") if "cluster" in counts.columns else counts
    counts = counts.loc[sorted(counts.index.astype(str), key=natural_key) if counts.index.dtype == object else counts.index]
    fig = new_figure(max(5.0, 0.45 * len(counts) + 2.5), 4.0)
    ax = fig.add_subplot()
    bottom = np.zeros(len(counts))
    names = [str(c) for c in counts.index]
    for colour, batch in zip(palette(counts.shape[1]), counts.columns, strict=False):
        values = counts[batch].to_numpy(dtype=float)
        ax.bar(names, values, bottom=bottom, color=colour, label=str(batch))
        bottom += values
    ax.set_ylabel("cells")
    ax.set_xlabel("cluster")
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    ax.legend(title="batch", fontsize=7, frameon=False)
    ax.set_title("cluster composition by batch", fontsize=10)
    return fig


def setting_label(row: pd.Series) -> str:
    """A short label of a setting for plot axes: its non-empty plan parameters."""
    from desweep.diagnose import describe_setting

    return describe_setting(row).replace("batch_correction=", "bc=").replace("delta=", "d=")


def short_setting_labels(settings: pd.DataFrame) -> pd.Series:
    """A short, unique label per setting for axes: only what varies between the settings of its comparison.

    ``settings``: one row per setting (``comparison_id``, ``setting_id`` and the
    plan's parameter columns). ``batch_correction`` (with the decoding) and
    ``mode`` (with ``delta``) always show, e.g. ``bc=True (own) · change δ=0.25``;
    ``weights``, ``filter_outlier_cells`` and ``fdr_target`` only where they vary.
    Falls back to the setting id without its comparison prefix if two settings
    would share a label.
    """
    labels = pd.Series("", index=settings.index, dtype=object)
    method = settings["method"].fillna("scvi").astype(str) if "method" in settings.columns else pd.Series("scvi", index=settings.index)
    for comparison, part in settings.groupby("comparison_id", sort=False):
        scvi = part[method.loc[part.index] == "scvi"]
        varying = [c for c in SETTING_COLUMNS if c not in _ALWAYS_SHOWN and c in scvi.columns and scvi[c].nunique(dropna=False) > 1]
        # another estimator (the bridge contrast) has no scVI parameters: named by its method
        text = part.apply(lambda row, varying=varying: _short_label(row, varying) if method.loc[row.name] == "scvi"
                          else f"{method.loc[row.name]} contrast", axis=1)
        if text.duplicated().any():
            prefix = f"{comparison}__"
            text = part["setting_id"].astype(str).map(lambda s, prefix=prefix: s.removeprefix(prefix))
        labels.loc[part.index] = text
    return labels


#: setting columns every short label shows (batch correction with its decoding, mode with delta); the others show where they vary
_ALWAYS_SHOWN = ("batch_correction", "decoding", "batchid1", "batchid2", "mode", "delta")


def _short_label(row: pd.Series, varying: list[str]) -> str:
    parts = [f"bc=True ({row.get('decoding')})" if is_true(row.get("batch_correction")) else "bc=False"]
    delta = pd.to_numeric(pd.Series([row.get("delta")]), errors="coerce").iloc[0]
    parts.append(f"change \u03b4={delta:g}" if row.get("mode") == "change" and np.isfinite(delta) else str(row.get("mode")))
    for column in varying:
        v = row.get(column)
        parts.append({"filter_outlier_cells": "filtered" if is_true(v) else "unfiltered", "fdr_target": f"FDR {v}"}.get(column, str(v)))
    return " \u00b7 ".join(parts)


def first_seed_combinations(plan: pd.DataFrame) -> list[str]:
    """One combination per setting: replicate seeds differ only by sampling noise (see stability.csv),
    so per-setting plots are drawn once, which keeps the plot count at settings, not settings x seeds."""
    if "setting_id" not in plan.columns:
        return plan["combination_id"].astype(str).tolist()
    return plan.drop_duplicates("setting_id", keep="first")["combination_id"].astype(str).tolist()


def diagnostic_figures(
    *,
    results: dict[str, pd.DataFrame],
    plan: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    history: pd.DataFrame | None = None,
    counts: pd.DataFrame | None = None,
    umap_coords: np.ndarray | None = None,
    batch: pd.Series | None = None,
    cluster: pd.Series | None = None,
) -> Iterator[tuple[str, Figure]]:
    """Yield ``(path relative to plots/, figure)`` for every diagnostics plot the inputs allow.

    Top-gene heatmaps and volcanoes are drawn for the first seed of each setting
    (:func:`first_seed_combinations`).
    """
    patterns = results["gene_patterns"]
    scores = results["setting_scores"]
    plan = plan.astype({"combination_id": str})
    labels = {str(r["combination_id"]): setting_label(r) for _, r in plan.iterrows()}
    if "setting_id" in plan.columns:
        settings = plan.drop_duplicates("setting_id")
        labels.update(zip(settings["setting_id"].astype(str), short_setting_labels(settings), strict=True))
    pairs = results.get("concordance_settings")
    for cid in first_seed_combinations(plan):
        if cid not in tables:
            continue
        part = patterns[patterns["combination_id"] == cid]
        expression = results.get("top_gene_expression")
        if expression is not None and (expression["combination_id"] == cid).any():
            yield (f"{keys.PLOT_TOP_GENES_DIR}/{cid}.png",
                   top_genes_heatmap(expression[expression["combination_id"] == cid], title=f"{cid}\n{labels[cid]}"))
        yield f"{keys.PLOT_VOLCANO_DIR}/{cid}.png", volcano(tables[cid], part, title=f"{cid}\n{labels[cid]}")
    for comparison_id in plan["comparison_id"].astype(str).unique():
        if pairs is not None and (pairs["comparison_id"] == comparison_id).any():
            yield (f"{keys.PLOT_CONCORDANCE_DIR}/{comparison_id}.png",
                   concordance_heatmap(pairs, comparison_id, labels=labels, value="jaccard_top_mean",
                                       ids_from=("setting_id_1", "setting_id_2")))
        if ((scores["comparison_id"] == comparison_id) & (scores["status"] == "ok")).any():
            yield f"{keys.PLOT_SCORES_DIR}/{comparison_id}.png", setting_scores_bars(scores, comparison_id, labels=labels)
    if history is not None and len(history):
        yield keys.PLOT_TRAINING, training_curves(history)
    if umap_coords is not None and batch is not None and cluster is not None:
        yield keys.PLOT_UMAP, umap(umap_coords, batch, cluster)
    if counts is not None and len(counts):
        yield keys.PLOT_COMPOSITION, composition_bars(counts)


def save_png(fig: Figure, path) -> None:
    """Write ``fig`` as PNG to ``path`` (a temporary name, then renamed) and free it."""
    from desweep.io import write_atomic

    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        fig.clear()

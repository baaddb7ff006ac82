"""The report's static figures (matplotlib, Agg): they take tables and return a Figure, writing nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from desweep.io import is_true
from desweep.plots import cluster_batch_columns, draw_cluster_batch_axis, new_figure, palette

if TYPE_CHECKING:
    from collections.abc import Callable

    from matplotlib.figure import Figure

SIZE_STEPS = (0.25, 0.5, 0.75, 1.0)


def _dot_area(fraction: np.ndarray | float) -> np.ndarray:
    return 4 + 90 * np.asarray(fraction, dtype=float)


def marker_dotplot(expression: pd.DataFrame, rows: pd.DataFrame, *, groups: tuple[str, ...] = (), title: str = "") -> Figure:
    """Genes (rows, in blocks) across every present cluster x batch (columns, grouped by batch).

    Parameters
    ----------
    expression
        ``gene, cluster, batch, frac_expressing, mean``
        (:func:`desweep.report.load.cluster_batch_expression`).
    rows
        ``gene, block`` in drawing order; a label left of each block names it
        (e.g. "up in B cells", "rejected: batch-wide").
    groups
        The compared groups (labelled in bold).

    Dot area: the fraction of cells with counts; colour: the mean, scaled per
    gene to 0-1 across the columns (scanpy's ``standard_scale="var"``).
    """
    expression = expression.astype({"gene": str, "cluster": str, "batch": str})
    rows = rows[rows["gene"].astype(str).isin(set(expression["gene"]))].reset_index(drop=True)
    columns = cluster_batch_columns(expression["cluster"], expression["batch"])
    index = pd.MultiIndex.from_tuples(columns)
    genes = rows["gene"].astype(str).tolist()
    wide = {v: expression.pivot_table(index="gene", columns=["cluster", "batch"], values=v, aggfunc="mean")
            .reindex(index=genes, columns=index).to_numpy(dtype=float) for v in ("mean", "frac_expressing")}
    low, high = np.nanmin(wide["mean"], axis=1, keepdims=True), np.nanmax(wide["mean"], axis=1, keepdims=True)
    scaled = np.divide(wide["mean"] - low, high - low, out=np.zeros_like(wide["mean"]), where=(high - low) > 0)
    fig = new_figure(max(5.0, 0.26 * len(columns) + 4.2), max(3.0, 0.2 * len(genes) + 2.0))
    ax = fig.add_subplot()
    yy, xx = np.meshgrid(np.arange(len(genes)), np.arange(len(columns)), indexing="ij")
    dots = ax.scatter(xx.ravel(), yy.ravel(), s=_dot_area(np.nan_to_num(wide["frac_expressing"]).ravel()), c=scaled.ravel(),
                      cmap="Reds", vmin=0, vmax=1, edgecolors="#555555", linewidths=0.3)
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylim(len(genes) - 0.5, -0.5)
    ax.set_yticks(range(len(genes)), genes, fontsize=7)
    draw_cluster_batch_axis(ax, columns, groups=groups)
    blocks = rows["block"].astype(str).tolist()
    starts = [i for i in range(len(blocks)) if i == 0 or blocks[i] != blocks[i - 1]]
    for i in starts[1:]:
        ax.axhline(i - 0.5, color="black", linewidth=0.8)
    for a, b in zip(starts, [*starts[1:], len(blocks)], strict=True):
        ax.annotate(blocks[a], xy=(1.0, (a + b - 1) / 2), xycoords=("axes fraction", "data"), xytext=(6, 0),
                    textcoords="offset points", va="center", ha="left", fontsize=7, rotation=0)
    for step in SIZE_STEPS:
        ax.scatter([], [], s=_dot_area(step), c="#bbbbbb", edgecolors="#555555", linewidths=0.3, label=f"{step:.0%}")
    fig.legend(title="cells with counts", loc="outside lower center", ncols=len(SIZE_STEPS), fontsize=7, title_fontsize=7,
               frameon=False)
    fig.colorbar(dots, ax=ax, shrink=0.5, pad=0.25, label="mean, scaled per gene")
    ax.set_title(title, fontsize=8)
    return fig


def _category(row: pd.Series) -> str:
    """The colour group of a setting: its batch correction and, with correction, where it decodes."""
    if is_true(row.get("batch_correction")):
        decoding = row.get("decoding")
        return f"batch_correction=True, decoding={decoding}" if isinstance(decoding, str) and decoding else "batch_correction=True"
    return "batch_correction=False"


def score_scatter(scores: pd.DataFrame, *, ncols: int = 3, titles: Callable[[str], str] = str) -> Figure:
    """Cluster-specific against batch-wide share of every setting, one panel per comparison.

    ``scores``: rows of ``setting_scores.csv`` (``comparison_id``,
    ``share_*_mean`` and ``_sd``, ``batch_correction``, ``decoding``, ``mode``,
    ``is_default``, ``recommended``). Colour: batch correction and decoding;
    shape: mode; error bars: SD over seeds and models. scVI's default and the
    recommended setting(s) are labelled. Good settings sit top left.
    ``titles``: a comparison id -> its panel title (the display name).
    """
    scores = scores.assign(_category=scores.apply(_category, axis=1))
    categories = sorted(scores["_category"].unique(), key=lambda c: (c != "batch_correction=False", c))
    colours = dict(zip(categories, palette(len(categories)), strict=False))
    shapes = {"vanilla": "o", "change": "s"}
    comparisons = list(dict.fromkeys(scores["comparison_id"].astype(str)))
    n = max(len(comparisons), 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = new_figure(3.4 * ncols + 2.6, 3.2 * nrows + 0.4)
    for k, comparison in enumerate(comparisons):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        part = scores[scores["comparison_id"].astype(str) == comparison]
        for _, row in part.iterrows():
            x, y = float(row["share_batch_wide_mean"]), float(row["share_cluster_specific_mean"])
            ax.errorbar(x, y, xerr=_sd(row, "share_batch_wide_sd"), yerr=_sd(row, "share_cluster_specific_sd"), fmt="none",
                        ecolor=colours[row["_category"]], elinewidth=0.8, alpha=0.6)
            recommended = str(row.get("recommended")).lower() == "true"
            ax.scatter([x], [y], s=70 if recommended else 36, marker=shapes.get(str(row.get("mode")), "D"),
                       color=colours[row["_category"]], edgecolors="black" if recommended else "white",
                       linewidths=1.4 if recommended else 0.5, zorder=3)
            label = "scVI default" if str(row.get("is_default")).lower() == "true" else ("recommended" if recommended else "")
            if label:  # into the panel, away from its edges; the two labels at different heights, so they never overlap
                step = 14 if label == "recommended" else 30
                offset = (-14 if x > 0.6 else 14, -step if y > 0.5 else step)
                ax.annotate(label, (x, y), xytext=offset, textcoords="offset points", fontsize=7,
                            ha="right" if x > 0.6 else "left", va="top" if y > 0.5 else "bottom",
                            arrowprops={"arrowstyle": "-", "linewidth": 0.5})
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("share batch-wide", fontsize=8)
        ax.set_ylabel("share cluster-specific", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(titles(comparison), fontsize=8)
        ax.grid(linewidth=0.3, alpha=0.5)
    for category in categories:
        fig.axes[0].scatter([], [], s=36, marker="o", color=colours[category], label=category)
    for mode, shape in shapes.items():
        fig.axes[0].scatter([], [], s=36, marker=shape, color="#888888", label=f"mode={mode}")
    fig.axes[0].scatter([], [], s=70, marker="o", color="white", edgecolors="black", linewidths=1.4, label="recommended")
    fig.legend(loc="outside right upper", fontsize=7, frameon=False)
    return fig


def _sd(row: pd.Series, column: str) -> float | None:
    value = pd.to_numeric(pd.Series([row.get(column)]), errors="coerce").iloc[0]
    return float(value) if np.isfinite(value) else None

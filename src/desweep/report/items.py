"""The pieces every section is made of: custom-content items, tables, notes, figures, numbers."""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: (section id, title, description) in report order; the ids are stable anchors of the HTML report
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("desweep_verdict", "The verdict",
     "Per comparison: the DE setting to use, what scVI's default would have told you, and the answer (diagnostics/)."),
    ("desweep_markers", "The answer",
     "The ranked genes per comparison (diagnostics/markers.csv) and their expression in every cluster x batch (markers.h5ad)."),
    ("desweep_top_genes", "scVI's default against the recommended setting",
     "The top genes of each, side by side, in every cluster x batch; and the recommended setting's volcano plot."),
    ("desweep_scores", "Setting scores",
     "How many of each setting's top genes are cluster-specific, batch-wide or other, averaged over seeds and models (diagnostics/)."),
    ("desweep_concordance", "Concordance",
     "How much the top genes and fold changes of two settings agree, averaged over seeds and models."),
    ("desweep_baselines", "Baselines", "Wilcoxon and pseudobulk DESeq2 baselines, classified like the scVI settings (baselines/)."),
    ("desweep_sweep", "Sweep overview", "Every DE run of the sweep (de/summary.csv) and the settings the plan skipped, by reason."),
    ("desweep_composition", "Composition",
     "Cells per cluster and batch, batch-specific clusters and the design class of each comparison (composition/)."),
    ("desweep_input", "Input summary", "What `desweep validate` found in the input (validate/validation.json)."),
    ("desweep_integration", "Integration QC", "scVI training curves and integration metrics (integrate/, cluster/)."),
    ("desweep_normalized", "Normalized export", "scVI normalized expression layers and cluster x batch means (normalized/)."),
    ("desweep_provenance", "Parameters and software versions", "Resolved parameters and installed versions (pipeline_info/)."),
)
SECTION_IDS: tuple[str, ...] = tuple(s[0] for s in SECTIONS)

FIGURE_DPI = 150


@dataclass
class Item:
    """One custom-content document (written as ``<order>_<id>_mqc.yaml``)."""

    section: str
    part: str
    name: str
    plot_type: str
    data: Any
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.section}_{self.part}"

    def document(self) -> dict[str, Any]:
        """The custom-content document, every text field escaped (:func:`escape_tree`).

        ``name``, table cells and row names, column titles, category and series
        names and plot titles are plain text, escaped here; an ``html`` item's
        ``data`` and the ``description`` are HTML, built with :func:`text`.
        """
        _, title, description = next(s for s in SECTIONS if s[0] == self.section)
        data = self.data if self.plot_type == "html" else escape_tree(self.data)
        doc: dict[str, Any] = {
            "id": self.id, "parent_id": self.section, "parent_name": title, "parent_description": description,
            "section_name": text(self.name), "description": self.description, "plot_type": self.plot_type, "data": data,
        }
        pconfig = {"id": f"{self.id}_plot", "title": f"desweep: {self.name}"}
        pconfig.update(self.extra.get("pconfig", {}))
        doc["pconfig"] = escape_tree({k: v for k, v in pconfig.items() if k != "id"}) | {"id": pconfig["id"]}
        doc.update({k: escape_tree(v) for k, v in self.extra.items() if k != "pconfig"})
        return doc


def text(value: object) -> str:
    """``value`` as HTML text: ``<``, ``>``, ``&`` and both quotes escaped.

    The one function through which a string from the input (a label, batch,
    gene or comparison name, a title) enters the report's HTML: MultiQC writes
    table cells, row names, section names and the title into the page as given,
    so a label such as ``<img src=x onerror=...>`` would otherwise run in the
    reader's browser. Plotly and the browser both show the escaped text as written.
    """
    return html.escape(str(value), quote=True)


def escape_tree(obj: Any) -> Any:
    """Every string (dict keys included) of a nested dict / list escaped with :func:`text`; numbers kept."""
    if isinstance(obj, str):
        return text(obj)
    if isinstance(obj, dict):
        return {(text(k) if isinstance(k, str) else k): escape_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [escape_tree(v) for v in obj]
    return obj


def value(v: Any) -> Any:
    """A YAML-safe scalar (no numpy types, no NaN)."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    return str(v)


def missing(section: str, what: str, where: str, hint: str = "") -> Item:
    """A "Not available" note: ``what`` (at ``where``, a path under OUTDIR) was not found."""
    body = f"<p><em>Not available:</em> {text(what)} (<code>{text(where)}</code>) was not found."
    if hint:
        body += f" {text(hint)}"
    part = "missing_" + "".join(ch if ch.isalnum() else "_" for ch in what.lower())
    return Item(section, part, f"{what}: not available", "html", body + "</p>")


def note(section: str, part: str, name: str, paragraph: str) -> Item:
    """A short paragraph of plain text."""
    return Item(section, part, name, "html", f"<p>{text(paragraph)}</p>")


#: numeric columns that hold measurements, never counts, even when every value happens to be whole (proba_de = 1)
DECIMAL_HINTS = ("proba", "lfc", "score", "jaccard", "spearman", "_sd", "_mean", "median", "fraction", "value", "entropy", "asw")


def number_format(column: str, values: pd.Series) -> str:
    """A display format for a numeric column: thousands separators, never ``3e+03``.

    Shares (``share_*``) as percentages; counts and ranks with the decimals
    they have (``12,345``, ``14.5``); measurements (:data:`DECIMAL_HINTS`)
    with 3 decimals; ``{:.3g}`` only where tiny values would show as 0.
    """
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if column.startswith("share_") or column.endswith("_share"):
        return "{:.1%}"
    if np.any((v != 0) & (np.abs(v) < 1e-3)):
        return "{:,.3g}"
    if not any(hint in column for hint in DECIMAL_HINTS):
        # counts and ranks: as few decimals as the values have (a median rank of 14.5), at most 3
        decimals = next((d for d in range(3) if np.allclose(v * 10**d, np.round(v * 10**d))), 3)
        return f"{{:,.{decimals}f}}"
    return "{:,.1f}" if v.size and np.max(np.abs(v)) >= 1000 else "{:,.3f}"


def table(section: str, part: str, name: str, df: pd.DataFrame, *, row_id: str | list[str], description: str = "",
          columns: list[str] | None = None, titles: dict[str, str] | None = None, hidden: tuple[str, ...] = ()) -> Item:
    """A sortable MultiQC table; ``row_id`` column(s) name the rows (joined by `` | ``).

    ``titles``: header text per column (default: the column name); ``hidden``:
    columns left out of view (the reader can show them with "Configure columns").
    """
    ids = [row_id] if isinstance(row_id, str) else row_id
    columns = [c for c in (columns or list(df.columns)) if c not in ids and c in df.columns]
    data: dict[str, dict[str, Any]] = {}
    for row in df.to_dict("records"):
        rid = " | ".join(str(row[c]) for c in ids)
        base, k = rid, 2
        while rid in data:
            rid, k = f"{base} ({k})", k + 1
        data[rid] = {c: v for c in columns if (v := value(row[c])) is not None}
    headers: dict[str, dict[str, Any]] = {}
    for c in columns:
        header: dict[str, Any] = {"title": (titles or {}).get(c, c), "namespace": "", "scale": False, "hidden": c in hidden}
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
            header["format"] = number_format(c, df[c])
            if c.startswith("share_") and not c.endswith("_sd"):
                header.update({"min": 0, "max": 1, "scale": "RdYlGn" if "cluster_specific" in c else "Oranges"})
        headers[c] = header
    extra = {"headers": headers, "pconfig": {"col1_header": " | ".join(ids), "no_violin": True, "sort_rows": False}}
    return Item(section, part, name, "table", data, description, extra)


def png_html(data: bytes, *, alt: str, width: str = "100%") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{text(alt)}" style="max-width:{width};height:auto;">'


def figure_html(fig: Figure, *, alt: str, width: str = "100%") -> str:
    """``fig`` as an inline PNG (drawn at :data:`FIGURE_DPI`, shown at its size in CSS pixels at most)."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    finally:
        fig.clear()
    natural = f"{fig.get_figwidth() * 100:.0f}px"
    return png_html(buffer.getvalue(), alt=alt, width=f"min({width}, {natural})")


def percent(v: Any) -> str:
    """``0.123`` -> ``12%``; missing -> ``n/a``."""
    v = value(v)
    return "n/a" if v is None or isinstance(v, str) else f"{v:.0%}"


def count(v: Any) -> str:
    """``3000.0`` -> ``3,000``; missing -> ``n/a``."""
    v = value(v)
    return "n/a" if v is None or isinstance(v, str) else f"{round(v):,}"

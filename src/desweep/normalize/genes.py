"""Which genes the layers hold: the DE tables' top genes and the ones asked for, or every gene."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from desweep import keys
from desweep.defaults import CLASSIFIED_TOP_N
from desweep.errors import DesweepInputError, ParameterError

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)



def gene_positions(var_names: Sequence[str], genes: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """Positions of the requested genes among the modelled ones (in model order) and those missing.

    ``genes=None`` selects every modelled gene. Genes that the model does not
    contain are returned (and logged); none found at all is an error.
    """
    var_names = pd.Index([str(v) for v in var_names])
    if genes is None:
        return np.arange(len(var_names)), []
    wanted = list(dict.fromkeys(str(g) for g in genes))  # names as written: "" and " CD3" are genes too
    if not wanted:
        raise ParameterError("genes", "genes", "the gene list is empty")
    missing = [g for g in wanted if g not in var_names]
    idx = np.flatnonzero(var_names.isin(wanted))
    if idx.size == 0:
        raise ParameterError("genes", "genes", f"none of the {len(wanted)} genes is modelled (e.g. {missing[0]!r}); "
                             "normalized expression exists only for the genes integrate kept")
    if missing:
        logger.warning("%d of %d requested genes are not modelled and are skipped (e.g. %s)",
                       len(missing), len(wanted), ", ".join(missing[:5]))
    return idx, missing


@dataclass(frozen=True)
class GeneSelection:
    """Which genes the layers hold, and why (:func:`select_layer_genes`).

    Attributes
    ----------
    rule
        ``"all_genes"`` or ``"de_top_union"`` (the DE tables' top genes plus the requested ones).
    top_n
        Top genes taken from each DE table.
    n_tables
        DE tables read.
    top_counts
        Gene -> number of DE tables with the gene among their top ``top_n``.
    requested
        Genes asked for (``--genes``), in the order given.
    """

    rule: str
    top_n: int
    n_tables: int
    top_counts: dict[str, int]
    requested: tuple[str, ...]

    @property
    def genes(self) -> list[str] | None:
        """The genes to export (``None``: every modelled gene)."""
        if self.rule == "all_genes":
            return None
        return list(dict.fromkeys([*self.top_counts, *self.requested]))


def select_layer_genes(
    tables: Mapping[str, pd.DataFrame] | None = None,
    *,
    top_n: int = CLASSIFIED_TOP_N,
    requested: Sequence[str] | None = None,
    all_genes: bool = False,
) -> GeneSelection:
    """The genes a user plots: the union of every DE table's top ``top_n`` genes and ``requested``.

    The top genes of a table are the ones ``desweep diagnose`` classifies
    (:func:`desweep.diagnose.top_genes`), so every classified gene, and every
    consensus marker drawn from them, has its layers. With ``all_genes`` every
    modelled gene is exported (the counts are still recorded).

    Raises
    ------
    DesweepInputError
        ``top_n`` below 1, or nothing to select from (no tables, no genes, not ``all_genes``).
    """
    from desweep.diagnose import top_genes

    if top_n < 1:
        raise ParameterError("top_n", "top_n", f"must be at least 1, got {top_n}")
    tables = tables or {}
    # blank entries of a typed list are left out; every name is kept as written (never stripped)
    wanted = tuple(dict.fromkeys(str(g) for g in (requested or []) if str(g).strip()))
    if not tables and not wanted and not all_genes:
        raise DesweepInputError("desweep normalize", "genes", "nothing to export: give --plan (the DE sweep's top genes), "
                                "--genes, or --all-genes")
    counts: dict[str, int] = {}
    for table in tables.values():
        for gene in dict.fromkeys(top_genes(table, top_n)["gene"]):
            counts[gene] = counts.get(gene, 0) + 1
    rule = "all_genes" if all_genes else "de_top_union"
    if all_genes:
        logger.info("layers hold every modelled gene (--all-genes)")
    else:
        logger.info("layers hold the union of %d top genes of %d DE tables (top %d each) and %d requested genes",
                    len(counts), len(tables), top_n, len(wanted))
    return GeneSelection(rule=rule, top_n=int(top_n), n_tables=len(tables), top_counts=counts, requested=wanted)


def describe_layer_genes(normalized: AnnData, selection: GeneSelection) -> pd.DataFrame:
    """Record in ``normalized`` which genes its layers hold, and return that table.

    Returns
    -------
    One row per gene of the layers, in model order: ``gene``, ``n_top_tables``
    (DE tables with the gene among their top ``top_n``) and ``requested``. The
    same columns go to ``var`` (``desweep_n_top_tables``, ``desweep_requested``)
    and a summary (rule, top_n, table and gene counts) to
    ``uns['desweep_normalize']['gene_selection']``.
    """
    genes = [str(g) for g in normalized.var_names]
    requested = set(selection.requested)
    table = pd.DataFrame({
        "gene": genes,
        "n_top_tables": [selection.top_counts.get(g, 0) for g in genes],
        "requested": [g in requested for g in genes],
    })
    normalized.var["desweep_n_top_tables"] = table["n_top_tables"].to_numpy()
    normalized.var["desweep_requested"] = table["requested"].to_numpy()
    normalized.uns.setdefault(keys.UNS_NORMALIZE, {})["gene_selection"] = {
        "rule": selection.rule, "top_n": selection.top_n, "n_tables": selection.n_tables,
        "n_requested": len(selection.requested), "n_genes": len(genes),
    }
    return table

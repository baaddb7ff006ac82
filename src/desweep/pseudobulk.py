"""Pseudobulk sums and PyDESeq2 fits, shared by the baselines and the bridge contrast.

Counts are summed per *unit* (any per-cell label) with ``scanpy.get.aggregate``,
which multiplies a sparse unit indicator with ``X``: a sparse matrix is never
densified cell by cell, only the units x genes result is dense. PyDESeq2 prints
progress and warns freely on small designs; both are kept out of the user's
terminal (warnings go to the debug log).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import TYPE_CHECKING, Literal, overload

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData
    from pydeseq2.dds import DeseqDataSet

logger = logging.getLogger(__name__)

UNIT_COLUMN = "_desweep_unit"


@overload
def sum_counts(adata: AnnData, units: pd.Series | np.ndarray, *, with_variance: Literal[False] = False,
               ) -> tuple[pd.DataFrame, np.ndarray]: ...
@overload
def sum_counts(adata: AnnData, units: pd.Series | np.ndarray, *, with_variance: Literal[True],
               ) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]: ...
def sum_counts(adata: AnnData, units: pd.Series | np.ndarray, *, with_variance: bool = False,
               ) -> tuple[pd.DataFrame, np.ndarray] | tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Raw counts of ``adata.X`` summed per unit label.

    Parameters
    ----------
    adata
        Cells x genes, raw counts in ``X`` (sparse or dense).
    units
        One label per cell (strings); the units come out sorted by label.

    Returns
    -------
    ``(counts, n_cells)``: units x genes integer counts (index: the unit labels,
    columns: ``adata.var_names`` as text) and the cells per unit; with
    ``with_variance`` also the variance of each sum with the unit's cells as
    replicates (``n_cells`` times the cells' variance), same shape as ``counts``.
    """
    import anndata as ad
    import scanpy as sc

    labels = pd.Categorical(np.asarray(units, dtype=str))
    labels = labels.reorder_categories(sorted(labels.categories))
    light = ad.AnnData(X=adata.X, obs=pd.DataFrame({UNIT_COLUMN: labels}, index=np.arange(adata.n_obs).astype(str)))
    summed = sc.get.aggregate(light, by=UNIT_COLUMN, func=["sum", "var"] if with_variance else "sum")
    order = [str(u) for u in summed.obs[UNIT_COLUMN]]
    values = np.asarray(summed.layers["sum"])
    counts = pd.DataFrame(np.rint(values).astype(np.int64), index=order, columns=adata.var_names.astype(str))
    n_cells = pd.Series(np.asarray(labels.codes)).value_counts().reindex(range(len(labels.categories)), fill_value=0)
    by_label = dict(zip(labels.categories, n_cells.to_numpy(), strict=True))
    cells = np.array([by_label[u] for u in order], dtype=np.int64)
    if not with_variance:
        return counts, cells
    variance = np.nan_to_num(np.asarray(summed.layers["var"], dtype=float)) * cells[:, None]
    return counts, cells, pd.DataFrame(variance, index=counts.index, columns=counts.columns)


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        message = str(warning.message)
        logger.debug("pydeseq2: %s", message.splitlines()[0] if message else warning.category.__name__)


def fit_deseq2(counts: pd.DataFrame, metadata: pd.DataFrame, design: str, *, threads: int = 1) -> DeseqDataSet:
    """Fit PyDESeq2's negative-binomial GLM (size factors, dispersions, coefficients) once.

    ``metadata`` holds the design's factors as categoricals whose levels are plain
    codes (formulaic would mangle arbitrary names); ``design`` is a formula such as
    ``"~batch + group"``.
    """
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference

    with _quiet():
        dds = DeseqDataSet(counts=counts, metadata=metadata, design=design, refit_cooks=True,
                           inference=DefaultInference(n_cpus=threads), quiet=True)
        dds.deseq2()
    return dds


def wald_test(dds: DeseqDataSet, contrast: list[str], *, threads: int = 1, filters: bool = True) -> pd.DataFrame:
    """PyDESeq2's Wald test of ``contrast`` (``[factor, level, reference]``) on a fitted GLM.

    ``filters`` keeps PyDESeq2's Cooks and independent filtering of the p-values
    (off: every tested gene keeps its p-value, and the caller adjusts them).

    Returns
    -------
    One row per gene (``gene``, ``baseMean``, ``log2FoldChange``, ``lfcSE``, ``stat``,
    ``pvalue``, ``padj``), in the genes' order.
    """
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    with _quiet():
        stats = DeseqStats(dds, contrast=contrast, inference=DefaultInference(n_cpus=threads), quiet=True,
                           cooks_filter=filters, independent_filter=filters)
        stats.summary()
    res = stats.results_df.copy()
    res.index.name = "gene"
    return res.reset_index().assign(gene=lambda d: d["gene"].astype(str))

"""Pseudobulk sums and PyDESeq2 fits, shared by the baselines and the bridge contrast.

Counts are summed per *unit* (any per-cell label) with :func:`desweep.chunks.aggregate`,
which multiplies a sparse unit indicator with ``X`` one row chunk at a time (like
``scanpy.get.aggregate`` on the whole matrix): a backed file is never loaded and
a sparse matrix never densified, only the units x genes result is dense. PyDESeq2 prints
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
               mask: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]: ...
@overload
def sum_counts(adata: AnnData, units: pd.Series | np.ndarray, *, with_variance: Literal[True],
               mask: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]: ...
def sum_counts(adata: AnnData, units: pd.Series | np.ndarray, *, with_variance: bool = False, mask: np.ndarray | None = None,
               ) -> tuple[pd.DataFrame, np.ndarray] | tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Raw counts of ``adata.X`` summed per unit label, read in row chunks (:mod:`desweep.chunks`).

    Parameters
    ----------
    adata
        Cells x genes, raw counts in ``X`` (sparse or dense, in memory or backed).
    units
        One label per cell (strings); the units come out sorted by label.
    mask
        The cells to count (default: all); the others' labels are ignored.

    Returns
    -------
    ``(counts, n_cells)``: units x genes integer counts (index: the unit labels,
    columns: ``adata.var_names`` as text) and the cells per unit; with
    ``with_variance`` also the variance of each sum with the unit's cells as
    replicates (``n_cells`` times the cells' variance, computed as
    ``scanpy.get.aggregate``'s ``var``), same shape as ``counts``.
    """
    from desweep.chunks import aggregate_codes, group_codes

    codes, groups = group_codes(pd.DataFrame({UNIT_COLUMN: np.asarray(units, dtype=str)}), UNIT_COLUMN, mask=mask)
    cells, total, _, squares = aggregate_codes(adata, codes, len(groups), squares=with_variance)
    order = [str(u) for u in groups[UNIT_COLUMN]]
    counts = pd.DataFrame(np.rint(total).astype(np.int64), index=order, columns=adata.var_names.astype(str))
    if not with_variance:
        return counts, cells
    assert squares is not None, "asked for the squares"
    variance = np.nan_to_num(_scanpy_variance(total, squares, cells, adata.X.dtype)) * cells[:, None]
    return counts, cells, pd.DataFrame(variance, index=counts.index, columns=counts.columns)


def _scanpy_variance(total: np.ndarray, squares: np.ndarray, n: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The cells' variance per group as ``scanpy.get.aggregate(func="var")`` computes it from the sums (dof 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n[:, None]
        sq_mean = mean**2
        var = squares / n[:, None] - sq_mean
        # scanpy sets a variance lost in float precision to exactly 0 (its threshold, kept for equal numbers)
        precision = 2 << (42 if dtype == np.float64 else 20)
        var[precision * var < sq_mean] = 0
        return var * (n / (n - 1))[:, None]


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

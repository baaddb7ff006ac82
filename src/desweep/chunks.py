"""Counts read in row chunks, and summed per group of cells, from an AnnData in memory or backed.

The late steps (diagnose, baselines, the report) only need per-group sums of
the counts (per cluster x batch, x sample, x pseudo-replicate), never every
cell's counts at once: :func:`row_chunks` reads ``adata.X[start:stop]`` (a CSR
chunk of a backed file, or a slice of the matrix in memory) and
:func:`aggregate` multiplies a sparse group indicator with each chunk, as
``scanpy.get.aggregate`` does with the whole matrix, so a step's memory is one
chunk plus the groups x genes sums, whatever the number of cells. Sums are
accumulated in float64 (``scanpy.get.aggregate``'s indicator is float64 too):
integer counts sum exactly, so chunking changes no count; sums of scaled values
may differ from one product over all cells in the last bits (addition order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData

#: cells per chunk: at 2,000 genes and 10 % density, about 24 MB of CSR per chunk
DEFAULT_CHUNK_SIZE = 10_000


def row_chunks(adata: AnnData, *, layer: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
               ) -> Iterator[tuple[int, int, Any]]:
    """``(start, stop, X[start:stop])`` over the cells of ``adata`` (``layer`` instead of ``X`` when given).

    A backed file is read one chunk at a time; a sparse chunk comes out as CSR,
    a dense one as an ndarray.
    """
    yield from matrix_row_chunks(adata.layers[layer] if layer else adata.X, chunk_size=chunk_size)


def matrix_row_chunks(matrix: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[tuple[int, int, Any]]:
    """``(start, stop, matrix[start:stop])`` over the rows of a matrix in memory or on disk (a backed ``X``).

    A sparse chunk comes out as CSR, a dense one as an ndarray (of the matrix's own dtype).
    """
    import scipy.sparse as sp

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    n_rows = matrix.shape[0]
    for start in range(0, n_rows, chunk_size):
        stop = min(start + chunk_size, n_rows)
        chunk = matrix[start:stop]
        yield start, stop, (sp.csr_matrix(chunk) if sp.issparse(chunk) else np.asarray(chunk))


@dataclass(frozen=True)
class Aggregate:
    """Per-group sums of the cells' values (rows: the groups, in the order of their categories).

    Attributes
    ----------
    groups
        One row per group with at least one cell: its value of each grouping column.
    n_cells
        Cells per group.
    sum
        Groups x genes, the sum of the (scaled, transformed) values.
    n_positive
        Groups x genes, the cells with a value > 0 (of the counts, before scaling or transforming).
    sum_squares
        Groups x genes, the sum of the squared values (``None`` unless asked for).
    """

    groups: pd.DataFrame
    n_cells: np.ndarray
    sum: np.ndarray
    n_positive: np.ndarray
    sum_squares: np.ndarray | None = None

    @property
    def mean(self) -> np.ndarray:
        """Groups x genes mean of the values."""
        return self.sum / self.n_cells[:, None]


def group_codes(obs: pd.DataFrame, by: str | Sequence[str], *, mask: np.ndarray | None = None,
                ) -> tuple[np.ndarray, pd.DataFrame]:
    """Group code per cell (-1: left out by ``mask``) and the groups: each combination of the ``by`` columns' values.

    Groups are ordered like ``scanpy.get.aggregate``'s: by the columns' categories
    (sorted values for a column that is not categorical), the first column varying
    slowest; combinations without a cell (after ``mask``) are left out.
    """
    columns = [by] if isinstance(by, str) else list(by)
    keep = np.ones(len(obs), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    factors = [pd.Categorical(obs[c])[keep].remove_unused_categories() for c in columns]
    sizes = [len(f.categories) for f in factors]
    combined = np.zeros(int(keep.sum()), dtype=np.int64)
    for factor, size in zip(factors, sizes, strict=True):
        combined = combined * size + factor.codes
    used, compact = np.unique(combined, return_inverse=True)
    codes = np.full(len(obs), -1, dtype=np.int64)
    codes[keep] = compact
    positions = np.unravel_index(used, sizes) if columns else ()
    groups = pd.DataFrame({c: pd.Categorical.from_codes(pos, categories=f.categories)
                           for c, f, pos in zip(columns, factors, positions, strict=True)})
    return codes, groups


def aggregate_codes(adata: AnnData, codes: np.ndarray, n_groups: int, *, layer: str | None = None,
                    scale: np.ndarray | None = None, transform: Callable | None = None, squares: bool = False,
                    weights: np.ndarray | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Sums per group code (``codes``: one per cell, -1 left out) over row chunks of ``X`` (or ``layer``).

    ``scale`` multiplies each cell's values (e.g. depth normalization), then
    ``transform`` (e.g. ``np.log1p``; on a sparse chunk's stored values, so
    ``transform(0)`` must be 0) maps them. ``weights`` (one per cell) weigh each cell in ``sum`` and
    ``sum_squares`` (not in ``n_positive``): ``1 / n`` of the cell's group gives
    the means, with scipy's rounding of ``X.mean(axis=0)`` (each value times
    ``1 / n``, then summed in row order). Returns ``(n_cells, sum, n_positive, sum_squares)``.
    """
    import scipy.sparse as sp

    codes = np.asarray(codes, dtype=np.int64)
    n_cells = np.bincount(codes[codes >= 0], minlength=n_groups)[:n_groups].astype(np.int64)
    total = positive = squared = None
    for start, stop, chunk in row_chunks(adata, layer=layer, chunk_size=chunk_size):
        part = codes[start:stop]
        rows = np.flatnonzero(part >= 0)
        if not rows.size:
            continue
        shape = (n_groups, stop - start)
        indicator = sp.csr_matrix((np.ones(rows.size), (part[rows], rows)), shape=shape)
        weighted = indicator if weights is None else sp.csr_matrix((weights[start:stop][rows], (part[rows], rows)), shape=shape)
        is_positive = chunk > 0
        if scale is not None:
            factor = np.asarray(scale[start:stop], dtype=float)
            chunk = sp.csr_matrix(sp.diags(factor) @ chunk) if sp.issparse(chunk) else chunk * factor[:, None]
        if transform is not None:
            chunk = _transformed(chunk, transform)
        parts = [weighted @ chunk, indicator @ is_positive]
        if squares:
            parts.append(weighted @ (chunk.multiply(chunk) if sp.issparse(chunk) else np.square(chunk)))
        dense = [np.asarray(p.todense() if sp.issparse(p) else p, dtype=float) for p in parts]
        if total is None:
            total, positive = dense[0], dense[1]
            squared = dense[2] if squares else None
        else:
            total += dense[0]
            positive += dense[1]
            if squared is not None:
                squared += dense[2]
    if total is None or positive is None:
        total = np.zeros((n_groups, adata.n_vars))
        positive = np.zeros((n_groups, adata.n_vars))
        squared = np.zeros((n_groups, adata.n_vars)) if squares else None
    return n_cells, total, positive, squared


def _transformed(chunk: Any, transform: Callable) -> Any:
    """``transform`` of a chunk's values; of a sparse chunk's stored values only (``transform(0)`` must be 0)."""
    import scipy.sparse as sp

    if not sp.issparse(chunk):
        return transform(np.asarray(chunk))
    out = chunk.copy()
    out.data = transform(out.data)
    return out


def aggregate(adata: AnnData, by: str | Sequence[str], *, mask: np.ndarray | None = None, layer: str | None = None,
              scale: np.ndarray | None = None, transform: Callable | None = None, squares: bool = False,
              weights: np.ndarray | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Aggregate:
    """Sum, cells and cells with a count per gene, per group of cells (combination of the ``by`` obs columns).

    Parameters
    ----------
    adata
        Cells x genes, in memory or backed (``X`` is read ``chunk_size`` rows at a time).
    by
        One obs column or several (one group per combination of values present).
    mask
        Cells to count (default: all).
    layer, scale, transform, squares, weights
        As in :func:`aggregate_codes`.

    Returns
    -------
    :class:`Aggregate`; on data in memory its ``sum`` and ``n_positive`` equal
    ``scanpy.get.aggregate(adata, by, func=["sum", "count_nonzero"])``'s layers
    (for counts >= 0), in the same group order.
    """
    codes, groups = group_codes(adata.obs, by, mask=mask)
    n_cells, total, positive, squared = aggregate_codes(adata, codes, len(groups), layer=layer, scale=scale,
                                                        transform=transform, squares=squares, weights=weights,
                                                        chunk_size=chunk_size)
    return Aggregate(groups=groups, n_cells=n_cells, sum=total, n_positive=positive, sum_squares=squared)


def row_sums(adata: AnnData, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Each cell's total count (library size), in float64, read in row chunks."""
    out = np.zeros(adata.n_obs)
    for start, stop, chunk in row_chunks(adata, chunk_size=chunk_size):
        out[start:stop] = np.asarray(chunk.sum(axis=1), dtype=float).ravel()
    return out


def smallest_positive(adata: AnnData, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> float | None:
    """The smallest value > 0 of ``X`` (``None`` when there is none), read in row chunks."""
    import scipy.sparse as sp

    best: float | None = None
    for _, _, chunk in row_chunks(adata, chunk_size=chunk_size):
        values = chunk.data if sp.issparse(chunk) else np.asarray(chunk).ravel()
        values = values[values > 0]
        if values.size:
            low = float(values.min())
            best = low if best is None else min(best, low)
    return best


def take_columns(matrix: Any, columns: np.ndarray, *, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Every row's values of the columns at ``columns`` (indices) as one CSR matrix, read in row chunks (a backed ``X`` too)."""
    import scipy.sparse as sp

    parts = [sp.csr_matrix(chunk[:, columns]) for _, _, chunk in matrix_row_chunks(matrix, chunk_size=chunk_size)]
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, len(columns)))

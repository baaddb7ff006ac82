"""Input validation: raw counts with a batch column, from one .h5ad or a samplesheet.

Policies
--------
- Counts must be finite, non-negative integers (stored as any numeric dtype).
  Normalized or log-transformed data is the commonest mistake and is named as such.
- Duplicate cell names in one .h5ad are an error (which cell is which is ambiguous).
  Cells from a samplesheet are renamed ``<sample>_<barcode>``, so barcodes that
  repeat across samples never collide.
- Duplicate gene names in an .h5ad are an error unless ``make_genes_unique``;
  10x inputs (gene symbols, where repeats are common) are made unique the scanpy
  way (``TBCE``, ``TBCE-1``).
- Genes with no count in any cell and cells with no count are dropped and reported.
- Every batch needs at least ``min_cells_per_batch`` cells.
- Batch, sample and label values are names, kept exactly as written (``01``
  stays ``01``). A cell without one, or with an empty or missing-value word
  (``NA``, ``None``, ``nan``, ... :data:`desweep.names.NA_LIKE`), is an error: such a
  value means "unknown", and tables read back by other tools would lose it.
- A labels column needs two labels at least, and neither key may name a
  column desweep writes itself (``desweep_*``, scvi-tools' ``_scvi_*``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from desweep import keys
from desweep.datakeys import DataKeys, set_keys
from desweep.errors import DesweepInputError
from desweep.chunks import matrix_row_chunks
from desweep.io import file_checksum, read_csv, read_h5ad, require_file, without_x
from desweep.names import is_na_like

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anndata import AnnData

logger = logging.getLogger(__name__)

SAMPLESHEET_COLUMNS = ("sample", "batch", "path")
#: cells read, checked and written at a time (about 90 MB of CSR at 2,000 genes and 55 % density)
CHUNK_CELLS = 10_000


@dataclass
class ValidationReport:
    """What validation found and changed; written as ``validation.json``."""

    input: str
    n_cells: int = 0
    n_genes: int = 0
    batch_key: str = ""
    labels_key: str = ""
    cells_per_batch: dict[str, int] = field(default_factory=dict)
    dropped_genes_no_counts: int = 0
    dropped_cells_no_counts: int = 0
    notes: list[str] = field(default_factory=list)
    checksum: str = ""


def input_schema() -> dict[str, Any]:
    """The samplesheet JSON schema shared with Nextflow (``assets/schema_input.json``)."""
    return json.loads(resources.files("desweep.schemas").joinpath("schema_input.json").read_text())


def validate_counts(matrix: Any, source: str | Path, where: str) -> None:
    """Check that ``matrix`` holds finite, non-negative integer counts.

    Raises
    ------
    DesweepInputError
        With the commonest cause named: log or normalized data.
    """
    scan = CountsScan()
    scan.add(matrix)
    scan.raise_if_bad(source, where)


class CountsScan:
    """What :func:`validate_counts` checks, gathered over row blocks so that a file is checked without loading it.

    After every block has been added, :meth:`raise_if_bad` says what the
    whole matrix at once would have said: every non-finite value counted, the
    smallest value, the first fractional value in row order.
    """

    def __init__(self) -> None:
        self.non_numeric: np.dtype | None = None
        self.n_nonfinite = 0
        self.minimum = np.inf
        self.fractional: float | None = None

    def add(self, block: Any) -> None:
        """Scan one block (sparse or dense) of the matrix, in row order."""
        values = block.data if sp.issparse(block) else np.asarray(block).ravel()
        if not np.issubdtype(values.dtype, np.number):
            self.non_numeric = values.dtype
            return
        finite = np.isfinite(values)
        self.n_nonfinite += int(values.size - np.count_nonzero(finite))
        values = values[finite]
        if values.size == 0:
            return
        self.minimum = min(self.minimum, float(values.min()))
        if self.fractional is None:
            fractional = np.abs(values - np.round(values)) > 1e-6
            if fractional.any():
                self.fractional = float(values[fractional][0])

    def raise_if_bad(self, source: str | Path, where: str) -> None:
        """Raise for the first problem found, in the order: not numeric, non-finite, negative, fractional."""
        if self.non_numeric is not None:
            raise DesweepInputError(source, where, f"is not numeric (dtype {self.non_numeric})")
        if self.n_nonfinite:
            raise DesweepInputError(source, where, f"has {self.n_nonfinite} NaN or infinite values; give raw counts")
        if self.minimum < 0:
            raise DesweepInputError(
                source, where, f"has negative values (min {self.minimum:.3g}): looks scaled or centred; give raw counts"
            )
        if self.fractional is not None:
            raise DesweepInputError(
                source,
                where,
                f"has non-integer values (e.g. {self.fractional:.4g}): looks normalized or log-transformed; "
                "give raw counts in X or name the counts layer with --layer",
            )


def read_counts_h5ad(
    path: str | Path, *, layer: str | None = None, make_genes_unique: bool = False
) -> AnnData:
    """Read one .h5ad and put its counts (``X`` or ``layer``) into a float32 CSR ``X``."""
    adata = read_h5ad(path)
    _check_shape(adata, path)
    if layer:
        if layer not in adata.layers:
            have = ", ".join(adata.layers.keys()) or "none"
            raise DesweepInputError(path, f"layers['{layer}']", f"missing (have: {have})")
        matrix, where = adata.layers[layer], f"layers['{layer}']"
    else:
        matrix, where = adata.X, "X"
    if matrix is None:
        raise DesweepInputError(path, where, "is empty; give raw counts in X or name the counts layer with --layer")
    validate_counts(matrix, path, where)
    _check_names_unique(adata, path, make_genes_unique=make_genes_unique)
    adata.X = sp.csr_matrix(matrix, dtype=np.float32)
    adata.layers.clear()
    return adata


def open_counts_h5ad(path: str | Path, *, layer: str | None = None, make_genes_unique: bool = False) -> AnnData:
    """Open one .h5ad backed (read-only, ``X`` left on disk) when its counts are a CSR ``X``; else read it whole.

    A backed file's counts are checked block by block by :func:`validate_adata`.
    Counts in a layer, a CSC or dense ``X``, or a file with ``raw`` are read
    whole by :func:`read_counts_h5ad`, as before.
    """
    if layer or not _is_csr_counts_file(path):
        return read_counts_h5ad(path, layer=layer, make_genes_unique=make_genes_unique)
    adata = read_h5ad(path, backed=True)
    _check_shape(adata, path)
    _check_names_unique(adata, path, make_genes_unique=make_genes_unique)
    return adata


def _is_csr_counts_file(path: str | Path) -> bool:
    """Whether an .h5ad stores ``X`` as CSR and has no ``raw`` (whose counts a backed read would not carry)."""
    import h5py

    try:
        with h5py.File(require_file(path, what="h5ad"), "r") as handle:
            return "raw" not in handle and "X" in handle and handle["X"].attrs.get("encoding-type") == "csr_matrix"
    except OSError:
        return False  # read_h5ad names the problem


def _check_shape(adata: AnnData, path: str | Path) -> None:
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DesweepInputError(path, "X", f"is empty ({adata.n_obs} cells x {adata.n_vars} genes)")


def _check_names_unique(adata: AnnData, path: str | Path, *, make_genes_unique: bool) -> None:
    _check_unique(adata.obs_names, path, "obs_names", "cell names repeat; make them unique (adata.obs_names_make_unique())")
    if not adata.var_names.is_unique:
        if make_genes_unique:
            adata.var_names_make_unique()
        else:
            _check_unique(adata.var_names, path, "var_names", "gene names repeat; pass --make-genes-unique or fix the file")


def read_samplesheet(path: str | Path, *, batch_key: str = "batch", layer: str | None = None) -> AnnData:
    """Read a samplesheet (``sample,batch,path``) and merge its samples on their shared genes."""
    import anndata as ad
    import jsonschema

    _refuse_counts_table(path)
    sheet = read_csv(path, required=SAMPLESHEET_COLUMNS, what="samplesheet")
    if sheet.empty:
        raise DesweepInputError(path, "samplesheet", "has no rows")
    rows = sheet[list(SAMPLESHEET_COLUMNS)].astype(str).to_dict("records")
    for i, row in enumerate(rows):
        for column in ("sample", "batch"):
            if is_na_like(row[column]):
                raise DesweepInputError(path, f"row {i + 2} column '{column}'",
                                        f"{row[column]!r} is empty or reads as a missing value; give every {column} a name")
    validator = jsonschema.Draft202012Validator(input_schema())
    for error in sorted(validator.iter_errors(rows), key=lambda e: list(e.path)):
        row, column = (list(error.path) + ["?", "?"])[:2]
        raise DesweepInputError(path, f"row {int(row) + 2 if isinstance(row, int) else row} column '{column}'", _schema_message(error))
    duplicated = sheet["sample"][sheet["sample"].duplicated()]
    if not duplicated.empty:
        raise DesweepInputError(path, "sample", f"sample name '{duplicated.iloc[0]}' is used more than once")
    if batch_key == keys.SAMPLE:
        # the sheet's sample column fills obs['sample']; the batch column would overwrite it, merging samples silently
        raise DesweepInputError(path, "--batch-key", f"'{keys.SAMPLE}' is where a samplesheet's sample column goes; keep the "
                                "default --batch-key and, to use each sample as a batch, write the sample name in its batch column")
    members = [_member_path(row["path"], path) for row in rows]
    _check_distinct_members(members, path)
    parts = []
    for row, member in zip(rows, members, strict=True):
        part = _read_sample(member, path, layer=layer)
        part.obs_names = [f"{row['sample']}_{name}" for name in part.obs_names]
        part.obs[keys.SAMPLE] = row["sample"]
        part.obs[batch_key] = row["batch"]
        parts.append(part)
    shared_genes = _shared_genes(parts)
    if len(shared_genes) == 0:
        raise DesweepInputError(path, "path", "the samples share no gene names; check they use the same gene identifiers")
    merged = ad.concat([p[:, shared_genes] for p in parts], join="inner", merge="same")
    for column in (keys.SAMPLE, batch_key):
        merged.obs[column] = pd.Categorical(merged.obs[column].astype(str))
    merged.uns["samplesheet"] = sheet.astype(str).to_dict("list")
    return merged


def validate_adata(
    adata: AnnData,
    source: str | Path,
    *,
    batch_key: str,
    labels_key: str | None = None,
    min_cells_per_batch: int = 20,
    chunk_size: int = CHUNK_CELLS,
) -> tuple[ValidatedCounts, ValidationReport]:
    """Check keys and batches, drop empty genes and cells, and record the keys.

    Parameters
    ----------
    adata
        Counts in ``X``, in memory (:func:`read_counts_h5ad`) or backed (:func:`open_counts_h5ad`).
    source
        The input file, for error messages.
    batch_key
        obs column with the batch of each cell; needs at least two levels.
    labels_key
        Optional obs column with cell labels to compare (otherwise ``desweep
        cluster`` makes Leiden clusters).
    min_cells_per_batch
        Smallest allowed batch, counted after empty cells are dropped.
    chunk_size
        Cells read and checked at a time: a backed ``X`` is never loaded whole.

    Returns
    -------
    The validated data (everything but the counts in an AnnData whose
    ``uns['desweep']`` records the keys; the kept counts in row blocks) and the report.
    """
    report = ValidationReport(input=str(source), batch_key=batch_key, labels_key=labels_key or "")
    if labels_key is not None and labels_key == batch_key:
        raise DesweepInputError(source, "--labels-key", f"'{labels_key}' is also the batch key; compare labels, not batches")
    for key, option in ((batch_key, "--batch-key"), (labels_key, "--labels-key")):
        if key is None:
            continue
        if key.startswith(keys.OWN_OBS_PREFIXES):
            raise DesweepInputError(source, option, f"'{key}' is a column desweep or scvi-tools write ({', '.join(keys.OWN_OBS_PREFIXES)}...); "
                                    "copy it to a column of another name")
        if key not in adata.obs:
            have = ", ".join(map(str, adata.obs.columns)) or "none"
            raise DesweepInputError(source, f"obs['{key}']", f"missing ({option}; have: {have})")
        if adata.obs[key].isna().any():
            raise DesweepInputError(source, f"obs['{key}']", f"{int(adata.obs[key].isna().sum())} cells have no value")
        adata.obs[key] = pd.Categorical(adata.obs[key].astype(str))
        _check_names(adata.obs[key], source, key)

    cell_totals, gene_totals = _scan_counts(adata.X, source, chunk_size)
    if (cell_totals == 0).all():
        raise DesweepInputError(source, "X", "every cell has zero counts")
    report.dropped_genes_no_counts = int((gene_totals == 0).sum())
    report.dropped_cells_no_counts = int((cell_totals == 0).sum())
    _warn_if_normalized(cell_totals[cell_totals > 0], report)
    counts = ValidatedCounts(adata, adata.X)
    if report.dropped_genes_no_counts or report.dropped_cells_no_counts:
        counts = ValidatedCounts(without_x(adata[cell_totals > 0, gene_totals > 0]), adata.X, cell_totals > 0, gene_totals > 0)
        adata = counts.adata
        note = f"dropped {report.dropped_genes_no_counts} genes and {report.dropped_cells_no_counts} cells with no counts"
        report.notes.append(note)
        logger.info(note)

    adata.obs[batch_key] = adata.obs[batch_key].cat.remove_unused_categories()
    sizes = adata.obs[batch_key].value_counts().sort_index()
    if sizes.size < 2:
        only = sizes.index[0] if sizes.size else "none"
        raise DesweepInputError(source, f"obs['{batch_key}']", f"has one level only ({only}); desweep needs at least two batches")
    small = sizes[sizes < min_cells_per_batch]
    if not small.empty:
        raise DesweepInputError(
            source, f"obs['{batch_key}']",
            f"batch '{small.index[0]}' has {int(small.iloc[0])} cells, fewer than --min-cells-per-batch {min_cells_per_batch}",
        )
    if labels_key:
        adata.obs[labels_key] = adata.obs[labels_key].cat.remove_unused_categories()
        labels = adata.obs[labels_key].cat.categories
        _check_apart(labels, source, labels_key)
        if len(labels) < 2:
            raise DesweepInputError(source, f"obs['{labels_key}']", f"has one label only ({labels[0]}): desweep compares two groups; "
                                    "give a column with two labels at least, or leave --labels-key out to compare Leiden clusters")

    set_keys(adata, DataKeys(batch_key=batch_key, labels_key=labels_key, group_key=None))
    report.n_cells, report.n_genes = int(adata.n_obs), int(adata.n_vars)
    report.cells_per_batch = {str(k): int(v) for k, v in sizes.items()}
    return counts, report


@dataclass
class ValidatedCounts:
    """Validated data: ``adata`` carries obs, var, uns and the rest; ``counts`` the input's whole matrix.

    ``cells`` and ``genes`` (boolean masks, ``None`` for all) say which rows
    and columns of ``counts`` are kept; :meth:`blocks` reads them in order.
    """

    adata: AnnData
    counts: Any
    cells: np.ndarray | None = None
    genes: np.ndarray | None = None

    def blocks(self, chunk_size: int = CHUNK_CELLS) -> Iterator[sp.csr_matrix]:
        """The kept counts as float32 CSR blocks of at most ``chunk_size`` input cells, in order."""
        for start, _, chunk in matrix_row_chunks(self.counts, chunk_size=chunk_size):
            block = sp.csr_matrix(chunk, dtype=np.float32)
            if self.cells is not None:
                block = block[self.cells[start : start + block.shape[0]]]
            if self.genes is not None:
                block = block[:, self.genes]
            if block.shape[0]:
                yield block


def _scan_counts(matrix: Any, source: str | Path, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Check the counts block by block (:class:`CountsScan`) and return the per-cell and per-gene totals."""
    scan = CountsScan()
    cell_totals = np.zeros(matrix.shape[0])
    gene_totals = np.zeros(matrix.shape[1])
    for start, _, block in matrix_row_chunks(matrix, chunk_size=chunk_size):
        scan.add(block)
        if scan.non_numeric is not None:
            break
        cell_totals[start : start + block.shape[0]] = np.asarray(block.sum(axis=1)).ravel()
        gene_totals += np.asarray(block.sum(axis=0)).ravel()
    scan.raise_if_bad(source, "X")
    return cell_totals, gene_totals


#: per-cell totals all within this share of their median: scaled to one total (CP10k and the like), not counts
SAME_TOTAL_SPREAD = 0.02
MIN_CELLS_FOR_TOTALS = 20


def _warn_if_normalized(totals: np.ndarray, report: ValidationReport) -> None:
    """A note when every cell has about the same total: normalized values rounded to integers pass the integer check.

    Raw counts vary several-fold between cells (library size); values scaled
    to 10,000 per cell and rounded stay within a fraction of a percent of it.
    """
    if totals.size < MIN_CELLS_FOR_TOTALS:
        return
    median = float(np.median(totals))
    spread = (float(totals.max()) - float(totals.min())) / median
    if spread < SAME_TOTAL_SPREAD:
        note = (f"every cell's total is within {spread:.1%} of {median:,.0f}: these look like normalized values rounded to "
                "integers (e.g. CP10k), not raw counts; scVI models raw counts, so give the raw counts (--layer) if you have them")
        report.notes.append(note)
        logger.warning(note)


def is_samplesheet(path: str | Path) -> bool:
    """Whether an input is a samplesheet (``.csv``/``.tsv``) rather than an .h5ad."""
    return Path(path).suffix.lower() in {".csv", ".tsv"}


def load_input(
    path: str | Path, *, batch_key: str, layer: str | None = None, make_genes_unique: bool = False
) -> AnnData:
    """Read a samplesheet CSV/TSV, or open an .h5ad (backed when its counts are a CSR ``X``: :func:`open_counts_h5ad`)."""
    path = require_file(path, what="input")
    if is_samplesheet(path):
        return read_samplesheet(path, batch_key=batch_key, layer=layer)
    return open_counts_h5ad(path, layer=layer, make_genes_unique=make_genes_unique)


def input_files(path: str | Path) -> list[Path]:
    """Every file an input consists of: the .h5ad, or the samplesheet and each file or folder it names."""
    path = require_file(path, what="input")
    if not is_samplesheet(path):
        return [path]
    sheet = read_csv(path, required=SAMPLESHEET_COLUMNS, what="samplesheet")
    return [path] + [_member_path(str(p), path) for p in sheet["path"]]


def input_batches(path: str | Path, batch_key: str) -> list[str] | None:
    """The batch names of an input, read cheaply (a samplesheet's batch column, an .h5ad's ``obs[batch_key]`` alone).

    ``None`` when they cannot be read this way (the column is missing, the file
    unreadable): validate then says why, naming the file.
    """
    import h5py

    path = Path(path)
    try:
        if is_samplesheet(path):
            return sorted(set(read_csv(path, required=SAMPLESHEET_COLUMNS, what="samplesheet")["batch"].astype(str)))
        from anndata.io import read_elem

        with h5py.File(path, "r") as handle:
            column = read_elem(handle["obs"][batch_key])
        return sorted({str(v) for v in pd.Series(column).dropna()})
    except (OSError, KeyError, ValueError, TypeError, DesweepInputError):
        return None


def input_checksum(path: str | Path) -> str:
    """sha256 over the content of every file of an input (:func:`input_files`); a missing member counts as such."""
    import hashlib

    files = input_files(path)
    if len(files) == 1:
        return file_checksum(files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file_checksum(file) if file.exists() else 'missing'}\n".encode())  # the sheet holds the names
    return digest.hexdigest()


def record_checksum(adata: AnnData, report: ValidationReport, path: str | Path) -> None:
    """Store the input's sha256 (a samplesheet's with its members) in ``uns['desweep']`` and the report (provenance)."""
    report.checksum = input_checksum(path)
    info = dict(adata.uns[keys.UNS_DESWEEP])
    info["input_sha256"] = report.checksum
    adata.uns[keys.UNS_DESWEEP] = info


def _member_path(value: str, sheet: str | Path) -> Path:
    """A samplesheet ``path``: absolute, or relative to the sheet as given (not resolved: a staged symlink must not move it)."""
    return Path(value) if Path(value).is_absolute() else Path(sheet).absolute().parent / value


def _refuse_counts_table(path: str | Path) -> None:
    """A table with none of the samplesheet's columns and many others is a counts matrix given as ``-i``: say so in one short line."""
    path = require_file(path, what="input")
    try:
        header = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", nrows=0).columns
    except Exception:  # noqa: BLE001 - read_csv reports an unreadable table
        return
    if len(header) > len(SAMPLESHEET_COLUMNS) and not set(SAMPLESHEET_COLUMNS) & set(map(str, header)):
        raise DesweepInputError(path, "input", f"a table of {len(header):,} columns without {', '.join(SAMPLESHEET_COLUMNS)}: a counts "
                                "matrix? Give counts as an .h5ad (cells x genes, the batch in obs), or a samplesheet "
                                "with columns sample,batch,path")


def _check_distinct_members(members: list[Path], sheet: str | Path) -> None:
    """Refuse a samplesheet naming one file twice (by resolved path, or by content): its cells would enter twice.

    Rows are numbered as in the file (the header is row 1).
    """
    seen: dict[str, int] = {}
    for i, member in enumerate(members):
        if not member.exists():
            continue  # _read_sample says so, naming the row's path
        for key in (f"path:{member.resolve()}", f"sha256:{file_checksum(member)}"):
            if key in seen:
                how = "the same file" if key.startswith("path:") else "files with the same content"
                raise DesweepInputError(sheet, "path", f"rows {seen[key] + 2} and {i + 2} name {how} ({members[seen[key]]}, "
                                        f"{member}); each sample's cells must be listed once")
            seen[key] = i


def _read_sample(sample_path: Path, sheet: str | Path, *, layer: str | None) -> AnnData:
    import scanpy as sc

    if not sample_path.exists():
        raise DesweepInputError(sheet, "path", f"{sample_path} does not exist")
    if sample_path.is_dir():
        try:
            adata = sc.read_10x_mtx(sample_path)
        except Exception as err:
            raise DesweepInputError(sheet, "path", f"{sample_path} is not a readable 10x matrix folder: {str(err).splitlines()[0]}") from err
        adata.var_names_make_unique()
    elif sample_path.suffix == ".h5":
        try:
            adata = sc.read_10x_h5(sample_path)
        except Exception as err:
            raise DesweepInputError(sheet, "path", f"{sample_path} is not a readable 10x .h5 file: {str(err).splitlines()[0]}") from err
        adata.var_names_make_unique()
    else:
        return read_counts_h5ad(sample_path, layer=layer)
    validate_counts(adata.X, sample_path, "X")
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def _shared_genes(parts: list[AnnData]) -> pd.Index:
    shared = parts[0].var_names
    for part in parts[1:]:
        shared = shared.intersection(part.var_names, sort=False)
    return shared


def _check_names(values: pd.Series, source: str | Path, key: str) -> None:
    """Refuse empty and missing-value words (``NA``, ``None``, ...) as batch or label names."""
    bad = [str(v) for v in values.cat.categories if is_na_like(v) and (values == v).any()]
    if bad:
        n = int(values.isin(bad).sum())
        raise DesweepInputError(source, f"obs['{key}']", f"{n} cells have the value {bad[0]!r}, which is empty or reads as a missing value; "
                                "give them a real name (e.g. 'unassigned') or drop them")


def _check_apart(labels: pd.Index, source: str | Path, key: str) -> None:
    """Refuse labels equal but for spaces at their ends (``T``, `` T``).

    They are different names here, but not to every reader of the results:
    scanpy's ``rank_genes_groups`` layout in markers.h5ad keys each group by a
    numpy record field, and numpy strips field names, so the two would collide
    in the last step, after training. Names are never stripped: the user renames one.
    """
    seen: dict[str, str] = {}
    for label in map(str, labels):
        other = seen.setdefault(label.strip(), label)
        if other != label:
            raise DesweepInputError(source, f"obs['{key}']", f"labels {other!r} and {label!r} differ only by spaces at their ends, "
                                    "which tables and scanpy's markers layout cannot tell apart; rename one")


def _check_unique(index: pd.Index, source: str | Path, field_name: str, problem: str) -> None:
    if not index.is_unique:
        first = index[index.duplicated()][0]
        raise DesweepInputError(source, field_name, f"{problem} (first repeat: '{first}')")


def _schema_message(error: Any) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    return str(schema.get("errorMessage") or error.message)

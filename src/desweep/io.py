"""Reading inputs with one-line errors, and atomic writing of every output.

Every output is written to a temporary name in its destination folder and then
renamed, so an interrupted step leaves either the previous complete file or none.
The temporary name, ``.<name>.tmp-<host>-<pid>-<random>``, says which process
writes it: :func:`remove_stale_partials` deletes those of processes that are gone
(``kill -9``, a crash), never those of a live writer.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desweep.errors import DesweepInputError

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp
    from anndata import AnnData

logger = logging.getLogger(__name__)

H5AD_MAGIC = b"\x89HDF\r\n\x1a\n"


@contextlib.contextmanager
def atomic_path(destination: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it there on success.

    Parameters
    ----------
    destination
        The final file or folder.
    directory
        Yield a fresh temporary folder instead of a file name.

    On an exception the temporary path is removed and ``destination`` is untouched.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{destination.name}{_TMP_MARK}{_HOST}-{os.getpid()}-"
    # SIGTERM and Ctrl-C wait while the path is created and registered: a handler between the two would leave it behind
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=destination.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, dir=destination.parent, suffix=destination.suffix)
            os.close(fd)
            tmp = Path(name)
        _IN_PROGRESS.add(tmp)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    try:
        yield tmp
        _default_permissions(tmp)
        if directory and destination.exists():
            shutil.rmtree(destination)
        os.replace(tmp, destination)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        _IN_PROGRESS.discard(tmp)


#: temporary paths being written now, removed by :func:`remove_partial_outputs` on SIGTERM
_IN_PROGRESS: set[Path] = set()
_TMP_MARK = ".tmp-"
#: this machine, in temporary names (a hash: host names can be long and hold any character)
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^/]*")


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Delete the temporary outputs below ``folder`` whose writer, a process of this machine, is gone.

    Returns
    -------
    The paths removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.rglob(f".*{_TMP_MARK}*")):
        match = _TMP_NAME.fullmatch(path.name)
        if match and match["host"] == _HOST and not _process_alive(int(match["pid"])) and path.exists():
            _remove(path)
            removed.append(path)
    if removed:
        logger.info("removed %d temporary file(s) left by ended processes in %s", len(removed), folder)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_partial_outputs() -> None:
    """Delete every temporary output still being written (called from the SIGTERM handler)."""
    for path in list(_IN_PROGRESS):
        _remove(path)


def _default_permissions(path: Path) -> None:
    """mkstemp/mkdtemp create private (0600/0700) paths; give outputs the usual umask-based mode."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def write_atomic(destination: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and rename the result to ``destination``."""
    with atomic_path(destination) as tmp:
        writer(tmp)
    logger.debug("wrote %s", destination)
    return Path(destination)


def write_csv(df: pd.DataFrame, destination: str | Path, *, index: bool = False) -> Path:
    """Write a CSV atomically with a fixed float format, so equal inputs give equal bytes."""
    return write_atomic(destination, lambda tmp: df.to_csv(tmp, index=index, float_format="%.6g", lineterminator="\n"))


def write_h5ad(adata: AnnData, destination: str | Path) -> Path:
    """Write an AnnData atomically (gzip-compressed)."""
    return write_atomic(destination, lambda tmp: adata.write_h5ad(tmp, compression="gzip"))


def write_h5ad_rows(adata: AnnData, rows: Iterable[sp.csr_matrix], destination: str | Path) -> Path:
    """Write an AnnData whose ``X`` arrives as CSR row blocks, holding one block at a time (gzip, atomic).

    Parameters
    ----------
    adata
        Everything but ``X`` (obs, var, uns, obsm, ..., raw); its own ``X`` is not written, nor its layers.
    rows
        CSR blocks of consecutive cells, in order, each ``(k, n_vars)``; together ``n_obs`` rows.
    destination
        The .h5ad file.

    The file reads back as the same AnnData with ``X`` the blocks stacked
    (``scipy.sparse.vstack``): 32-bit ``indptr`` while the stored values fit it, as scipy does.
    """
    import h5py
    import scipy.sparse as sp
    from anndata.io import sparse_dataset, write_elem

    def _write(tmp: Path) -> None:
        without_x(adata).write_h5ad(tmp, compression="gzip")
        n_rows = 0
        with h5py.File(tmp, "r+") as handle:
            for block in rows:
                block = sp.csr_matrix(block)
                if n_rows == 0:
                    write_elem(handle, "X", block, dataset_kwargs=_GROWING_DATASET)
                else:
                    _widen_indptr_if_needed(handle["X"], block.nnz)
                    sparse_dataset(handle["X"]).append(block)
                n_rows += block.shape[0]
        if n_rows != adata.n_obs:
            raise ValueError(f"wrote {n_rows} rows of X for {adata.n_obs} cells")

    return write_atomic(destination, _write)


def write_h5ad_with_x_from(adata: AnnData, source: str | Path, destination: str | Path) -> Path:
    """Write an AnnData whose ``X`` stays in ``source`` (e.g. one read backed): ``X`` is copied there as stored (atomic).

    Parameters
    ----------
    adata
        Everything but ``X``; its own ``X`` (a backed matrix) is never loaded.
    source
        The .h5ad whose ``X`` is copied, compressed chunks and all (HDF5's
        copy: nothing is decompressed or held in memory); it must have
        ``adata``'s cells and genes, in the same order.
    destination
        The .h5ad file.
    """
    import h5py

    def _write(tmp: Path) -> None:
        without_x(adata).write_h5ad(tmp, compression="gzip")
        with h5py.File(source, "r") as src, h5py.File(tmp, "r+") as handle:
            shape = tuple(src["X"].attrs["shape"]) if "shape" in src["X"].attrs else src["X"].shape
            if tuple(shape) != (adata.n_obs, adata.n_vars):
                raise ValueError(f"{source}: X is {shape[0]} x {shape[1]}, the data {adata.n_obs} x {adata.n_vars}")
            src.copy(src["X"], handle, name="X")

    return write_atomic(destination, _write)


def without_x(adata: AnnData) -> AnnData:
    """``adata`` without ``X`` and layers (obs, var, uns, the aligned arrays and raw): a backed file's counts stay on disk.

    A view's parts are copied (a new AnnData cannot hold a view's arrays); a whole
    AnnData's are shared, so the embedding and graphs are not held twice.
    """
    import anndata as ad

    def own(value: Any) -> Any:
        return value.copy() if adata.is_view else value

    shell = ad.AnnData(obs=own(adata.obs), var=own(adata.var), uns=dict(adata.uns),
                       obsm={k: own(v) for k, v in adata.obsm.items()}, varm={k: own(v) for k, v in adata.varm.items()},
                       obsp={k: own(v) for k, v in adata.obsp.items()}, varp={k: own(v) for k, v in adata.varp.items()})
    if adata.raw is not None:
        shell.raw = adata.raw.to_adata()
    return shell


#: gzip-compressed, in chunks of 256 Ki values (anndata makes sparse data resizable; auto-chunking sized to a first small block would be tiny)
_GROWING_DATASET = {"compression": "gzip", "chunks": (1 << 18,)}
INT32_MAX = 2**31 - 1


def _widen_indptr_if_needed(group: Any, added_nnz: int) -> None:
    """Rewrite a stored CSR's 32-bit ``indptr`` as 64-bit before an append would overflow it (scipy's vstack widens too)."""
    import numpy as np

    indptr = group["indptr"]
    if indptr.dtype != np.int32 or group["indices"].shape[0] + added_nnz < INT32_MAX:
        return
    values = indptr[...].astype(np.int64)
    del group["indptr"]
    group.create_dataset("indptr", data=values, maxshape=(None,), **_GROWING_DATASET)


def write_yaml(data: Any, destination: str | Path) -> Path:
    """Write a YAML document atomically."""
    import yaml

    def _dump(tmp: Path) -> None:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))

    return write_atomic(destination, _dump)


def write_text(text: str, destination: str | Path) -> Path:
    """Write a text file atomically."""
    return write_atomic(destination, lambda tmp: tmp.write_text(text))


def require_file(path: str | Path, *, what: str = "file") -> Path:
    """Return ``path`` if it is a non-empty file, else raise a one-line input error."""
    path = Path(path)
    if not path.exists():
        raise DesweepInputError(path, what, "does not exist")
    if path.is_dir():
        raise DesweepInputError(path, what, "is a folder, expected a file")
    if path.stat().st_size == 0:
        raise DesweepInputError(path, what, "is empty (0 bytes)")
    return path


def read_h5ad(path: str | Path, *, backed: bool = False) -> AnnData:
    """Read an .h5ad file, turning every failure into a one-line input error.

    Raises
    ------
    DesweepInputError
        Missing, empty, not HDF5 (e.g. a CSV), truncated or otherwise unreadable.
    """
    import anndata as ad

    path = check_h5ad(path)
    try:
        return ad.read_h5ad(path, backed="r" if backed else None)
    except Exception as err:  # h5py/anndata raise many types for truncated files
        raise _unreadable(path, err) from err


def check_h5ad(path: str | Path) -> Path:
    """``path`` if it is a non-empty HDF5 file (what :func:`read_h5ad` checks before reading), else an input error."""
    path = require_file(path, what="h5ad")
    with path.open("rb") as fh:
        head = fh.read(len(H5AD_MAGIC))
    if head != H5AD_MAGIC:
        kind = "a text/CSV file" if _looks_like_text(path) else "not an HDF5 file"
        raise DesweepInputError(path, "h5ad", f"is {kind}; expected an AnnData .h5ad file")
    return path


def _unreadable(path: Path, err: Exception) -> DesweepInputError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DesweepInputError(path, "h5ad", f"cannot be read (truncated or corrupt?): {reason}")


def read_h5ad_layers(path: str | Path, genes: list[str], *, prefix: str, chunk_size: int = 10_000) -> AnnData:
    """The layers named ``prefix...`` of an .h5ad file, for ``genes`` only (those it has, in its order), and its cells.

    ``X``, the other layers and the other genes are never read (``read_h5ad``,
    even backed, loads every layer whole); the layers are read ``chunk_size``
    rows at a time. Errors as in :func:`read_h5ad`.
    """
    import anndata as ad
    import h5py
    import numpy as np
    import pandas as pd

    path = check_h5ad(path)
    try:
        with h5py.File(path, "r") as f:
            obs_names = pd.Index(ad.io.read_elem(f["obs"]).index)
            var_names = pd.Index(ad.io.read_elem(f["var"]).index)
            columns = np.unique(var_names.get_indexer([g for g in genes if g in var_names]))
            layers = {}
            for name, node in f.get("layers", {}).items():
                if name.startswith(prefix):
                    matrix = node if isinstance(node, h5py.Dataset) else ad.io.sparse_dataset(node)
                    parts = [_dense(matrix[start:start + chunk_size])[:, columns]
                             for start in range(0, len(obs_names), chunk_size)]
                    layers[name] = np.concatenate(parts) if parts else np.zeros((0, len(columns)), dtype=np.float32)
    except Exception as err:  # h5py/anndata raise many types for truncated files
        raise _unreadable(path, err) from err
    return ad.AnnData(obs=pd.DataFrame(index=obs_names), var=pd.DataFrame(index=var_names[columns]), layers=layers)


@contextlib.contextmanager
def open_h5ad(path: str | Path) -> Iterator[AnnData]:
    """An .h5ad file with ``X`` and every layer left on disk, ``obs``, ``var`` and ``uns`` in memory.

    ``X`` and the layers are read by row slices (:func:`desweep.chunks.row_chunks`):
    ``read_h5ad(backed=True)`` keeps ``X`` on disk but loads every layer whole.
    The file is closed on leaving the ``with`` block. Errors as in :func:`read_h5ad`.
    """
    import anndata as ad
    import h5py

    path = check_h5ad(path)
    try:
        f = h5py.File(path, "r")
    except Exception as err:  # h5py raises many types for truncated files
        raise _unreadable(path, err) from err
    with f:
        try:
            adata = ad.AnnData(X=_on_disk(f["X"]) if "X" in f else None, obs=ad.io.read_elem(f["obs"]),
                               var=ad.io.read_elem(f["var"]), uns=ad.io.read_elem(f["uns"]) if "uns" in f else None,
                               layers={name: _on_disk(node) for name, node in f.get("layers", {}).items()})
        except Exception as err:  # h5py/anndata raise many types for truncated files
            raise _unreadable(path, err) from err
        yield adata


def _on_disk(node: Any) -> Any:
    import anndata as ad
    import h5py

    return node if isinstance(node, h5py.Dataset) else ad.io.sparse_dataset(node)


def _dense(block: Any) -> Any:
    import numpy as np

    return block.toarray() if hasattr(block, "toarray") else np.asarray(block)


def read_csv(path: str | Path, *, required: list[str] | tuple[str, ...] = (), what: str = "csv",
             names: tuple[str, ...] = (), index_col: int | str | None = None, all_text: bool = False) -> pd.DataFrame:
    """Read a table (comma-separated, or tab-separated for ``.tsv``), keeping names as text.

    Columns that hold names (:data:`desweep.keys.NAME_COLUMNS`, plus ``names``)
    are read as strings with no NA inference, so ``01``, ``NA``, ``None`` or an
    empty cell come back exactly as written; other columns get pandas' usual
    number and missing-value inference (``all_text``: every column as text, for
    tables passed on unchanged). Every desweep step reads its tables here.

    Raises
    ------
    DesweepInputError
        Missing, empty or unparsable file, or a ``required`` column missing.
    """
    import pandas as pd

    from desweep.keys import NAME_COLUMNS
    from desweep.names import NA_LIKE

    path = require_file(path, what=what)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        header = pd.read_csv(path, sep=sep, nrows=0).columns
        text = [c for c in header if all_text or c in NAME_COLUMNS or c in names]
        df = pd.read_csv(path, sep=sep, dtype={c: str for c in text}, keep_default_na=False,
                         na_values={c: sorted(NA_LIKE) for c in header if c not in text}, index_col=index_col)
    except Exception as err:
        raise DesweepInputError(path, what, f"cannot be parsed as {'TSV' if sep != ',' else 'CSV'}: {str(err).splitlines()[0]}") from err
    missing = [c for c in required if c not in df.columns and c != df.index.name]
    if missing:
        raise DesweepInputError(path, missing[0], f"column missing (have: {', '.join(map(str, df.columns))})")
    return df


def is_true(value: object) -> bool:
    """A boolean as a table read back gives it: ``True``/``False``, ``true``, ``1``/``0``, ``yes``; missing is False."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else False


def read_yaml(path: str | Path, *, what: str = "yaml", scalars_as_text: bool = False) -> Any:
    """Read a YAML file with a one-line error on bad syntax.

    ``scalars_as_text``: every scalar but ``null`` (``~``, empty) stays the text
    written (``01``, ``1.0``, ``no``, ``1:30`` are not numbers or booleans), for
    values whose type the reader knows better (names, command-line options).
    """
    import yaml

    path = require_file(path, what=what)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DesweepInputError(path, what, f"is not a YAML text file (byte {err.start} is not UTF-8 text; binary?)") from None
    try:
        return yaml.load(text, Loader=_text_loader() if scalars_as_text else yaml.SafeLoader)  # safe loaders only
    except yaml.YAMLError as err:
        raise DesweepInputError(path, what, f"is not valid YAML: {str(err).splitlines()[0]}") from err


def _text_loader() -> type:
    """A safe YAML loader that resolves no scalar type but null."""
    import yaml

    class TextLoader(yaml.SafeLoader):
        pass

    null = "tag:yaml.org,2002:null"
    TextLoader.yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag == null]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return TextLoader


def file_checksum(path: str | Path, *, algorithm: str = "sha256") -> str:
    """Return the hex digest of a file's content (or of every file below a folder: their paths in it and content, in sorted order).

    A file's own name is left out, so the same bytes reached through a symlink,
    a copy or a Nextflow stage folder give the same digest.
    """
    path = Path(path)
    digest = hashlib.new(algorithm)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _looks_like_text(path: Path) -> bool:
    with path.open("rb") as fh:
        sample = fh.read(512)
    return bool(sample) and all(32 <= b < 127 or b in (9, 10, 13) for b in sample)


def read_gene_list(value: str) -> list[str]:
    """Genes given as a comma-separated list (a name holding ``,`` in double quotes), or a file.

    The file holds one gene per line (blank lines and ``#`` comments skipped),
    or is a CSV whose ``gene`` column lists them (e.g. a DE table).
    """
    from desweep.names import split_list

    path = Path(value)
    if not path.exists():
        if "/" in value or value.endswith((".txt", ".csv", ".tsv")):
            raise DesweepInputError(value, "--genes", "file does not exist")
        try:
            return split_list(value)
        except ValueError as err:
            raise DesweepInputError("--genes", "genes", f"{err}; write a name holding ',' in double quotes") from None
    require_file(path, what="--genes")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if lines and "," in lines[0]:
        return list(read_csv(path, required=["gene"], what="--genes")["gene"])
    return lines


def prepare_outdir(outdir: Path) -> Path:
    """Create ``outdir`` and remove temporary files ended processes left there; a one-line error if it is a file or not writable."""
    if outdir.exists() and not outdir.is_dir():
        raise DesweepInputError(outdir, "--outdir", "exists and is a file, not a folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DesweepInputError(outdir, "--outdir", f"cannot be created: {err.strerror}") from err
    if not os.access(outdir, os.W_OK):
        raise DesweepInputError(outdir, "--outdir", "is not writable")
    remove_stale_partials(outdir)
    return outdir


def read_plan_tables(plan: pd.DataFrame, tables_dir: Path) -> dict[str, pd.DataFrame]:
    """``combination_id`` -> its DE table for every plan row whose ``<tables_dir>/<id>.csv`` exists."""
    tables = {}
    for cid in plan["combination_id"].astype(str):
        path = tables_dir / f"{cid}.csv"
        if path.exists():
            tables[cid] = read_csv(path, required=("gene",), what="DE table")
    return tables

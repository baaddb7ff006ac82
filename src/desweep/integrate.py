"""scVI integration with training history and integration QC metrics.

Gene selection
--------------
scVI's differential expression and normalized expression exist only for the
genes the model was trained on, so genes left out here can never be reported
later. The default keeps every gene when the data has at most ``4000`` genes and
otherwise the 4,000 most variable genes (``seurat_v3`` on counts, batch-aware),
which holds the usual markers while keeping training fast. Pass ``n_top_genes=0``
to keep every gene, or add known markers with ``extra_genes``.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from math import ceil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from desweep import keys
from desweep.compute import safe_batch_size
from desweep.datakeys import get_keys
from desweep.errors import DesweepInputError, ParameterError

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI

logger = logging.getLogger(__name__)

GeneLikelihood = Literal["nb", "zinb", "poisson"]
DEFAULT_N_TOP_GENES = 4000
TRAIN_SIZE = 0.9


def select_genes(
    adata: AnnData, *, batch_key: str, n_top_genes: int = DEFAULT_N_TOP_GENES, extra_genes: list[str] | None = None
) -> AnnData:
    """Keep every gene (``n_top_genes=0`` or fewer genes than asked) or the top ``seurat_v3`` genes.

    Returns
    -------
    ``adata`` itself when every gene is kept (no copy of the counts), else a
    copy restricted to the kept genes; ``var['desweep_hvg']`` marks genes
    chosen for variability, ``var['desweep_extra']`` genes kept on request.
    """
    import scanpy as sc

    if n_top_genes < 0:
        raise ParameterError("n_top_genes", "n_top_genes", f"must be 0 (all genes) or positive, got {n_top_genes}")
    extra = list(extra_genes or [])
    absent = [g for g in extra if g not in adata.var_names]
    if absent:
        raise ParameterError("extra_genes", absent[0], f"not a gene of the data ({len(absent)} of {len(extra)} absent; "
                                f"{adata.n_vars} genes with counts, e.g. {', '.join(map(str, adata.var_names[:3]))})")
    if n_top_genes == 0 or n_top_genes >= adata.n_vars:
        keep = np.ones(adata.n_vars, dtype=bool)
        hvg = keep
    else:
        table = sc.pp.highly_variable_genes(
            adata, flavor="seurat_v3", n_top_genes=n_top_genes, batch_key=batch_key, inplace=False, span=0.5
        )
        hvg = table["highly_variable"].to_numpy()
        keep = hvg | adata.var_names.isin(extra)
    out = adata if keep.all() else adata[:, keep].copy()
    out.var["desweep_hvg"] = hvg[keep]
    out.var["desweep_extra"] = out.var_names.isin(extra)
    logger.info("modelling %d of %d genes", out.n_vars, adata.n_vars)
    return out


def training_passes(n_cells: int, *, train_size: float = TRAIN_SIZE) -> tuple[int, int, int]:
    """The cells of each pass over the data in training: the training split, the validation split, and every cell."""
    n_train = ceil(train_size * n_cells)
    return n_train, n_cells - n_train, n_cells


def default_batch_size(n_cells: int, accelerator: str) -> int:
    """128 (scvi-tools' default) on the CPU; larger on a GPU, where per-step overhead dominates.

    On an H200, each training step cost about 12 ms whatever its size, so
    batch 1024 trained 7.5x faster per epoch than 128 (see docs/benchmarks.md).
    """
    if accelerator != "gpu":
        return 128
    return int(min(1024, max(128, 2 ** int(np.log2(max(n_cells, 1) / 40)))))


def default_max_epochs(n_cells: int) -> int:
    """scvi-tools' own heuristic: ``min(round(20000 / n_cells * 400), 400)``, at least 1 (8 epochs at 1,000,000 cells)."""
    return int(max(1, min(round(20000 / max(n_cells, 1) * 400), 400)))


def default_kl_warmup_epochs(max_epochs: int) -> int:
    """KL warm-up over the first quarter of training (at most scvi-tools' 400 epochs).

    scvi-tools warms the KL weight up over 400 epochs whatever ``max_epochs`` is,
    so a shorter training never reaches the full KL weight and keeps batch
    information in the latent space. Measured on simulated data (1,500 cells,
    150 epochs): kNN batch entropy 0.45 with the 400-epoch warm-up, 0.84 with 30.
    """
    return int(max(1, min(400, max_epochs // 4)))


def train_scvi(
    adata: AnnData,
    *,
    batch_key: str,
    categorical_covariates: list[str] | None = None,
    continuous_covariates: list[str] | None = None,
    n_latent: int = 10,
    n_layers: int = 1,
    n_hidden: int = 128,
    gene_likelihood: GeneLikelihood = "zinb",
    max_epochs: int | None = None,
    early_stopping: bool = True,
    batch_size: int | None = None,
    kl_warmup_epochs: int | None = None,
    learning_rate: float = 1e-3,
    accelerator: str = "cpu",
    seed: int = 0,
) -> tuple[SCVI, pd.DataFrame, dict[str, float]]:
    """Set up and train scVI on raw counts in ``X``.

    Returns
    -------
    The trained model, its training history (one row per epoch) and a summary
    (``train_seconds``, ``epochs``, ``batch_size``).
    """
    import scvi

    for column in (categorical_covariates or []) + (continuous_covariates or []):
        if column not in adata.obs:
            raise DesweepInputError("covariates", f"obs['{column}']", "missing from the validated data")
    scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(
        adata,
        batch_key=batch_key,
        categorical_covariate_keys=categorical_covariates or None,
        continuous_covariate_keys=continuous_covariates or None,
    )
    model = scvi.model.SCVI(adata, n_latent=n_latent, n_layers=n_layers, n_hidden=n_hidden, gene_likelihood=gene_likelihood)
    epochs = max_epochs or default_max_epochs(adata.n_obs)
    size = safe_batch_size(training_passes(adata.n_obs), batch_size or default_batch_size(adata.n_obs, accelerator))
    warmup = kl_warmup_epochs or default_kl_warmup_epochs(epochs)
    logger.info("training scVI: %d cells, %d genes, %d epochs max (KL warm-up %d), batch size %d, %s",
                adata.n_obs, adata.n_vars, epochs, warmup, size, accelerator)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Lightning (2.5) calls torch's deprecated isinstance(x, LeafSpec) in every step; nothing desweep can change
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
        model.train(
            max_epochs=epochs,
            batch_size=size,
            accelerator=accelerator,
            devices=1,
            train_size=TRAIN_SIZE,
            early_stopping=early_stopping,
            check_val_every_n_epoch=1,
            plan_kwargs={"n_epochs_kl_warmup": warmup, "lr": learning_rate},
            enable_progress_bar=sys.stderr.isatty(),
            callbacks=[training_progress(epochs, early_stopping=early_stopping)],
        )
    elapsed = time.perf_counter() - start
    history = training_history(model)
    logger.info("trained %d epochs in %.1f s (%.2f s/epoch)", len(history), elapsed, elapsed / max(len(history), 1))
    return model, history, {"train_seconds": elapsed, "epochs": len(history), "batch_size": size}


def training_progress(max_epochs: int, *, early_stopping: bool = False):
    """A Lightning callback that logs epoch, ELBO (train, validation), elapsed and remaining time.

    One line after the first epoch and then every tenth of ``max_epochs``
    (:class:`desweep.progress.ProgressLog`), so a log file shows training
    progress without a line per epoch; Lightning's own bar is shown only on a
    terminal.
    """
    from lightning.pytorch.callbacks import Callback

    from desweep.progress import ProgressLog

    class TrainingProgress(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            self.progress = ProgressLog(logger, "training", max_epochs, unit="epoch",
                                        bound="at most" if early_stopping else "about")

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            metrics = trainer.callback_metrics
            elbo = [f"{name} {float(metrics[key]):.1f}" for name, key in (("train", "elbo_train"), ("validation", "elbo_validation"))
                    if key in metrics]
            self.progress.update(trainer.current_epoch + 1, f"ELBO {', '.join(elbo)}" if elbo else "")

    return TrainingProgress()


def training_history(model: SCVI) -> pd.DataFrame:
    """Merge scvi-tools' per-metric history frames into one table indexed by epoch."""
    frames = [frame.rename(columns=lambda c, name=name: name) for name, frame in model.history.items() if len(frame)]
    history = pd.concat(frames, axis=1) if frames else pd.DataFrame()
    history.index.name = "epoch"
    return history.reset_index()


def warn_labels_as_covariate(labels_key: str | None, categorical_covariates: list[str] | None) -> bool:
    """Warn when the labels compared are also a training covariate; whether it warned.

    scVI then explains the labels' differences by the covariate, outside the
    latent space, and the DE between those labels compares decodings that
    condition on the label itself: allowed (a deliberate design), but rarely meant.
    """
    if not labels_key or labels_key not in (categorical_covariates or []):
        return False
    logger.warning("obs['%s'] is both the labels compared (--labels-key) and a training covariate (--categorical-covariates): "
                   "scVI then models the label differences as a covariate effect; leave it out of the covariates unless "
                   "that is meant", labels_key)
    return True


def integrate(
    adata: AnnData, *, source: str = "validated.h5ad", n_top_genes: int = DEFAULT_N_TOP_GENES,
    extra_genes: list[str] | None = None, **train_kwargs,
) -> tuple[AnnData, SCVI, pd.DataFrame, pd.DataFrame]:
    """Select genes, train scVI, store ``obsm['X_scVI']`` and compute integration metrics.

    Returns
    -------
    ``(integrated, model, history, metrics)``: the AnnData the model was trained
    on (with ``obsm['X_scVI']``), the model, the training history and the
    integration metrics (see :func:`integration_metrics`).
    """
    data_keys = get_keys(adata, source)
    warn_labels_as_covariate(data_keys.labels_key, train_kwargs.get("categorical_covariates"))
    modelled = select_genes(adata, batch_key=data_keys.batch_key, n_top_genes=n_top_genes, extra_genes=extra_genes)
    model, history, training = train_scvi(modelled, batch_key=data_keys.batch_key, **train_kwargs)
    modelled.obsm[keys.X_SCVI] = model.get_latent_representation(batch_size=safe_batch_size([modelled.n_obs], 512))
    metrics = integration_metrics(modelled, batch_key=data_keys.batch_key, labels_key=data_keys.labels_key)
    # wall time stays out of metrics.csv so that equal inputs give equal tables
    extra_rows = pd.DataFrame(
        [{"metric": k, "embedding": keys.X_SCVI, "value": float(training[k])} for k in ("epochs", "batch_size")]
    )
    return modelled, model, history, pd.concat([metrics, extra_rows], ignore_index=True)


def integration_metrics(
    adata: AnnData, *, batch_key: str, labels_key: str | None, n_neighbors: int = 30, max_cells: int = 5000, seed: int = 0
) -> pd.DataFrame:
    """Batch mixing and label conservation of ``X_scVI`` against an unintegrated PCA.

    Simple, documented equivalents of the scib metrics, computed on at most
    ``max_cells`` cells (seeded subsample) so that the cost stays linear:

    - ``batch_entropy``: mean over cells of the Shannon entropy of the batch mix
      among the ``n_neighbors`` nearest neighbours, divided by ``log(n_batches)``
      (1 = perfectly mixed). With labels, only cells of labels present in
      several batches count, since a batch-specific cluster should not mix.
    - ``batch_asw``: scib's batch silhouette, ``1 - |silhouette(batch)|``
      averaged within each shared label (1 = mixed). Needs labels.
    - ``label_asw``: ``(silhouette(label) + 1) / 2`` (1 = labels separated).
    - ``label_knn_purity``: share of neighbours with the cell's own label.

    Returns
    -------
    A long table with columns ``metric, embedding, value``.
    """
    import scanpy as sc

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(adata.n_obs, size=min(max_cells, adata.n_obs), replace=False))
    sub = adata[idx].copy()
    baseline = sub.copy()
    sc.pp.normalize_total(baseline, target_sum=1e4)
    sc.pp.log1p(baseline)
    n_pcs = int(min(30, baseline.n_vars - 1, baseline.n_obs - 1))
    embeddings = {
        "X_pca_unintegrated": sc.pp.pca(baseline.X, n_comps=n_pcs, random_state=seed),
        keys.X_SCVI: np.asarray(sub.obsm[keys.X_SCVI]),
    }
    batches = sub.obs[batch_key].astype(str).to_numpy()
    labels = sub.obs[labels_key].astype(str).to_numpy() if labels_key else None
    shared = _shared_label_mask(batches, labels)
    rows = []
    for name, emb in embeddings.items():
        neighbours = _knn(emb, n_neighbors)
        rows.append(("batch_entropy", name, _batch_entropy(batches, neighbours, shared)))
        if labels is not None:
            rows.append(("batch_asw", name, _batch_asw(emb, batches, labels, shared)))
            rows.append(("label_asw", name, _label_asw(emb, labels)))
            rows.append(("label_knn_purity", name, float((labels[neighbours] == labels[:, None]).mean())))
    return pd.DataFrame(rows, columns=["metric", "embedding", "value"])


def _knn(embedding: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    k = min(k, embedding.shape[0] - 1)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(embedding)
    return nn.kneighbors(embedding, return_distance=False)[:, 1:]


def _shared_label_mask(batches: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    if labels is None:
        return np.ones(batches.size, dtype=bool)
    n_batches_per_label = pd.Series(batches).groupby(labels).nunique()
    return pd.Series(labels).map(n_batches_per_label).to_numpy() > 1


def _batch_entropy(batches: np.ndarray, neighbours: np.ndarray, mask: np.ndarray) -> float:
    levels, codes = np.unique(batches, return_inverse=True)
    if levels.size < 2 or not mask.any():
        return float("nan")
    counts = np.stack([(codes[neighbours] == b).sum(axis=1) for b in range(levels.size)], axis=1)
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return float(entropy[mask].mean() / np.log(levels.size))


def _batch_asw(embedding: np.ndarray, batches: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    from sklearn.metrics import silhouette_samples

    scores = []
    for label in np.unique(labels[mask]):
        cells = labels == label
        if np.unique(batches[cells]).size < 2 or cells.sum() < 3:
            continue
        s = silhouette_samples(embedding[cells], batches[cells])
        scores.append(np.mean(1 - np.abs(s)))
    return float(np.mean(scores)) if scores else float("nan")


def _label_asw(embedding: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    if np.unique(labels).size < 2:
        return float("nan")
    return float((silhouette_score(embedding, labels) + 1) / 2)


def data_fingerprint(adata: AnnData) -> dict[str, object]:
    """What a model is bound to: its genes (in order), batches, cells and counts (sha256 of each).

    ``desweep integrate`` stores it beside the model (:data:`desweep.keys.MODEL_FINGERPRINT`);
    every step that loads the model compares it with its data (:func:`load_model`).
    """
    import hashlib

    import scipy.sparse as sp

    def sha(*parts: bytes | tuple[np.ndarray, type]) -> str:
        digest = hashlib.sha256()
        for part in parts:
            if isinstance(part, bytes):
                digest.update(part)
                continue
            array, dtype = part  # in blocks: no full-size copy of a large matrix
            for start in range(0, array.size, 1 << 22):
                digest.update(np.ascontiguousarray(array[start:start + (1 << 22)], dtype=dtype).tobytes())
        return digest.hexdigest()

    batch_key = get_keys(adata, "data").batch_key
    batches = adata.obs[batch_key].astype(str)
    stored = _canonical_stored_csr(adata.X)
    if stored is not None:  # a backed file's arrays, hashed in pieces from disk
        counts = sha((stored["data"], np.float32), (stored["indices"], np.int64), (stored["indptr"], np.int64))
    else:
        x = sp.csr_matrix(adata.X.to_memory() if hasattr(adata.X, "to_memory") else adata.X)
        x.sum_duplicates()
        x.sort_indices()
        counts = sha((x.data, np.float32), (x.indices, np.int64), (x.indptr, np.int64))
    return {
        "n_genes": int(adata.n_vars), "genes": sha("\0".join(map(str, adata.var_names)).encode()),
        "batches": sorted(set(batches)),
        "n_cells": int(adata.n_obs), "cells": sha("\0".join(f"{c}\1{b}" for c, b in zip(adata.obs_names, batches, strict=True)).encode()),
        "counts": counts,
    }


def _canonical_stored_csr(matrix: Any) -> Any:
    """The HDF5 group of a backed CSR ``X`` whose stored arrays are canonical (column indices increasing in each row), else ``None``.

    Canonical arrays are what the in-memory fingerprint hashes after
    ``sum_duplicates`` and ``sort_indices``, so they are hashed as stored; the
    check reads ``indptr`` and ``indices`` a piece at a time.
    """
    from anndata.abc import CSRDataset

    if not isinstance(matrix, CSRDataset):
        return None
    group = matrix.group
    indptr = group["indptr"][...]
    indices = group["indices"]
    step = 1 << 22
    for start in range(0, int(indptr[-1]), step):
        piece = indices[start : min(start + step + 1, int(indptr[-1]))].astype(np.int64)
        rising = np.diff(piece) > 0
        row_ends = indptr[(indptr > start) & (indptr < start + piece.size)] - start - 1  # a new row may start lower
        rising[row_ends[row_ends < rising.size]] = True
        if not rising.all():
            return None
    return group


def check_fingerprint(recorded: dict[str, object], adata: AnnData, *, model_dir: str, source: str) -> None:
    """Raise when ``adata`` is not the data the model was trained on (:func:`data_fingerprint`)."""
    current: dict[str, Any] = data_fingerprint(adata)
    recorded_batches: Any = recorded.get("batches") or []
    for field, what in (("genes", "genes"), ("batches", "batches"), ("cells", "cells or their batches"), ("counts", "counts")):
        if recorded.get(field) != current[field]:
            detail = {"genes": f"{recorded.get('n_genes')} genes in the model, {current['n_genes']} here",
                      "batches": f"model: {', '.join(map(str, recorded_batches))}; here: {', '.join(current['batches'])}",
                      "cells": f"{recorded.get('n_cells')} cells in the model, {current['n_cells']} here"}.get(field, "same shape, other values")
            raise DesweepInputError(model_dir, "model", f"was trained on other data than {source}: its {what} differ ({detail}); "
                                    "use the model integrate made from this data")


def save_model(model: SCVI, adata: AnnData, model_dir: Path) -> None:
    """Save ``model`` (without its data) and the fingerprint of ``adata``, the data it was trained on."""
    import json

    model.save(str(model_dir), overwrite=True, save_anndata=False)
    (Path(model_dir) / keys.MODEL_FINGERPRINT).write_text(json.dumps(data_fingerprint(adata), indent=1) + "\n")


def load_model(model_dir: str, adata: AnnData, *, accelerator: str = "cpu", source: str = "the data") -> SCVI:
    """Load a saved scVI model for ``adata``, with a one-line error when they do not match.

    The fingerprint saved with the model (genes, batches, cells, counts) must
    match ``adata``; a model without one (saved by another tool) is loaded with a warning.
    """
    import json

    import scvi

    if not (Path(model_dir) / "model.pt").is_file():
        raise DesweepInputError(model_dir, "model", "no saved scVI model in this folder (model.pt missing)")
    fingerprint = Path(model_dir) / keys.MODEL_FINGERPRINT
    if fingerprint.is_file():
        check_fingerprint(json.loads(fingerprint.read_text()), adata, model_dir=str(model_dir), source=source)
    else:
        logger.warning("%s has no %s: cannot check that it was trained on %s", model_dir, keys.MODEL_FINGERPRINT, source)
    try:
        return scvi.model.SCVI.load(model_dir, adata=adata, accelerator=accelerator)
    except (ValueError, KeyError, RuntimeError) as err:
        raise DesweepInputError(model_dir, "model", f"does not match the data (genes or batches differ): {str(err).splitlines()[0]}") from err

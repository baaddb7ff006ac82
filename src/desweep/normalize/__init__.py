"""scVI normalized expression for every ``transform_batch`` choice, in bounded memory.

What scvi-tools returns (1.4.2 to 1.5.x, see ``docs/normalized_expression.md``)
-------------------------------------------------------------------------------
``model.get_normalized_expression(transform_batch=..., n_samples=S, return_mean=...)``

- ``transform_batch=None`` decodes each cell in its own batch; a single batch
  ``b`` decodes every cell as if it came from ``b``; a **list** of batches is
  **always averaged over the batches** (there is no per-batch axis in the
  result, whatever ``return_mean`` says).
- ``return_mean`` only concerns the posterior samples: with ``S > 1`` and
  ``return_mean=False`` the result is an array ``(S, cells, genes)`` (axis 0 =
  posterior sample of ``z``; each sample already averaged over the listed
  batches); with ``return_mean=True`` it is ``(cells, genes)``, the mean over
  the ``S`` samples. With ``S = 1`` both give ``(cells, genes)``.
- ``z`` is sampled from the posterior on every call (and afresh for every batch
  of a list), so two calls differ unless the seed is reset.

What desweep adds
-----------------
:func:`export_normalized` decodes every chunk of cells once per batch from the
**same** posterior draws of ``z`` (common random numbers), so that

- one layer per decoded batch is available (the counterfactual "every cell
  measured in batch ``b``"), which scvi-tools does not return for a list;
- ``mean_all_batches`` is exactly the mean of those per-batch layers (scvi-tools'
  list output, up to its independent per-batch draws: equal in expectation);
- ``own_batch`` equals ``batch__<b>`` for the cells of batch ``b``;
- the draws are generated per block of cells from ``seed``, so the result does
  not depend on the chunk size and is identical for equal seeds.

Which genes the layers hold
---------------------------
Dense layers of every gene do not fit at atlas sizes (5 layers of 1,000,000
cells x 4,000 genes are 80 GB). ``desweep normalize`` therefore keeps by
default the genes a user plots: the union of every DE table's top ``top_n``
genes plus the genes asked for (:func:`select_layer_genes`), or every gene with
``--all-genes``. ``cluster_batch_means.csv`` always covers every modelled gene:
the means are summed chunk by chunk while decoding, so they never need the
full layers.

Memory holds the output layers (float32, ``cells x layer genes`` each) plus one
working block of about ``n_samples x chunk x modelled genes``;
:func:`plan_memory` checks both against ``max_memory_gb`` before anything is
computed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from desweep import keys
from desweep.choices import check_choice
from desweep.datakeys import get_keys
from desweep.errors import ParameterError
from desweep.normalize.decode import NOISE_BLOCK, decoded_chunks, latent_noise
from desweep.normalize.genes import CLASSIFIED_TOP_N, GeneSelection, describe_layer_genes, gene_positions, select_layer_genes
from desweep.normalize.layers import (
    CHOICE_HELP, CHOICES, DEFAULT_CHOICES, DEFAULT_LIBRARY_SIZE, LATENTS, Choice, Latent, LayerSpec, check_choices, layer_plan,
    model_batches, parse_library_size,
)
from desweep.normalize.means import ClusterBatchSums, cluster_batch_means
from desweep.normalize.memory import DEFAULT_MAX_MEMORY_GB, MAX_CHUNK, MemoryPlan, plan_memory

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI

__all__ = [
    "CHOICES", "CHOICE_HELP", "DEFAULT_CHOICES", "DEFAULT_LIBRARY_SIZE", "DEFAULT_MAX_MEMORY_GB", "CLASSIFIED_TOP_N", "LATENTS",
    "MAX_CHUNK", "NOISE_BLOCK", "Choice", "ClusterBatchSums", "GeneSelection", "Latent", "LayerSpec", "MemoryPlan",
    "check_choices", "cluster_batch_means", "describe_layer_genes", "export_normalized", "gene_positions", "latent_noise",
    "layer_plan", "model_batches", "parse_library_size", "plan_memory", "select_layer_genes",
]

logger = logging.getLogger(__name__)


def export_normalized(
    adata: AnnData, model: SCVI, *,
    choices: Sequence[str] = DEFAULT_CHOICES, batches: Sequence[str] | None = None, genes: Sequence[str] | None = None,
    library_size: float | Literal["latent"] = DEFAULT_LIBRARY_SIZE, n_samples: int = 1, latent: Latent = "sample",
    chunk_size: int | None = None, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB, seed: int = 0,
    source: str = keys.CLUSTERED_H5AD,
) -> tuple[AnnData, pd.DataFrame]:
    """scVI normalized expression for each choice, one float32 layer per output.

    Parameters
    ----------
    adata
        The clustered AnnData the model was loaded against (raw counts in
        ``X``, batch and group keys recorded in ``uns['desweep']``).
    model
        The trained scVI model (``desweep.integrate.load_model``).
    choices
        Any of :data:`CHOICES` (or ``["all"]``); see :data:`CHOICE_HELP`.
    batches
        The batches to decode in and average over (``each_batch``,
        ``mean_all_batches``, ``all_batches_samples``); default: every batch of
        the model.
    genes
        Genes whose layers to export (any order; written in model order);
        default every modelled gene. Genes the model lacks are skipped with a
        warning. The means cover every modelled gene in any case.
    library_size
        ``"latent"`` (each cell's own library size: expected counts), or a
        number every cell is scaled to (``1`` gives frequencies, ``1e4``
        counts per 10,000).
    n_samples
        Posterior draws of ``z`` per cell (``latent="sample"``); layers are
        means over them except ``all_batches_samples``, which keeps each.
    latent
        ``"sample"`` draws ``z`` from the posterior as scvi-tools does;
        ``"mean"`` decodes the posterior mean (deterministic, ``n_samples=1``).
    chunk_size
        Cells decoded at a time; default: the largest that fits
        ``max_memory_gb`` (see :func:`plan_memory`).
    max_memory_gb
        Cap on the estimated memory (output layers + one working chunk).
    seed
        Seed of the posterior draws; equal seeds give identical layers for any
        ``chunk_size``.
    source
        The file ``adata`` was read from (for error messages).

    Returns
    -------
    ``(normalized, means)``: an AnnData with the exported genes (``X``: their raw
    counts; ``obs``/``obsm`` copied; one layer per :class:`LayerSpec`;
    ``uns['desweep_normalize']`` with the parameters and the ``layers`` table),
    and the long table of :func:`cluster_batch_means` over every layer except
    the posterior samples, for every modelled gene whatever ``genes`` is
    (summed while decoding, so the layers of other genes are never kept).
    """
    import anndata as ad
    import scvi

    data_keys = get_keys(adata, source, need_groups=True)
    chosen = check_choices(choices)
    check_choice(latent, Latent, source="--latent", field="latent")
    if n_samples < 1:
        raise ParameterError("n_samples", "n_samples", f"must be at least 1, got {n_samples}")
    if latent == "mean" and n_samples != 1:
        raise ParameterError("n_samples", "n_samples", "--latent mean decodes one value of z: use --n-samples 1")
    if latent == "mean" and "all_batches_samples" in chosen:
        raise ParameterError("choices", "all_batches_samples", "keeps posterior samples: needs --latent sample")
    if "all_batches_samples" in chosen and n_samples == 1:
        logger.warning("all_batches_samples with --n-samples 1 gives one sample layer, equal to mean_all_batches")
    library = parse_library_size(library_size)
    all_batches = model_batches(model)
    if batches is None:
        batches = all_batches
    else:
        batches = list(dict.fromkeys(str(b) for b in batches))
        unknown = [b for b in batches if b not in all_batches]
        if unknown or not batches:
            raise ParameterError("batches", unknown[0] if unknown else "batches",
                                    f"not a batch of the model (batches: {', '.join(all_batches)})")
    gene_idx, missing = gene_positions(adata.var_names, genes)
    specs = layer_plan(chosen, batches, n_samples=n_samples)
    plan = plan_memory(n_cells=adata.n_obs, n_genes_model=adata.n_vars, n_genes_out=gene_idx.size, n_layers=len(specs),
                       n_samples=n_samples, max_memory_gb=max_memory_gb, chunk_size=chunk_size)
    logger.info("exporting %d layers of %d cells x %d genes (%.2f GiB) in chunks of %d cells (%.2f GiB working)",
                len(specs), adata.n_obs, gene_idx.size, plan.output_bytes / 2**30, plan.chunk_size, plan.working_bytes / 2**30)

    codes = [all_batches.index(b) for b in batches]
    layers = {spec.layer: np.empty((adata.n_obs, gene_idx.size), dtype=np.float32) for spec in specs}
    sums = ClusterBatchSums(adata.obs, group_key=data_keys.groups, batch_key=data_keys.batch_key, n_genes=adata.n_vars)
    for spec, start, stop, values in decoded_chunks(adata, model, specs=specs, codes=codes, library=library,
                                                     n_samples=n_samples, latent=latent, chunk_size=plan.chunk_size, seed=seed):
        layers[spec.layer][start:stop] = values[:, gene_idx]
        if spec.sample < 0:  # posterior-sample layers stay out of the means
            sums.add(spec.suffix, start, stop, values)

    out = ad.AnnData(X=_counts_of_genes(adata.X, gene_idx), obs=adata.obs.copy(), var=adata.var.iloc[gene_idx].copy(), layers=layers)
    for key in (keys.X_SCVI, keys.X_UMAP):
        if key in adata.obsm:
            out.obsm[key] = np.asarray(adata.obsm[key]).copy()
    out.uns[keys.UNS_DESWEEP] = dict(adata.uns[keys.UNS_DESWEEP])
    table = pd.DataFrame([asdict(s) for s in specs])
    out.uns[keys.UNS_NORMALIZE] = {
        "choices": list(chosen),
        "batches": list(batches),
        "library_size": str(library),
        "n_samples": int(n_samples),
        "latent": latent,
        "seed": int(seed),
        "chunk_size": int(plan.chunk_size),
        "genes_missing": list(missing),
        "scvi_tools_version": scvi.__version__,
        "layers": table,
    }
    return out, sums.table(adata.var_names, [s.suffix for s in specs if s.sample < 0])


def _counts_of_genes(matrix: Any, gene_idx: np.ndarray, *, chunk_size: int = 10_000) -> Any:
    """The counts of ``gene_idx`` for every cell: from a backed matrix a block of rows at a time, never the whole matrix."""
    from anndata.abc import CSRDataset

    from desweep.chunks import take_columns

    if not isinstance(matrix, CSRDataset):
        return matrix[:, gene_idx].copy()
    return take_columns(matrix, gene_idx, chunk_size=chunk_size)

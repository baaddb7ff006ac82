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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from desweep import keys
from desweep.datakeys import get_keys
from desweep.errors import DesweepInputError
from desweep.names import encode_name, join_names
from desweep.progress import ProgressLog

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI

logger = logging.getLogger(__name__)

Choice = Literal["own_batch", "each_batch", "mean_all_batches", "all_batches_samples"]
#: every choice, in the order layers are written
CHOICES: tuple[str, ...] = ("own_batch", "each_batch", "mean_all_batches", "all_batches_samples")
DEFAULT_CHOICES: tuple[str, ...] = ("own_batch", "each_batch", "mean_all_batches")
#: what each choice means in scvi-tools' terms
CHOICE_HELP: dict[str, str] = {
    "own_batch": "transform_batch=None: each cell decoded in its own batch",
    "each_batch": "transform_batch=b for every batch b: one layer per decoded batch",
    "mean_all_batches": "transform_batch=[all batches], return_mean=True: mean over batches and posterior samples",
    "all_batches_samples": "transform_batch=[all batches], return_mean=False: one layer per posterior sample, each a mean over batches",
}
Latent = Literal["sample", "mean"]
LATENTS: tuple[str, ...] = ("sample", "mean")
DEFAULT_LIBRARY_SIZE = 1e4
DEFAULT_MAX_MEMORY_GB = 16.0
#: top genes of each DE table kept in the layers: ``desweep diagnose``'s default --top-n
DEFAULT_TOP_N = 50
MAX_CHUNK = 4096
#: cells per block of posterior noise; the noise of a cell depends only on seed and its position
NOISE_BLOCK = 1024
#: dense float32 blocks of n_samples x chunk x modelled genes alive while one batch is decoded
#: (scale, rate, zero-inflation logits, softmax input, the copy on the CPU, the running sum over batches)
_WORK_BLOCKS = 7
_SAFETY = 0.5  # use at most half the working budget for the chunk estimate
_MEANS_BLOCK = 16384  # cells per block when summing layers per cluster and batch


@dataclass(frozen=True)
class LayerSpec:
    """One output layer.

    Attributes
    ----------
    layer
        The layer name in ``normalized.h5ad`` (``scvi_norm__...``).
    choice
        The choice it belongs to (one of :data:`CHOICES`).
    transform_batch
        The decoding in scvi-tools' terms: ``None`` (own batch), a batch, or
        ``"[all]"`` / the list of batches averaged (:func:`desweep.names.join_names`).
    return_mean
        Whether the posterior samples were averaged.
    sample
        The posterior sample index for ``all_batches_samples``, else ``-1``.
    """

    layer: str
    choice: str
    transform_batch: str
    return_mean: bool
    sample: int = -1

    @property
    def suffix(self) -> str:
        """The layer name without :data:`desweep.keys.NORM_LAYER_PREFIX` (the ``choice`` column of the means table)."""
        return self.layer[len(keys.NORM_LAYER_PREFIX):]


@dataclass(frozen=True)
class MemoryPlan:
    """Memory estimate of an export (bytes) and the chunk size used."""

    output_bytes: int
    bytes_per_chunk_cell: int
    chunk_size: int
    budget_bytes: int

    @property
    def working_bytes(self) -> int:
        return self.bytes_per_chunk_cell * self.chunk_size

    @property
    def total_bytes(self) -> int:
        return self.output_bytes + self.working_bytes


def parse_library_size(value: str | float | int) -> float | Literal["latent"]:
    """``"latent"`` or a positive number (``1``, ``1e4``, ``"10000"``)."""
    if isinstance(value, str) and value.strip().lower() == "latent":
        return "latent"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DesweepInputError("--library-size", "library_size", f"must be 'latent' or a positive number, got {value!r}") from None
    if not np.isfinite(number) or number <= 0:
        raise DesweepInputError("--library-size", "library_size", f"must be 'latent' or a positive number, got {value!r}")
    return number


def check_choices(choices: Sequence[str]) -> tuple[str, ...]:
    """Validate and order ``choices`` (``"all"`` expands to every choice)."""
    wanted = list(choices)
    if "all" in wanted:
        wanted = list(CHOICES)
    if not wanted:
        raise DesweepInputError("--choices", "choices", f"give at least one of {', '.join(CHOICES)}")
    unknown = [c for c in wanted if c not in CHOICES]
    if unknown:
        raise DesweepInputError("--choices", unknown[0], f"unknown choice; use one of {', '.join(CHOICES)} or all")
    return tuple(c for c in CHOICES if c in wanted)


def model_batches(model: SCVI) -> list[str]:
    """The batch categories of the model, in the order of their codes."""
    from scvi import REGISTRY_KEYS

    mapping = model.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
    return [str(b) for b in mapping]


def select_genes(var_names: Sequence[str], genes: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """Positions of the requested genes among the modelled ones (in model order) and those missing.

    ``genes=None`` selects every modelled gene. Genes that the model does not
    contain are returned (and logged); none found at all is an error.
    """
    var_names = pd.Index([str(v) for v in var_names])
    if genes is None:
        return np.arange(len(var_names)), []
    wanted = list(dict.fromkeys(str(g).strip() for g in genes if str(g).strip()))
    if not wanted:
        raise DesweepInputError("--genes", "genes", "the gene list is empty")
    missing = [g for g in wanted if g not in var_names]
    idx = np.flatnonzero(var_names.isin(wanted))
    if idx.size == 0:
        raise DesweepInputError("--genes", "genes", f"none of the {len(wanted)} genes is modelled (e.g. {missing[0]!r}); "
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
    top_n: int = DEFAULT_TOP_N,
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
        raise DesweepInputError("--top-n", "top_n", f"must be at least 1, got {top_n}")
    tables = tables or {}
    wanted = tuple(dict.fromkeys(str(g).strip() for g in (requested or []) if str(g).strip()))
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


def layer_plan(choices: Sequence[str], batches: Sequence[str], *, n_samples: int) -> list[LayerSpec]:
    """The layers an export writes, in order (see :data:`CHOICE_HELP`).

    Batch names in layer names are encoded with :func:`desweep.names.encode_name`
    (safe for HDF5 keys, one-to-one, bounded); ``LayerSpec.transform_batch``
    keeps the real name.
    """
    prefix = keys.NORM_LAYER_PREFIX
    listed = join_names(batches)
    specs: list[LayerSpec] = []
    for choice in check_choices(choices):
        if choice == "own_batch":
            specs.append(LayerSpec(f"{prefix}{keys.NORM_OWN_BATCH}", choice, "None", True))
        elif choice == "each_batch":
            specs.extend(LayerSpec(f"{prefix}{keys.NORM_BATCH}__{encode_name(batch)}", choice, batch, True) for batch in batches)
        elif choice == "mean_all_batches":
            specs.append(LayerSpec(f"{prefix}{keys.NORM_MEAN_ALL_BATCHES}", choice, f"[{listed}]", True))
        else:
            specs.extend(
                LayerSpec(f"{prefix}{keys.NORM_MEAN_ALL_BATCHES}__{keys.NORM_SAMPLE}_{k}", choice, f"[{listed}]", False, k)
                for k in range(n_samples)
            )
    return specs


def plan_memory(
    *, n_cells: int, n_genes_model: int, n_genes_out: int, n_layers: int, n_samples: int,
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB, chunk_size: int | None = None,
) -> MemoryPlan:
    """Estimate the memory of an export and choose the chunk size.

    The output layers take ``n_layers x n_cells x n_genes_out x 4`` bytes; one
    chunk of ``c`` cells takes about ``4 x c x (7 x n_samples + 2) x
    n_genes_model`` bytes while it is decoded (every modelled gene is decoded:
    the cluster x batch means cover them all). The chunk
    size is the largest (up to 4,096) whose working block fits half of what the
    output leaves of ``max_memory_gb``.

    Raises
    ------
    DesweepInputError
        When the output layers alone exceed ``max_memory_gb``, or the given
        ``chunk_size`` does not fit.
    """
    if max_memory_gb <= 0:
        raise DesweepInputError("--max-memory-gb", "max_memory_gb", f"must be positive, got {max_memory_gb}")
    budget = int(max_memory_gb * 2**30)
    output = 4 * n_layers * n_cells * n_genes_out
    per_cell = 4 * (n_samples * _WORK_BLOCKS + 2) * n_genes_model
    if output + per_cell * min(n_cells, 16) > budget:
        raise DesweepInputError(
            "--max-memory-gb", "max_memory_gb",
            f"{n_layers} layers of {n_cells} cells x {n_genes_out} genes need {output / 2**30:.2f} GiB (float32), "
            f"more than {max_memory_gb:g} GiB: export fewer genes (--genes), fewer --choices / --n-samples, or raise --max-memory-gb",
        )
    if chunk_size is None:
        fit = int(_SAFETY * (budget - output) // per_cell)
        chunk_size = max(16, min(MAX_CHUNK, fit, n_cells))
    elif chunk_size < 1:
        raise DesweepInputError("--chunk-size", "chunk_size", f"must be at least 1, got {chunk_size}")
    else:
        chunk_size = min(chunk_size, max(n_cells, 1))
        if output + per_cell * chunk_size > budget:
            raise DesweepInputError(
                "--chunk-size", "chunk_size",
                f"{chunk_size} cells need {(output + per_cell * chunk_size) / 2**30:.2f} GiB with the outputs, "
                f"more than --max-memory-gb {max_memory_gb:g}: use a smaller chunk or leave it out",
            )
    return MemoryPlan(output_bytes=output, bytes_per_chunk_cell=per_cell, chunk_size=int(chunk_size), budget_bytes=budget)


def latent_noise(seed: int, start: int, stop: int, *, n_samples: int, n_dims: int, stream: int = 0) -> np.ndarray:
    """Standard normal draws ``(n_samples, stop - start, n_dims)`` for cells ``start:stop``.

    Drawn per block of :data:`NOISE_BLOCK` cells from ``(seed, block, stream)``,
    so a cell's draws depend on the seed and its position only, never on the
    chunk size.
    """
    blocks = []
    for block in range(start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK + 1):
        rng = np.random.default_rng([seed, block, stream])
        noise = rng.standard_normal((n_samples, NOISE_BLOCK, n_dims), dtype=np.float32)
        lo = max(start, block * NOISE_BLOCK) - block * NOISE_BLOCK
        hi = min(stop, (block + 1) * NOISE_BLOCK) - block * NOISE_BLOCK
        blocks.append(noise[:, lo:hi])
    return np.concatenate(blocks, axis=1)


def export_normalized(
    adata: AnnData,
    model: SCVI,
    *,
    choices: Sequence[str] = DEFAULT_CHOICES,
    batches: Sequence[str] | None = None,
    genes: Sequence[str] | None = None,
    library_size: float | Literal["latent"] = DEFAULT_LIBRARY_SIZE,
    n_samples: int = 1,
    latent: Latent = "sample",
    chunk_size: int | None = None,
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
    seed: int = 0,
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
    if latent not in LATENTS:
        raise DesweepInputError("--latent", "latent", f"must be one of {', '.join(LATENTS)}, got {latent!r}")
    if n_samples < 1:
        raise DesweepInputError("--n-samples", "n_samples", f"must be at least 1, got {n_samples}")
    if latent == "mean" and n_samples != 1:
        raise DesweepInputError("--n-samples", "n_samples", "--latent mean decodes one value of z: use --n-samples 1")
    if latent == "mean" and "all_batches_samples" in chosen:
        raise DesweepInputError("--choices", "all_batches_samples", "keeps posterior samples: needs --latent sample")
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
            raise DesweepInputError("--batches", unknown[0] if unknown else "batches",
                                    f"not a batch of the model (batches: {', '.join(all_batches)})")
    gene_idx, missing = select_genes(adata.var_names, genes)
    specs = layer_plan(chosen, batches, n_samples=n_samples)
    plan = plan_memory(n_cells=adata.n_obs, n_genes_model=adata.n_vars, n_genes_out=gene_idx.size, n_layers=len(specs),
                       n_samples=n_samples, max_memory_gb=max_memory_gb, chunk_size=chunk_size)
    logger.info("exporting %d layers of %d cells x %d genes (%.2f GiB) in chunks of %d cells (%.2f GiB working)",
                len(specs), adata.n_obs, gene_idx.size, plan.output_bytes / 2**30, plan.chunk_size, plan.working_bytes / 2**30)

    codes = [all_batches.index(b) for b in batches]
    layers = {spec.layer: np.empty((adata.n_obs, gene_idx.size), dtype=np.float32) for spec in specs}
    sums = ClusterBatchSums(adata.obs, group_key=data_keys.group_key, batch_key=data_keys.batch_key, n_genes=adata.n_vars)
    for spec, start, stop, values in _decoded_chunks(adata, model, specs=specs, codes=codes, library=library,
                                                     n_samples=n_samples, latent=latent, chunk_size=plan.chunk_size, seed=seed):
        layers[spec.layer][start:stop] = values[:, gene_idx]
        if spec.sample < 0:  # posterior-sample layers stay out of the means
            sums.add(spec.suffix, start, stop, values)

    out = ad.AnnData(X=adata.X[:, gene_idx].copy(), obs=adata.obs.copy(), var=adata.var.iloc[gene_idx].copy(), layers=layers)
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


def _decoded_chunks(
    adata: AnnData, model: SCVI, *, specs: list[LayerSpec], codes: list[int], library: float | Literal["latent"],
    n_samples: int, latent: Latent, chunk_size: int, seed: int,
) -> Iterator[tuple[LayerSpec, int, int, np.ndarray]]:
    """Decode chunk by chunk; yield ``(spec, start, stop, values)`` with every modelled gene, float32 ``(stop - start, genes)``.

    See :func:`export_normalized` for what each layer holds.
    """
    import torch
    from scvi import REGISTRY_KEYS

    adata = model._validate_anndata(adata)
    module = model.module
    n_cells = adata.n_obs
    by_choice: dict[str, list[LayerSpec]] = {}
    for s in specs:
        by_choice.setdefault(s.choice, []).append(s)
    batch_specs = dict(zip(codes, by_choice.get("each_batch", []), strict=False))
    own = by_choice.get("own_batch", [None])[0]
    mean_spec = by_choice.get("mean_all_batches", [None])[0]
    sample_specs = by_choice.get("all_batches_samples", [])
    need_batches = bool(batch_specs or mean_spec or sample_specs)
    output_key = "mu" if library == "latent" else "scale"
    scaling = 1.0 if library == "latent" else float(library)
    n_draws = 1 if latent == "mean" else n_samples
    n_latent = module.n_latent
    observed_library = bool(getattr(module, "use_observed_lib_size", True))
    z_transformation = module.z_encoder.z_transformation

    was_training = module.training
    module.eval()
    loader = model._make_data_loader(adata=adata, indices=np.arange(n_cells), batch_size=chunk_size, shuffle=False)
    progress = ProgressLog(logger, "normalized export", n_cells, unit="cells")
    start = 0
    try:
        with torch.inference_mode():
            for tensors in loader:
                stop = start + tensors[REGISTRY_KEYS.X_KEY].shape[0]
                inference = module.inference(**module._get_inference_input(tensors))
                qz = inference["qz"]
                device = qz.loc.device
                if latent == "mean":
                    z = z_transformation(qz.loc).unsqueeze(0)
                else:
                    eps = torch.from_numpy(latent_noise(seed, start, stop, n_samples=n_draws, n_dims=n_latent)).to(device)
                    z = z_transformation(qz.loc + qz.scale * eps)
                if observed_library:
                    lib = inference["library"]
                else:
                    ql = inference["ql"]
                    if latent == "mean":
                        lib = ql.loc
                    else:
                        eps_l = latent_noise(seed, start, stop, n_samples=n_draws, n_dims=1, stream=1)
                        lib = ql.loc + ql.scale * torch.from_numpy(eps_l).to(device)
                if lib.dim() == 2:
                    lib = lib.unsqueeze(0).expand(n_draws, -1, -1)
                generative_input = module._get_generative_input(tensors, {**inference, "z": z, "library": lib})

                def decode(code: int | None) -> np.ndarray:
                    values = module.generative(**generative_input, transform_batch=code)["px"].get_normalized(output_key)
                    if scaling != 1.0:
                        values = values * scaling
                    return values.float().cpu().numpy()  # (n_draws, chunk, genes)

                cell_codes = tensors[REGISTRY_KEYS.BATCH_KEY].reshape(-1).cpu().numpy().astype(int)
                own_from_batches = own is not None and need_batches and set(cell_codes) <= set(codes)
                own_values = None
                total = None
                if need_batches:
                    for code in codes:
                        values = decode(code)
                        if mean_spec or sample_specs:
                            total = values if total is None else total + values
                        batch_mean = values.mean(axis=0)
                        if code in batch_specs:
                            yield batch_specs[code], start, stop, batch_mean
                        if own_from_batches:
                            if own_values is None:
                                own_values = np.empty_like(batch_mean)
                            rows = cell_codes == code
                            own_values[rows] = batch_mean[rows]
                if own is not None:
                    yield own, start, stop, own_values if own_from_batches else decode(None).mean(axis=0)
                if total is not None:
                    total /= len(codes)
                    if mean_spec is not None:
                        yield mean_spec, start, stop, total.mean(axis=0)
                    for spec in sample_specs:
                        yield spec, start, stop, total[spec.sample]
                start = stop
                progress.update(stop)
    finally:
        module.train(was_training)
    if start != n_cells:  # pragma: no cover - a data loader that drops cells
        raise RuntimeError(f"decoded {start} of {n_cells} cells")


class ClusterBatchSums:
    """Sums of layers per (cluster, measured batch) and gene, added a block of cells at a time.

    Parameters
    ----------
    obs
        The cells' annotations (group and batch columns).
    group_key, batch_key
        obs columns of the clusters and the batches the cells were measured in.
    n_genes
        Genes (columns) of the blocks added.
    """

    def __init__(self, obs: pd.DataFrame, *, group_key: str, batch_key: str, n_genes: int) -> None:
        import scipy.sparse as sp

        self.clusters = _categories(obs[group_key])
        self.batches = _categories(obs[batch_key])
        c_codes = pd.Categorical(obs[group_key].astype(str), categories=self.clusters).codes
        b_codes = pd.Categorical(obs[batch_key].astype(str), categories=self.batches).codes
        valid = (c_codes >= 0) & (b_codes >= 0)  # cells without a cluster or batch count nowhere
        combined = c_codes[valid].astype(np.int64) * len(self.batches) + b_codes[valid]
        n_combinations = len(self.clusters) * len(self.batches)
        counts = np.bincount(combined, minlength=n_combinations)
        self.present = np.flatnonzero(counts)
        self.counts = counts[self.present]
        self.indicator = sp.csr_matrix(
            (np.ones(combined.size), (combined, np.flatnonzero(valid))), shape=(n_combinations, len(obs))
        )[self.present].tocsc()
        self.n_genes = n_genes
        self.sums: dict[str, np.ndarray] = {}

    def add(self, choice: str, start: int, stop: int, values: np.ndarray) -> None:
        """Add the values ``(stop - start, n_genes)`` of cells ``start:stop`` of one layer (float64 sums)."""
        total = self.sums.setdefault(choice, np.zeros((self.present.size, self.n_genes)))
        total += self.indicator[:, start:stop] @ np.asarray(values, dtype=np.float64)

    def table(self, genes: Sequence[str], choices: Sequence[str]) -> pd.DataFrame:
        """The long means table (see :func:`cluster_batch_means`), choices in the order given."""
        genes = np.asarray(genes, dtype=object)
        n_batches = len(self.batches)
        frames = [pd.DataFrame({
            "gene": np.tile(genes, self.present.size),
            "cluster": np.repeat(np.asarray(self.clusters, dtype=object)[self.present // n_batches], genes.size),
            "batch": np.repeat(np.asarray(self.batches, dtype=object)[self.present % n_batches], genes.size),
            "choice": choice,
            "mean": (self.sums[choice] / self.counts[:, None]).reshape(-1),
            "n_cells": np.repeat(self.counts, genes.size),
        }) for choice in choices]
        columns = ["gene", "cluster", "batch", "choice", "mean", "n_cells"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def cluster_batch_means(
    normalized: AnnData, *, group_key: str, batch_key: str, layers: Sequence[LayerSpec],
) -> pd.DataFrame:
    """Mean of each layer per gene, cluster and (observed) batch.

    Returns
    -------
    A long table ``gene, cluster, batch, choice, mean, n_cells`` with a row for
    every cluster x batch combination that has cells, ordered by choice (layer
    order), cluster, batch (category order) and gene (model order). ``batch``
    is the batch the cells were measured in; ``choice`` is the layer name
    without ``scvi_norm__`` (how they were decoded).
    """
    sums = ClusterBatchSums(normalized.obs, group_key=group_key, batch_key=batch_key, n_genes=normalized.n_vars)
    for spec in layers:
        for lo in range(0, normalized.n_obs, _MEANS_BLOCK):  # float64 sums without a float64 copy of the layer
            hi = min(lo + _MEANS_BLOCK, normalized.n_obs)
            sums.add(spec.suffix, lo, hi, normalized.layers[spec.layer][lo:hi])
    return sums.table(normalized.var_names, [spec.suffix for spec in layers])


def _categories(column: pd.Series) -> list[str]:
    if isinstance(column.dtype, pd.CategoricalDtype):
        present = set(column.astype(str))
        return [str(c) for c in column.cat.categories if str(c) in present]
    return sorted(set(column.astype(str)))

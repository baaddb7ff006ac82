"""The two samplers: scvi-tools' own (``scvi``) and decoding passes shared between sampling keys (``shared``).

See :mod:`desweep.de` for what each does and how it departs from scvi-tools.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from desweep.choices import check_choice, literal_values
from desweep.compute import safe_batch_size
from desweep.de.checks import batch_registry
from desweep.errors import ParameterError
from desweep.plan import SweepRow, sampling_keys

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI

Sampling = Literal["shared", "scvi"]
SAMPLINGS = literal_values(Sampling)
DEFAULT_N_SAMPLES = 5000
DEFAULT_BATCH_SIZE = 128


def first_row(plan: pd.DataFrame, sampling_key: str) -> SweepRow:
    """The sampling settings of a key: its first row (every row of a key shares them, :func:`~desweep.de.check_plan`)."""
    return SweepRow.from_record(plan[plan["sampling_key"] == sampling_key].iloc[0])


def _derive_seed(*parts: Any) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class SweepContext:
    """Caches shared by the sampling keys of one run (group masks, count statistics, decoded pools).

    Create one with :func:`make_context` to run several :func:`run_group` calls
    that share decoding passes; pools are freed once no remaining key needs them.
    """

    adata: Any
    model: Any
    group_key: str
    n_samples: int = DEFAULT_N_SAMPLES
    batch_size: int | None = None
    sampling: str = "shared"
    batch_names: list[str] = field(default_factory=list)
    batch_codes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))  # per cell, index into batch_names
    groups: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    pool_uses: Counter = field(default_factory=Counter)
    pools: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)
    decode_seconds: float = 0.0
    n_decode_passes: int = 0

    buffers: dict = field(default_factory=dict)

    def mask(self, group: str) -> np.ndarray:
        return np.asarray(self.groups == group)

    def buffer(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """A scratch array reused from key to key (fewer page faults than a fresh one each time)."""
        buf = self.buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != np.dtype(dtype):
            buf = self.buffers[name] = np.empty(shape, dtype=dtype)
        return buf


def make_context(
    adata: AnnData, model: SCVI, plan: pd.DataFrame, *, group_key: str, keys: list[str] | None = None,
    n_samples: int = DEFAULT_N_SAMPLES, batch_size: int | None = None, sampling: Sampling = "shared",
) -> SweepContext:
    """Prepare the caches for running ``keys`` (default: every sampling key of ``plan``)."""
    check_choice(sampling, Sampling, source="--sampling", field="sampling")
    if n_samples < 2:
        raise ParameterError("n_samples", "n_samples", f"must be at least 2, got {n_samples}")
    registry = batch_registry(model, adata)
    names = [str(b) for b in registry.categorical_mapping]
    codes = pd.Categorical(adata.obs[registry.original_key].astype(str), categories=names).codes
    ctx = SweepContext(adata=adata, model=model, group_key=group_key, n_samples=n_samples, batch_size=batch_size,
                       sampling=sampling, batch_names=names, batch_codes=np.asarray(codes),
                       groups=adata.obs[group_key].astype(str).to_numpy())
    if sampling == "shared":
        for key in (keys or sampling_keys(plan)):
            for need in _pool_needs(ctx, first_row(plan, key)):
                ctx.pool_uses[need] += 1
    return ctx


def _cells(ctx: SweepContext, group: str, filt: bool, seed: int) -> np.ndarray:
    """Indices of the group's cells, after scvi-tools' outlier filter when asked (shared sampler)."""
    cache_key = ("cells", group, filt, seed)
    if cache_key not in ctx.cache:
        idx = np.flatnonzero(ctx.mask(group))
        if filt:
            idx = _filter_outliers(ctx, idx, seed=_derive_seed(seed, group, "filter") % (2**32))
        ctx.cache[cache_key] = idx
    return ctx.cache[cache_key]


def _filter_outliers(ctx: SweepContext, idx: np.ndarray, *, seed: int) -> np.ndarray:
    """scvi-tools' ``DifferentialComputation.filter_outlier_cells`` with a seeded ``EllipticEnvelope``."""
    import warnings

    from sklearn.covariance import EllipticEnvelope

    reps = ctx.model.get_latent_representation(ctx.adata, indices=idx, batch_size=safe_batch_size([idx.size], DEFAULT_BATCH_SIZE))
    try:
        keep = EllipticEnvelope(random_state=seed).fit_predict(reps) == 1
    except ValueError:
        warnings.warn("Could not properly estimate Cov!, using all samples", stacklevel=2)
        return idx
    return idx[keep]


def _decoded_cells(ctx: SweepContext, group: str, filt: bool, seed: int) -> np.ndarray:
    """The cells a decoding pass decodes: every (kept) cell, or a seeded ``n_samples`` of them in a larger group.

    The draws take ``n_samples`` values uniformly over the pooled cells, so a group of
    100,000 cells needs no more than ``n_samples`` decoded cells (scvi-tools' own
    ``scale_sampler`` draws ``n_samples`` cells the same way); decoding all of them
    would hold cells x genes floats per pass and make the sweep's memory grow with the data.
    """
    cache_key = ("decoded", group, filt, seed)
    if cache_key not in ctx.cache:
        cells = _cells(ctx, group, filt, seed)
        if cells.size > ctx.n_samples:
            rng = np.random.default_rng(_derive_seed(seed, group, filt, "decoded-cells"))
            cells = np.sort(rng.choice(cells, size=ctx.n_samples, replace=False))
        ctx.cache[cache_key] = cells
    return ctx.cache[cache_key]


def own_batches(ctx: SweepContext, cells: np.ndarray) -> list[str]:
    return [ctx.batch_names[c] for c in np.unique(ctx.batch_codes[cells])]


def _pool_needs(ctx: SweepContext, key: SweepRow) -> list[tuple]:
    """Decoding passes a key needs from the shared sampler: ``(group, filter, seed, batch or None)``."""
    if key.weights != "uniform":
        return []
    needs: list[tuple[str, bool, int, str | None]] = []
    for group, batchid in ((key.group1, key.batches1), (key.group2, key.batches2)):
        if key.batch_correction:
            needs += [(group, key.filter_outlier_cells, key.seed, b) for b in (batchid or ctx.batch_names)]
        else:
            needs.append((group, key.filter_outlier_cells, key.seed, None))
    return needs


def _decode_pass(ctx: SweepContext, group: str, filt: bool, seed: int, batch: str | None) -> np.ndarray:
    """One decoding pass: the decoded cells of ``group`` ``S`` times, in ``batch`` (None: own batch). Shape (S, n, G)."""
    import torch

    cells = _decoded_cells(ctx, group, filt, seed)
    per_cell = ctx.n_samples // cells.size + 1
    size = safe_batch_size([cells.size], ctx.batch_size or DEFAULT_BATCH_SIZE)
    torch.manual_seed(_derive_seed(seed, group, filt, "z"))  # the same latent samples in every batch
    start = time.perf_counter()
    out = ctx.model.get_normalized_expression(
        ctx.adata, indices=cells, transform_batch=batch, n_samples=per_cell, return_mean=False,
        return_numpy=True, batch_size=size,
    )
    ctx.decode_seconds += time.perf_counter() - start
    ctx.n_decode_passes += 1
    return np.asarray(out).reshape(per_cell, cells.size, -1)


def _pool(ctx: SweepContext, group: str, filt: bool, seed: int, batch: str | None) -> np.ndarray:
    """The decoded pool (S, n, G) of a group in a batch, or in the cells' own batches (``batch=None``)."""
    need = (group, filt, seed, batch)
    if need in ctx.pools:
        return ctx.pools[need]
    if batch is None:
        cells = _decoded_cells(ctx, group, filt, seed)
        own = own_batches(ctx, cells)
        if all((group, filt, seed, b) in ctx.pools or ctx.pool_uses[(group, filt, seed, b)] > 0 for b in own):
            # each cell's own-batch samples from the per-batch passes (the same latent samples)
            parts = {b: _pool(ctx, group, filt, seed, b) for b in own}
            if len(parts) == 1:
                pool = next(iter(parts.values()))
            else:
                pool = np.empty_like(next(iter(parts.values())))
                codes = ctx.batch_codes[cells]
                for b, decoded in parts.items():
                    np.copyto(pool, decoded, where=(codes == ctx.batch_names.index(b))[None, :, None])
        else:
            pool = _decode_pass(ctx, group, filt, seed, None)
    else:
        pool = _decode_pass(ctx, group, filt, seed, batch)
    ctx.pools[need] = pool
    return pool


def release(ctx: SweepContext, key: SweepRow) -> None:
    for need in _pool_needs(ctx, key):
        ctx.pool_uses[need] -= 1
    for need in [n for n in ctx.pools if ctx.pool_uses[n] <= 0]:
        del ctx.pools[need]


def _draw(ctx: SweepContext, group: str, filt: bool, seed: int, batches: list[str] | None, *, role: str) -> dict[str, Any]:
    """scvi-tools' ``scale_sampler`` output from the shared pools: ``{'scale': (n, G), 'batch': (n,)}``.

    The samples are written to a scratch buffer of ``role``: valid until the next key is sampled.
    """
    targets = [None] if batches is None else batches
    n_per = int(ctx.n_samples / len(targets)) or 2
    scale = None
    labels = []
    for i, batch in enumerate(targets):
        pool = _pool(ctx, group, filt, seed, batch)
        flat = pool.reshape(-1, pool.shape[-1])
        if scale is None:
            scale = ctx.buffer(f"draw-{role}", (n_per * len(targets), flat.shape[1]), flat.dtype)
        rng = np.random.default_rng(_derive_seed(seed, group, filt, "draw", batch, n_per))
        np.take(flat, rng.integers(0, flat.shape[0], size=n_per), axis=0, out=scale[i * n_per:(i + 1) * n_per])
        labels.append(np.full(n_per, np.nan) if batch is None else np.array([batch] * n_per))
    return {"scale": scale, "batch": labels[0] if len(labels) == 1 else np.concatenate(labels)}


def sample_shared(ctx: SweepContext, key: SweepRow) -> tuple[dict, dict, np.ndarray, np.ndarray, int]:
    cells1 = _cells(ctx, key.group1, key.filter_outlier_cells, key.seed)
    cells2 = _cells(ctx, key.group2, key.filter_outlier_cells, key.seed)
    b1: list[str] | None = None
    b2: list[str] | None = None
    if key.batch_correction:
        b1 = list(key.batches1) if key.batches1 else list(ctx.batch_names)
        b2 = list(key.batches2) if key.batches2 else list(ctx.batch_names)
        if set(b1) == set(b2):
            b2 = b1  # the same order, so the samples are paired batch by batch as they are
    s1 = _draw(ctx, key.group1, key.filter_outlier_cells, key.seed, b1, role="1")
    s2 = _draw(ctx, key.group2, key.filter_outlier_cells, key.seed, b2, role="2")
    return s1, s2, cells1, cells2, ctx.batch_size or DEFAULT_BATCH_SIZE


def sample_scvi(ctx: SweepContext, key: SweepRow) -> tuple[dict, dict, np.ndarray, np.ndarray, int]:
    """Sample exactly as ``model.differential_expression(..., batch_size=size)`` does after ``scvi.settings.seed = seed``.

    ``size`` (returned last) is ``--batch-size`` adjusted so that neither group
    (after the outlier filter) ends in a minibatch of one or two cells.
    """
    import scvi
    from scvi.model.base import DifferentialComputation

    model, adata = ctx.model, ctx.adata
    scvi.settings.seed = key.seed
    representation_fn = model.get_latent_representation if key.filter_outlier_cells else None
    dc = DifferentialComputation(None, representation_fn, model.get_anndata_manager(adata, required=True))
    sel1, sel2 = ctx.mask(key.group1), ctx.mask(key.group2)
    if representation_fn is not None:  # consumes the random stream exactly as scvi-tools does, before sampling
        sel1 = dc.filter_outlier_cells(sel1)
        sel2 = dc.filter_outlier_cells(sel2)
    cells1, cells2 = dc.process_selection(sel1), dc.process_selection(sel2)
    size = safe_batch_size([cells1.size, cells2.size], ctx.batch_size or DEFAULT_BATCH_SIZE)
    dc.model_fn = partial(model.get_normalized_expression, return_numpy=True, n_samples=1, batch_size=size, weights=key.weights)
    registry = batch_registry(model, adata)
    by_name = {str(b): b for b in registry.categorical_mapping}
    b1 = [by_name[b] for b in key.batches1] if key.batches1 else None
    b2 = [by_name[b] for b in key.batches2] if key.batches2 else None
    start = time.perf_counter()
    s1 = dc.scale_sampler(selection=sel1, batchid=b1, use_observed_batches=not key.batch_correction, n_samples_overall=ctx.n_samples)
    s2 = dc.scale_sampler(selection=sel2, batchid=b2, use_observed_batches=not key.batch_correction, n_samples_overall=ctx.n_samples)
    ctx.decode_seconds += time.perf_counter() - start
    return s1, s2, cells1, cells2, size

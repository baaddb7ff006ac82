"""The DE sweep engine: many scvi-tools ``differential_expression`` settings from shared posterior samples.

scvi-tools' ``differential_expression`` (1.4.2 and 1.5.x compute it identically;
1.5 only adds a path for models without AnnData, which desweep does not use)
does, per call:

1. optionally drop outlier cells of each group (``EllipticEnvelope`` on the latent means);
2. sample each group's normalized expression ``n_samples_overall`` times, split
   evenly over the decoding batches (``batchid``; every batch of the model when
   ``None``), or in each cell's own batch when ``batch_correction=False``: per
   batch, every cell is sampled ``n // n_cells + 1`` times and ``n`` samples are
   drawn from that pool with replacement;
3. pair the samples of the two groups (batch by batch when both groups are
   decoded in the same batches), estimate a pseudocount from genes without
   counts, and compute ``proba_de`` from the log2 fold changes (change mode) or
   ``P(scale1 > scale2)`` (vanilla).

Only step 3 depends on ``mode``, ``delta`` and ``fdr_target``, so desweep samples
once per *sampling key* (comparison, decoding batches, batch correction, weights,
outlier filter, seed), computes the fold changes once and every delta from them.

Two samplers
------------
``sampling="shared"`` (default)
    Goes further: each group is decoded **once per (decoded batch, seed)**, with
    ``n // n_cells + 1`` samples per cell (the largest pool any setting needs),
    and every setting draws its samples from these pools: ``batch_correction``
    False (each cell's samples taken from its own batch's pool), ``all``, every
    single batch and ``own``. The latent samples of a cell are the same in every
    batch (the torch generator is re-seeded from ``(seed, group)`` before each
    pass) and the draws are seeded from ``(seed, group, batch, n)``, so a
    sampling key gives the same table alone (a Nextflow task) or within a whole
    sweep. Statistically this is scvi-tools' estimator; the samples differ, so
    tables agree with scvi-tools within Monte Carlo error (tests/test_de.py).
``sampling="scvi"``
    Reproduces scvi-tools' random stream: per sampling key, set
    ``scvi.settings.seed = seed`` and sample exactly as
    ``model.differential_expression`` does (scvi-tools' own
    ``DifferentialComputation``), so every table equals the one of a direct
    scvi-tools call with that seed, except where groups are decoded in several
    batches: there ``lfc_mean`` and ``lfc_std`` sum the same samples in sorted
    batch order where scvi-tools follows a hash-seeded set order (see
    :func:`_pair`), so they can differ in the last bits. Importance weights
    always use this sampler.

Tables
------
One per combination: ``gene``, ``rank`` and scvi-tools' columns, in both modes:
``proba_de, proba_not_de, bayes_factor, is_de_fdr, lfc_mean, lfc_median, lfc_std,
lfc_min, lfc_max, scale1, scale2, proba_m1, proba_m2, delta, pseudocounts`` and
the count statistics (``raw_mean1``, ...). Where scvi-tools has no value desweep
adds one: in vanilla mode ``proba_de = max(proba_m1, proba_m2)`` (the vanilla
analogue of change mode's ``test_mode="three"``) and the ``lfc_*`` columns as
change mode computes them; in change mode ``proba_m1 = P(lfc >= delta)`` and
``proba_m2 = P(lfc < -delta)``. ``is_de_fdr`` uses scvi-tools' posterior expected
FDR rule on ``proba_de``.

Rank (best first): ``proba_de`` descending, then ``|lfc_mean|`` descending, then
gene name. Vanilla tables are therefore ranked on both directions (scvi-tools
sorts vanilla results by the signed ``bayes_factor``, group1-up genes first).
``is_de_fdr`` marks the top ``d`` genes of that rank, ``d`` being scvi-tools'
count; it differs from scvi-tools' flag only in which genes tied with the
``d``-th gene's ``proba_de`` are marked (scvi-tools' choice there follows an
unstable sort).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from desweep.errors import DesweepInputError
from desweep.names import join_names, split_names
from desweep.plan import PLAN_COLUMNS
from desweep.progress import ProgressLog

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI

logger = logging.getLogger(__name__)

Sampling = Literal["shared", "scvi"]
SAMPLINGS: tuple[str, ...] = ("shared", "scvi")
DEFAULT_N_SAMPLES = 5000
DEFAULT_BATCH_SIZE = 128
DEFAULT_TOP_N = 10
SUMMARY_TOP_GENES = 10
EPS = 1e-8  # scvi-tools' eps in the Bayes factor

TABLE_COLUMNS = [
    "gene", "rank", "proba_de", "proba_not_de", "bayes_factor", "is_de_fdr", "lfc_mean", "lfc_median", "lfc_std",
    "lfc_min", "lfc_max", "scale1", "scale2", "proba_m1", "proba_m2", "delta", "pseudocounts",
    "raw_mean1", "raw_mean2", "non_zeros_proportion1", "non_zeros_proportion2", "raw_normalized_mean1", "raw_normalized_mean2",
]
SUMMARY_COLUMNS = PLAN_COLUMNS + [
    "sampling", "n_samples", "batch_size", "n_cells1", "n_cells2", "n_genes", "n_de", "n_tied_top", "max_proba_de", "pseudocounts",
    "top_genes", "out_of_distribution", "ood_decoding",
]
STABILITY_COLUMNS = ["setting_id", "comparison_id", "gene", "n_runs", "frac_de", "frac_top", "top_n", "mean_rank"]
_SAMPLING_FIELDS = ("comparison_id", "group1", "group2", "batch_correction", "batchid1", "batchid2", "weights",
                    "filter_outlier_cells", "model", "seed")


# --------------------------------------------------------------------------- plan checks
def check_plan(plan: pd.DataFrame, *, source: str = "plan.csv") -> pd.DataFrame:
    """Check a plan (from :func:`desweep.plan.make_plan` or read as strings) and return it typed.

    Raises
    ------
    DesweepInputError
        A missing column, a value that does not parse, a repeated
        ``combination_id``, or rows of one ``sampling_key`` that differ in a
        sampling setting (a hand-edited plan).
    """
    if "model" not in plan.columns:  # a plan from before model replicates: one model
        plan = plan.assign(model=0)
    missing = [c for c in PLAN_COLUMNS if c not in plan.columns]
    if missing:
        raise DesweepInputError(source, missing[0], "column missing (is this a desweep plan.csv?)")
    if plan.empty:
        raise DesweepInputError(source, "combination_id", "the plan has no rows")
    out = plan[PLAN_COLUMNS].copy()
    for column in ("combination_id", "sampling_key", "setting_id", "comparison_id", "group1", "group2", "design",
                   "decoding", "batchid1", "batchid2", "mode", "weights"):
        out[column] = out[column].fillna("").astype(str)
    for column in ("batch_correction", "filter_outlier_cells"):
        out[column] = [_parse_bool(v, source, column) for v in out[column]]
    out["delta"] = [_parse_float(v, source, "delta", allow_empty=True) for v in out["delta"]]
    out["fdr_target"] = [_parse_float(v, source, "fdr_target") for v in out["fdr_target"]]
    out["seed"] = [int(_parse_float(v, source, "seed")) for v in out["seed"]]
    out["model"] = [int(_parse_float(v, source, "model")) for v in out["model"]]
    for column, allowed in (("mode", ("vanilla", "change")), ("weights", ("uniform", "importance"))):
        bad = out.loc[~out[column].isin(allowed), column]
        if not bad.empty:
            raise DesweepInputError(source, column, f"'{bad.iloc[0]}' is not one of {', '.join(allowed)}")
    change = out["mode"] == "change"
    if out.loc[change, "delta"].isna().any():
        raise DesweepInputError(source, "delta", "change mode needs a delta on every row")
    if out.loc[~change, "delta"].notna().any():
        raise DesweepInputError(source, "delta", "vanilla rows must leave delta empty")
    if (out.loc[~out["batch_correction"], ["batchid1", "batchid2"]] != "").any().any():
        raise DesweepInputError(source, "batchid1", "batchid1/batchid2 need batch_correction=True (scvi-tools: 'Inconsistent batch policy')")
    dup = out["combination_id"][out["combination_id"].duplicated()]
    if not dup.empty:
        raise DesweepInputError(source, "combination_id", f"'{dup.iloc[0]}' appears twice")
    for key, rows in out.groupby("sampling_key", sort=False):
        for column in _SAMPLING_FIELDS:
            if rows[column].nunique() > 1:
                raise DesweepInputError(source, "sampling_key", f"rows of '{key}' differ in {column}; "
                                        "rows sharing a sampling key must share every sampling setting (rerun `desweep plan`)")
    return out.reset_index(drop=True)


def _parse_bool(value: Any, source: str, column: str) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise DesweepInputError(source, column, f"'{value}' is not True or False")


def _parse_float(value: Any, source: str, column: str, *, allow_empty: bool = False) -> float:
    if value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and np.isnan(value)):
        if allow_empty:
            return float("nan")
        raise DesweepInputError(source, column, "empty value")
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise DesweepInputError(source, column, f"'{value}' is not a number") from err


def sampling_keys(plan: pd.DataFrame) -> list[str]:
    """The sampling keys of a plan, in plan order."""
    return list(dict.fromkeys(plan["sampling_key"]))


def check_inputs(adata: AnnData, model: SCVI, plan: pd.DataFrame, *, group_key: str, source: str = "adata") -> None:
    """Check that every group and batch the plan names exists in the data and the model."""
    groups = set(adata.obs[group_key].astype(str))
    for column in ("group1", "group2"):
        absent = sorted(set(plan[column]) - groups)
        if absent:
            raise DesweepInputError(source, f"obs['{group_key}']", f"plan group '{absent[0]}' has no cells (have: {', '.join(sorted(groups))})")
    known = set(_batch_names(model, adata))
    for column in ("batchid1", "batchid2"):
        for text in plan[column]:
            for batch in split_names(text):
                if batch not in known:
                    raise DesweepInputError(source, column, f"batch '{batch}' is not a batch of the model (have: {', '.join(sorted(known))})")


# --------------------------------------------------------------------------- helpers
def _derive_seed(*parts: Any) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def safe_batch_size_for(sizes: list[int], preferred: int) -> int:
    """The batch size nearest ``preferred`` that leaves no minibatch of one or two cells for any of ``sizes``."""
    for delta in range(0, preferred):
        for candidate in (preferred + delta, preferred - delta):
            if candidate >= 8 and all(n % candidate not in (1, 2) for n in sizes if n > candidate):
                return candidate
    return preferred


def _batch_registry(model: SCVI, adata: AnnData):
    from scvi import REGISTRY_KEYS

    return model.get_anndata_manager(adata, required=True).get_state_registry(REGISTRY_KEYS.BATCH_KEY)


def _batch_names(model: SCVI, adata: AnnData) -> list[str]:
    return [str(b) for b in _batch_registry(model, adata).categorical_mapping]


@dataclass(frozen=True)
class _Key:
    """The sampling settings shared by the rows of one sampling key."""

    name: str
    comparison_id: str
    group1: str
    group2: str
    batch_correction: bool
    batchid1: tuple[str, ...] | None
    batchid2: tuple[str, ...] | None
    weights: str
    filter_outlier_cells: bool
    seed: int

    @classmethod
    def from_rows(cls, rows: pd.DataFrame) -> _Key:
        first = rows.iloc[0]
        return cls(
            name=str(first["sampling_key"]), comparison_id=str(first["comparison_id"]), group1=str(first["group1"]),
            group2=str(first["group2"]), batch_correction=bool(first["batch_correction"]),
            batchid1=tuple(split_names(first["batchid1"])) or None, batchid2=tuple(split_names(first["batchid2"])) or None,
            weights=str(first["weights"]), filter_outlier_cells=bool(first["filter_outlier_cells"]), seed=int(first["seed"]),
        )


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
    batch_codes: np.ndarray | None = None  # per cell, index into batch_names
    groups: np.ndarray | None = None
    pool_uses: Counter = field(default_factory=Counter)
    pools: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)
    decode_seconds: float = 0.0
    n_decode_passes: int = 0

    buffers: dict = field(default_factory=dict)

    def mask(self, group: str) -> np.ndarray:
        return self.groups == group

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
    if sampling not in SAMPLINGS:
        raise DesweepInputError("--sampling", "sampling", f"must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if n_samples < 2:
        raise DesweepInputError("--n-samples", "n_samples", f"must be at least 2, got {n_samples}")
    registry = _batch_registry(model, adata)
    names = [str(b) for b in registry.categorical_mapping]
    codes = pd.Categorical(adata.obs[registry.original_key].astype(str), categories=names).codes
    ctx = SweepContext(adata=adata, model=model, group_key=group_key, n_samples=n_samples, batch_size=batch_size,
                       sampling=sampling, batch_names=names, batch_codes=np.asarray(codes),
                       groups=adata.obs[group_key].astype(str).to_numpy())
    if sampling == "shared":
        for key in (keys or sampling_keys(plan)):
            for need in _pool_needs(ctx, _Key.from_rows(plan[plan["sampling_key"] == key])):
                ctx.pool_uses[need] += 1
    return ctx


# --------------------------------------------------------------------------- sampling
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

    reps = ctx.model.get_latent_representation(ctx.adata, indices=idx, batch_size=safe_batch_size_for([idx.size], DEFAULT_BATCH_SIZE))
    try:
        keep = EllipticEnvelope(random_state=seed).fit_predict(reps) == 1
    except ValueError:
        warnings.warn("Could not properly estimate Cov!, using all samples", stacklevel=2)
        return idx
    return idx[keep]


def _own_batches(ctx: SweepContext, cells: np.ndarray) -> list[str]:
    return [ctx.batch_names[c] for c in np.unique(ctx.batch_codes[cells])]


def _pool_needs(ctx: SweepContext, key: _Key) -> list[tuple]:
    """Decoding passes a key needs from the shared sampler: ``(group, filter, seed, batch or None)``."""
    if key.weights != "uniform":
        return []
    needs = []
    for group, batchid in ((key.group1, key.batchid1), (key.group2, key.batchid2)):
        if key.batch_correction:
            needs += [(group, key.filter_outlier_cells, key.seed, b) for b in (batchid or ctx.batch_names)]
        else:
            needs.append((group, key.filter_outlier_cells, key.seed, None))
    return needs


def _decode(ctx: SweepContext, group: str, filt: bool, seed: int, batch: str | None) -> np.ndarray:
    """One decoding pass: every (kept) cell of ``group`` ``S`` times, in ``batch`` (None: own batch). Shape (S, n, G)."""
    import torch

    cells = _cells(ctx, group, filt, seed)
    per_cell = ctx.n_samples // cells.size + 1
    size = safe_batch_size_for([cells.size], ctx.batch_size or DEFAULT_BATCH_SIZE)
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
        cells = _cells(ctx, group, filt, seed)
        own = _own_batches(ctx, cells)
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
            pool = _decode(ctx, group, filt, seed, None)
    else:
        pool = _decode(ctx, group, filt, seed, batch)
    ctx.pools[need] = pool
    return pool


def _release(ctx: SweepContext, key: _Key) -> None:
    for need in _pool_needs(ctx, key):
        ctx.pool_uses[need] -= 1
    for need in [n for n in ctx.pools if ctx.pool_uses[n] <= 0]:
        del ctx.pools[need]


def _draw(ctx: SweepContext, group: str, filt: bool, seed: int, batches: list[str] | None, *, role: str) -> dict[str, np.ndarray]:
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


def _sample_shared(ctx: SweepContext, key: _Key) -> tuple[dict, dict, np.ndarray, np.ndarray, int]:
    cells1 = _cells(ctx, key.group1, key.filter_outlier_cells, key.seed)
    cells2 = _cells(ctx, key.group2, key.filter_outlier_cells, key.seed)
    if key.batch_correction:
        b1 = list(key.batchid1) if key.batchid1 else list(ctx.batch_names)
        b2 = list(key.batchid2) if key.batchid2 else list(ctx.batch_names)
        if set(b1) == set(b2):
            b2 = b1  # the same order, so the samples are paired batch by batch as they are
    else:
        b1 = b2 = None
    s1 = _draw(ctx, key.group1, key.filter_outlier_cells, key.seed, b1, role="1")
    s2 = _draw(ctx, key.group2, key.filter_outlier_cells, key.seed, b2, role="2")
    return s1, s2, cells1, cells2, ctx.batch_size or DEFAULT_BATCH_SIZE


def _sample_scvi(ctx: SweepContext, key: _Key) -> tuple[dict, dict, np.ndarray, np.ndarray, int]:
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
    size = safe_batch_size_for([cells1.size, cells2.size], ctx.batch_size or DEFAULT_BATCH_SIZE)
    dc.model_fn = partial(model.get_normalized_expression, return_numpy=True, n_samples=1, batch_size=size, weights=key.weights)
    registry = _batch_registry(model, adata)
    by_name = {str(b): b for b in registry.categorical_mapping}
    b1 = [by_name[b] for b in key.batchid1] if key.batchid1 else None
    b2 = [by_name[b] for b in key.batchid2] if key.batchid2 else None
    start = time.perf_counter()
    s1 = dc.scale_sampler(selection=sel1, batchid=b1, use_observed_batches=not key.batch_correction, n_samples_overall=ctx.n_samples)
    s2 = dc.scale_sampler(selection=sel2, batchid=b2, use_observed_batches=not key.batch_correction, n_samples_overall=ctx.n_samples)
    ctx.decode_seconds += time.perf_counter() - start
    return s1, s2, cells1, cells2, size


# --------------------------------------------------------------------------- statistics
def _pair(s1: dict, s2: dict, *, use_observed: bool, exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """scvi-tools' pairing of the two groups' samples (``use_permutation=False``).

    Samples decoded in the same batches are paired batch by batch, as scvi-tools
    does, and concatenated in sorted batch order. scvi-tools concatenates them in
    the iteration order of a ``set`` of batch names, which changes with
    ``PYTHONHASHSEED``; the pairs are the same, but the sums behind ``lfc_mean``
    and ``lfc_std`` are not (in float32 when a group has genes without counts),
    so sorted order keeps tables byte-identical from process to process.

    With ``exact=False`` and both groups' samples already in the same batch
    order, the arrays are used as they are (the same pairs, without copying them).
    """
    if not exact and not use_observed and s1["batch"].shape == s2["batch"].shape and np.array_equal(s1["batch"], s2["batch"]):
        return s1["scale"], s2["scale"]
    b1, b2 = np.unique(s1["batch"]), np.unique(s2["batch"])
    if set(b1) == set(b2) and not use_observed:
        first, second = [], []
        for batch in b1:  # sorted (np.unique), not scvi-tools' hash-seeded set order
            first.append(s1["scale"][s1["batch"] == batch])
            second.append(s2["scale"][s2["batch"] == batch])
        return np.concatenate(first), np.concatenate(second)
    x, y = s1["scale"], s2["scale"]
    if x.shape[0] != y.shape[0]:
        # scvi-tools raises a broadcasting error here (e.g. 5000 samples in one batch vs 3 x 1666)
        n = min(x.shape[0], y.shape[0])
        logger.warning("groups have %d and %d samples (n_samples not divisible by the batches); using the first %d of each",
                       x.shape[0], y.shape[0], n)
        x, y = x[:n], y[:n]
    return x, y


def compare(
    s1: dict, s2: dict, *, use_observed: bool, where_zero1: np.ndarray, where_zero2: np.ndarray,
    settings: list[tuple[str, float | None]], exact: bool = True, scratch: Callable[..., np.ndarray] | None = None,
) -> dict[tuple[str, float | None], dict[str, np.ndarray]]:
    """scvi-tools' ``get_bayes_factors`` step 3 for several (mode, delta) settings from one set of samples.

    Parameters
    ----------
    s1, s2
        ``scale_sampler`` outputs of group 1 and 2.
    use_observed
        ``not batch_correction``.
    where_zero1, where_zero2
        Genes whose mean count in the group is below scvi-tools' ``threshold_counts`` (0.01).
    settings
        ``(mode, delta)`` pairs; delta is ``None`` for vanilla.
    exact
        Compute with scvi-tools' own expressions (float64 fold changes).
        ``False`` (the shared sampler) computes the fold changes in float32 as
        ``log2((x + pc) / (y + pc))``, a block of samples at a time so that the
        temporaries stay in cache, counts every delta from the same block and
        takes the median from one partition: about 3 times faster; log2 fold
        changes differ by about 1e-6, far below the Monte Carlo error.

    Returns
    -------
    Per setting, the columns of :data:`TABLE_COLUMNS` that depend on the samples.
    The log fold changes and their summary are computed once for every setting.
    """
    from scvi.model.base._differential import describe_continuous_distrib, estimate_pseudocounts_offset

    scale1 = s1["scale"].mean(axis=0)
    scale2 = s2["scale"].mean(axis=0)
    x, y = _pair(s1, s2, use_observed=use_observed, exact=exact)
    pseudocounts = estimate_pseudocounts_offset(scales_a=x, scales_b=y, where_zero_a=where_zero1, where_zero_b=where_zero2, quantile=0.9)
    deltas = list(dict.fromkeys(float(d) for m, d in settings if m == "change"))
    if exact:
        lfc_props = describe_continuous_distrib(samples=np.log2(x + 1e-3 * pseudocounts) - np.log2(y + 1e-3 * pseudocounts))
        change = np.log2(x + pseudocounts) - np.log2(y + pseudocounts) if deltas else None
        up = {d: _share(change >= d) for d in deltas}
        down = {d: _share(change < -d) for d in deltas}
        vanilla = _share(x > y)
    else:
        lfc_props, up, down, vanilla = _fast_stats(x, y, pseudocounts, deltas, scratch=scratch)
    common = {"scale1": scale1, "scale2": scale2, "pseudocounts": np.full(scale1.shape, pseudocounts),
              **{f"lfc_{k}": v for k, v in lfc_props.items()}}
    out: dict[tuple[str, float | None], dict[str, np.ndarray]] = {}
    for mode, delta in settings:
        if mode == "vanilla":
            m1 = vanilla
            m2 = 1.0 - m1
            proba_de = np.maximum(m1, m2)
            bayes = np.log(m1 + EPS) - np.log(m2 + EPS)
            delta_col = np.full(scale1.shape, np.nan)
        else:
            m1, m2 = up[float(delta)], down[float(delta)]
            proba_de = np.maximum(m1, m2)
            bayes = np.log(proba_de + EPS) - np.log(1.0 - proba_de + EPS)
            delta_col = np.full(scale1.shape, delta)
        out[(mode, delta)] = {"proba_de": proba_de, "proba_not_de": 1.0 - proba_de, "bayes_factor": bayes,
                              "proba_m1": m1, "proba_m2": m2, "delta": delta_col, **common}
    return out


def _share(flags: np.ndarray) -> np.ndarray:
    """``np.mean(flags, 0)`` of a boolean array, without casting it to float (the same values)."""
    return np.count_nonzero(flags, axis=0) / flags.shape[0]


def _column_counts(flags: np.ndarray) -> np.ndarray:
    """True values per column of a boolean block (``np.count_nonzero(axis=0)``, without its temporary copy)."""
    return flags.view(np.uint8).sum(0, dtype=np.int32)


def _fast_stats(
    x: np.ndarray, y: np.ndarray, pseudocounts: float, deltas: list[float], *, scratch: Callable[..., np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[float, np.ndarray], dict[float, np.ndarray], np.ndarray]:
    """Float32, cache-blocked: lfc summary (pseudocount x 1e-3), ``P(lfc >= d)``, ``P(lfc < -d)`` per delta, ``P(x > y)``."""
    n, n_genes = x.shape
    rows = int(np.clip(131072 // max(n_genes, 1), 32, 256))
    pc, pc_small = np.float32(pseudocounts), np.float32(1e-3 * pseudocounts)
    scratch = scratch or (lambda _name, shape, dtype: np.empty(shape, dtype=dtype))
    per_gene = scratch("lfc-per-gene", (n_genes, n), np.float32)  # lfc with the small pseudocount, one row per gene
    up = np.zeros((len(deltas), n_genes), dtype=np.int64)
    down = np.zeros((len(deltas), n_genes), dtype=np.int64)
    greater = np.zeros(n_genes, dtype=np.int64)
    a = np.empty((rows, n_genes), dtype=np.float32)
    b = np.empty((rows, n_genes), dtype=np.float32)
    flags = np.empty((rows, n_genes), dtype=bool)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        k = stop - start
        xa, ya, fa, aa, ba = x[start:stop], y[start:stop], flags[:k], a[:k], b[:k]
        np.greater(xa, ya, out=fa)
        greater += _column_counts(fa)
        if deltas:
            np.add(xa, pc, out=aa)
            np.add(ya, pc, out=ba)
            aa /= ba
            np.log2(aa, out=aa)
            for i, delta in enumerate(deltas):
                np.greater_equal(aa, delta, out=fa)
                up[i] += _column_counts(fa)
                np.less(aa, -delta, out=fa)
                down[i] += _column_counts(fa)
        np.add(xa, pc_small, out=aa)
        np.add(ya, pc_small, out=ba)
        aa /= ba
        np.log2(aa, out=aa)
        per_gene[:, start:stop] = aa.T
    props = {
        "mean": per_gene.mean(1).astype(np.float64), "std": per_gene.std(1).astype(np.float64),
        "min": per_gene.min(1).astype(np.float64), "max": per_gene.max(1).astype(np.float64),
    }
    # median: the upper middle value is the n // 2-th smallest, the lower one (n even) the largest left of it
    per_gene.partition(n // 2, axis=1)
    upper = per_gene[:, n // 2].astype(np.float64)
    lower = per_gene[:, : n // 2].max(1).astype(np.float64) if n % 2 == 0 else upper
    props["median"] = (lower + upper) / 2
    props = {k: props[k] for k in ("mean", "median", "std", "min", "max")}
    return (props, {d: up[i] / n for i, d in enumerate(deltas)}, {d: down[i] / n for i, d in enumerate(deltas)}, greater / n)


def fdr_count(proba_de: np.ndarray, fdr: float) -> int:
    """scvi-tools' posterior expected FDR rule: how many top genes are called DE."""
    sorted_p = np.sort(np.asarray(proba_de, dtype=float))[::-1]
    cumulative = np.cumsum(1.0 - sorted_p) / (1.0 + np.arange(sorted_p.size))
    return int((cumulative <= fdr).sum())


def make_table(genes: pd.Index, columns: dict[str, np.ndarray], raw: dict[str, np.ndarray], *, fdr: float) -> pd.DataFrame:
    """Assemble, rank and flag one combination's table (see the module docstring for the order)."""
    names = np.asarray(genes, dtype=str)
    values = {**columns, **raw}
    order = np.lexsort((names, -np.abs(values["lfc_mean"]), -values["proba_de"]))
    n_de = fdr_count(values["proba_de"], fdr)
    data = {"gene": names[order], "rank": np.arange(1, names.size + 1), "is_de_fdr": np.arange(names.size) < n_de}
    data.update({c: np.asarray(values[c])[order] for c in TABLE_COLUMNS if c not in data})
    return pd.DataFrame({c: data[c] for c in TABLE_COLUMNS})


# --------------------------------------------------------------------------- running
def _raw_stats(ctx: SweepContext, group1: str, group2: str) -> dict[str, np.ndarray]:
    cache_key = ("raw", group1, group2)
    if cache_key not in ctx.cache:
        from scvi.model._utils import scrna_raw_counts_properties

        manager = ctx.model.get_anndata_manager(ctx.adata, required=True)
        ctx.cache[cache_key] = scrna_raw_counts_properties(manager, ctx.mask(group1), ctx.mask(group2))
    return ctx.cache[cache_key]


def _where_zero(ctx: SweepContext, cells: np.ndarray) -> np.ndarray:
    """Genes whose mean count over ``cells`` is below scvi-tools' ``threshold_counts`` (0.01)."""
    from scvi import REGISTRY_KEYS

    cache_key = ("zero", hashlib.sha256(np.ascontiguousarray(cells).tobytes()).hexdigest())
    if cache_key not in ctx.cache:
        x = ctx.model.get_anndata_manager(ctx.adata, required=True).get_from_registry(REGISTRY_KEYS.X_KEY)
        ctx.cache[cache_key] = np.asarray(np.mean(x[cells], 0)).flatten() < 0.01
    return ctx.cache[cache_key]


def _ood(ctx: SweepContext, key: _Key) -> str:
    if not key.batch_correction:
        return ""
    parts = []
    for role, group, batchid in (("group1", key.group1, key.batchid1), ("group2", key.group2, key.batchid2)):
        present = set(_own_batches(ctx, np.flatnonzero(ctx.mask(group))))
        parts += [f"{role}@{b}" for b in (batchid or ctx.batch_names) if b not in present]
    return join_names(parts)


def run_group(
    adata: AnnData, model: SCVI, plan: pd.DataFrame, sampling_key: str, *, group_key: str,
    n_samples: int = DEFAULT_N_SAMPLES, batch_size: int | None = None, sampling: Sampling = "shared",
    context: SweepContext | None = None,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Run every combination of one sampling key from one set of posterior samples.

    Parameters
    ----------
    adata
        The clustered AnnData the model is registered with (raw counts of the modelled genes).
    model
        The trained scVI model (:func:`desweep.integrate.load_model`).
    plan
        The plan (:func:`desweep.plan.make_plan`, or ``plan.csv`` checked by :func:`check_plan`).
    sampling_key
        Which rows to run.
    group_key
        obs column holding the groups.
    n_samples
        Posterior samples per group (scvi-tools' ``n_samples_overall``), split
        evenly over the decoding batches.
    batch_size
        Minibatch size for decoding (default 128), adjusted so that no minibatch
        holds one or two cells.
    sampling
        ``shared`` or ``scvi`` (module docstring).
    context
        Caches from :func:`make_context` shared with other calls (one is made when ``None``).

    Returns
    -------
    ``(tables, summary)``: the tables by ``combination_id`` and their summary rows.

    Raises
    ------
    DesweepInputError
        ``sampling_key`` is not in the plan.
    """
    rows = plan[plan["sampling_key"] == sampling_key]
    if rows.empty:
        known = sampling_keys(plan)
        raise DesweepInputError("--sampling-key", "sampling_key", f"'{sampling_key}' is not in the plan ({len(known)} keys, e.g. '{known[0]}')")
    ctx = context or make_context(adata, model, plan, group_key=group_key, keys=[sampling_key], n_samples=n_samples,
                                  batch_size=batch_size, sampling=sampling)
    key = _Key.from_rows(rows)
    start = time.perf_counter()
    use_scvi = ctx.sampling == "scvi" or key.weights != "uniform"
    s1, s2, cells1, cells2, size = (_sample_scvi if use_scvi else _sample_shared)(ctx, key)
    settings = list(dict.fromkeys((m, None if m == "vanilla" else float(d)) for m, d in zip(rows["mode"], rows["delta"], strict=True)))
    stats = compare(s1, s2, use_observed=not key.batch_correction, where_zero1=_where_zero(ctx, cells1),
                    where_zero2=_where_zero(ctx, cells2), settings=settings, exact=use_scvi, scratch=ctx.buffer)
    raw = _raw_stats(ctx, key.group1, key.group2)
    ood = _ood(ctx, key)
    tables, summary = {}, []
    for _, row in rows.iterrows():
        setting = (row["mode"], None if row["mode"] == "vanilla" else float(row["delta"]))
        table = make_table(ctx.adata.var_names, stats[setting], raw, fdr=float(row["fdr_target"]))
        tables[row["combination_id"]] = table
        top = table["proba_de"].max()
        summary.append({
            **{c: row[c] for c in PLAN_COLUMNS}, "sampling": "scvi" if use_scvi else "shared", "n_samples": ctx.n_samples,
            "batch_size": size,
            "n_cells1": int(cells1.size), "n_cells2": int(cells2.size), "n_genes": len(table),
            "n_de": int(table["is_de_fdr"].sum()), "n_tied_top": int((table["proba_de"] == top).sum()),
            "max_proba_de": float(top), "pseudocounts": float(table["pseudocounts"].iloc[0]),
            "top_genes": join_names(table["gene"].head(SUMMARY_TOP_GENES)), "out_of_distribution": bool(ood),
            "ood_decoding": ood,
        })
    if context is not None and not use_scvi:
        _release(ctx, key)
    logger.debug("%s: %d combinations in %.1f s", sampling_key, len(rows), time.perf_counter() - start)
    return tables, pd.DataFrame(summary, columns=SUMMARY_COLUMNS)


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns."""

    summary: pd.DataFrame
    stability: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    seconds: float
    decode_seconds: float


def models_of(plan: pd.DataFrame) -> list[int]:
    """The model replicates a plan's rows use, in order."""
    return sorted({int(m) for m in plan["model"]})


def run_sweep(
    adata: AnnData, model: SCVI | Mapping[int, SCVI], plan: pd.DataFrame, *, group_key: str, n_samples: int = DEFAULT_N_SAMPLES,
    batch_size: int | None = None, sampling: Sampling = "shared", top_n: int = DEFAULT_TOP_N,
    on_table: Callable[[str, pd.DataFrame], None] | None = None, on_group: Callable[[str, pd.DataFrame], None] | None = None,
) -> SweepResult:
    """Run every sampling key of ``plan``, sharing decoding passes between keys.

    Parameters
    ----------
    model
        The trained model, or ``{model index: model}`` for a plan with model replicates.
    on_table
        Called with ``(combination_id, table)`` as each table is made; the
        tables are then not kept in memory (``SweepResult.tables`` is empty).
    on_group
        Called with ``(sampling_key, partial summary)`` after each key.
    Other parameters
        As :func:`run_group`; ``top_n`` sets the top genes of :func:`stability`.

    Returns
    -------
    :class:`SweepResult` with the summary (plan order), the stability table and
    the tables (when ``on_table`` is ``None``).
    """
    start = time.perf_counter()
    plan = check_plan(plan, source="plan")
    if not isinstance(model, Mapping) and len(models_of(plan)) > 1:
        raise DesweepInputError("model", "model", f"the plan has {len(models_of(plan))} model replicates: give {{index: model}}")
    models = model if isinstance(model, Mapping) else {m: model for m in models_of(plan)}
    absent = [m for m in models_of(plan) if m not in models]
    if absent:
        raise DesweepInputError("model", "model", f"the plan uses model {absent[0]}, which was not given")
    keep: dict[str, pd.DataFrame] = {}
    ranks: dict[str, pd.DataFrame] = {}
    partials = []
    decode_seconds = 0.0
    progress = sweep_progress(plan, sampling_keys(plan))
    done = 0
    for index in models_of(plan):
        rows = plan[plan["model"] == index]
        check_inputs(adata, models[index], rows, group_key=group_key)
        ctx = make_context(adata, models[index], rows, group_key=group_key, n_samples=n_samples, batch_size=batch_size,
                           sampling=sampling)
        for key in sampling_keys(rows):
            tables, summary = run_group(adata, models[index], rows, key, group_key=group_key, context=ctx)
            done += 1
            progress.update(done, f"{key} ({len(tables)} combinations)")
            for cid, table in tables.items():
                ranks[cid] = table[["gene", "rank", "is_de_fdr"]]
                if on_table is not None:
                    on_table(cid, table)
                else:
                    keep[cid] = table
            if on_group is not None:
                on_group(key, summary)
            partials.append(summary)
        decode_seconds += ctx.decode_seconds
    summary = merge_summaries(partials, plan)
    return SweepResult(summary=summary, stability=stability(ranks, plan, top_n=top_n), tables=keep,
                       seconds=time.perf_counter() - start, decode_seconds=decode_seconds)


def sweep_progress(plan: pd.DataFrame, keys: list[str]) -> ProgressLog:
    """Progress lines for a sweep over ``keys``: one per tenth of them (:class:`desweep.progress.ProgressLog`)."""
    n_combinations = int(plan["sampling_key"].isin(keys).sum())
    logger.info("DE sweep: %d combinations in %d sampling keys", n_combinations, len(keys))
    return ProgressLog(logger, "DE sweep", len(keys), unit="sampling key")


# --------------------------------------------------------------------------- merging
def merge_summaries(partials: list[pd.DataFrame], plan: pd.DataFrame, *, source: str = "summary") -> pd.DataFrame:
    """Concatenate per-key summaries in plan order; every combination of the plan must be there once."""
    summary = pd.concat([p for p in partials if not p.empty], ignore_index=True) if partials else pd.DataFrame(columns=SUMMARY_COLUMNS)
    ids = summary["combination_id"].astype(str) if "combination_id" in summary else pd.Series(dtype=str)
    missing = [c for c in plan["combination_id"] if c not in set(ids)]
    if missing:
        keys = list(dict.fromkeys(plan.loc[plan["combination_id"].isin(missing), "sampling_key"]))
        raise DesweepInputError(source, "sampling_key", f"no summary for {len(keys)} sampling key(s), e.g. '{keys[0]}': run `desweep de --sampling-key` for them first")
    extra = sorted(set(ids) - set(plan["combination_id"]))
    if extra:
        raise DesweepInputError(source, "combination_id", f"'{extra[0]}' is not in the plan (a summary from another plan?)")
    if ids.duplicated().any():
        raise DesweepInputError(source, "combination_id", f"'{ids[ids.duplicated()].iloc[0]}' appears in two summaries")
    order = {cid: i for i, cid in enumerate(plan["combination_id"])}
    summary = summary.assign(_order=ids.map(order)).sort_values("_order").drop(columns="_order")
    return summary[SUMMARY_COLUMNS].reset_index(drop=True)


def stability(tables: Mapping[str, pd.DataFrame], plan: pd.DataFrame, *, top_n: int = DEFAULT_TOP_N) -> pd.DataFrame:
    """Replicate stability: per setting and gene, the fraction of replicates (models x seeds) where the gene is DE / in the top ``top_n``.

    Parameters
    ----------
    tables
        Tables (at least ``gene, rank, is_de_fdr``) by ``combination_id``.
    plan
        The plan: rows with one ``setting_id`` and different models or seeds are replicates.

    Returns
    -------
    Columns :data:`STABILITY_COLUMNS`; only genes DE or in the top ``top_n`` in
    at least one replicate; rows in plan order of the settings, then by
    ``frac_top``, ``frac_de`` (descending), ``mean_rank`` and gene.
    """
    settings = list(dict.fromkeys(plan["setting_id"]))
    setting_code = {setting: i for i, setting in enumerate(settings)}
    comparison_of = dict(zip(plan["setting_id"], plan["comparison_id"], strict=True))
    parts = []
    for cid, setting in zip(plan["combination_id"], plan["setting_id"], strict=True):
        if cid in tables:
            table = tables[cid]
            flags = table["is_de_fdr"]
            if flags.dtype != bool:
                flags = flags.astype(str).str.lower().isin(["true", "1"])
            parts.append((setting_code[setting], table["gene"].astype(str).to_numpy(), table["rank"].to_numpy(dtype=float),
                          flags.to_numpy(dtype=bool)))
    if not parts:
        return pd.DataFrame(columns=STABILITY_COLUMNS)
    genes, gene_codes = np.unique(np.concatenate([p[1] for p in parts]), return_inverse=True)
    setting_codes = np.concatenate([np.full(p[1].size, p[0]) for p in parts])
    ranks = np.concatenate([p[2] for p in parts])
    flags = np.concatenate([p[3] for p in parts])
    cell = setting_codes * genes.size + gene_codes  # one bin per (setting, gene)
    size = len(settings) * genes.size
    n_runs_per_setting = np.bincount([p[0] for p in parts], minlength=len(settings))
    seen = np.bincount(cell, minlength=size)
    n_de = np.bincount(cell, weights=flags, minlength=size)
    n_top = np.bincount(cell, weights=ranks <= top_n, minlength=size)
    rank_sum = np.bincount(cell, weights=ranks, minlength=size)
    keep = np.flatnonzero((seen > 0) & ((n_de > 0) | (n_top > 0)))
    runs = n_runs_per_setting[keep // genes.size]
    out = pd.DataFrame({
        "setting_id": np.asarray(settings, dtype=object)[keep // genes.size], "gene": genes[keep % genes.size],
        "n_runs": runs, "frac_de": n_de[keep] / runs, "frac_top": n_top[keep] / runs, "top_n": top_n,
        "mean_rank": rank_sum[keep] / seen[keep], "_setting": keep // genes.size,
    })
    out["comparison_id"] = out["setting_id"].map(comparison_of)
    out = out.sort_values(["_setting", "frac_top", "frac_de", "mean_rank", "gene"], ascending=[True, False, False, True, True])
    return out[STABILITY_COLUMNS].reset_index(drop=True)

"""Running a plan: one sampling key (:func:`run_group`, what one Nextflow task runs) or all of them (:func:`run_sweep`)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from desweep import scvi_compat
from desweep.de.checks import check_inputs, check_plan
from desweep.de.merge import STABILITY_TOP_N, SUMMARY_COLUMNS, SUMMARY_TOP_GENES, merge_summaries, stability
from desweep.de.sampling import (
    DEFAULT_N_SAMPLES, Sampling, SweepContext, make_context, own_batches, release, sample_scvi, sample_shared,
)
from desweep.de.statistics import compare, make_table
from desweep.errors import DesweepInputError, ParameterError
from desweep.names import join_names
from desweep.plan import PLAN_COLUMNS, SweepRow, sampling_keys
from desweep.progress import ProgressLog

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI

logger = logging.getLogger(__name__)


def _raw_stats(ctx: SweepContext, group1: str, group2: str) -> dict[str, np.ndarray]:
    cache_key = ("raw", group1, group2)
    if cache_key not in ctx.cache:
        manager = ctx.model.get_anndata_manager(ctx.adata, required=True)
        ctx.cache[cache_key] = scvi_compat.raw_counts_properties(manager, ctx.mask(group1), ctx.mask(group2))
    return ctx.cache[cache_key]


def _where_zero(ctx: SweepContext, cells: np.ndarray) -> np.ndarray:
    """Genes whose mean count over ``cells`` is below scvi-tools' ``threshold_counts`` (0.01)."""
    from scvi import REGISTRY_KEYS

    cache_key = ("zero", hashlib.sha256(np.ascontiguousarray(cells).tobytes()).hexdigest())
    if cache_key not in ctx.cache:
        x = ctx.model.get_anndata_manager(ctx.adata, required=True).get_from_registry(REGISTRY_KEYS.X_KEY)
        ctx.cache[cache_key] = np.asarray(np.mean(x[cells], 0)).flatten() < 0.01
    return ctx.cache[cache_key]


def _ood(ctx: SweepContext, key: SweepRow) -> str:
    if not key.batch_correction:
        return ""
    parts = []
    for role, group, batchid in (("group1", key.group1, key.batches1), ("group2", key.group2, key.batches2)):
        present = set(own_batches(ctx, np.flatnonzero(ctx.mask(group))))
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
        raise ParameterError("sampling_key", "sampling_key", f"'{sampling_key}' is not in the plan ({len(known)} keys, e.g. '{known[0]}')")
    ctx = context or make_context(adata, model, plan, group_key=group_key, keys=[sampling_key], n_samples=n_samples,
                                  batch_size=batch_size, sampling=sampling)
    key = SweepRow.from_record(rows.iloc[0])
    start = time.perf_counter()
    use_scvi = ctx.sampling == "scvi" or key.weights != "uniform"
    s1, s2, cells1, cells2, size = (sample_scvi if use_scvi else sample_shared)(ctx, key)
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
        release(ctx, key)
    logger.debug("%s: %d combinations in %.1f s", sampling_key, len(rows), time.perf_counter() - start)
    return tables, pd.DataFrame(summary, columns=SUMMARY_COLUMNS)


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns."""

    summary: pd.DataFrame
    stability: pd.DataFrame | None  # None with ``merge=False``
    tables: dict[str, pd.DataFrame]
    seconds: float
    decode_seconds: float
    decode_passes: int = 0  # the shared sampler's per-group decoding passes


def models_of(plan: pd.DataFrame) -> list[int]:
    """The model replicates a plan's rows use, in order."""
    return sorted({int(m) for m in plan["model"]})


def run_sweep(
    adata: AnnData, model: SCVI | Mapping[int, SCVI], plan: pd.DataFrame, *, group_key: str, n_samples: int = DEFAULT_N_SAMPLES,
    batch_size: int | None = None, sampling: Sampling = "shared", top_n: int = STABILITY_TOP_N,
    on_table: Callable[[str, pd.DataFrame], object] | None = None, on_group: Callable[[str, pd.DataFrame], object] | None = None,
    keys: Sequence[str] | None = None, merge: bool = True, source: str = "adata",
) -> SweepResult:
    """Run every sampling key of ``plan`` (or those in ``keys``), sharing decoding passes between keys.

    Parameters
    ----------
    model
        The trained model, or ``{model index: model}`` for a plan with model replicates (those the keys run use).
    keys
        Run only these sampling keys (in plan order): what one Nextflow task runs.
    merge
        Merge the per-key summaries (:func:`merge_summaries`, every key of the plan must have run) and compute
        the stability; ``False``: the summary is the keys' partial summaries concatenated, the stability ``None``.
    on_table
        Called with ``(combination_id, table)`` as each table is made; the
        tables are then not kept in memory (``SweepResult.tables`` is empty).
    on_group
        Called with ``(sampling_key, partial summary)`` after each key.
    source
        The file ``adata`` was read from, for error messages.
    Other parameters
        As :func:`run_group`; ``top_n`` sets the top genes of :func:`stability`.

    Returns
    -------
    :class:`SweepResult` with the summary (plan order), the stability table and
    the tables (when ``on_table`` is ``None``).
    """
    start = time.perf_counter()
    plan = check_plan(plan, source="plan")
    run = plan
    if keys is not None:
        unknown = [key for key in keys if key not in set(plan["sampling_key"])]
        if unknown:
            raise DesweepInputError(source, "keys", f"'{unknown[0]}' is not a sampling key of the plan")
        run = plan[plan["sampling_key"].isin(keys)]
    if not isinstance(model, Mapping) and len(models_of(run)) > 1:
        raise DesweepInputError("model", "model", f"the plan has {len(models_of(run))} model replicates: give {{index: model}}")
    models = model if isinstance(model, Mapping) else {m: model for m in models_of(run)}
    absent = [m for m in models_of(run) if m not in models]
    if absent:
        raise DesweepInputError("model", "model", f"the plan uses model {absent[0]}, which was not given")
    for index in models_of(run):  # every model's groups and batches before the first key runs
        check_inputs(adata, models[index], run[run["model"] == index], group_key=group_key, source=source)
    keep: dict[str, pd.DataFrame] = {}
    ranks: dict[str, pd.DataFrame] = {}
    partials = []
    decode_seconds, decode_passes = 0.0, 0
    progress = sweep_progress(plan, sampling_keys(run))
    done = 0
    for index in models_of(run):
        rows = run[run["model"] == index]
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
        decode_passes += ctx.n_decode_passes
    if not merge:
        return SweepResult(summary=pd.concat(partials, ignore_index=True), stability=None, tables=keep,
                           seconds=time.perf_counter() - start, decode_seconds=decode_seconds, decode_passes=decode_passes)
    summary = merge_summaries(partials, plan)
    return SweepResult(summary=summary, stability=stability(ranks, plan, top_n=top_n), tables=keep,
                       seconds=time.perf_counter() - start, decode_seconds=decode_seconds, decode_passes=decode_passes)


def sweep_progress(plan: pd.DataFrame, keys: list[str]) -> ProgressLog:
    """Progress lines for a sweep over ``keys``: one per tenth of them (:class:`desweep.progress.ProgressLog`)."""
    n_combinations = int(plan["sampling_key"].isin(keys).sum())
    logger.info("DE sweep: %d combinations in %d sampling keys", n_combinations, len(keys))
    return ProgressLog(logger, "DE sweep", len(keys), unit="sampling key")

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
    :func:`~desweep.de.statistics.pair_samples`), so they can differ in the last bits. Importance weights
    always use this sampler.

Modules
-------
:mod:`~desweep.de.checks` (the plan and the data it runs on),
:mod:`~desweep.de.sampling` (the two samplers), :mod:`~desweep.de.statistics`
(step 3 and the tables), :mod:`~desweep.de.sweep` (one sampling key, or all) and
:mod:`~desweep.de.merge` (summaries and stability). A plan row is a
:class:`desweep.plan.SweepRow`.

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

from desweep.de.checks import batch_names, check_inputs, check_plan
from desweep.de.merge import STABILITY_TOP_N, STABILITY_COLUMNS, SUMMARY_COLUMNS, SUMMARY_TOP_GENES, merge_summaries, stability
from desweep.de.sampling import DEFAULT_BATCH_SIZE, DEFAULT_N_SAMPLES, SAMPLINGS, Sampling, SweepContext, make_context
from desweep.de.statistics import EPS, TABLE_COLUMNS, compare, fdr_count, make_table, pair_samples
from desweep.de.sweep import SweepResult, models_of, run_group, run_sweep, sweep_progress
from desweep.plan import sampling_keys

__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_N_SAMPLES", "STABILITY_TOP_N", "EPS", "SAMPLINGS", "STABILITY_COLUMNS", "SUMMARY_COLUMNS",
    "SUMMARY_TOP_GENES", "TABLE_COLUMNS", "Sampling", "SweepContext", "SweepResult", "batch_names", "check_inputs", "check_plan",
    "compare", "fdr_count", "make_context", "make_table", "merge_summaries", "models_of", "pair_samples", "run_group", "run_sweep",
    "sampling_keys", "stability", "sweep_progress",
]

#!/usr/bin/env python
"""A short mutation check: one-line changes to desweep, each run against the fast tests that should catch it.

Usage::

    .venv/bin/python scripts/mutation_check.py                      # every mutation, table to stdout
    .venv/bin/python scripts/mutation_check.py --table docs/testing.md   # also rewrite the table there
    .venv/bin/python scripts/mutation_check.py --only de-filter-ignored,io-no-cleanup
    .venv/bin/python scripts/mutation_check.py --list

How it works:

1. The repository's files (``git ls-files``, plus untracked files git does not
   ignore) are copied to a work folder; the working tree is never written.
2. A *baseline* run of every selected test on the unmutated copy must pass; it
   also trains the shared ``pipeline_dirs`` fixture once into a cache
   (``DESWEEP_TEST_PIPELINE_CACHE``, see tests/conftest.py) that later runs
   reuse, except for mutations of the code that builds that fixture.
3. Per mutation, :func:`mutated` replaces the one occurrence of ``old`` with
   ``new`` in the copy and restores the file byte for byte (and its mtime)
   afterwards, whatever happens. The tests run in a child forked from this
   process, which has imported the heavy libraries (torch, scvi-tools,
   scanpy) but never desweep, so each child imports the mutated desweep fresh
   and pays no import time. Bytecode is not written, so no stale ``.pyc`` of a
   mutated file survives. Each child runs under ``--timeout`` seconds and is
   killed with its process group when over.
4. A mutation is *caught* when a selected test fails (the first failing test is
   named), *survived* when all pass. A mutation listed with a ``survives``
   reason is expected to survive (an equivalent change, or a gap written down);
   the check fails when an unexpected survivor or an unexpected catch appears,
   or when a mutation's ``old`` text is no longer in the code (keep the list
   current when the code moves: tests/test_mutation_check.py checks that).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLE_START = "<!-- mutation-check:start -->"
TABLE_END = "<!-- mutation-check:end -->"
#: code that builds the shared ``pipeline_dirs`` fixture: mutations here never reuse the cached fixture
FIXTURE_SOURCES = (
    "src/desweep/simulate.py", "src/desweep/simulate_params.py", "src/desweep/validate.py", "src/desweep/integrate.py", "src/desweep/cluster.py",
    "src/desweep/composition.py", "src/desweep/io.py", "src/desweep/datakeys.py", "src/desweep/compute.py",
    "src/desweep/cli/", "tests/conftest.py",
)
#: libraries imported once before forking (never desweep itself)
PRELOAD = ("numpy", "pandas", "scipy.sparse", "sklearn.covariance", "anndata", "scanpy", "torch", "scvi", "click", "yaml", "pytest")


ORIGINS = {"#19": "named in issue #19", "#19a": "tried by hand in #19 part A", "#19b": "added with this check",
           "#13": "the diagnose rules' mutations of #13 (docs/diagnostics.md)",
           "#24-answer": "the ranked answer and the named setting",
           "#28": "survivors named in issue #28", "#24": "the per-gene call's error bars of #24",
           "#24-sim": "the realistic simulator's planted structure",
           "#26": "parameters from one definition: the modules' ext.args and the library defaults"}


@dataclass(frozen=True)
class Mutation:
    """One one-line change: replace ``old`` (exactly one occurrence in ``file``) with ``new``."""

    id: str
    kind: str
    file: str
    old: str
    new: str
    breaks: str
    tests: tuple[str, ...]
    origin: str = "#19b"  # a key of ORIGINS
    survives: str = ""  # why the mutation is expected to survive (empty: it must be caught)


DE_CHECKS = "src/desweep/de/checks.py"
DE_SAMPLING = "src/desweep/de/sampling.py"
DE_STATS = "src/desweep/de/statistics.py"
DE_SWEEP = "src/desweep/de/sweep.py"
DE_MERGE = "src/desweep/de/merge.py"
PLAN = "src/desweep/plan/__init__.py"
T_DE = "tests/test_de.py"
SIM_R = "src/desweep/simulate_realistic.py"
T_SIM_R = "tests/test_simulate_realistic.py"
T_DET = "tests/test_determinism.py::test_steps_write_identical_bytes_in_two_processes"
T_FAST_STATS = f"{T_DE}::test_fast_statistics_equal_scvi_tools_expressions_on_the_same_samples"
T_BAD = "tests/test_bad_inputs.py::test_bad_input_fails_in_one_line_and_writes_nothing"
T_RESUME = "tests/test_reliability.py::test_resume_reruns_the_changed_step_and_only_its_descendants"

DIAG_C = "src/desweep/diagnose/classify.py"
DIAG_R = "src/desweep/diagnose/rank.py"
DIAG_A = "src/desweep/diagnose/answer.py"
T_ANSWER = ("tests/test_answer.py", "tests/test_markers.py")
DIAG_P = "src/desweep/diagnose/profiles.py"
T_DIAG = ("tests/test_diagnose_rules.py",) + tuple(f"tests/test_diagnose.py::{t}" for t in (
    "test_confounded_without_shared_cluster_is_not_measurable", "test_standard_errors_match_the_sampling_noise",
    "test_the_call_follows_each_genes_own_noise", "test_a_within_batch_difference_must_be_clear",
    "test_a_hidden_shift_must_explain_the_tables_fold_change"))

BRIDGE_SHIFT = "src/desweep/bridge/shift.py"
BRIDGE_UNITS = "src/desweep/bridge/units.py"
CHUNKS = "src/desweep/chunks.py"
T_CHUNKS = "tests/test_chunks.py"
PSEUDOBULK = "src/desweep/pseudobulk.py"
T_BRIDGE = "tests/test_bridge.py"

MUTATIONS: tuple[Mutation, ...] = (
    # ----------------------------------------------------------------- DE samplers
    Mutation("de-filter-ignored", "DE sampler", DE_SAMPLING, "        if filt:\n            idx = _filter_outliers(",
             "        if False:\n            idx = _filter_outliers(",
             "the shared sampler ignores filter_outlier_cells",
             (f"{T_DE}::test_outlier_filter_drops_cells_in_the_shared_sampler",), origin="#19"),
    Mutation("de-decodes-every-cell", "DE sampler", DE_SAMPLING, "        if cells.size > ctx.n_samples:\n            rng",
             "        if False:\n            rng", "a large group is decoded cell by cell (memory grows with the data)",
             ("tests/test_de.py::test_a_group_larger_than_n_samples_decodes_only_n_samples_cells",), origin="#27"),
    Mutation("de-importance-uniform", "DE sampler", DE_SAMPLING, "batch_size=size, weights=key.weights)",
             'batch_size=size, weights="uniform")',
             "importance weights silently replaced by uniform ones",
             (f"{T_DE}::test_importance_weights_row_equals_scvi_tools",), origin="#19"),
    Mutation("de-importance-shared", "DE sampler", DE_SWEEP, 'use_scvi = ctx.sampling == "scvi" or key.weights != "uniform"',
             'use_scvi = ctx.sampling == "scvi"',
             "importance rows sampled by the shared (uniform) sampler",
             (f"{T_DE}::test_importance_weights_row_equals_scvi_tools",), origin="#19"),
    Mutation("de-own-batch-gather", "DE sampler", DE_SAMPLING, "            if len(parts) == 1:\n                pool = next(",
             "            if len(parts) >= 1:\n                pool = next(",
             "a group spanning several batches: every cell decoded in the first batch, not its own",
             (f"{T_DE}::test_one_key_alone_gives_the_same_tables_as_the_whole_sweep", T_DET), origin="#19"),
    Mutation("de-hash-seed", "DE sampler", DE_SAMPLING, 'digest = hashlib.sha256("\\x1f".join(map(str, parts)).encode()).digest()',
             "digest = hash(tuple(map(str, parts))).to_bytes(8, 'little', signed=True)",
             "seeds derived with Python's hash() (salted per process)", (T_DET,), origin="#19"),
    Mutation("de-pair-set-order", "DE sampler", DE_STATS, "        for batch in b1:  # sorted",
             "        for batch in set(b1):  # sorted",
             "paired batches concatenated in hash-seeded set order", (T_DET,), origin="#19a"),
    Mutation("de-draw-seed-batch", "DE sampler", DE_SAMPLING, '_derive_seed(seed, group, filt, "draw", batch, n_per)',
             '_derive_seed(seed, group, filt, "draw", n_per)',
             "every decoding batch draws the same pool rows",
             (f"{T_DE}::test_shared_sampler_agrees_with_scvi_tools_within_monte_carlo_error",),
             survives="the draws stay uniform and independent of the samples; only which pool rows are taken changes, "
                      "which no statistic can tell (an equivalent mutant)"),
    Mutation("de-ood-inverted", "DE sampler", DE_SWEEP, 'for b in (batchid or ctx.batch_names) if b not in present]',
             'for b in (batchid or ctx.batch_names) if b in present]',
             "out-of-distribution decoding flagged for the wrong batches",
             (f"{T_DE}::test_summary_rows_and_out_of_distribution",)),
    # ----------------------------------------------------------------- DE statistics
    Mutation("de-median-lower", "DE statistics", DE_STATS, 'props["median"] = (lower + upper) / 2', 'props["median"] = lower',
             "lfc_median takes the lower middle value", (T_FAST_STATS,), origin="#19a"),
    Mutation("de-down-sign", "DE statistics", DE_STATS, "np.less(aa, -delta, out=fa)", "np.less(aa, delta, out=fa)",
             "P(lfc < -delta) counted against +delta (fast path)", (T_FAST_STATS,), origin="#19a"),
    Mutation("de-small-pseudocount", "DE statistics", DE_STATS, "np.float32(1e-3 * pseudocounts)", "np.float32(1e-2 * pseudocounts)",
             "the lfc summary uses 10x scvi-tools' small pseudocount (fast path)", (T_FAST_STATS,), origin="#19a"),
    Mutation("de-std-ddof", "DE statistics", DE_STATS, '"std": per_gene.std(1)', '"std": per_gene.std(1, ddof=1)',
             "lfc_std with n - 1 instead of scvi-tools' n (fast path)", (T_FAST_STATS,)),
    Mutation("de-vanilla-bayes-sign", "DE statistics", DE_STATS, "bayes = np.log(m1 + EPS) - np.log(m2 + EPS)",
             "bayes = np.log(m2 + EPS) - np.log(m1 + EPS)", "vanilla bayes_factor has the wrong sign",
             (f"{T_DE}::test_scvi_sampler_equals_scvi_tools",), origin="#19a"),
    Mutation("de-fdr-rule", "DE statistics", DE_STATS, "/ (1.0 + np.arange(sorted_p.size))", "/ (2.0 + np.arange(sorted_p.size))",
             "posterior expected FDR divided by one gene too many (more genes called DE)",
             (f"{T_DE}::test_scvi_sampler_equals_scvi_tools",)),
    Mutation("de-rank-tiebreak", "DE statistics", DE_STATS, 'np.lexsort((names, -np.abs(values["lfc_mean"]), -values["proba_de"]))',
             'np.lexsort((names, np.abs(values["lfc_mean"]), -values["proba_de"]))',
             "ties in proba_de ranked by the smaller |lfc_mean| first",
             (f"{T_DE}::test_tables_are_ranked_with_the_documented_tie_break",)),
    Mutation("de-stability-top", "DE statistics", DE_MERGE, "weights=ranks <= top_n", "weights=ranks < top_n",
             "stability counts the top n - 1 genes as the top n", (f"{T_DE}::test_stability_counts_seeds",)),
    Mutation("de-merge-missing", "DE statistics", DE_MERGE, "    if missing:\n        keys = list(", "    if False:\n        keys = list(",
             "merging summaries accepts a sweep with missing sampling keys",
             (f"{T_DE}::test_merge_refuses_summaries_with_a_sampling_key_missing",)),
    # ----------------------------------------------------------------- planner
    Mutation("plan-own-overlap", "planner", PLAN, "elif set(b1) & set(b2) and set(b1) != set(b2):",
             "elif set(b1) & set(b2) and set(b1) == set(b2):",
             "own-batch decoding of overlapping batch sets planned instead of skipped", ("tests/test_plan.py",)),
    Mutation("plan-dedupe-every-batch", "planner", PLAN, "            canonical = (None, None)\n",
             "            pass\n", "'each batch explicitly' planned again beside 'all'",
             ("tests/test_plan.py::test_explicit_every_batch_is_a_duplicate_of_all_when_batches_are_known",)),
    Mutation("plan-vanilla-delta", "planner", PLAN, '            modes.append(("vanilla", None, ""))\n',
             '            modes += [("vanilla", delta, "") for delta in grid["delta"]]\n',
             "vanilla planned once per delta (the same computation several times)", ("tests/test_plan.py",)),
    Mutation("plan-check-batchid-nobc", "planner", DE_CHECKS, 'if (out.loc[~out["batch_correction"], ["batchid1", "batchid2"]] != "").any().any():',
             "if False:", "a hand-edited plan with batchids but no batch correction is accepted",
             (f"{T_DE}::test_hand_edited_plan_with_batchids_but_no_batch_correction_is_refused",)),
    # ----------------------------------------------------------------- normalize
    Mutation("norm-noise-by-chunk", "normalize", "src/desweep/normalize/decode.py", "rng = np.random.default_rng([seed, block, stream])",
             "rng = np.random.default_rng([seed, start, stream])", "posterior noise depends on the chunk size",
             ("tests/test_normalize.py::test_latent_noise_does_not_depend_on_chunks",)),
    Mutation("norm-total-not-averaged", "normalize", "src/desweep/normalize/decode.py", "                    total /= len(codes)\n",
             "                    pass\n", "the all-batches layer sums the batches instead of averaging them",
             ("tests/test_normalize.py::test_export_matches_scvi_tools_decoder", "tests/test_normalize.py::test_export_layers_and_semantics")),
    Mutation("norm-own-from-batch", "normalize", "src/desweep/normalize/decode.py", "own_values[rows] = batch_mean[rows]",
             "own_values[rows] = batch_mean[~rows]", "own-batch layer filled from other cells' rows",
             ("tests/test_normalize.py::test_export_layers_and_semantics", "tests/test_normalize.py::test_export_only_own_batch_and_batch_subset")),
    Mutation("norm-z-draw-scale", "normalize", "src/desweep/normalize/decode.py", "z = z_transformation(qz.loc + qz.scale * eps)",
             "z = z_transformation(qz.loc + 3 * qz.scale * eps)", "posterior z drawn with three times its standard deviation",
             ("tests/test_normalize.py::test_sampled_z_is_loc_plus_scale_times_the_noise",), origin="#28"),
    Mutation("norm-means-count", "normalize", "src/desweep/normalize/means.py", "present = np.flatnonzero(counts)",
             "present = np.flatnonzero(counts > 1)", "cluster x batch means drop combinations with one cell",
             ("tests/test_normalize.py::test_cluster_batch_means_by_hand_with_a_single_cell_combination",)),
    # ----------------------------------------------------------------- composition
    Mutation("comp-stray-cells", "composition", "src/desweep/composition.py", "row[b] >= rule.min_cells and share[b]",
             "row[b] > 0 and share[b]", "a few stray cells make a cluster present in a batch",
             ("tests/test_composition.py",)),
    Mutation("comp-no-enrichment", "composition", "src/desweep/composition.py", "share[b] >= rule.min_enrichment * expected_share]",
             "share[b] >= 0]", "presence ignores the share of the batch", ("tests/test_composition.py",)),
    Mutation("comp-partially-shared", "composition", "src/desweep/composition.py", 'return "shared" if len(common) >= 2 else',
             'return "shared" if len(common) >= 1 else', "groups sharing one batch classed as shared", ("tests/test_composition.py",)),
    Mutation("comp-one-specific", "composition", "src/desweep/composition.py", "if len(batches1) == 1 or len(batches2) == 1:",
             "if len(batches1) == 1 and len(batches2) == 1:", "one batch-specific group not recognised", ("tests/test_composition.py",)),
    Mutation("comp-confounded-first", "composition", "src/desweep/composition.py", "for _, g1, g2 in pairs[:max_comparisons]]",
             "for _, g1, g2 in pairs[::-1][:max_comparisons]]", "default comparisons keep the least confounded pairs",
             ("tests/test_composition.py",)),
    # ----------------------------------------------------------------- validate
    Mutation("val-negative", "validate", "src/desweep/validate.py", "if self.minimum < 0:", "if self.minimum < -5:",
             "negative counts accepted", (f"{T_BAD}[negative counts]",)),
    Mutation("val-fractional", "validate", "src/desweep/validate.py", "fractional = np.abs(values - np.round(values)) > 1e-6",
             "fractional = np.abs(values - np.round(values)) > 0.5", "log-normalized values accepted",
             (f"{T_BAD}[log-normalized values]",)),
    Mutation("val-missing-batch", "validate", "src/desweep/validate.py", "if adata.obs[key].isna().any():", "if False:",
             "cells without a batch accepted", (f"{T_BAD}[batch key with missing values]",)),
    Mutation("val-keep-empty-genes", "validate", "src/desweep/validate.py",
             "counts = ValidatedCounts(without_x(adata[cell_totals > 0, gene_totals > 0]), adata.X, cell_totals > 0, gene_totals > 0)",
             "counts = ValidatedCounts(without_x(adata[cell_totals > 0, :]), adata.X, cell_totals > 0, None)", "genes without counts kept",
             ("tests/test_bad_inputs.py::test_genes_and_cells_without_counts_are_dropped_with_a_note",)),
    Mutation("val-block-nan-count", "validate", "src/desweep/validate.py",
             "self.n_nonfinite += int(values.size - np.count_nonzero(finite))", "self.n_nonfinite = int(values.size - np.count_nonzero(finite))",
             "non-finite values counted in the last block only (a NaN in an earlier block passes)",
             ("tests/test_validate.py::test_block_scan_reports_what_the_whole_matrix_check_does",)),
    Mutation("val-block-rows", "validate", "src/desweep/validate.py", "block = block[self.cells[start : start + block.shape[0]]]",
             "block = block[self.cells[: block.shape[0]]]", "every block drops the first block's empty cells, not its own",
             ("tests/test_validate.py::test_backed_validation_in_blocks_writes_what_the_whole_matrix_gives",)),
    Mutation("cluster-loads-counts", "cluster", "src/desweep/cli/cluster.py", "adata = read_h5ad(input_path, backed=True)",
             "adata = read_h5ad(input_path)", "cluster loads every cell's counts to cluster on the embedding",
             ("tests/test_cluster.py::test_cli_clusters_a_backed_file_and_copies_its_counts",)),
    Mutation("fingerprint-row-starts", "integrate", "src/desweep/integrate.py", "rising[row_ends[row_ends < rising.size]] = True",
             "rising[:0] = True", "a backed X's row starts read as unsorted indices (every file loaded whole to fingerprint it)",
             ("tests/test_integrate.py::test_fingerprint_of_a_backed_file_equals_the_in_memory_one",)),
    Mutation("io-indptr-not-widened", "validate", "src/desweep/io.py", 'group["indices"].shape[0] + added_nnz < INT32_MAX:',
             "True:", "a streamed X past 32-bit offsets keeps a 32-bit indptr (anndata refuses the append)",
             ("tests/test_simulate.py::test_block_writer_widens_indptr_before_it_overflows",)),
    # ----------------------------------------------------------------- runner resume
    Mutation("run-stamp-no-input", "runner resume", "src/desweep/runner/resume.py",
             'files[key] = input_checksum if name == item.step.input_option else file_checksum(path)',
             'files[key] = "" if name == item.step.input_option else file_checksum(path)',
             "the run stamp ignores the input checksum (new content at the same path is not rerun)", (T_RESUME,), origin="#19"),
    Mutation("run-no-upstream", "runner resume", "src/desweep/runner/pipeline.py",
             "upstream = {d: runs[d] for d in step.depends if d in runs}", "upstream = {}",
             "a changed step does not rerun its descendants", (T_RESUME,)),
    Mutation("run-outputs-not-checked", "runner resume", "src/desweep/runner/resume.py",
             "    if not all((folder / out).exists() for out in step.outputs):\n        return False\n"
             "    for rel, (size, mtime_ns) in record[\"outputs\"].items():\n        try:\n"
             "            info = (folder / rel).stat()\n        except OSError:\n            return False\n",
             "    for rel, (size, mtime_ns) in record[\"outputs\"].items():\n        try:\n"
             "            info = (folder / rel).stat()\n        except OSError:\n            continue\n", "a deleted output is not rerun", (T_RESUME,)),
    Mutation("run-recorded-files-ignored", "runner resume", "src/desweep/runner/resume.py",
             "            info = (folder / rel).stat()\n        except OSError:\n            return False\n",
             "            info = (folder / rel).stat()\n        except OSError:\n            continue\n",
             "a file deleted inside a declared output folder (a DE table, model.pt) is not rerun",
             ("tests/test_reliability.py::test_a_file_deleted_inside_a_declared_output_folder_reruns_the_step",), origin="#28"),
    # ----------------------------------------------------------------- io atomic writes
    Mutation("io-no-cleanup", "io atomic writes", "src/desweep/io.py", "    except BaseException:\n        _remove(tmp)\n",
             "    except BaseException:\n        pass\n", "a failed writer leaves its temporary file",
             ("tests/test_reliability.py::test_atomic_path_keeps_previous_file_when_the_writer_fails",)),
    Mutation("io-write-in-place", "io atomic writes", "src/desweep/io.py", "    with atomic_path(destination) as tmp:\n        writer(tmp)\n",
             "    writer(Path(destination))\n", "outputs written in place, so an interrupted step leaves half a file",
             ("tests/test_reliability.py::test_terminated_step_leaves_no_output",)),
    Mutation("io-sigterm-keeps-partial", "io atomic writes", "src/desweep/io.py", "    for path in list(_IN_PROGRESS):\n        _remove(path)\n",
             "    for path in list(_IN_PROGRESS):\n        pass\n", "SIGTERM leaves the temporary file",
             ("tests/test_reliability.py::test_terminated_step_leaves_no_output",)),
    # ----------------------------------------------------------------- outputs
    Mutation("baselines-empty-scores", "outputs", "src/desweep/cli/baselines.py", 'write_csv(results["baseline_scores"], ',
             'write_csv(results["baseline_scores"].head(0), ', "baseline_scores.csv written with its header only",
             ("tests/test_baselines.py::test_cli_writes_tables_and_reports_errors",)),
    # ----------------------------------------------------------------- diagnose (the rules of docs/diagnostics.md)
    Mutation("diag-both-explanations-cs", "diagnose call", DIAG_C, "    if net_ok and not shift_high:",
             "    if net_ok:",
             "both explanations called cluster-specific", T_DIAG, origin="#13"),
    Mutation("diag-batch-wide-despite-within", "diagnose call", DIAG_C, "    if shift_ok and not net_ok:",
             "    if shift_ok:",
             "batch-wide despite a clear net contrast", T_DIAG, origin="#13"),
    Mutation("diag-rival-needs-no-clarity", "diagnose call", DIAG_C, "    shift_ok = clear(s, se_s) and s - z * se_s >= f * d",
             "    shift_ok = shift_high",
             "a rival explanation needs no clarity (shift_ok = shift_high)", T_DIAG, origin="#13"),
    Mutation("diag-within-need-not-be-clear", "diagnose call", DIAG_C,
             "    within_ok = within_high and _clear(w, se_w, thresholds)",
             "    within_ok = within_high",
             "within-batch specificity need not be clear", T_DIAG, origin="#13"),
    Mutation("diag-table-direction-ignored", "diagnose call", DIAG_C, "    sign = np.where((de_sign != 0) & ~contrary, de_sign, raw_sign)",
             "    sign = raw_sign",
             "the DE table's direction ignored", T_DIAG, origin="#13"),
    Mutation("diag-contrary-never-detected", "diagnose call", DIAG_C, "    contrary = (de_sign != 0) & (de_sign * d1 <= -clear1)  # the raw data clearly go the other way",
             "    contrary = np.zeros(len(genes), dtype=bool)",
             "a contrary direction never detected", T_DIAG, origin="#13"),
    Mutation("diag-contrary-trusted", "diagnose call", DIAG_C, "    sign = np.where((de_sign != 0) & ~contrary, de_sign, raw_sign)",
             "    sign = np.where(de_sign != 0, de_sign, raw_sign)",
             "a contrary direction trusted over the raw data", T_DIAG, origin="#13"),
    Mutation("diag-unmeasurable-within-removed", "diagnose call", DIAG_C, "    if not np.isfinite(w):",
             "    if False:",
             "unmeasurable within-batch specificity branch removed", T_DIAG, origin="#13"),
    Mutation("diag-no-floor", "diagnose call", DIAG_C,
             "    return bool(np.isfinite(value) and value >= max(thresholds.z * (se if np.isfinite(se) else np.inf), thresholds.min_abs_lfc))",
             "    return bool(np.isfinite(value) and value >= thresholds.z * (se if np.isfinite(se) else np.inf))",
             "no clear raw difference: no floor (min_abs_lfc ignored)", T_DIAG, origin="#13"),
    Mutation("diag-unknown-gene-known", "diagnose call", DIAG_C, "    if not known:",
             "    if False:",
             "unknown gene treated as known", T_DIAG, origin="#13"),
    Mutation("diag-hidden-shift-unchecked", "diagnose call", DIAG_C, "        & np.isfinite(magnitude) & (magnitude > 0) & ~(shift - thresholds.z * se >= f * magnitude)",
             "        & False",
             "hidden shift need not explain the table's lfc", T_DIAG, origin="#13"),
    Mutation("diag-within-max-reference", "diagnose call", DIAG_C, "        within.append(h - other_log.mean(axis=0))",
             "        within.append(h - other_log.max(axis=0))",
             "the within-batch reference taken as the highest other cluster instead of the mean", T_DIAG, origin="#28"),
    Mutation("diag-within-se-over-n", "diagnose call", DIAG_C, "/ len(others) ** 2)",
             "/ len(others))",
             "the within-batch SE of the others' mean divided by n instead of n^2", T_DIAG, origin="#28"),
    Mutation("diag-net-need-not-be-clear", "diagnose call", DIAG_C, "    net_ok = clear(net, se_net)",
             "    net_ok = net >= thresholds.min_abs_lfc",
             "the net contrast d - s need not be clear under its error", T_DIAG, origin="#24"),
    Mutation("diag-shift-fixed-effect", "diagnose call", DIAG_C, "    se_shift = pooled.se_prediction if pooled else nan",
             "    se_shift = pooled.se if pooled else nan",
             "the groups' shift judged by the pooled SE, not the prediction SE (bridges' spread ignored)", T_DIAG, origin="#24"),
    Mutation("diag-shift-unmatched-batches", "diagnose call", DIAG_C,
             "        hi_log, var_hi = profile.weighted_log2(cluster, {b: profile.cells(side.high, b) for b in side.high_batches}, genes)",
             "        hi_log, var_hi = profile.weighted_log2(cluster, {b: profile.cells(cluster, b) for b in on_hi}, genes)",
             "the bridge's shift not weighted by the groups' batch mix (a group spanning the other's batch)", T_DIAG, origin="#24"),
    Mutation("diag-no-count-prior", "diagnose profile", DIAG_P, "        variance = np.maximum(variance, poisson)",
             "        variance = variance",
             "zeros and single counts are exact (no Poisson floor)", T_DIAG, origin="#24"),
    Mutation("diag-cells-as-replicates", "diagnose profile", DIAG_P,
             "        variances.append(variance if between is None else np.maximum(variance, between))",
             "        variances.append(variance)",
             "cells counted as replicates although a sample column names donors", T_DIAG, origin="#24"),
    Mutation("rank-ok-above-half-only", "diagnose ranking", DIAG_R, '        row = {**base, "status": "ok" if best["share_cluster_specific_mean"] >= 0.5 else "weak",',
             '        row = {**base, "status": "ok" if best["share_cluster_specific_mean"] > 0.5 else "weak",',
             "status ok above half only", T_DIAG, origin="#13"),
    Mutation("rank-every-setting-recommended", "diagnose ranking", DIAG_R, '            scores.loc[tie_band(settings).index, "recommended"] = True',
             '            scores.loc[settings.index, "recommended"] = True',
             "every setting recommended", T_DIAG, origin="#13"),
    Mutation("rank-no-tie-band", "diagnose ranking", DIAG_R, '    band = band_width(p, int(best["n_top"]))',
             "    band = 0.0",
             "no tie band (best only)", T_DIAG, origin="#13"),
    Mutation("rank-tie-band-ignores-batch-wide", "diagnose ranking", DIAG_R, '    return ranked[(ranked["share_cluster_specific_mean"] >= p - band - 1e-12) & (ranked["share_batch_wide_mean"] <= bw + 1e-12)]',
             '    return ranked[(ranked["share_cluster_specific_mean"] >= p - band - 1e-12)]',
             "tie band ignores the batch-wide share", T_DIAG, origin="#13"),
    Mutation("rank-best-seed-max", "diagnose ranking", DIAG_R, '                row[f"{column}_mean"] = float(reps[column].mean())',
             '                row[f"{column}_mean"] = float(reps[column].max())',
             "settings scored by their best seed (max, not mean)", T_DIAG, origin="#13"),
    Mutation("rank-every-setting-agrees", "diagnose ranking", DIAG_R, '               "n_recommended_settings": len(band), "all_settings_agree": len(part) > 1 and len(band) == len(part),',
             '               "n_recommended_settings": len(band), "all_settings_agree": len(part) > 1,',
             "every setting said to agree", T_DIAG, origin="#13"),
    Mutation("rank-no-settings-weak", "diagnose ranking", DIAG_R, '            rows.append({**base, "status": "no_settings", "n_recommended_settings": 0, "all_settings_agree": False,',
             '            rows.append({**base, "status": "weak", "n_recommended_settings": 0, "all_settings_agree": False,',
             "no_settings reported as weak", T_DIAG, origin="#13"),
    Mutation("rank-default-share-from-best", "diagnose ranking", DIAG_R, '               "default_share_batch_wide": float(default_row["share_batch_wide_mean"]) if default_row is not None else float("nan"),',
             '               "default_share_batch_wide": float(best["share_batch_wide_mean"]) if default_row is not None else float("nan"),',
             "default's batch-wide share from the best setting", T_DIAG, origin="#13"),
    # ----------------------------------------------------------------- the ranked answer
    Mutation("answer-no-batch-wide-veto", "the answer", DIAG_A, '            if row["pattern"] == "batch_wide" or heterogeneous[i]:',
             "            if heterogeneous[i]:", "batch-wide genes kept in the answer", T_ANSWER, origin="#24-answer"),
    Mutation("answer-no-heterogeneity-veto", "the answer", DIAG_A, '            if row["pattern"] == "batch_wide" or heterogeneous[i]:',
             '            if row["pattern"] == "batch_wide":', "genes heterogeneous across bridges kept", T_ANSWER,
             origin="#24-answer"),
    Mutation("answer-reversed-order", "the answer", DIAG_A, "    pooled = np.mean(list(families.values()), axis=0)",
             "    pooled = -np.mean(list(families.values()), axis=0)", "the answer ranked worst first", T_ANSWER,
             origin="#24-answer"),
    Mutation("answer-tables-not-families", "the answer", DIAG_A, "    pooled = np.mean(list(families.values()), axis=0)",
             "    pooled = np.mean([normalized_log_ranks(t, genes) for t in [*tables, *([bridge_table] if bridge_table is not None else [])]], axis=0)",
             "every table weighs the same, so many scVI replicates drown the bridge", T_ANSWER, origin="#24-answer"),
    Mutation("answer-high-above-half-only", "the answer", DIAG_A, '        high = s["support"] >= min_support - 1e-12 if np.isfinite(s["support"]) else False',
             '        high = s["support"] > min_support if np.isfinite(s["support"]) else False',
             "high confidence needs more than half the replicates", T_ANSWER, origin="#24-answer"),
    Mutation("answer-direction-ignored", "the answer", DIAG_A, '        medium = call["pattern"] == "cluster_specific" and bool(agrees[i])',
             '        medium = call["pattern"] == "cluster_specific"', "medium confidence despite families disagreeing on the direction",
             T_ANSWER, origin="#24-answer"),
    Mutation("answer-bridge-direction-ignored", "the answer", DIAG_A, "    direction = np.where(np.isfinite(bridge_lfc) & (bridge_lfc != 0), bridge_lfc, scvi_lfc)",
             "    direction = scvi_lfc", "the answer's direction from scVI even where the bridge contrast has one", T_ANSWER,
             origin="#24-answer"),
    Mutation("rank-robust-setting-ignored", "diagnose ranking", DIAG_R, "    return band.loc[robust[0]] if robust else ranked.iloc[0]",
             "    return ranked.iloc[0]", "the best-scoring setting named even when the robust one ties with it (winner's curse)",
             ("tests/test_answer.py",), origin="#24-answer"),
    # ----------------------------------------------------------------- the bridge contrast
    Mutation("bridge-shift-sign", "bridge contrast", BRIDGE_SHIFT, "        shifts.append(level1 - level2)",
             "        shifts.append(level2 - level1)", "the batch shift measured from group2's batches to group1's",
             (T_BRIDGE,)),
    Mutation("bridge-no-poisson-floor", "bridge contrast", BRIDGE_SHIFT,
             "    variance = np.maximum(var_y / (y + 0.5) ** 2, 1.0 / (y + 0.5)) / LN2_SQUARED",
             "    variance = var_y / (y + 0.5) ** 2 / LN2_SQUARED", "an all-zero bridge has variance 0 and takes all the weight",
             (T_BRIDGE,)),
    Mutation("bridge-heterogeneous-without-q", "bridge contrast", BRIDGE_SHIFT,
             "        return (np.nan_to_num(q_pvalue, nan=1.0) < alpha) & ",
             "        return ", "heterogeneity flagged without a significant Q test", (T_BRIDGE,)),
    Mutation("bridge-heterogeneous-absolute", "bridge contrast", BRIDGE_SHIFT,
             "(z * np.sqrt(np.nan_to_num(tau2)) >= np.abs(np.nan_to_num(lfc)) / 2)",
             "(z * np.sqrt(np.nan_to_num(tau2)) >= 0)", "heterogeneity not judged against the gene's own contrast",
             (T_BRIDGE,)),
    Mutation("bridge-lobo-sign", "bridge contrast", BRIDGE_SHIFT,
             "            lobo[i] = lfc + pooled.mean - random_effects(shifts[rest], variances[rest]).mean",
             "            lobo[i] = lfc - pooled.mean + random_effects(shifts[rest], variances[rest]).mean",
             "leaving a bridge out moves the contrast the wrong way", (T_BRIDGE,)),
    Mutation("bridge-lower-bound-no-tau", "bridge contrast", "src/desweep/bridge/fit.py",
             "    variance = se**2 + (0.0 if extra_var is None else np.nan_to_num(extra_var))",
             "    variance = se**2", "the lower bound of |lfc| ignores the spread of the shift across bridges", (T_BRIDGE,)),
    Mutation("chunks-last-chunk-dropped", "chunked aggregation", CHUNKS,
             "        stop = min(start + chunk_size, n_rows)", "        stop = start + chunk_size - (start + chunk_size > n_rows) * chunk_size",
             "the last, shorter chunk of cells left out of every sum", (T_CHUNKS,), origin="#27"),
    Mutation("chunks-sums-overwritten", "chunked aggregation", CHUNKS, "            total += dense[0]",
             "            total = dense[0]", "each chunk's sums replace the earlier chunks' instead of adding to them", (T_CHUNKS,), origin="#27"),
    Mutation("chunks-positive-not-strict", "chunked aggregation", CHUNKS, "        is_positive = chunk > 0",
             "        is_positive = chunk >= 0", "every cell counted as having a count", (T_CHUNKS,), origin="#27"),
    Mutation("chunks-masked-cells-counted", "chunked aggregation", CHUNKS, "    codes[keep] = compact",
             "    codes[:] = np.resize(compact, len(codes))", "cells outside the mask summed into the groups", (T_CHUNKS,), origin="#27"),
    Mutation("pseudobulk-variance-no-dof", "pseudobulk", PSEUDOBULK, "        return var * (n / (n - 1))[:, None]",
             "        return var", "the cells' variance of a unit without scanpy's n / (n - 1)", (T_CHUNKS,), origin="#27"),
    Mutation("bridge-one-bridge-identifiable", "bridge contrast", BRIDGE_UNITS, "    if len(bridges) >= 2:",
             "    if len(bridges) >= 1:", "one bridge called identifiable (its heterogeneity cannot be measured)", (T_BRIDGE,)),
    Mutation("bridge-same-batch-ignored", "bridge contrast", BRIDGE_UNITS, "    if shared:\n",
             "    if False:\n", "groups sharing a batch judged through bridges", (T_BRIDGE,)),
    Mutation("bridge-unlinked-batches", "bridge contrast", BRIDGE_UNITS,
             "    if not any(linked[b] == component for b in b2):", "    if False:",
             "groups in unlinked batches not refused up front", (T_BRIDGE,)),
    Mutation("bridge-samples-ignored", "bridge contrast", "src/desweep/bridge/__init__.py",
             '        if ok:\n            return units, "sample", ""', '        if False:\n            return units, "sample", ""',
             "a sample column never used", (T_BRIDGE,)),
    Mutation("bridge-no-pseudo-replicates", "bridge contrast", "src/desweep/bridge/__init__.py",
             '    if term == "batch" and split is not None and residual_df(units.meta, term) < 1:',
             "    if False:", "a saturated design (one unit per coefficient) gives no numbers instead of pseudo-replicates",
             (T_BRIDGE,)),
    Mutation("rank-bridge-recommended", "diagnose ranking", DIAG_R, '        settings = order[order["method"] == "scvi"]',
             "        settings = order", "the bridge contrast may be recommended as an scVI setting",
             ("tests/test_markers.py::test_setting_scores_average_models_and_seeds",
              "tests/test_diagnose.py::test_on_real_scvi_de_tables")),
    # ----------------------------------------------------------------- realistic simulator
    Mutation("sim-interaction-every-bridge", "simulator", SIM_R, "size=int(rng.integers(1, len(shared))), replace=False)",
             "size=len(shared), replace=False)", "interaction genes respond in every bridge (heterogeneity undetectable)",
             (T_SIM_R,), origin="#24-sim"),
    Mutation("sim-no-donor-effect", "simulator", SIM_R, "+ interaction[b, k] + donor_effect[d]", "+ interaction[b, k]",
             "donors planted in obs but with no effect on counts", (T_SIM_R,), origin="#24-sim"),
    Mutation("sim-no-ambient", "simulator", SIM_R, "cell_ambient = np.clip(ambient[b]", "cell_ambient = 0 * np.clip(ambient[b]",
             "no ambient RNA mixed in", (T_SIM_R,), origin="#24-sim"),
    Mutation("sim-parent-in-one-group", "simulator", SIM_R, "effect[pair, g] = lfc", "effect[pair[0], g] = lfc",
             "the related pair's parent markers up in one group only", (T_SIM_R,), origin="#24-sim"),
    Mutation("sim-truth-every-gene-marker", "simulator", SIM_R, "np.abs(logit1 - logit2) > 1e-9", "np.abs(logit1 - logit2) >= 0",
             "the contrast's truth calls every gene a marker", (T_SIM_R,), origin="#24-sim"),
    # ----------------------------------------------------------------- parameters from one definition
    Mutation("params-negatable-one-way", "parameters", "src/desweep/nextflow_sync.py",
             'off = "--no-" + param.flag.removeprefix("--") if param.negatable else ""', 'off = ""',
             "--early_stopping false passes nothing: the module trains with early stopping",
             ("tests/test_params.py::test_module_args_follow_each_param_kind",), origin="#26"),
    Mutation("params-text-unquoted", "parameters", "src/desweep/nextflow_sync.py",
             'value = f"\'{interpolated(name)}\'" if param.type is str else interpolated(name)', 'value = interpolated(name)',
             "a text option reaches the shell unquoted (a comparison's ';' ends the command)",
             ("tests/test_params.py::test_module_args_follow_each_param_kind",), origin="#26"),
    Mutation("params-default-drifts", "parameters", "src/desweep/params.py", 'Param("alpha", float, ALPHA,',
             'Param("alpha", float, 0.02,', "desweep diagnose's --alpha default differs from Thresholds' (the Python API)",
             ("tests/test_params.py::test_every_param_default_is_its_library_function_default",), origin="#26"),
    # ----------------------------------------------------------------- the suite's own guards
    Mutation("suite-real-data-skips-in-ci", "suite guards", "tests/test_real_data.py",
             'pytest.fail(f"CI=true: {message}", pytrace=False)', "pytest.skip(message)",
             "real-data tests skip silently in CI", ("tests/test_suite_guards.py",), origin="#19a"),
)


# --------------------------------------------------------------------------- applying
@contextlib.contextmanager
def mutated(path: Path, old: str, new: str) -> Iterator[None]:
    """Replace the one occurrence of ``old`` in ``path`` with ``new``; restore the bytes and mtime afterwards."""
    original = path.read_bytes()
    stat = path.stat()
    count = original.decode().count(old)
    if count != 1:
        raise ValueError(f"{path}: the text to mutate occurs {count} times (expected once): {old!r}")
    try:
        path.write_bytes(original.decode().replace(old, new).encode())
        yield
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def stale(mutations: tuple[Mutation, ...], root: Path) -> list[str]:
    """Mutations whose ``old`` text is not in their file exactly once (the code moved on)."""
    out = []
    for m in mutations:
        path = root / m.file
        count = path.read_text().count(m.old) if path.is_file() else 0
        if count != 1 or m.old == m.new:
            out.append(f"{m.id}: {m.file} holds the text {count} times")
    return out


def copy_repo(destination: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files of the repository to ``destination``."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


# --------------------------------------------------------------------------- running
class _Recorder:
    """A pytest plugin that keeps the node ids of failed tests and the counts."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed:
            self.failed.append(report.nodeid)
        elif report.passed and report.when == "call":
            self.passed += 1


def _child(root: str, tests: list[str], result_file: str) -> None:
    os.setsid()  # its own process group, so a timeout kills the tests' subprocesses too
    import pytest

    os.chdir(root)
    recorder = _Recorder()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--tb=no", "-o", "addopts=", *tests], plugins=[recorder])
    Path(result_file).write_text(json.dumps({"exit": int(code), "failed": recorder.failed, "passed": recorder.passed}))
    os._exit(0)


def run_tests(root: Path, tests: list[str], *, timeout: float, env: dict[str, str]) -> dict:
    """Run ``tests`` in a forked child under ``root``; return exit code, failed node ids, passed count, seconds."""
    result_file = Path(tempfile.mkstemp(prefix="mutation-result-", suffix=".json")[1])
    saved = dict(os.environ)
    os.environ.update(env)
    start = time.perf_counter()
    try:
        child = multiprocessing.get_context("fork").Process(target=_child, args=(str(root), tests, str(result_file)))
        child.start()
        child.join(timeout)
        if child.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.join()
            return {"exit": None, "failed": [], "passed": 0, "seconds": time.perf_counter() - start, "timeout": True}
        text = result_file.read_text()
        result = json.loads(text) if text else {"exit": child.exitcode, "failed": [], "passed": 0}
        return result | {"seconds": time.perf_counter() - start, "timeout": False}
    finally:
        os.environ.clear()
        os.environ.update(saved)
        result_file.unlink(missing_ok=True)


def uses_fixture_cache(m: Mutation) -> bool:
    return not any(m.file.startswith(s) for s in FIXTURE_SOURCES)


def verdict(m: Mutation, result: dict) -> tuple[str, bool]:
    """The table's text for a result, and whether it is what the list expects."""
    if result["timeout"]:
        return "timed out", False
    if result["exit"] == 0:
        return (f"survived: {m.survives}" if m.survives else "survived (unexpected: a gap in the tests)"), bool(m.survives)
    if result["exit"] == 1 and result["failed"]:  # 1: tests ran and failed; 2-5: interrupted, usage error, none collected
        return f"caught by `{result['failed'][0].split('/')[-1]}`", not m.survives
    return f"error (pytest exit {result['exit']}): the tests did not run", False


def markdown(rows: list[tuple[Mutation, str, dict]], *, baseline_seconds: float, load: tuple[float, float, float],
             rerun: set[str] | None = None) -> str:
    """The results table; ``rerun``: the ids run now when the other rows were kept from an earlier run (--update)."""
    now = [r for r in rows if rerun is None or r[0].id in rerun]
    seconds = baseline_seconds + sum(r[2]["seconds"] for r in now)
    caught = sum(r[1].startswith("caught") for r in rows)
    by_origin = []
    for origin, label in ORIGINS.items():
        mine = [r for r in rows if r[0].origin == origin]
        if mine:
            by_origin.append(f"{label}: {sum(r[1].startswith('caught') for r in mine)} of {len(mine)}")
    lines = [
        f"{len(rows)} mutations, {caught} caught ({100 * caught / max(len(rows), 1):.0f} %): {'; '.join(by_origin)}. "
        + (f"{len(now)} rerun now, the other rows kept from an earlier run with their seconds; this run: " if len(now) < len(rows) else "")
        + f"{seconds / 60:.1f} min in all: the imports and baseline run {baseline_seconds / 60:.1f} min, each mutation's tests in the last "
        f"column (seconds; load average at the end {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on this machine's cores).",
        "",
        "| id | kind | file | mutation | what it breaks | result | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, text, result in rows:
        change = f"`{_short(m.old)}` → `{_short(m.new)}`"
        lines.append(f"| {m.id} ({m.origin}) | {m.kind} | {m.file} | {change} | {m.breaks} | {text} | {result['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _short(code: str) -> str:
    text = " ".join(code.split())
    return (text if len(text) <= 70 else text[:67] + "...").replace("|", "\\|")


def write_table(path: Path, table: str) -> None:
    text = path.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"{path}: needs the markers {TABLE_START} and {TABLE_END}")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    path.write_text(f"{head}{TABLE_START}\n{table}{TABLE_END}{tail}")


def preload() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    if any(name == "desweep" or name.startswith("desweep.") for name in sys.modules):
        raise SystemExit("desweep was imported before forking: children would not see the mutations")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated mutation ids (default: all)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutation (default 600)")
    parser.add_argument("--table", type=Path, help="rewrite the table between the markers of this markdown file")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--workdir", type=Path, help="where the copy goes (default: a new temporary folder, removed after)")
    parser.add_argument("--fixture-cache", type=Path, help="reuse the trained fixture in this folder across runs of this script")
    parser.add_argument("--update", action="store_true",
                        help="with --only and --json: keep the other mutations' results from that JSON in the table")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    selected = [m for m in MUTATIONS if not args.only or m.id in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - {m.id for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutation ids: {', '.join(sorted(unknown))}")
    if args.update and not args.json:
        parser.error("--update needs --json (the previous results)")
    if args.list:
        for m in selected:
            print(f"{m.id:28} {m.kind:18} {m.file}: {m.breaks}")
        return 0
    problems = stale(tuple(selected), REPO)
    if problems:
        print("stale mutations (update scripts/mutation_check.py):\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every `mutated` block restores its file
    sys.dont_write_bytecode = True
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="desweep-mutation-"))
    root = copy_repo(workdir / "repo")
    cache = args.fixture_cache or workdir / "fixture-cache"
    base_env = {"PYTHONPATH": f"{root / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
                "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    sys.path.insert(0, str(root / "src"))
    started = time.perf_counter()
    preload()
    print(f"preloaded in {time.perf_counter() - started:.0f} s; copy in {root}", flush=True)

    all_tests = list(dict.fromkeys(t for m in selected for t in m.tests))
    baseline = run_tests(root, all_tests, timeout=args.timeout * 3, env=base_env | {"DESWEEP_TEST_PIPELINE_CACHE": str(cache)})
    print(f"baseline: {baseline['passed']} passed in {baseline['seconds']:.0f} s", flush=True)
    if baseline["timeout"] or baseline["exit"] != 0:
        print(f"the unmutated tests do not pass: {baseline}", file=sys.stderr)
        return 2

    setup_seconds = time.perf_counter() - started  # the imports and the baseline run
    rows, unexpected = [], []
    for m in selected:
        env = base_env | ({"DESWEEP_TEST_PIPELINE_CACHE": str(cache)} if uses_fixture_cache(m) else {})
        with mutated(root / m.file, m.old, m.new):
            result = run_tests(root, list(m.tests), timeout=args.timeout, env=env)
        text, expected = verdict(m, result)
        rows.append((m, text, result))
        if not expected:
            unexpected.append(m.id)
        print(f"{m.id:28} {result['seconds']:6.0f} s  {text}", flush=True)

    if args.update:  # the mutations not rerun now keep their last results
        rerun = {m.id for m in selected}
        previous = {r["id"]: r for r in json.loads(args.json.read_text())} if args.json.is_file() else {}
        by_id = {m.id: m for m in MUTATIONS}
        kept = [(by_id[i], r["result"], r) for i, r in previous.items() if i in by_id and i not in rerun]
        order = {m.id: k for k, m in enumerate(MUTATIONS)}
        rows = sorted(rows + kept, key=lambda row: order[row[0].id])
    table = markdown(rows, baseline_seconds=setup_seconds, load=os.getloadavg(), rerun={m.id for m in selected})
    print(table)
    if args.table:
        write_table(args.table, table)
    if args.json:
        args.json.write_text(json.dumps([{"id": m.id, **r, "result": text} for m, text, r in rows], indent=1) + "\n")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    if unexpected:
        print(f"unexpected results: {', '.join(unexpected)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

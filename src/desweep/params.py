"""One typed definition per parameter: every step's options, and the Nextflow params.

Each :class:`Param` holds a parameter's name, type, default, help, range and,
when Nextflow exposes it, its ``nextflow_schema.json`` group. From these records:

- the Click options of every step (:func:`desweep.cli._common.options_from`);
- ``desweep run``'s top-level options, its ``--set`` checks and ``--list-options``;
- ``nextflow_schema.json``'s groups, ``nextflow.config``'s params defaults, each module's
  ``ext.args`` (conf/modules_args.config) and the parameter table of docs/usage.md, written by
  ``desweep dev sync-nextflow``
  (:mod:`desweep.nextflow_sync`); a test fails when a committed file is stale.

A choice is a ``Literal`` type, and its values are read from the type
(:func:`desweep.choices.literal_values`, scanpy's ``get_literal_vals``), never retyped.

To add a training option: one :class:`Param` in :data:`INTEGRATE`, the keyword in
:func:`desweep.integrate.train_scvi` (tests/test_params.py checks that both defaults
agree); with ``group`` set it becomes a Nextflow param too, and
``desweep dev sync-nextflow`` writes the schema, the params, the docs table and the
module's ``ext.args`` (conf/modules_args.config).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_origin

from desweep import keys
from desweep.choices import literal_values
from desweep.cluster import Neighbors
from desweep.compute import Accelerator
from desweep.de import DEFAULT_N_SAMPLES, Sampling
from desweep.de import STABILITY_TOP_N
from desweep.defaults import ALPHA, CLASSIFIED_TOP_N, EXPLAINED_FRACTION
from desweep.integrate import DEFAULT_N_TOP_GENES, GeneLikelihood
from desweep.normalize import CHOICE_HELP, DEFAULT_CHOICES, DEFAULT_MAX_MEMORY_GB, Latent
from desweep.plan import DEFAULT_MAX_COMBINATIONS, WARN_COMBINATIONS

#: a comma-separated list of names (a name holding ``,`` in double quotes), read by :func:`desweep.names.split_list`
NAMES = "names"
#: nextflow_schema.json pattern of a text param that conf/modules_args.config passes in single quotes
QUOTABLE = r"^[^'\s][^']*$"
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Param:
    """One parameter of a step (a Click option) and, with ``group``, of the Nextflow pipeline.

    Attributes
    ----------
    name
        The Python name (``n_top_genes``); the flag is ``--n-top-genes``.
    type
        ``int``, ``float``, ``bool``, ``str`` or a ``Literal`` (a choice).
    default
        The default; ``None`` means the step decides (``default_doc`` says how).
    help
        One line for ``--help``, the schema's description and docs/usage.md.
    group
        The ``nextflow_schema.json`` group (a key of :data:`GROUPS`), or ``None`` when
        Nextflow does not expose it.
    nf_name
        The Nextflow param's name when it differs from ``name`` (``multiqc_title``).
    minimum, maximum, exclusive_minimum, exclusive_maximum
        The range of a number.
    negatable
        A ``bool`` written ``--x/--no-x`` (else a flag ``--x``).
    parse
        How the text is read: :data:`NAMES` (a list of names), ``"module:function"``
        (a function of the text), or ``"names+module:function"`` (the list, then the function).
    cli
        ``False`` for a Nextflow-only param (the pipeline's input, publish mode, ...).
    short
        A one-letter flag (``-c``).
    default_doc
        What the default is when it is not a value (``scvi-tools' rule``), for docs/usage.md.
    steps
        For a Nextflow-only param: the steps it reaches, for docs/usage.md.
    schema
        Further ``nextflow_schema.json`` keys (``format``, ``help_text``, ``fa_icon``, ...).
    """

    name: str
    type: Any
    default: Any = None
    help: str = ""
    group: str | None = None
    nf_name: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    negatable: bool = False
    parse: str | None = None
    cli: bool = True
    short: str | None = None
    default_doc: str = ""
    steps: str = ""
    schema: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def description(self) -> str:
        """``help``, with what the default is when it is not a value (``default_doc``)."""
        if self.default is None and self.default_doc and "(default" not in self.help:
            return self.help.removesuffix(".") + f" (default: {self.default_doc})."
        return self.help

    @property
    def nextflow_name(self) -> str | None:
        return (self.nf_name or self.name) if self.group else None

    @property
    def choices(self) -> tuple[str, ...] | None:
        return literal_values(self.type) if get_origin(self.type) is Literal else None

    @property
    def type_name(self) -> str:
        """``integer``, ``number``, ``boolean`` or ``string`` (JSON Schema's names)."""
        return {int: "integer", float: "number", bool: "boolean"}.get(self.type, "string")


#: nextflow_schema.json's groups of params, in order: title, icon and description
GROUPS: dict[str, dict[str, Any]] = {
    "input_output_options": {"title": "Input/output options", "fa_icon": "fas fa-terminal",
                             "description": "Where the counts come from, which obs columns hold the batch and the labels, "
                                            "and where results go.", "required": ["outdir"]},
    "validate_options": {"title": "Validate options", "fa_icon": "fas fa-check",
                         "description": "Checks on the input counts (`desweep validate`)."},
    "integrate_options": {"title": "Integrate options", "fa_icon": "fas fa-project-diagram",
                          "description": "The scVI model (`desweep integrate`)."},
    "cluster_options": {"title": "Cluster options", "fa_icon": "fas fa-circle-nodes",
                        "description": "Leiden clusters on the scVI latent space (`desweep cluster`)."},
    "composition_options": {"title": "Composition options", "fa_icon": "fas fa-chart-pie",
                            "description": "Batch-specific groups and the comparisons to test (`desweep composition`)."},
    "de_options": {"title": "DE sweep options", "fa_icon": "fas fa-table",
                   "description": "The grid of DE settings (`desweep plan`) run for each comparison (`desweep de`)."},
    "diagnostics_options": {"title": "Diagnostics and baselines options", "fa_icon": "fas fa-stethoscope",
                            "description": "How the DE settings are judged (`desweep diagnose`) and the Wilcoxon / "
                                           "pseudobulk DESeq2 baselines (`desweep baselines`)."},
    "report_options": {"title": "Report options", "fa_icon": "fas fa-file-alt",
                       "description": "The MultiQC report (`desweep report`)."},
}

# --------------------------------------------------------------------------- shared by several steps
SEED = Param("seed", int, 0, "Random seed of integrate, cluster, normalize and baselines (the DE sweep's seeds are in its grid).",
             group="input_output_options", minimum=0, maximum=SEED_MAX)
THREADS = Param("threads", int, None, "torch threads.", minimum=1, default_doc="the cores given to the process")
ACCELERATOR = Param("accelerator", Accelerator, "auto", "Device for training and sampling: auto uses a GPU when one is present.")
TOP_N = Param("top_n", int, CLASSIFIED_TOP_N, "Top genes classified per DE setting and per baseline; the normalized layers hold the union "
              "of every setting's top genes.", group="diagnostics_options", minimum=1)
MODELS = Param("models", int, 1, "scVI models trained (replicates, model k with seed + k); the DE sweep runs on each and "
               "diagnostics average over them.", group="integrate_options", minimum=1,
               steps="integrate, plan, de")
BATCH_KEY = Param("batch_key", str, "batch", "obs column holding the batch of each cell.", group="input_output_options",
                  schema={"fa_icon": "fas fa-layer-group"})
LABELS_KEY = Param("labels_key", str, None, "obs column with cell labels to compare.", group="input_output_options",
                   default_doc="Leiden clusters", schema={"fa_icon": "fas fa-tags"})
LAYER = Param("layer", str, None, "Layer holding the raw counts.", group="input_output_options", default_doc="X")

# --------------------------------------------------------------------------- one tuple per step, in option order
VALIDATE = (
    BATCH_KEY, LABELS_KEY, LAYER,
    Param("min_cells_per_batch", int, 20, "Smallest batch allowed.", group="validate_options", minimum=1),
    Param("make_genes_unique", bool, False, "Append -1, -2, ... to repeated gene names instead of failing.", group="validate_options"),
)

INTEGRATE = (
    Param("n_top_genes", int, DEFAULT_N_TOP_GENES, "Highly variable genes to model (seurat_v3 on counts); 0 keeps every gene. DE covers only "
          "modelled genes.", group="integrate_options", minimum=0),
    Param("extra_genes", str, None, 'Comma-separated genes to model even if not highly variable (e.g. known markers; a name '
          'holding "," in double quotes).', group="integrate_options", parse=NAMES),
    Param("categorical_covariates", str, None, "Comma-separated extra categorical obs columns.", group="integrate_options", parse=NAMES),
    Param("continuous_covariates", str, None, "Comma-separated extra continuous obs columns.", group="integrate_options", parse=NAMES),
    Param("n_latent", int, 10, "Latent dimensions.", group="integrate_options", minimum=2),
    Param("n_layers", int, 1, "Hidden layers.", group="integrate_options", minimum=1),
    Param("gene_likelihood", GeneLikelihood, "zinb", "Count distribution of the decoder.", group="integrate_options"),
    Param("max_epochs", int, None, "Training epochs (default: scvi-tools' heuristic, min(20000/n_cells*400, 400)).",
          group="integrate_options", minimum=1, default_doc="scvi-tools' heuristic"),
    Param("early_stopping", bool, True, "Stop when the validation ELBO stops improving.", group="integrate_options", negatable=True),
    Param("batch_size", int, None, "Minibatch size (default: 128 on CPU, scaled up with the data on a GPU); adjusted to avoid a "
          "last minibatch of 1-2 cells.", group="integrate_options", minimum=8, default_doc="128 (CPU)"),
    Param("kl_warmup_epochs", int, None, "Epochs of KL warm-up (default: a quarter of --max-epochs, at most 400).", minimum=1),
    Param("learning_rate", float, 1e-3, "Adam learning rate.", exclusive_minimum=0),
    ACCELERATOR,
    Param("gpu_fallback", bool, True, "With --accelerator gpu and no GPU: use the CPU with a warning, or fail.", negatable=True),
    SEED, THREADS,
)

CLUSTER = (
    Param("resolution", float, 1.0, "Leiden resolution.", group="cluster_options", exclusive_minimum=0),
    Param("n_neighbors", int, 15, "Neighbours in the scVI graph.", group="cluster_options", minimum=2),
    Param("neighbors", Neighbors, "approximate", "approximate: pynndescent (about linear in cells); exact: scikit-learn's "
          "exact search (small data).", group="cluster_options"),
    SEED,
)

COMPOSITION = (
    Param("comparisons", str, None, "Comparisons as 'A:B;C:D' (a name holding ':', ';' or '\"' in double quotes: "
          "'\"CD4+:act\":B'), or a CSV/TSV file with group1,group2 columns (default: every pair with a batch-specific group, "
          "up to --max-comparisons).", group="composition_options", parse="desweep.composition:read_comparisons",
          default_doc="batch-specific pairs"),
    Param("max_comparisons", int, 10, "Cap on the default comparisons.", group="composition_options", minimum=1),
    Param("min_cells_present", int, 10, "Cells a cluster needs in a batch to count as present there.", group="composition_options",
          minimum=1),
    Param("min_enrichment", float, 0.1, "A cluster's share of a batch must be at least this times its overall share to count "
          "as present.", group="composition_options", minimum=0),
    Param("min_cells_per_group", int, 10, "Smallest group allowed in a comparison.", group="composition_options", minimum=1),
)

PLAN = (
    MODELS,
    Param("max_combinations", int, DEFAULT_MAX_COMBINATIONS, "Refuse a plan with more combinations (one DE table each; a "
          f"warning from {WARN_COMBINATIONS:,}).",
          group="de_options", minimum=1),
)

DE = (
    Param("n_samples", int, DEFAULT_N_SAMPLES, "Posterior samples per group (scvi-tools' n_samples_overall), split evenly over the decoding "
          "batches.", minimum=2),
    Param("batch_size", int, None, "Minibatch size for decoding (default: scvi-tools' 128), adjusted so no minibatch has 1-2 "
          "cells.", minimum=8),
    Param("sampling", Sampling, "shared", "shared: decode each group once per batch and seed for every "
          "setting; scvi: reproduce scvi-tools' random stream per sampling key (tables equal to model.differential_expression)."),
    Param("stability_top_n", int, STABILITY_TOP_N, "Top genes of each table compared across seeds in stability.csv (not --top-n: "
          "stability is about the head of the ranking).", minimum=1),
    Param("accelerator", Accelerator, "auto", "Device for decoding (auto uses a GPU when one is present)."),
    THREADS,
)

NORMALIZE = (
    Param("choices", str, ",".join(DEFAULT_CHOICES), "Comma-separated transform_batch choices, or 'all'. "
          + "; ".join(f"{name}: {text}" for name, text in CHOICE_HELP.items()) + ".", parse="names+desweep.normalize:check_choices"),
    Param("batches", str, None, 'Comma-separated batches to decode in and average over (a name holding "," in double quotes).',
          parse=NAMES, default_doc="every batch of the model"),
    TOP_N,
    Param("genes", str, None, "Genes to export as well: a comma-separated list (a name holding \",\" in double quotes), or a "
          "file (one gene per line, or a CSV with a 'gene' column).", parse="desweep.io:read_gene_list"),
    Param("all_genes", bool, False, "Layers for every modelled gene (size: 4 bytes x layers x cells x genes); "
          "cluster_batch_means.csv always covers every gene."),
    Param("library_size", str, "1e4", "'latent' (each cell's own library size: expected counts) or a number every cell is "
          "scaled to (1 = frequencies).", parse="desweep.normalize:parse_library_size"),
    Param("n_samples", int, 1, "Posterior samples of z per cell; layers are their mean (all_batches_samples keeps each).",
          minimum=1),
    Param("latent", Latent, "sample", "sample: draw z from the posterior (as scvi-tools); mean: decode "
          "the posterior mean (deterministic)."),
    Param("chunk_size", int, None, "Cells decoded at a time (default: the largest that fits --max-memory-gb, at most 4096).",
          minimum=1),
    Param("max_memory_gb", float, DEFAULT_MAX_MEMORY_GB, "Cap on the estimated memory: output layers (float32) plus one working chunk.",
          exclusive_minimum=0),
    ACCELERATOR, SEED, THREADS,
)

DIAGNOSE = (
    TOP_N,
    Param("explained_fraction", float, EXPLAINED_FRACTION, "Share of the group difference a within-batch (or batch) difference must reach "
          "to explain it.", exclusive_minimum=0, exclusive_maximum=1),
    Param("alpha", float, ALPHA, "One-sided level of the per-gene test: a difference is clear at z = Phi^-1(1 - alpha) standard "
          "errors.", exclusive_minimum=0, exclusive_maximum=0.5),
    Param("plots", bool, True, "Write the PNG plots under plots/.", negatable=True),
    Param("plot_genes", int, 30, "Genes per top-gene heatmap.", minimum=1),
    Param("sample_key", str, None, "obs column of samples (donors) nested in batches: the bridge contrast then sums counts per "
          "cluster x sample (default: per cluster x batch).", default_doc="none"),
    THREADS,
)

BASELINES = (
    Param("methods", str, "wilcoxon,pseudobulk", "Comma-separated: wilcoxon, pseudobulk.",
          parse="names+desweep.baselines:check_methods"),
    TOP_N,
    Param("sample_key", str, keys.SAMPLE, "obs column of biological samples for pseudobulks (per batch when the column is absent).",
          group="diagnostics_options"),
    Param("pseudo_replicates", int, 0, "Without samples: split each group x batch into this many random pseudobulks "
          "(0 = off; p-values optimistic).", group="diagnostics_options", minimum=0,
          parse="desweep.baselines:check_pseudo_replicates",
          schema={"not": {"const": 1}, "help_text": "1 is not allowed: use 0 (off) or at least 2."}),
    Param("min_cells", int, 10, "Fewest cells per pseudobulk.", minimum=1),
    SEED, THREADS,
)

REPORT = (
    Param("title", str, None, "Report title.", group="report_options", nf_name="multiqc_title", default_doc="the config's",
          schema={"pattern": r"^[^']*$"}),
)

#: the options of each step's command, by command name
STEP_PARAMS: dict[str, tuple[Param, ...]] = {
    "validate": VALIDATE, "integrate": INTEGRATE, "cluster": CLUSTER, "composition": COMPOSITION, "plan": PLAN,
    "de": DE, "normalize": NORMALIZE, "diagnose": DIAGNOSE, "baselines": BASELINES, "report": REPORT,
}

#: the library functions each step's options reach, as import strings (imported by the test that compares their
#: defaults with the params': tests/test_params.py); a dataclass's fields count as its parameters
TARGETS: dict[str, tuple[str, ...]] = {
    "validate": ("desweep.validate:load_input", "desweep.validate:validate_adata"),
    "integrate": ("desweep.integrate:integrate", "desweep.integrate:select_genes", "desweep.integrate:train_scvi"),
    "cluster": ("desweep.cluster:cluster",),
    "composition": ("desweep.composition:compose", "desweep.composition:comparison_table", "desweep.composition:PresenceRule"),
    "plan": ("desweep.plan:make_plan", "desweep.plan:check_plan_size"),
    "de": ("desweep.de:run_sweep",),
    "normalize": ("desweep.normalize:export_normalized", "desweep.normalize:select_layer_genes"),
    "diagnose": ("desweep.diagnose:diagnose", "desweep.diagnose.classify:Thresholds"),
    "baselines": ("desweep.baselines:run_baselines",),
    "report": ("desweep.report:build_report",),
}

#: Nextflow params with no option of their own on a step (files the pipeline stages, how it publishes)
NEXTFLOW_ONLY: tuple[Param, ...] = (
    Param("input", str, None, "An .h5ad with raw counts, or a samplesheet CSV with columns sample,batch,path.",
          group="input_output_options", cli=False, steps="validate",
          schema={"format": "file-path", "exists": True, "mimetype": "text/csv", "pattern": r"^\S+\.(h5ad|csv)$",
                  "fa_icon": "fas fa-file-csv",
                  "help_text": "An .h5ad file needs raw counts in X (or in the layer named by --layer) and the batch in "
                               "obs[--batch_key]. A samplesheet lists one per-batch count matrix per row (.h5ad, 10x .h5 or "
                               "a 10x matrix folder); see assets/schema_input.json."}),
    Param("outdir", str, None, "The output folder (absolute path, or s3:// / gs:// on the cloud).", group="input_output_options",
          cli=False, schema={"format": "directory-path", "fa_icon": "fas fa-folder-open"}),
    Param("simulate_cells", int, None, "Simulate this many cells instead of reading --input (used by -profile test_full).",
          group="input_output_options", cli=False, minimum=500, maximum=100000, steps="simulate",
          schema={"help_text": "Runs `desweep simulate --n-cells N`: 3 batches with shared and batch-specific cell types "
                               "in obs['cell_type']."}),
    Param("publish_dir_mode", Literal["symlink", "rellink", "link", "copy", "copyNoFollow", "move"], "copy",
          "How results are published to --outdir.", group="input_output_options", cli=False,
          schema={"fa_icon": "fas fa-copy"}),
    Param("grid", str, None, "YAML grid of DE settings (default: desweep's built-in grid).", group="de_options", cli=False,
          steps="plan", default_doc="built-in grid",
          schema={"format": "file-path", "exists": True, "pattern": r"^\S+\.ya?ml$",
                  "help_text": "Keys left out take the default; print the default grid with `desweep plan --show-default-grid`."}),
    Param("de_split", Literal["model", "seed", "comparison", "sampling_key"], "model",
          "What one DE task runs: the whole sweep of one model (`model`), every comparison of one model and seed "
          "(`seed`), one comparison of one model and seed (`comparison`), or one sampling key (`sampling_key`).",
          group="de_options", cli=False, steps="de",
          schema={"help_text": "A task decodes each group once per batch for all the sampling keys it runs, and pays for "
                               "starting, loading the data and loading the model once; the DE work of a key does not grow "
                               "with cells, loading does. `model` does one `desweep de --all` per model; `seed` spreads "
                               "its seeds over tasks (the same decoding passes, one more load each); `comparison` and "
                               "`sampling_key` spread wider and redo passes (docs/benchmarks.md, DE fan-out)."}),
    Param("multiqc_config", str, None, "A MultiQC config to use instead of desweep's (assets/multiqc_config.yml).",
          group="report_options", cli=False, steps="report", default_doc="desweep's",
          schema={"format": "file-path", "exists": True, "pattern": r"^\S+\.ya?ml$"}),
)

#: ``desweep run``'s options that reach every step having them (``top_n``: normalize, diagnose and baselines)
RUN_SHARED: tuple[Param, ...] = (SEED, THREADS, ACCELERATOR, TOP_N)
#: ``desweep run``'s options for validate, set once for the run
RUN_KEYS: tuple[Param, ...] = (BATCH_KEY, LABELS_KEY, LAYER)


def nextflow_params() -> list[tuple[Param, list[str]]]:
    """Every Nextflow param, in group order, with the steps whose commands take it (each param once)."""
    seen: dict[str, tuple[Param, list[str]]] = {}
    candidates = [(p, [p.steps] if p.steps else []) for p in NEXTFLOW_ONLY]
    candidates += [(p, [p.steps] if p.steps else [step]) for step, params in STEP_PARAMS.items() for p in params]
    for param, steps in candidates:
        name = param.nextflow_name
        if name is None:
            continue
        if name in seen:
            if seen[name][0] != param:
                raise ValueError(f"Nextflow param {name} is defined twice, differently")
            seen[name][1].extend(s for s in steps if s not in seen[name][1])
        else:
            seen[name] = (param, list(steps))
    order = list(GROUPS)
    return sorted(seen.values(), key=lambda item: order.index(item[0].group))

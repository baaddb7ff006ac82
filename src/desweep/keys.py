"""Every obs/obsm/uns key and every output file name, defined once.

Click defaults, tests, the runner and the Nextflow output globs use these names;
``tests/test_contract.py`` checks that the ``.nf`` modules agree with them.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- AnnData keys -----------------------------------------------------------
UNS_DESWEEP = "desweep"  # uns dict: batch_key, group_key, input checksum, ...
X_SCVI = "X_scVI"
X_UMAP = "X_umap"
SAMPLE = "sample"  # obs column validate adds: the samplesheet row a cell came from
LEIDEN = "desweep_leiden"  # desweep's own Leiden clusters; never a column of the user's
#: obs columns desweep or scvi-tools write: never accepted as the user's batch or labels key
OWN_OBS_PREFIXES = ("desweep_", "_scvi_")
NORM_LAYER_PREFIX = "scvi_norm__"

# --- step folders under OUTDIR ---------------------------------------------
STEP_VALIDATE = "validate"
STEP_INTEGRATE = "integrate"
STEP_CLUSTER = "cluster"
STEP_COMPOSITION = "composition"
STEP_DE = "de"
STEP_NORMALIZE = "normalized"
STEP_DIAGNOSE = "diagnostics"
STEP_BASELINES = "baselines"
STEP_REPORT = "multiqc"
PIPELINE_INFO = "pipeline_info"

# --- file names inside each step folder ------------------------------------
VALIDATED_H5AD = "validated.h5ad"
VALIDATION_REPORT = "validation.json"
MODEL_DIR = "model"
MODEL_FINGERPRINT = "desweep_fingerprint.json"  # in MODEL_DIR: genes, batches and counts the model was trained on
INTEGRATED_H5AD = "integrated.h5ad"
HISTORY_CSV = "history.csv"
METRICS_CSV = "metrics.csv"
CLUSTERED_H5AD = "clustered.h5ad"
CLUSTER_METRICS_CSV = "cluster_metrics.csv"
CLUSTER_BATCH_COUNTS_CSV = "cluster_batch_counts.csv"
CLUSTER_STATUS_CSV = "clusters.csv"
COMPARISONS_CSV = "comparisons.csv"
PLAN_CSV = "plan.csv"
PLAN_SKIPPED_CSV = "plan_skipped.csv"
DE_TABLES_DIR = "tables"
DE_SUMMARY_CSV = "summary.csv"
DE_STABILITY_CSV = "stability.csv"
NORMALIZED_H5AD = "normalized.h5ad"
CLUSTER_BATCH_MEANS_CSV = "cluster_batch_means.csv"
LAYER_GENES_CSV = "layer_genes.csv"  # the genes normalized.h5ad's layers hold, and why
GENE_PATTERNS_CSV = "gene_patterns.csv"
SETTING_SCORES_CSV = "setting_scores.csv"
CONCORDANCE_CSV = "concordance.csv"
RECOMMENDATIONS_CSV = "recommendations.csv"
# --- the answer: the ranked genes, rejected genes, settings not seeds
MARKERS_CSV = "markers.csv"
REJECTED_CSV = "rejected.csv"
MARKERS_H5AD = "markers.h5ad"
SETTING_SCORES_BY_REPLICATE_CSV = "setting_scores_by_replicate.csv"
RECOMMENDED_SETTINGS_CSV = "recommended_settings.csv"
CONCORDANCE_SETTINGS_CSV = "concordance_settings.csv"
UNS_MARKERS = "desweep_markers"  # markers.h5ad uns: scanpy rank_genes_groups structure (+ "__<comparison_id>")
MULTIQC_REPORT = "multiqc_report.html"
PARAMS_YAML = "params.yaml"
SOFTWARE_VERSIONS_YML = "software_versions.yml"

# --- normalized export (desweep normalize): layer names are NORM_LAYER_PREFIX + ... ---
UNS_NORMALIZE = "desweep_normalize"  # uns dict: parameters and the table of layers
NORM_OWN_BATCH = "own_batch"  # transform_batch=None
NORM_BATCH = "batch"  # scvi_norm__batch__<batch>: every cell decoded in <batch>
NORM_MEAN_ALL_BATCHES = "mean_all_batches"  # mean over the decoded batches
NORM_SAMPLE = "sample"  # scvi_norm__mean_all_batches__sample_<k>: posterior sample k

# --- diagnostics, baselines and report ---------------------------
DIAGNOSE_THRESHOLDS_CSV = "thresholds.csv"
PLOTS_DIR = "plots"
PLOT_TOP_GENES_DIR = "top_genes"
PLOT_VOLCANO_DIR = "volcano"
PLOT_CONCORDANCE_DIR = "concordance"
PLOT_SCORES_DIR = "setting_scores"
PLOT_TRAINING = "training_curves.png"
PLOT_UMAP = "umap.png"
PLOT_COMPOSITION = "composition.png"
WILCOXON_CSV = "wilcoxon.csv"
PSEUDOBULK_CSV = "pseudobulk.csv"
BASELINE_PATTERNS_CSV = "baseline_patterns.csv"
BASELINE_SCORES_CSV = "baseline_scores.csv"
MULTIQC_CONFIG = "multiqc_config.yml"
MULTIQC_CUSTOM_CONTENT_DIR = "custom_content"
TOP_GENE_EXPRESSION_CSV = "top_gene_expression.csv"
# the bridge contrast: group1 vs group2 net of the batch shift measured on shared clusters
BRIDGE_CSV = "bridge.csv"
BRIDGE_SUMMARY_CSV = "bridge_summary.csv"

# --- table columns that hold names (read back as text, never as numbers or NA) ---
#: :func:`desweep.io.read_csv` reads these columns as strings without NA inference,
#: so that a batch "01", a label "NA" or a gene "1.0" comes back as written
NAME_COLUMNS = frozenset({
    "gene", "cluster", "batch", "sample", "path", "group", "unit", "group1", "group2", "high_group",
    "comparison_id", "combination_id", "combination_id_1", "combination_id_2", "best_combination_id", "recommended",
    "sampling_key", "setting_id", "batchid1", "batchid2", "group1_batches", "group2_batches", "shared_batches",
    "batches", "specific_to", "choice", "transform_batch", "top_genes", "ood_decoding",
    "setting_id_1", "setting_id_2", "recommended_setting_id", "default_setting_id", "recommended_setting", "setting",
    "model", "design", "decoding", "mode", "weights", "bridges", "method", "verdict",
})

# --- DE sweep (desweep plan / desweep de) -----------------------------------
DE_PARTIAL_SUMMARY_DIR = "summary"  # de/summary/<sampling_key>.csv, one per `desweep de --sampling-key` run



# --- the output contract: what each step writes into its folder ------------
@dataclass(frozen=True)
class Output:
    """One file or folder a step writes into its step folder.

    Attributes
    ----------
    name
        File or folder name inside the step folder.
    kind
        ``csv``, ``h5ad``, ``json``, ``html`` or ``folder``.
    files
        For a folder whose files the Nextflow module declares one by one: their glob (``*.csv``).
    optional
        Written only with some options (the runner does not require it to skip a step).
    table
        The name the step's results give this table (``desweep diagnose``'s result dictionary).
    module
        The Nextflow module that writes it, when not the step's own (the DE merge).
    """

    name: str
    kind: str
    files: str = ""
    optional: bool = False
    table: str = ""
    module: str = ""

    @property
    def pattern(self) -> str:
        """The path a Nextflow module declares, relative to the step folder."""
        return f"{self.name}/{self.files}" if self.files else self.name


#: step (command name) -> (its folder under OUTDIR, what it writes there)
OUTPUTS: dict[str, tuple[str, tuple[Output, ...]]] = {
    "validate": (STEP_VALIDATE, (Output(VALIDATED_H5AD, "h5ad"), Output(VALIDATION_REPORT, "json"))),
    "integrate": (STEP_INTEGRATE, (Output(MODEL_DIR, "folder"), Output(INTEGRATED_H5AD, "h5ad"), Output(HISTORY_CSV, "csv"),
                                   Output(METRICS_CSV, "csv"))),
    "cluster": (STEP_CLUSTER, (Output(CLUSTERED_H5AD, "h5ad"), Output(CLUSTER_METRICS_CSV, "csv"))),
    "composition": (STEP_COMPOSITION, (Output(CLUSTER_BATCH_COUNTS_CSV, "csv"), Output(CLUSTER_STATUS_CSV, "csv"),
                                       Output(COMPARISONS_CSV, "csv"))),
    "plan": (STEP_DE, (Output(PLAN_CSV, "csv"), Output(PLAN_SKIPPED_CSV, "csv"))),
    "de": (STEP_DE, (Output(DE_TABLES_DIR, "folder", files="*.csv"), Output(DE_PARTIAL_SUMMARY_DIR, "folder", files="*.csv"),
                     Output(DE_SUMMARY_CSV, "csv", module="de_merge"), Output(DE_STABILITY_CSV, "csv", module="de_merge"))),
    "normalize": (STEP_NORMALIZE, (Output(NORMALIZED_H5AD, "h5ad"), Output(CLUSTER_BATCH_MEANS_CSV, "csv"),
                                   Output(LAYER_GENES_CSV, "csv"))),
    "diagnose": (STEP_DIAGNOSE, (
        Output(MARKERS_CSV, "csv", table="markers"), Output(REJECTED_CSV, "csv", table="rejected"), Output(MARKERS_H5AD, "h5ad"),
        Output(RECOMMENDATIONS_CSV, "csv", table="recommendations"),
        Output(RECOMMENDED_SETTINGS_CSV, "csv", table="recommended_settings"),
        Output(SETTING_SCORES_CSV, "csv", table="setting_scores"),
        Output(SETTING_SCORES_BY_REPLICATE_CSV, "csv", table="setting_scores_by_replicate"),
        Output(GENE_PATTERNS_CSV, "csv", table="gene_patterns"), Output(CONCORDANCE_CSV, "csv", table="concordance"),
        Output(CONCORDANCE_SETTINGS_CSV, "csv", table="concordance_settings"),
        Output(DIAGNOSE_THRESHOLDS_CSV, "csv", table="thresholds"),
        Output(TOP_GENE_EXPRESSION_CSV, "csv", table="top_gene_expression"), Output(BRIDGE_CSV, "csv", table="bridge"),
        Output(BRIDGE_SUMMARY_CSV, "csv", table="bridge_summary"), Output(PLOTS_DIR, "folder", optional=True))),
    "baselines": (STEP_BASELINES, (Output(WILCOXON_CSV, "csv"), Output(PSEUDOBULK_CSV, "csv"), Output(BASELINE_PATTERNS_CSV, "csv"),
                                   Output(BASELINE_SCORES_CSV, "csv"))),
    "report": (STEP_REPORT, (Output(MULTIQC_REPORT, "html"), Output("multiqc_data", "folder"),
                             Output(MULTIQC_CUSTOM_CONTENT_DIR, "folder"))),
}


def required_outputs(step: str) -> tuple[str, ...]:
    """The files and folders ``step`` always writes into its folder (what a finished step must have)."""
    return tuple(o.name for o in OUTPUTS[step][1] if not o.optional)


def step_tables(step: str) -> dict[str, str]:
    """Table name in the step's results -> the file it is written to."""
    return {o.table: o.name for o in OUTPUTS[step][1] if o.table}


def outdir_help(step: str) -> str:
    """``writes a, b and c/.``: the outputs of ``step``, for its --outdir help."""
    names = [o.name + ("/" if o.kind == "folder" else "") for o in OUTPUTS[step][1]]
    return "writes " + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]) + "."


#: in OUTDIR: held by the `desweep run` writing it (like the stamps, runner bookkeeping starts with .desweep_)
RUN_LOCK = ".desweep_run.lock"
def replicate_dir(model: int) -> str:
    """Folder under ``OUTDIR/integrate`` of model replicate ``model >= 1`` (model 0 is ``integrate/`` itself)."""
    return f"replicate{model}"


def step_stamp(step: str) -> str:
    """File name of the stamp ``desweep run`` leaves in a step folder (two steps may share a folder)."""
    return f".desweep_{step}.json"

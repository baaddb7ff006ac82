"""The Nextflow pipeline, run for real on tiny data (issue #7).

``scripts/nextflow run . -profile test`` offline, with the local executor and no
containers: the tasks find ``bin/desweep-*`` (Nextflow puts the pipeline's ``bin/`` on
their PATH) and this project's Python (this test puts the interpreter's folder, the
.venv, first on PATH).

- ``-stub`` with the samplesheet input: every step folder of the output contract is
  published, and the samplesheet handed to VALIDATE names the staged files;
- for real on ``tests/data/sim_500x300.h5ad``: the published files follow the output
  contract, and the tables match what ``desweep run`` writes for the same input and seed;
- ``-resume`` afterwards: every task is CACHED;
- every profile resolves (``nextflow config``) to the settings docs/usage.md promises.
"""

from __future__ import annotations

import csv
import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from desweep import keys

pytestmark = pytest.mark.nextflow

REPO = Path(__file__).resolve().parents[1]
WRAPPER = REPO / "scripts" / "nextflow"
DATA = REPO / "tests" / "data"
TIMEOUT = 3600

#: what -profile test sets (conf/test.config), as `desweep run` configuration
TEST_PROFILE_RUN_CONFIG = {
    "input": str(DATA / "sim_500x300.h5ad"),
    "batch_key": "batch",
    "labels_key": "cell_type",
    "seed": 0,
    "threads": 1,
    "accelerator": "cpu",
    "models": 2,
    "steps": {
        "integrate": {"n_top_genes": 0, "max_epochs": 20},
        "composition": {"comparisons": "only_batch0:shared0;only_batch0:only_batch1"},
        "plan": {"grid": str(DATA / "grid_test.yaml")},
    },
}

#: every published file of the output contract (docs/architecture.md), from keys.py
CONTRACT_FILES = [
    (keys.STEP_VALIDATE, keys.VALIDATED_H5AD), (keys.STEP_VALIDATE, keys.VALIDATION_REPORT),
    (keys.STEP_INTEGRATE, keys.MODEL_DIR), (keys.STEP_INTEGRATE, keys.INTEGRATED_H5AD),
    (keys.STEP_INTEGRATE, keys.HISTORY_CSV), (keys.STEP_INTEGRATE, keys.METRICS_CSV),
    (keys.STEP_CLUSTER, keys.CLUSTERED_H5AD), (keys.STEP_CLUSTER, keys.CLUSTER_METRICS_CSV),
    (keys.STEP_COMPOSITION, keys.CLUSTER_BATCH_COUNTS_CSV), (keys.STEP_COMPOSITION, keys.CLUSTER_STATUS_CSV),
    (keys.STEP_COMPOSITION, keys.COMPARISONS_CSV),
    (keys.STEP_DE, keys.PLAN_CSV), (keys.STEP_DE, keys.PLAN_SKIPPED_CSV), (keys.STEP_DE, keys.DE_TABLES_DIR),
    (keys.STEP_DE, keys.DE_SUMMARY_CSV), (keys.STEP_DE, keys.DE_STABILITY_CSV),
    (keys.STEP_NORMALIZE, keys.NORMALIZED_H5AD), (keys.STEP_NORMALIZE, keys.CLUSTER_BATCH_MEANS_CSV),
    (keys.STEP_DIAGNOSE, keys.GENE_PATTERNS_CSV), (keys.STEP_DIAGNOSE, keys.SETTING_SCORES_CSV),
    (keys.STEP_DIAGNOSE, keys.CONCORDANCE_CSV), (keys.STEP_DIAGNOSE, keys.RECOMMENDATIONS_CSV),
    (keys.STEP_DIAGNOSE, keys.MARKERS_CSV), (keys.STEP_DIAGNOSE, keys.REJECTED_CSV), (keys.STEP_DIAGNOSE, keys.MARKERS_H5AD),
    (keys.STEP_DIAGNOSE, keys.SETTING_SCORES_BY_REPLICATE_CSV), (keys.STEP_DIAGNOSE, keys.RECOMMENDED_SETTINGS_CSV),
    (keys.STEP_DIAGNOSE, keys.CONCORDANCE_SETTINGS_CSV),
    (keys.STEP_BASELINES, "wilcoxon.csv"), (keys.STEP_BASELINES, "pseudobulk.csv"),
    (keys.STEP_REPORT, keys.MULTIQC_REPORT),
    (keys.PIPELINE_INFO, keys.PARAMS_YAML), (keys.PIPELINE_INFO, keys.SOFTWARE_VERSIONS_YML),
]


# --- helpers -----------------------------------------------------------------

def task_env() -> dict[str, str]:
    """This project's Python first on PATH; quiet, offline Nextflow."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NXF_ANSI_LOG"] = "false"
    env["NXF_OFFLINE"] = "true"
    env.setdefault("NXF_OPTS", "-XX:+TieredCompilation -XX:TieredStopAtLevel=1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def nextflow_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(WRAPPER), "run", str(REPO), *args], cwd=cwd, env=task_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        log = (cwd / ".nextflow.log").read_text()[-6000:] if (cwd / ".nextflow.log").exists() else ""
        pytest.fail(f"nextflow run {' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n"
                    f"--- stderr ---\n{proc.stderr[-3000:]}\n--- .nextflow.log (end) ---\n{log}")
    return proc


def read_trace(outdir: Path, suffix: str) -> list[dict[str, str]]:
    path = outdir / keys.PIPELINE_INFO / f"execution_trace_{suffix}.txt"
    assert path.is_file(), f"no trace file {path}"
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def check_contract_layout(outdir: Path) -> None:
    missing = [f"{folder}/{name}" for folder, name in CONTRACT_FILES if not (outdir / folder / name).exists()]
    assert not missing, f"missing from {outdir}: {missing}"
    # nothing published outside the contract's folders, and no versions.yml
    folders = {folder for folder, _ in CONTRACT_FILES}
    assert {p.name for p in outdir.iterdir()} == folders
    assert not list(outdir.rglob("versions.yml"))


def process_names(trace: list[dict[str, str]]) -> set[str]:
    return {row["process"].split(":")[-1] for row in trace}


# --- runs (one of each per test session) -----------------------------------------

@pytest.fixture(scope="module")
def stub_run(tmp_path_factory) -> Path:
    """-stub with the samplesheet input."""
    cwd = tmp_path_factory.mktemp("nf_stub")
    nextflow_run(cwd, "-profile", "test", "-stub", "--input", str(DATA / "samplesheet" / "samplesheet.csv"),
                 "--outdir", str(cwd / "results"), "--trace_report_suffix", "stub")
    return cwd


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("nf_real")
    nextflow_run(cwd, "-profile", "test", "--outdir", str(cwd / "results"), "--trace_report_suffix", "first")
    return cwd


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """`desweep run` with the test profile's settings (steps it lacks are run by their commands)."""
    from desweep.cli import COMMANDS

    outdir = tmp_path_factory.mktemp("desweep_run") / "results"
    config = dict(TEST_PROFILE_RUN_CONFIG, outdir=str(outdir))
    config_path = outdir.parent / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    subprocess.run([sys.executable, "-m", "desweep.cli", "run", "-c", str(config_path)], check=True, env=task_env(),
                   capture_output=True, text=True, timeout=TIMEOUT)
    de = outdir / keys.STEP_DE
    if not (de / keys.PLAN_CSV).exists() and "plan" in COMMANDS:
        subprocess.run([sys.executable, "-m", "desweep.cli", "plan", "--comparisons", str(outdir / keys.STEP_COMPOSITION / keys.COMPARISONS_CSV),
                        "--grid", str(DATA / "grid_test.yaml"), "-o", str(de)], check=True, env=task_env(), capture_output=True, timeout=TIMEOUT)
    if not (de / keys.DE_SUMMARY_CSV).exists() and "de" in COMMANDS:
        subprocess.run([sys.executable, "-m", "desweep.cli", "de", "--plan", str(de / keys.PLAN_CSV),
                        "--adata", str(outdir / keys.STEP_CLUSTER / keys.CLUSTERED_H5AD),
                        "--model", str(outdir / keys.STEP_INTEGRATE / keys.MODEL_DIR), "--all", "--threads", "1",
                        "-o", str(de)], check=True, env=task_env(), capture_output=True, timeout=TIMEOUT)
    return outdir


# --- -stub -------------------------------------------------------------------

@pytest.mark.slow
def test_stub_run_publishes_the_output_contract(stub_run: Path) -> None:
    outdir = stub_run / "results"
    check_contract_layout(outdir)
    trace = read_trace(outdir, "stub")
    assert {row["status"] for row in trace} == {"COMPLETED"}
    assert {"VALIDATE", "INTEGRATE", "CLUSTER", "COMPOSITION", "PLAN", "DE", "DE_MERGE", "NORMALIZE",
            "DIAGNOSE", "BASELINES", "REPORT"} <= process_names(trace)
    # every step's versions, collated before the report (which reads them)
    versions = yaml.safe_load((outdir / keys.PIPELINE_INFO / keys.SOFTWARE_VERSIONS_YML).read_text())
    assert (process_names(trace) - {"REPORT"}) | {"Workflow"} == set(versions)
    params = yaml.safe_load((outdir / keys.PIPELINE_INFO / keys.PARAMS_YAML).read_text())
    assert params["input"].endswith("samplesheet.csv") and params["labels_key"] == "cell_type"


@pytest.mark.slow
def test_stub_run_stages_the_samplesheet(stub_run: Path) -> None:
    trace = read_trace(stub_run / "results", "stub")
    workdir = Path(next(row["workdir"] for row in trace if row["process"].endswith(":VALIDATE")))
    staged = read_rows(workdir / "samplesheet.csv")
    original = read_rows(DATA / "samplesheet" / "samplesheet.csv")
    assert [(r["sample"], r["batch"]) for r in staged] == [(r["sample"], r["batch"]) for r in original]
    for row, orig in zip(staged, original):
        assert Path(row["path"]).is_absolute() and Path(row["path"]).resolve() == (DATA / "samplesheet" / orig["path"]).resolve()
    assert sorted(p.name for p in (workdir / "samples").glob("*/*")) == sorted(r["path"] for r in original)


# --- the real run --------------------------------------------------------------

@pytest.mark.slow
def test_real_run_publishes_the_output_contract(real_run: Path) -> None:
    outdir = real_run / "results"
    check_contract_layout(outdir)
    trace = read_trace(outdir, "first")
    assert {row["status"] for row in trace} == {"COMPLETED"}, [(r["name"], r["status"]) for r in trace]
    plan = read_rows(outdir / keys.STEP_DE / keys.PLAN_CSV)
    tables = outdir / keys.STEP_DE / keys.DE_TABLES_DIR
    assert sorted(p.stem for p in tables.glob("*.csv")) == sorted(r["combination_id"] for r in plan)
    keys_per_model = [len({r["sampling_key"] for r in plan if r["model"] == m}) for m in ("0", "1")]
    n_de_tasks = sum(row["process"].endswith(":DE") for row in trace)
    assert all(keys_per_model) and n_de_tasks == sum(-(-n // 4) for n in keys_per_model), \
        f"{keys_per_model} sampling keys per model, 4 per task of one model, but {n_de_tasks} DE tasks"
    # two model replicates, trained as two tasks
    assert sum(row["process"].endswith(":INTEGRATE") for row in trace) == 2
    assert (outdir / keys.STEP_INTEGRATE / keys.MODEL_DIR / "model.pt").is_file()
    assert (outdir / keys.STEP_INTEGRATE / keys.replicate_dir(1) / keys.MODEL_DIR / "model.pt").is_file()
    versions = yaml.safe_load((outdir / keys.PIPELINE_INFO / keys.SOFTWARE_VERSIONS_YML).read_text())
    assert versions["INTEGRATE"]["scvi-tools"] and versions["Workflow"]["Nextflow"]


@pytest.mark.slow
def test_real_run_matches_desweep_run(real_run: Path, reference_run: Path) -> None:
    outdir = real_run / "results"
    # validate: the same report, but for where the input was read from
    ours = json.loads((outdir / keys.STEP_VALIDATE / keys.VALIDATION_REPORT).read_text())
    theirs = json.loads((reference_run / keys.STEP_VALIDATE / keys.VALIDATION_REPORT).read_text())
    ours.pop("input"), theirs.pop("input")
    assert ours == theirs
    # composition and plan: byte-identical tables
    for folder, name in [(keys.STEP_COMPOSITION, keys.CLUSTER_BATCH_COUNTS_CSV), (keys.STEP_COMPOSITION, keys.CLUSTER_STATUS_CSV),
                         (keys.STEP_COMPOSITION, keys.COMPARISONS_CSV), (keys.STEP_DE, keys.PLAN_CSV), (keys.STEP_DE, keys.PLAN_SKIPPED_CSV)]:
        assert filecmp.cmp(outdir / folder / name, reference_run / folder / name, shallow=False), f"{folder}/{name} differs"
    # DE: the same tables, each over the same genes
    ours_tables = {p.name: p for p in (outdir / keys.STEP_DE / keys.DE_TABLES_DIR).glob("*.csv")}
    theirs_tables = {p.name: p for p in (reference_run / keys.STEP_DE / keys.DE_TABLES_DIR).glob("*.csv")}
    assert sorted(ours_tables) == sorted(theirs_tables)
    for name, path in ours_tables.items():
        assert {r["gene"] for r in read_rows(path)} == {r["gene"] for r in read_rows(theirs_tables[name])}, name


@pytest.mark.slow
def test_resume_reruns_nothing(real_run: Path) -> None:
    outdir = real_run / "results"
    first = read_trace(outdir, "first")
    nextflow_run(real_run, "-profile", "test", "--outdir", str(outdir), "--trace_report_suffix", "resume", "-resume")
    second = read_trace(outdir, "resume")
    assert len(second) == len(first)
    assert {row["status"] for row in second} == {"CACHED"}, [(r["name"], r["status"]) for r in second if r["status"] != "CACHED"]
    assert sorted(r["hash"] for r in second) == sorted(r["hash"] for r in first)


# --- profiles --------------------------------------------------------------------

#: profile -> settings `nextflow config -flat` must show (values as Nextflow prints them)
PROFILE_SETTINGS = {
    "docker,gpu": {"docker.enabled": "true", "docker.runOptions": "'-u $(id -u):$(id -g) --gpus all'"},
    "singularity,gpu": {"singularity.enabled": "true", "singularity.autoMounts": "true", "singularity.runOptions": "'--nv'"},
    "apptainer,gpu": {"apptainer.enabled": "true", "apptainer.runOptions": "'--nv'"},
    "podman": {"podman.enabled": "true"},
    "conda": {"conda.enabled": "true"},
    "slurm,singularity,gpu": {"process.executor": "'slurm'", "singularity.enabled": "true"},
    "awsbatch": {"process.executor": "'awsbatch'", "docker.enabled": "true"},
    "google,gpu": {"process.executor": "'google-batch'", "docker.enabled": "true", "google.batch.installGpuDrivers": "true"},
    "test": {"params.max_epochs": "20", "params.labels_key": "'cell_type'", "params.de_keys_per_task": "4", "params.models": "2"},
    "test_full": {"params.simulate_cells": "20000"},
}


def flat_config(profile: str, cwd: Path) -> dict[str, str]:
    env = task_env()
    proc = subprocess.run([str(WRAPPER), "config", "-flat", "-profile", profile, str(REPO)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    settings = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            settings[key.strip()] = value.strip()
    return settings


@pytest.mark.parametrize("profile", sorted(PROFILE_SETTINGS))
def test_profile_resolves(profile: str, tmp_path: Path) -> None:
    settings = flat_config(profile, tmp_path)
    for key, value in PROFILE_SETTINGS[profile].items():
        assert settings.get(key) == value, f"-profile {profile}: {key} = {settings.get(key)!r}, expected {value}"
    # every profile keeps the GPU settings of conf/base.config (a profile that redefined
    # `withLabel: process_gpu` would replace them)
    for key in ("ext.use_gpu", "accelerator", "clusterOptions", "machineType"):
        assert f"process.'withLabel:process_gpu'.{key}" in settings, f"-profile {profile} lost process_gpu {key}"
    engines = [e for e in ("docker", "singularity", "apptainer", "podman", "conda") if settings.get(f"{e}.enabled") == "true"]
    assert len(engines) <= 1, f"-profile {profile} enables {engines}"

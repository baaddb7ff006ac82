"""The Nextflow pipeline, run for real on tiny data.

``scripts/nextflow run . -profile test`` offline, with the local executor and no
containers: the tasks find ``bin/desweep-*`` (Nextflow puts the pipeline's ``bin/`` on
their PATH) and this project's Python (this test puts the interpreter's folder, the
.venv, first on PATH).

- ``-stub`` with the samplesheet input: every step folder of the output contract is
  published, and the samplesheet handed to VALIDATE names the staged files;
- for real on ``tests/data/sim_500x300.h5ad``: the published files follow the output
  contract, and every file holds the same values as what ``desweep run`` writes for the
  same input and seed (every table byte for byte);
- ``-resume`` afterwards: every task is CACHED;
- a samplesheet that breaks assets/schema_input.json stops the run at launch, before any task,
  with one line per row and column;
- a task on a host without desweep fails at its versions (an ``eval`` output) instead of recording
  ``null``;
- every profile resolves (``nextflow config``) to the settings docs/usage.md promises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from nextflow_runs import (CONTRACT_FILES, DATA, REPO, TIMEOUT, WRAPPER, PipelineRun, assert_same_outputs, nextflow_run,
                           read_rows, read_trace, task_env)

import desweep
from desweep import keys

pytestmark = pytest.mark.nextflow

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

# --- helpers -----------------------------------------------------------------

def check_contract_layout(outdir: Path) -> None:
    missing = [f"{folder}/{name}" for folder, name in CONTRACT_FILES if not (outdir / folder / name).exists()]
    assert not missing, f"missing from {outdir}: {missing}"
    # nothing published outside the contract's folders, and no versions.yml
    folders = {folder for folder, _ in CONTRACT_FILES}
    assert {p.name for p in outdir.iterdir()} == folders
    assert not list(outdir.rglob("versions.yml"))


def process_names(trace: list[dict[str, str]]) -> set[str]:
    return {row["process"].split(":")[-1] for row in trace}


# --- runs (one of each per test session; the real run, `real_run`, is in conftest.py) ----

@pytest.fixture(scope="module")
def stub_run(tmp_path_factory) -> Path:
    """-stub with the samplesheet input."""
    cwd = tmp_path_factory.mktemp("nf_stub")
    nextflow_run(cwd, "-profile", "test", "-stub", "--input", str(DATA / "samplesheet" / "samplesheet.csv"),
                 "--outdir", str(cwd / "results"), "--trace_report_suffix", "stub")
    return cwd


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """`desweep run` with the test profile's settings."""
    outdir = tmp_path_factory.mktemp("desweep_run") / "results"
    config = dict(TEST_PROFILE_RUN_CONFIG, outdir=str(outdir))
    config_path = outdir.parent / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    subprocess.run([sys.executable, "-m", "desweep.cli", "run", "-c", str(config_path)], check=True, env=task_env(),
                   capture_output=True, text=True, timeout=TIMEOUT)
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
    assert all(tools.get("desweep") == desweep.__version__ for name, tools in versions.items() if name != "Workflow"), versions
    params = yaml.safe_load((outdir / keys.PIPELINE_INFO / keys.PARAMS_YAML).read_text())
    assert params["input"].endswith("samplesheet.csv") and params["labels_key"] == "cell_type"


@pytest.mark.slow
def test_stub_run_stages_the_samplesheet(stub_run: Path) -> None:
    trace = read_trace(stub_run / "results", "stub")
    workdir = Path(next(row["workdir"] for row in trace if row["process"].endswith(":VALIDATE")))
    staged = read_rows(workdir / "samplesheet.csv")
    original = read_rows(DATA / "samplesheet" / "samplesheet.csv")
    assert [(r["sample"], r["batch"]) for r in staged] == [(r["sample"], r["batch"]) for r in original]
    for row, orig in zip(staged, original, strict=False):
        assert Path(row["path"]).is_absolute() and Path(row["path"]).resolve() == (DATA / "samplesheet" / orig["path"]).resolve()
    assert sorted(p.name for p in (workdir / "samples").glob("*/*")) == sorted(r["path"] for r in original)


# --- checked at launch, failing loudly ---------------------------------------------

def failed_run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(WRAPPER), "run", str(REPO), "-profile", "test", "-stub", "--outdir", str(cwd / "results"),
                           "--trace_report_suffix", "failed", *args], cwd=cwd, env=env or task_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0, f"nextflow run {' '.join(args)} succeeded\n{proc.stdout[-3000:]}"
    return proc


def test_samplesheet_rows_are_checked_at_launch(tmp_path: Path) -> None:
    """A space in a sample name, a blank batch and a repeated sample stop the run before any task."""
    files = DATA / "samplesheet"
    sheet = tmp_path / "bad.csv"
    sheet.write_text(f"sample,batch,path\ns 0,batch0,{files / 'batch0.h5ad'}\ns1,,{files / 'batch1.h5ad'}\n"
                     f"s1,batch2,{files / 'batch2.h5ad'}\n")
    proc = failed_run(tmp_path, "--input", str(sheet))
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(f"{sheet}: row ")]
    columns = json.loads((REPO / "assets" / "schema_input.json").read_text())["items"]["properties"]
    assert lines == [
        f"{sheet}: row 2 column 'sample': {columns['sample']['errorMessage']}",
        f"{sheet}: row 3 column 'batch': {columns['batch']['errorMessage']}",
        f"{sheet}: row 4 column 'sample': 's1' is used more than once (also row 3)",
    ], proc.stdout[-3000:]
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").glob("??/*")), "a task ran"


def test_a_missing_samplesheet_file_is_named_by_row_and_column(tmp_path: Path) -> None:
    files = DATA / "samplesheet"
    sheet = tmp_path / "missing.csv"
    sheet.write_text(f"sample,batch,path\ns0,batch0,{files / 'batch0.h5ad'}\ns1,batch1,absent.h5ad\n")
    proc = failed_run(tmp_path, "--input", str(sheet))
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(f"{sheet}: row ")]
    assert lines == [f"{sheet}: row 3 column 'path': absent.h5ad: no such file ({tmp_path / 'absent.h5ad'})"], proc.stdout[-3000:]


def test_help_writes_no_null_folder(tmp_path: Path) -> None:
    """--help (no --outdir) leaves no ./null/pipeline_info behind: the run reports need an outdir."""
    proc = subprocess.run([str(WRAPPER), "run", str(REPO), "--help"], cwd=tmp_path, env=task_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0 and "--outdir" in proc.stdout, proc.stdout[-2000:]
    assert not (tmp_path / "null").exists()


def test_a_task_without_desweep_fails_at_its_versions(tmp_path: Path) -> None:
    """With no desweep on the task's PATH (a system python3), the first task fails at its eval of
    ``desweep --version`` (even -stub, which runs no step), and no versions are recorded."""
    system_path = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())
    probe = subprocess.run(["python3", "-c", "import desweep"], env={"PATH": system_path}, capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"the python3 on {system_path} has desweep installed: no host without it to test on")
    env = {**task_env(), "PATH": system_path}
    failed_run(tmp_path, "--input", str(DATA / "sim_500x300.h5ad"), env=env)
    trace = read_trace(tmp_path / "results", "failed")
    validate = [row for row in trace if row["process"].endswith(":VALIDATE")]
    assert [row["status"] for row in validate] == ["FAILED"], trace
    # Nextflow keeps each eval output's text and exit status in .command.env
    evaluated = (Path(validate[0]["workdir"]) / ".command.env").read_text()
    assert "ModuleNotFoundError: No module named 'desweep'" in evaluated and "=exit:1" in evaluated, evaluated
    assert not (tmp_path / "results" / keys.PIPELINE_INFO / keys.SOFTWARE_VERSIONS_YML).exists()


# --- the real run --------------------------------------------------------------

@pytest.mark.slow
def test_real_run_publishes_the_output_contract(real_run: PipelineRun) -> None:
    outdir = real_run.results
    check_contract_layout(outdir)
    trace = read_trace(outdir, "first")
    assert {row["status"] for row in trace} == {"COMPLETED"}, [(r["name"], r["status"]) for r in trace]
    plan = read_rows(outdir / keys.STEP_DE / keys.PLAN_CSV)
    tables = outdir / keys.STEP_DE / keys.DE_TABLES_DIR
    assert sorted(p.stem for p in tables.glob("*.csv")) == sorted(r["combination_id"] for r in plan)
    # -profile test splits the sweep per (model, comparison, seed): several sampling keys per task
    task_keys = {(r["model"], r["comparison_id"], r["seed"]) for r in plan}
    n_de_tasks = sum(row["process"].endswith(":DE") for row in trace)
    assert len({r["sampling_key"] for r in plan}) > len(task_keys) == n_de_tasks, \
        f"{len(task_keys)} (model, comparison, seed) in the plan, but {n_de_tasks} DE tasks"
    # two model replicates, trained as two tasks
    assert sum(row["process"].endswith(":INTEGRATE") for row in trace) == 2
    assert (outdir / keys.STEP_INTEGRATE / keys.MODEL_DIR / "model.pt").is_file()
    assert (outdir / keys.STEP_INTEGRATE / keys.replicate_dir(1) / keys.MODEL_DIR / "model.pt").is_file()
    versions = yaml.safe_load((outdir / keys.PIPELINE_INFO / keys.SOFTWARE_VERSIONS_YML).read_text())
    assert versions["INTEGRATE"]["scvi-tools"] and versions["Workflow"]["Nextflow"]


@pytest.mark.slow
def test_real_run_matches_desweep_run(real_run: PipelineRun, reference_run: Path) -> None:
    """Every file both runs write holds the same values; every table is byte-identical.

    No tolerance is needed, even where the Nextflow run fans the DE sweep out (one
    task per model, comparison and seed, then DE_MERGE) and `desweep run` runs every key in one
    process: the shared sampler seeds each decoding pass from (seed, group, outlier
    filter) and each draw from (seed, group, batch, number of samples), never from
    which keys share a process; every statistic of a key is computed from that key's
    own samples; and DE_MERGE's stability reads only the gene, rank and is_de_fdr
    columns, which the CSV holds exactly. Training, clustering, normalize (noise
    drawn per block of cells from the seed), diagnose and baselines see the same
    inputs. If a change to the fan-out makes a float column legitimately
    differ, compare that column with a tolerance stated in tests/nextflow_runs.py with its reason; the
    failure message names the columns and the largest difference. In a container the UMAP layout is the
    host's only with the host's OpenBLAS kernels: the docker and podman profiles pass OPENBLAS_CORETYPE in
    (a machine that sets it, as CI's does, computed another layout in the image without it).
    """
    assert_same_outputs(real_run.results, reference_run)


@pytest.mark.slow
def test_resume_reruns_nothing(real_run: PipelineRun) -> None:
    """-resume with the first run's profile (through SLURM and in the image, where it ran so)."""
    outdir = real_run.results
    first = read_trace(outdir, "first")
    start = time.monotonic()
    real_run.rerun("--trace_report_suffix", "resume", "-resume")
    print(f"-resume -profile {real_run.profile}: {time.monotonic() - start:.0f} s")
    second = read_trace(outdir, "resume")
    assert len(second) == len(first)
    assert {row["status"] for row in second} == {"CACHED"}, [(r["name"], r["status"]) for r in second if r["status"] != "CACHED"]
    assert sorted(r["hash"] for r in second) == sorted(r["hash"] for r in first)


# --- profiles --------------------------------------------------------------------

#: profile -> settings `nextflow config -flat` must show (values as Nextflow prints them)
PROFILE_SETTINGS = {
    "docker,gpu": {"docker.enabled": "true", "docker.runOptions": "'-u $(id -u):$(id -g)'",
                   "docker.envWhitelist": "'OPENBLAS_CORETYPE,OPENBLAS_L2_SIZE'"},
    "singularity,gpu": {"singularity.enabled": "true", "singularity.autoMounts": "true"},
    "apptainer,gpu": {"apptainer.enabled": "true"},
    "podman": {"podman.enabled": "true", "podman.envWhitelist": "'OPENBLAS_CORETYPE,OPENBLAS_L2_SIZE'"},
    "conda": {"conda.enabled": "true"},
    "slurm,singularity,gpu": {"process.executor": "'slurm'", "singularity.enabled": "true"},
    "awsbatch": {"process.executor": "'awsbatch'", "docker.enabled": "true"},
    "google,gpu": {"process.executor": "'google-batch'", "docker.enabled": "true", "google.batch.installGpuDrivers": "true"},
    "test": {"params.max_epochs": "20", "params.labels_key": "'cell_type'", "params.de_split": "'comparison'", "params.models": "2"},
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
    # `withLabel: process_gpu` would replace them); only the gpu profile sets the executors' and
    # engines' GPU requests, so that without it no withLabel setting hides the user's own
    gpu_requests = ("clusterOptions", "containerOptions", "machineType")
    for key in ("ext.use_gpu", "accelerator", *gpu_requests):
        present = f"process.'withLabel:process_gpu'.{key}" in settings
        expected = key not in gpu_requests or "gpu" in profile.split(",")
        assert present == expected, f"-profile {profile}: process_gpu {key} {'missing' if expected else 'set without gpu'}"
    engines = [e for e in ("docker", "singularity", "apptainer", "podman", "conda") if settings.get(f"{e}.enabled") == "true"]
    assert len(engines) <= 1, f"-profile {profile} enables {engines}"

"""The Nextflow pipeline, run for real on tiny data (issue #7).

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
- every profile resolves (``nextflow config``) to the settings docs/usage.md promises.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from nextflow_runs import (CONTRACT_FILES, DATA, REPO, TIMEOUT, WRAPPER, assert_same_outputs, nextflow_run, read_rows,
                           read_trace, task_env)

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
    """Every file both runs write holds the same values; every table is byte-identical.

    No tolerance is needed, even where the Nextflow run fans the DE sweep out (4
    sampling keys per task, then DE_MERGE) and `desweep run` runs every key in one
    process: the shared sampler seeds each decoding pass from (seed, group, outlier
    filter) and each draw from (seed, group, batch, number of samples), never from
    which keys share a process; every statistic of a key is computed from that key's
    own samples; and DE_MERGE's stability reads only the gene, rank and is_de_fdr
    columns, which the CSV holds exactly. Training, clustering, normalize (noise
    drawn per block of cells from the seed), diagnose and baselines see the same
    inputs. If a change to the fan-out (issue #15) makes a float column legitimately
    differ, compare that column with a tolerance stated in tests/nextflow_runs.py with its reason; the
    failure message names the columns and the largest difference.
    """
    assert_same_outputs(real_run / "results", reference_run)


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

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

import csv
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


#: what legitimately differs between the two runs, and is left out of the comparison:
#: - pipeline_info/: each run's own parameters, versions and (Nextflow) trace;
#: - multiqc/: the report, built from the compared tables plus that provenance and the output paths;
#: - `desweep run`'s step stamps (``.desweep_<step>.json``);
#: - in validation.json, ``input`` (the file as the task saw it);
#: - in the scVI model and the AnnData files, scvi-tools' run name (the training's start time) and the
#:   UUIDs it draws when it registers an AnnData.
NOT_COMPARED_FOLDERS = {keys.PIPELINE_INFO, keys.STEP_REPORT}
NOT_COMPARED_FIELDS = {"input", "run_name_", "_scvi_uuid", "_scvi_manager_uuid"}


def compared_files(outdir: Path) -> set[str]:
    return {str(p.relative_to(outdir)) for p in outdir.rglob("*") if p.is_file()
            and p.relative_to(outdir).parts[0] not in NOT_COMPARED_FOLDERS and not p.name.startswith(".desweep_")}


def csv_difference(ours: Path, theirs: Path) -> str:
    """Which columns of two same-shaped tables differ, and by how much (for the failure message)."""
    import pandas as pd

    a, b = pd.read_csv(ours), pd.read_csv(theirs)
    if list(a.columns) != list(b.columns) or a.shape != b.shape:
        return f"columns/shape {list(a.columns)} {a.shape} vs {list(b.columns)} {b.shape}"
    parts = []
    for column in a.columns:
        differ = ~((a[column] == b[column]) | (a[column].isna() & b[column].isna()))
        if differ.any():
            numeric = pd.api.types.is_numeric_dtype(a[column]) and pd.api.types.is_numeric_dtype(b[column])
            size = f", max |diff| {(a[column] - b[column]).abs().max():.3g}" if numeric else ""
            parts.append(f"{column}: {int(differ.sum())} of {len(a)} rows{size}")
    return "; ".join(parts)


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested mappings as ``{"a/b/c": leaf}``, leaving out :data:`NOT_COMPARED_FIELDS`."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if str(key) not in NOT_COMPARED_FIELDS:
                out.update(flatten(item, f"{prefix}{key}/"))
        return out
    return {prefix.rstrip("/"): value}


def assert_same_values(ours: dict, theirs: dict, what: str) -> None:
    import numpy as np
    import torch

    a, b = flatten(ours), flatten(theirs)
    assert sorted(a) == sorted(b), f"{what}: keys differ: {sorted(set(a) ^ set(b))}"
    for key in a:
        x, y = (v.numpy() if isinstance(v, torch.Tensor) else v for v in (a[key], b[key]))
        if isinstance(x, np.ndarray | list | tuple) or isinstance(y, np.ndarray | list | tuple):
            assert same_array(np.asarray(x), np.asarray(y)), f"{what}: {key} differs"
        else:
            assert str(x) == str(y), f"{what}: {key}: {x!r} != {y!r}"


def same_array(x, y) -> bool:
    """Equal arrays, NaN equal to NaN; a structured array (scanpy's rank_genes_groups record arrays, which pad
    the shorter groups with NaN) field by field."""
    import numpy as np

    if x.dtype.names or y.dtype.names:
        return x.dtype == y.dtype and x.shape == y.shape and all(same_array(x[f], y[f]) for f in x.dtype.names)
    return bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc" and y.dtype.kind in "fc"))


def assert_same_anndata(ours: Path, theirs: Path) -> None:
    import anndata as ad
    import numpy as np
    import pandas as pd
    from scipy import sparse

    a, b = ad.read_h5ad(ours), ad.read_h5ad(theirs)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    dense = lambda m: m.toarray() if sparse.issparse(m) else np.asarray(m)  # noqa: E731
    np.testing.assert_array_equal(dense(a.X), dense(b.X), err_msg=f"{ours.name}: X")
    for attr in ("obsm", "varm", "layers", "obsp"):
        assert sorted(getattr(a, attr)) == sorted(getattr(b, attr)), f"{ours.name}: {attr}"
        for key in getattr(a, attr):
            np.testing.assert_array_equal(dense(getattr(a, attr)[key]), dense(getattr(b, attr)[key]), err_msg=f"{ours.name}: {attr}[{key}]")
    assert_same_values(dict(a.uns), dict(b.uns), f"{ours.name}: uns")


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
    differ, compare that column with a tolerance stated here with its reason; the
    failure message names the columns and the largest difference.
    """
    import torch

    ours_dir = real_run / "results"
    ours, theirs = compared_files(ours_dir), compared_files(reference_run)
    assert sorted(ours) == sorted(theirs), f"only in the Nextflow run: {sorted(ours - theirs)}; only in `desweep run`: {sorted(theirs - ours)}"
    expected_tables = {f"{folder}/{name}" for folder, name in CONTRACT_FILES if name.endswith(".csv")}
    assert expected_tables <= ours, sorted(expected_tables - ours)
    plan = read_rows(ours_dir / keys.STEP_DE / keys.PLAN_CSV)
    assert {f"{keys.STEP_DE}/{keys.DE_TABLES_DIR}/{r['combination_id']}.csv" for r in plan} <= ours
    checked = {"csv": 0, "h5ad": 0, "pt": 0, "other": 0}
    for name in sorted(ours):
        a, b = ours_dir / name, reference_run / name
        if name.endswith(".csv"):
            assert len(read_rows(a)) > 0, f"{name} has no rows"
            assert a.read_bytes() == b.read_bytes(), f"{name} differs: {csv_difference(a, b)}"
            checked["csv"] += 1
        elif name.endswith(".h5ad"):
            assert_same_anndata(a, b)
            checked["h5ad"] += 1
        elif name.endswith(".pt"):
            assert_same_values(torch.load(a, weights_only=False), torch.load(b, weights_only=False), name)
            checked["pt"] += 1
        elif name.endswith(".json"):
            assert_same_values(json.loads(a.read_text()), json.loads(b.read_text()), name)
            checked["other"] += 1
        else:
            assert a.read_bytes() == b.read_bytes(), f"{name} differs"
            checked["other"] += 1
    # the DE tables, the partial and merged summaries, every other table; validated, integrated (one per model),
    # clustered, normalized and markers AnnData; one model per replicate; validation.json and the plots
    n_models = len({r["model"] for r in plan})
    assert checked["csv"] >= len(plan) + len(expected_tables), checked
    assert checked["h5ad"] == 4 + n_models and checked["pt"] == n_models and checked["other"] > 1, checked


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

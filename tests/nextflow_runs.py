"""Running the Nextflow pipeline in tests, and comparing everything two runs write.

Shared by tests/test_nextflow_pipeline.py (Nextflow against ``desweep run``), tests/test_containers.py
(the run in the image) and tests/test_slurm.py (the run through SLURM): the one real ``-profile test``
run they all check is the session fixture ``real_run`` (conftest.py), which goes through every
executor and container engine this machine has (``test,slurm,podman`` in CI), so one run serves
the three claims.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from desweep import keys

REPO = Path(__file__).resolve().parents[1]
WRAPPER = REPO / "scripts" / "nextflow"
SCRIPTS = REPO / "scripts"
DATA = REPO / "tests" / "data"
TIMEOUT = 3600
BUILD_TIMEOUT = 3600
#: a user's own cluster settings (-c), which every SLURM job must keep
USER_CLUSTER_CONFIG = DATA / "user_cluster.config"

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
    (keys.STEP_NORMALIZE, keys.LAYER_GENES_CSV),
    (keys.STEP_DIAGNOSE, keys.GENE_PATTERNS_CSV), (keys.STEP_DIAGNOSE, keys.SETTING_SCORES_CSV),
    (keys.STEP_DIAGNOSE, keys.CONCORDANCE_CSV), (keys.STEP_DIAGNOSE, keys.RECOMMENDATIONS_CSV),
    (keys.STEP_DIAGNOSE, keys.MARKERS_CSV), (keys.STEP_DIAGNOSE, keys.REJECTED_CSV), (keys.STEP_DIAGNOSE, keys.MARKERS_H5AD),
    (keys.STEP_DIAGNOSE, keys.SETTING_SCORES_BY_REPLICATE_CSV), (keys.STEP_DIAGNOSE, keys.RECOMMENDED_SETTINGS_CSV),
    (keys.STEP_DIAGNOSE, keys.CONCORDANCE_SETTINGS_CSV),
    (keys.STEP_BASELINES, "wilcoxon.csv"), (keys.STEP_BASELINES, "pseudobulk.csv"),
    (keys.STEP_REPORT, keys.MULTIQC_REPORT),
    (keys.PIPELINE_INFO, keys.PARAMS_YAML), (keys.PIPELINE_INFO, keys.SOFTWARE_VERSIONS_YML),
]


def task_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This project's Python first on PATH; quiet, offline Nextflow."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NXF_ANSI_LOG"] = "false"
    env["NXF_OFFLINE"] = "true"
    env.setdefault("NXF_OPTS", "-XX:+TieredCompilation -XX:TieredStopAtLevel=1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def nextflow_run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(WRAPPER), "run", str(REPO), *args], cwd=cwd, env=task_env(env),
                          capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        log = (cwd / ".nextflow.log").read_text()[-6000:] if (cwd / ".nextflow.log").exists() else ""
        pytest.fail(f"nextflow run {' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n"
                    f"--- stderr ---\n{proc.stderr[-3000:]}\n--- .nextflow.log (end) ---\n{log}")
    return proc


@dataclass(frozen=True)
class PipelineRun:
    """A finished ``nextflow run``: where it ran, and how to run it again (-resume) the same way."""

    cwd: Path
    profile: str
    config_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def results(self) -> Path:
        return self.cwd / "results"

    @property
    def profiles(self) -> list[str]:
        return self.profile.split(",")

    def rerun(self, *args: str) -> subprocess.CompletedProcess:
        return nextflow_run(self.cwd, "-profile", self.profile, *self.config_args, "--outdir", str(self.results), *args,
                            env=self.env)


def image_tags(env: dict[str, str] | None = None) -> dict[str, str]:
    """``make images``' tags: {"cpu": ..., "gpu": ...}."""
    proc = subprocess.run([str(SCRIPTS / "build_images"), "--tags"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, check=True)
    return dict(line.split() for line in proc.stdout.splitlines())


def podman_setup() -> dict[str, str]:
    """What scripts/podman_setup exports: containers.conf, and the local base where no registry answers."""
    proc = subprocess.run([str(SCRIPTS / "podman_setup")], capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", proc.stdout, re.M))
    assert Path(exports["CONTAINERS_CONF"]).is_file()
    return {**exports, "CONTAINER_ENGINE": "podman"}


def build_cpu_image(podman_env: dict[str, str]) -> str:
    """The cpu image, built by scripts/build_images (nothing to do when its context is unchanged)."""
    proc = subprocess.run([str(SCRIPTS / "build_images"), "cpu"], env={**os.environ, **podman_env},
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    print(proc.stdout.splitlines()[0], proc.stdout.splitlines()[-1], sep="\n")
    return image_tags(podman_env)["cpu"]


def read_trace(outdir: Path, suffix: str) -> list[dict[str, str]]:
    path = outdir / keys.PIPELINE_INFO / f"execution_trace_{suffix}.txt"
    assert path.is_file(), f"no trace file {path}"
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# --- comparing two runs ------------------------------------------------------------

#: what legitimately differs between two runs of the same input and seed, and is left out:
#: - pipeline_info/: each run's own parameters, versions and (Nextflow) trace;
#: - multiqc/: the report, built from the compared tables plus that provenance and the output paths;
#: - `desweep run`'s step stamps (``.desweep_<step>.json``), which Nextflow runs do not write;
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


#: uns keys of scanpy's dendrogram (floats compared to rounding, see assert_same_values)
DENDROGRAM_PREFIX = "dendrogram_"


def assert_same_values(ours: dict, theirs: dict, what: str) -> None:
    import numpy as np
    import torch

    a, b = flatten(ours), flatten(theirs)
    assert sorted(a) == sorted(b), f"{what}: keys differ: {sorted(set(a) ^ set(b))}"
    for key in a:
        x, y = (v.numpy() if isinstance(v, torch.Tensor) else v for v in (a[key], b[key]))
        if key.split("/")[0].startswith(DENDROGRAM_PREFIX) and np.asarray(x).dtype.kind == "f":
            # markers.h5ad's display dendrogram comes from scanpy's PCA of a float32 copy: its last digits
            # follow the BLAS kernels (the image's against the host's differ by about 6e-7)
            assert np.allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5, equal_nan=True), \
                f"{what}: {key} differs beyond rounding (max {np.nanmax(np.abs(np.asarray(x) - np.asarray(y))):.3g})"
        elif isinstance(x, np.ndarray | list | tuple) or isinstance(y, np.ndarray | list | tuple):
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


def assert_same_outputs(ours_dir: Path, theirs_dir: Path) -> None:
    """Every file both OUTDIRs hold has the same values; every table is byte-identical."""
    import torch

    ours, theirs = compared_files(ours_dir), compared_files(theirs_dir)
    assert sorted(ours) == sorted(theirs), f"only in {ours_dir}: {sorted(ours - theirs)}; only in {theirs_dir}: {sorted(theirs - ours)}"
    expected_tables = {f"{folder}/{name}" for folder, name in CONTRACT_FILES if name.endswith(".csv")}
    assert expected_tables <= ours, sorted(expected_tables - ours)
    plan = read_rows(ours_dir / keys.STEP_DE / keys.PLAN_CSV)
    assert {f"{keys.STEP_DE}/{keys.DE_TABLES_DIR}/{r['combination_id']}.csv" for r in plan} <= ours
    checked = {"csv": 0, "h5ad": 0, "pt": 0, "other": 0}
    for name in sorted(ours):
        a, b = ours_dir / name, theirs_dir / name
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

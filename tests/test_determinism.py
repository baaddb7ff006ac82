"""Same inputs and seed in two processes: byte-identical outputs.

composition, plan, DE (shared and scvi samplers), normalize and diagnose run in two
fresh Python processes that differ only in ``PYTHONHASHSEED``. Python salts the hash
of every ``str`` with it, so anything that derives a seed from ``hash()`` or follows
the iteration order of a set of names (batches, groups, genes) changes between the
two; tests that run twice in one process cannot see it. With seeds 1 and 2 the set
``{"batch0", "batch1", "batch2"}`` iterates in two different orders.

The data: the shared fixture's clustered cells, with 15 cells of ``only_batch0``
relabelled ``tiny0``: in a group that small some genes have no counts, as in most
real data, so scvi-tools' pseudocount (and the fold changes) are float32, where the
order of a sum shows in the written digits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from desweep import keys

pytestmark = pytest.mark.slow

HASH_SEEDS = ("1", "2")
TINY = "tiny0"
COMPARISONS = f"{TINY}:only_batch1;only_batch0:shared2"  # a tiny group; a group in every batch
SHARED_GRID = """\
batch_correction: [false, true]
batchids: [all, own]
mode: [vanilla, change]
delta: [0.5]
filter_outlier_cells: [false, true]
seeds: [0, 1]
"""
SCVI_GRID = """\
batch_correction: [true]
batchids: [all]
mode: [change]
delta: [0.5]
filter_outlier_cells: [false, true]
seeds: [0]
"""
#: runs desweep commands (a JSON list of argument lists) one after the other in one process
RUNNER = "import json, sys\nfrom desweep.cli import cli\nfor args in json.loads(sys.argv[1]):\n    cli.main(args, standalone_mode=False)\n"


@pytest.fixture(scope="module")
def inputs(pipeline_dirs, tmp_path_factory) -> dict[str, Path]:
    """The fixture's clustered data with a tiny group, the model, and the two grids."""
    from desweep.io import read_h5ad

    folder = tmp_path_factory.mktemp("determinism_inputs")
    adata = read_h5ad(pipeline_dirs[keys.STEP_CLUSTER] / keys.CLUSTERED_H5AD)
    labels = adata.obs["cell_type"].astype(str).to_numpy().copy()
    labels[np.flatnonzero(labels == "only_batch0")[:15]] = TINY
    adata.obs["cell_type"] = pd.Categorical(labels)
    tiny_means = np.asarray(adata.X[labels == TINY].mean(0)).ravel()
    assert (tiny_means < 0.01).any(), "the tiny group should have genes without counts"
    paths = {"adata": folder / keys.CLUSTERED_H5AD, "model": pipeline_dirs[keys.STEP_INTEGRATE] / keys.MODEL_DIR,
             "shared_grid": folder / "grid_shared.yaml", "scvi_grid": folder / "grid_scvi.yaml"}
    adata.write_h5ad(paths["adata"])
    paths["shared_grid"].write_text(SHARED_GRID)
    paths["scvi_grid"].write_text(SCVI_GRID)
    return paths


def commands(inputs: dict[str, Path]) -> list[list[str]]:
    """Every step, writing under the relative folder ``out`` (no output names its own location)."""
    adata, model = str(inputs["adata"]), str(inputs["model"])
    composition = f"out/{keys.STEP_COMPOSITION}"
    comparisons = f"{composition}/{keys.COMPARISONS_CSV}"
    counts = f"{composition}/{keys.CLUSTER_BATCH_COUNTS_CSV}"
    de, de_scvi = f"out/{keys.STEP_DE}", f"out/{keys.STEP_DE}_scvi"
    model_args = ["--input", adata, "--model", model, "--threads", "1"]
    return [
        ["composition", "-i", adata, "--comparisons", COMPARISONS, "-o", composition],
        ["plan", "--comparisons", comparisons, "--batch-counts", counts, "--grid", str(inputs["shared_grid"]), "-o", de],
        ["de", "--plan", f"{de}/{keys.PLAN_CSV}", *model_args, "--all", "--n-samples", "1000", "-o", de],
        ["plan", "--comparisons", comparisons, "--batch-counts", counts, "--grid", str(inputs["scvi_grid"]), "-o", de_scvi],
        ["de", "--plan", f"{de_scvi}/{keys.PLAN_CSV}", *model_args, "--all", "--n-samples", "1000", "--sampling", "scvi",
         "-o", de_scvi],
        ["normalize", *model_args, "--plan", f"{de}/{keys.PLAN_CSV}", "--n-samples", "2", "--seed", "0",
         "-o", f"out/{keys.STEP_NORMALIZE}"],
        ["diagnose", "--input", adata, "--plan", f"{de}/{keys.PLAN_CSV}", "--comparisons", comparisons,
         "--means", f"out/{keys.STEP_NORMALIZE}/{keys.CLUSTER_BATCH_MEANS_CSV}", "--counts", counts,
         "-o", f"out/{keys.STEP_DIAGNOSE}"],
    ]


@pytest.fixture(scope="module")
def runs(inputs, tmp_path_factory) -> dict[str, Path]:
    """The same commands in two processes at once, one per PYTHONHASHSEED; their ``out`` folders."""
    script = json.dumps(commands(inputs))
    procs = {}
    for seed in HASH_SEEDS:
        cwd = tmp_path_factory.mktemp(f"hashseed{seed}")
        env = dict(os.environ, PYTHONHASHSEED=seed, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        procs[seed] = (cwd, subprocess.Popen([sys.executable, "-c", RUNNER, script], cwd=cwd, env=env,
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for seed, (_, proc) in procs.items():
        output, _ = proc.communicate(timeout=3600)
        assert proc.returncode == 0, f"PYTHONHASHSEED={seed}: exit {proc.returncode}\n{output[-4000:]}"
    return {seed: cwd / "out" for seed, (cwd, _) in procs.items()}


def test_hash_seeds_change_set_order() -> None:
    """The premise: the two hash seeds iterate a set of batch names in different orders."""
    code = "print(list({'batch0', 'batch1', 'batch2'}))"
    orders = {subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONHASHSEED=seed),
                             capture_output=True, text=True, check=True).stdout for seed in HASH_SEEDS}
    assert len(orders) == 2, orders


def test_steps_write_identical_bytes_in_two_processes(runs: dict[str, Path]) -> None:
    first, second = (runs[seed] for seed in HASH_SEEDS)
    files = sorted(str(p.relative_to(first)) for p in first.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(second)) for p in second.rglob("*") if p.is_file())
    for folder, name in [(keys.STEP_DE, keys.DE_SUMMARY_CSV), (f"{keys.STEP_DE}_scvi", keys.DE_SUMMARY_CSV),
                         (keys.STEP_DE, keys.DE_STABILITY_CSV), (keys.STEP_NORMALIZE, keys.NORMALIZED_H5AD),
                         (keys.STEP_NORMALIZE, keys.CLUSTER_BATCH_MEANS_CSV), (keys.STEP_DIAGNOSE, keys.GENE_PATTERNS_CSV),
                         (keys.STEP_DIAGNOSE, keys.RECOMMENDATIONS_CSV), (keys.STEP_DIAGNOSE, keys.PLOTS_DIR)]:
        assert (first / folder / name).exists(), f"{folder}/{name} was not written"
    summary = pd.read_csv(first / keys.STEP_DE / keys.DE_SUMMARY_CSV)
    assert summary["filter_outlier_cells"].any() and summary["batch_correction"].any() and (~summary["batch_correction"]).any()
    assert (summary["group1"] == TINY).any() and len(set(summary["seed"])) == 2
    scvi_summary = pd.read_csv(first / f"{keys.STEP_DE}_scvi" / keys.DE_SUMMARY_CSV)
    assert set(scvi_summary["sampling"]) == {"scvi"} and (scvi_summary["group1"] == TINY).any()
    tables = [f for f in files if f.endswith(".csv") and f"/{keys.DE_TABLES_DIR}/" in f"/{f}"]
    assert len(tables) == len(summary) + len(scvi_summary)
    differ = [name for name in files if (first / name).read_bytes() != (second / name).read_bytes()]
    assert not differ, f"{len(differ)} of {len(files)} files differ between PYTHONHASHSEED={HASH_SEEDS}: {differ[:10]}"

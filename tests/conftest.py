"""Shared fixtures: small seeded simulated data and one small trained pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

#: simulation used by the shared trained fixture (small, but with every planted pattern)
SIM_KWARGS = dict(n_cells=2000, n_genes=600, n_batches=3, n_shared_clusters=3, n_specific_clusters=2, seed=7)
TRAIN_EPOCHS = 80


@pytest.fixture(scope="session")
def sim_small():
    """2,000 cells x 600 genes, 3 batches, 3 shared + 2 batch-specific clusters (seed 7)."""
    from desweep.simulate import SimulationParams, simulate

    return simulate(SimulationParams(**SIM_KWARGS))


@pytest.fixture(scope="session")
def sim_small_path(sim_small, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "sim.h5ad"
    sim_small.write_h5ad(path)
    return path


#: a folder where ``pipeline_dirs`` is built once and then reused by later sessions; set only by
#: scripts/mutation_check.py, which never sets it while it mutates the code that builds the fixture
PIPELINE_CACHE_ENV = "DESWEEP_TEST_PIPELINE_CACHE"


@pytest.fixture(scope="session")
def pipeline_dirs(request, tmp_path_factory) -> dict[str, Path]:
    """validate -> integrate -> cluster -> composition on ``sim_small``, once per test session.

    Returns the step folders keyed by step name (``validate``, ``integrate``,
    ``cluster``, ``composition``) plus ``outdir``.
    """
    from click.testing import CliRunner

    from desweep import keys
    from desweep.cli import cli

    cache = os.environ.get(PIPELINE_CACHE_ENV)
    outdir = Path(cache) if cache else tmp_path_factory.mktemp("pipeline")
    dirs = {name: outdir / name for name in (keys.STEP_VALIDATE, keys.STEP_INTEGRATE, keys.STEP_CLUSTER, keys.STEP_COMPOSITION)}
    dirs["outdir"] = outdir
    complete = outdir / ".complete"
    if cache and complete.is_file():
        return dirs
    sim_small_path = request.getfixturevalue("sim_small_path")
    steps = [
        ["validate", "-i", str(sim_small_path), "--batch-key", "batch", "--labels-key", "cell_type", "-o", str(dirs["validate"])],
        ["integrate", "-i", str(dirs["validate"] / keys.VALIDATED_H5AD), "--max-epochs", str(TRAIN_EPOCHS),
         "--threads", "1", "--seed", "0", "-o", str(dirs["integrate"])],
        ["cluster", "-i", str(dirs["integrate"] / keys.INTEGRATED_H5AD), "--resolution", "0.3", "-o", str(dirs["cluster"])],
        ["composition", "-i", str(dirs["cluster"] / keys.CLUSTERED_H5AD), "-o", str(dirs["composition"])],
    ]
    runner = CliRunner()
    for args in steps:
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, f"{args[0]} failed: {result.output}"
    if cache:
        complete.write_text("")
    return dirs


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> Path:
    """``nextflow run . -profile test`` for real, without containers, once per test session.

    Returns the launch folder (results in ``results/``, trace suffix ``first``); shared by the
    Nextflow tests and the container test, which compares its run in the images with this one.
    """
    from nextflow_runs import nextflow_run

    cwd = tmp_path_factory.mktemp("nf_real")
    nextflow_run(cwd, "-profile", "test", "--outdir", str(cwd / "results"), "--trace_report_suffix", "first")
    return cwd

"""Shared fixtures: small seeded simulated data and one small trained pipeline."""

from __future__ import annotations

import os
import time
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


#: fixtures that train scVI, run the whole pipeline, start SLURM or build an image: a test that uses
#: one must be marked ``slow``, so that the fast loop (``make check``, ``-m "not slow"``) stays fast
SLOW_FIXTURES = frozenset({"pipeline_dirs", "real_run", "slurm_cluster", "podman_env", "cpu_image"})


def pytest_collection_modifyitems(config, items) -> None:
    """Stop the session when a test uses a slow fixture without the ``slow`` marker."""
    unmarked = [f"{item.nodeid} (uses {', '.join(sorted(SLOW_FIXTURES & set(item.fixturenames)))})"
                for item in items if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError("mark these tests @pytest.mark.slow (make check skips slow tests):\n  " + "\n  ".join(unmarked))


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A single-node SLURM cluster for the session (tests/slurm_cluster.py); stopped at the end.

    Skipped with the reason where slurm-wlm and munge are missing, and a failure in CI
    (``CI=true``), where .ci/run installs them.
    """
    from slurm_cluster import skip_reason, start_cluster

    reason = skip_reason()
    if reason:
        if in_ci():
            pytest.fail(f"CI=true: no SLURM cluster: {reason}", pytrace=False)
        pytest.skip(reason)
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def podman_env() -> dict[str, str]:
    from nextflow_runs import podman_setup

    return podman_setup()


@pytest.fixture(scope="session")
def cpu_image(podman_env: dict[str, str]) -> str:
    from nextflow_runs import build_cpu_image

    return build_cpu_image(podman_env)


@pytest.fixture(scope="session")
def real_run(request, tmp_path_factory):
    """``nextflow run . -profile test`` for real, once per test session, through what this machine has.

    With SLURM (slurm-wlm and munge, or ``CI=true``) it adds ``slurm`` and runs on the session's
    cluster with a user's ``-c`` config (tests/data/user_cluster.config); with podman it adds
    ``podman`` and runs in the cpu image. One run thus serves the value-level comparison with
    ``desweep run`` (test_nextflow_pipeline.py), the SLURM checks (test_slurm.py) and the
    container check (test_containers.py); each of those asserts the profile it needs.
    Returns a :class:`nextflow_runs.PipelineRun` (results in ``results/``, trace suffix ``first``).
    """
    import shutil

    from nextflow_runs import USER_CLUSTER_CONFIG, PipelineRun, nextflow_run
    from slurm_cluster import skip_reason

    profiles, config_args, env = ["test"], [], {}
    if skip_reason() is None or in_ci():
        env.update(request.getfixturevalue("slurm_cluster").env)
        profiles.append("slurm")
        config_args = ["-c", str(USER_CLUSTER_CONFIG)]
    if shutil.which("podman"):
        request.getfixturevalue("cpu_image")
        env.update(request.getfixturevalue("podman_env"))
        profiles.append("podman")
    run = PipelineRun(tmp_path_factory.mktemp("nf_real"), ",".join(profiles), config_args, env)
    start = time.monotonic()
    nextflow_run(run.cwd, "-profile", run.profile, *config_args, "--outdir", str(run.results),
                 "--trace_report_suffix", "first", env=env)
    print(f"real run -profile {run.profile}: {time.monotonic() - start:.0f} s")
    return run

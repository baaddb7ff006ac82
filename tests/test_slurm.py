"""The pipeline through a real SLURM cluster, and config that composes with the user's.

The cluster is the session's single-node one (``slurm_cluster``, tests/slurm_cluster.py), which
.ci/run sets up from Debian's slurm-wlm and munge; without them these tests skip with the reason
(and fail in CI).

- the session's real run (``real_run``, conftest.py) went through ``sbatch`` with a user's
  ``-c`` config setting ``process.clusterOptions``: ``scontrol show job`` shows that every job,
  the GPU-labelled steps' included, kept it (tests/test_nextflow_pipeline.py then resumes that
  run through SLURM, every task CACHED);
- under ``-profile gpu`` the GPU steps add ``--gres=gpu:1`` to the user's options instead of
  replacing them (a ``-stub`` run: the cluster's one GPU is a stand-in without a device).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from nextflow_runs import DATA, USER_CLUSTER_CONFIG, PipelineRun, nextflow_run, read_trace

pytestmark = pytest.mark.nextflow

REPO = Path(__file__).resolve().parents[1]
#: what tests/data/user_cluster.config asks of every job, as scontrol shows it
USER_JOB_FIELDS = {"Account": "desweep_ci", "Comment": "user_config"}


def gpu_processes() -> set[str]:
    return {re.search(r"^process (\w+)", main.read_text(), re.M).group(1)
            for main in (REPO / "modules" / "local").glob("*/main.nf") if "label 'process_gpu'" in main.read_text()}


def slurm_jobs(cluster, trace: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """task name -> the fields ``scontrol show job`` gives for its SLURM job, and ``process``."""
    jobs = {}
    for row in trace:
        assert row["native_id"].isdigit(), f"{row['name']} was not a SLURM job (native_id {row['native_id']!r})"
        line = cluster.run("scontrol", "show", "job", "--oneliner", row["native_id"])
        jobs[row["name"]] = {**dict(re.findall(r"(\w+)=(\S*)", line)), "process": row["process"].split(":")[-1]}
    return jobs


@pytest.mark.slow
def test_real_run_went_through_slurm_and_every_job_kept_the_users_cluster_options(real_run: PipelineRun, slurm_cluster) -> None:
    assert "slurm" in real_run.profiles, f"a SLURM cluster is up but the session's real run was -profile {real_run.profile}"
    trace = read_trace(real_run.results, "first")
    jobs = slurm_jobs(slurm_cluster, trace)
    processes = {job["process"] for job in jobs.values()}
    assert gpu_processes() <= processes, f"no job for {gpu_processes() - processes}"
    for name, job in jobs.items():
        assert job["JobState"] == "COMPLETED", (name, job["JobState"])
        for field, value in USER_JOB_FIELDS.items():
            assert job.get(field) == value, f"{name}: {field}={job.get(field)!r}, the user's -c config asked {value!r}"


@pytest.mark.slow
def test_gpu_jobs_add_their_request_to_the_users_cluster_options(slurm_cluster, tmp_path: Path) -> None:
    outdir = tmp_path / "results"
    nextflow_run(tmp_path, "-profile", "test,slurm,gpu", "-stub", "-c", str(USER_CLUSTER_CONFIG),
                 "--input", str(DATA / "sim_500x300.h5ad"), "--outdir", str(outdir), "--trace_report_suffix", "gpu",
                 env=slurm_cluster.env)
    jobs = slurm_jobs(slurm_cluster, read_trace(outdir, "gpu"))
    on_gpu = {name for name, job in jobs.items() if job["process"] in gpu_processes()}
    assert on_gpu and on_gpu != set(jobs), sorted(jobs)
    for name, job in jobs.items():
        for field, value in USER_JOB_FIELDS.items():
            assert job.get(field) == value, f"{name}: {field}={job.get(field)!r}, the user's -c config asked {value!r}"
        asked = job.get("TresPerNode", "")
        assert (asked == "gres:gpu:1") == (name in on_gpu), f"{name}: TresPerNode={asked!r}"

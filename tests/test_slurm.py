"""The pipeline through a real SLURM cluster, and config that composes with the user's.

The cluster is the session's single-node one (``slurm_cluster``, tests/slurm_cluster.py), which
.ci/run sets up from Debian's slurm-wlm and munge; without them these tests skip with the reason
(and fail in CI).

- the session's real run (``real_run``, conftest.py) went through ``sbatch`` with a user's
  ``-c`` config setting ``process.clusterOptions``: ``scontrol show job`` shows that every job,
  the GPU-labelled steps' included, kept it (tests/test_nextflow_pipeline.py then resumes that
  run through SLURM, every task CACHED);
- under ``-profile gpu`` the GPU steps ask ``--gres=gpu:1`` (``-stub`` runs: the cluster's one GPU is
  a stand-in without a device): a user's process-wide ``clusterOptions`` and a site's ``withLabel:
  process_medium`` one reach every other job but not the GPU ones (Nextflow's ``withLabel``
  precedence, which the launch warns about), and the ``withLabel: process_gpu`` block docs/usage.md
  gives reaches the GPU jobs whole.
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


#: a user's -c config that gives the GPU jobs their options with the GPU request (docs/usage.md, "GPUs")
USER_GPU_CONFIG = """\
process {
    clusterOptions = '--account=desweep_ci --comment=user_config'
    withLabel: process_gpu {
        clusterOptions = '--account=desweep_ci --comment=user_config --gres=gpu:1'
    }
}
executor.submitRateLimit = '10/1s'
"""
#: an institutional profile that sets clusterOptions by label, as nf-core/configs profiles do
SITE_CONFIG = """\
process {
    withLabel: process_medium {
        clusterOptions = '--comment=site_medium'
    }
}
executor.submitRateLimit = '10/1s'
"""
#: case -> (what each non-GPU job carries, what each GPU job carries besides gres:gpu:1), by scontrol field
GPU_CASES = {
    "user process-wide": (USER_JOB_FIELDS, {}),
    "user withLabel process_gpu": (USER_JOB_FIELDS, USER_JOB_FIELDS),
    "site withLabel process_medium": ({"Comment": "site_medium"}, {}),
}


def gpu_case_args(case: str, where: Path) -> list[str]:
    if case == "user process-wide":
        return ["-profile", "test,slurm,gpu", "-c", str(USER_CLUSTER_CONFIG)]
    if case == "user withLabel process_gpu":
        (where / "gpu.config").write_text(USER_GPU_CONFIG)
        return ["-profile", "test,slurm,gpu", "-c", str(where / "gpu.config")]
    # the site profile comes in as nf-core/configs profiles do: nfcore_custom.config from --custom_config_base
    (where / "configs" / "conf").mkdir(parents=True)
    (where / "configs" / "nfcore_custom.config").write_text("profiles {\n    mysite { includeConfig 'conf/mysite.config' }\n}\n")
    (where / "configs" / "conf" / "mysite.config").write_text(SITE_CONFIG)
    return ["-profile", "test,mysite,slurm,gpu", "--custom_config_base", str(where / "configs")]


@pytest.mark.slow
@pytest.mark.parametrize("case", GPU_CASES)
def test_gpu_jobs_ask_for_a_gpu_and_keep_what_the_config_allows(case: str, slurm_cluster, tmp_path: Path) -> None:
    """The GPU steps ask --gres=gpu:1 under -profile gpu; a process-wide or other-label clusterOptions
    reaches every other job but not theirs (Nextflow's withLabel precedence; the launch warns), and
    a user's withLabel: process_gpu block reaches them whole."""
    outdir = tmp_path / "results"
    proc = nextflow_run(tmp_path, "-stub", *gpu_case_args(case, tmp_path), "--input", str(DATA / "sim_500x300.h5ad"),
                        "--outdir", str(outdir), "--trace_report_suffix", "gpu", env=slurm_cluster.env)
    assert "-profile gpu: the GPU steps" in proc.stdout + proc.stderr
    jobs = slurm_jobs(slurm_cluster, read_trace(outdir, "gpu"))
    on_gpu = {name for name, job in jobs.items() if job["process"] in gpu_processes()}
    assert on_gpu and on_gpu != set(jobs), sorted(jobs)
    other_fields, gpu_fields = GPU_CASES[case]
    for name, job in sorted(jobs.items()):
        print(f"{case}: {name}: JobId={job.get('JobId')} TresPerNode={job.get('TresPerNode')} Account={job.get('Account')} "
              f"Comment={job.get('Comment')}")
    for name, job in jobs.items():
        asked = job.get("TresPerNode", "")
        assert (asked == "gres:gpu:1") == (name in on_gpu), f"{name}: TresPerNode={asked!r}"
        if name in on_gpu:
            expected = gpu_fields
        elif case == "site withLabel process_medium" and job["process"] != "BASELINES":
            expected = {}  # the site's options are for process_medium only
        else:
            expected = other_fields
        for field in ("Account", "Comment"):
            shown = job.get(field)
            assert (shown == expected[field]) if field in expected else shown in (None, "", "(null)"), \
                f"{case}: {name}: {field}={shown!r}, expected {expected.get(field)!r}"

"""nf-core/configs institutional profiles load: ``-profile test,<site> --custom_config_base <configs>``.

The profiles come from a snapshot of nf-core/configs (its licence included) in
``../shared/data/nf-core-configs`` beside the repository (``DESWEEP_SHARED_DATA`` points elsewhere);
without it these tests fail in CI and skip elsewhere. Each profile runs ``-stub`` to the end with
``tests/data/site_profile_on_this_machine.config`` on top (``-c``), which swaps the site's scheduler,
container engine, environment modules and scratch for what this machine has (the local executor,
no containers) and keeps everything else the profile sets: its params, process settings and
``withLabel`` blocks. The profiles are picked for what they set:

- ``crick``: SLURM, ``max_cpus``/``max_memory``/``max_time`` and every ``config_profile_*``;
- ``crukmi``: SLURM, ``withLabel: process_*`` resources, a ``beforeScript`` module load;
- ``embl_hd``: SLURM, ``withLabel`` blocks of its own labels;
- ``cambridge``: SLURM, site params (``partition``, ``csd_parts``) listed in its ``schema_ignore_params``, scratch;
- ``mssm``: LSF, site params read from the environment, a ``withLabel`` regex that matches
  ``process_gpu``.

Parameters that desweep does not know (the sites' own) are a warning, as the nf-schema plugin
gives by default; ``--fail_unrecognised_params`` stops on them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import in_ci
from nextflow_runs import DATA, REPO, TIMEOUT, WRAPPER, read_trace, task_env

pytestmark = pytest.mark.nextflow

CONFIGS = Path(os.environ.get("DESWEEP_SHARED_DATA", REPO.parent / "shared" / "data")) / "nf-core-configs"
ON_THIS_MACHINE = DATA / "site_profile_on_this_machine.config"
#: profile -> the params it sets that desweep does not know (the launch warning names them)
PROFILES = {
    "crick": [],
    "crukmi": [],
    "embl_hd": [],
    "cambridge": [],  # its own params are in its schema_ignore_params
    "mssm": ["minerva_allocation"],
}
#: the params of nf-core's template that nf-core/configs profiles set (max_cpus, max_memory and max_time,
#: which the template no longer declares, the launch check accepts by name: crick sets them)
NF_CORE_PARAMS = ["config_profile_name", "config_profile_description", "config_profile_contact", "config_profile_url",
                  "custom_config_base", "custom_config_version", "igenomes_base", "validate_params"]


@pytest.fixture(scope="module")
def configs() -> Path:
    if not (CONFIGS / "nfcore_custom.config").is_file():
        message = f"nf-core/configs snapshot not found at {CONFIGS} (set DESWEEP_SHARED_DATA)"
        if in_ci():
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return CONFIGS


def launch(cwd: Path, configs: Path, profile: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(WRAPPER), "run", str(REPO), "-profile", f"test,{profile}", "-stub",
                           "--custom_config_base", str(configs), "-c", str(ON_THIS_MACHINE), "-w", str(cwd / "work"),
                           "--outdir", str(cwd / "results"), "--trace_report_suffix", "site", *args],
                          cwd=cwd, env=task_env(), capture_output=True, text=True, timeout=TIMEOUT)


def test_nf_core_config_params_are_in_the_schema() -> None:
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    known = {name for group in schema["$defs"].values() for name in group["properties"]}
    assert not set(NF_CORE_PARAMS) - known


@pytest.mark.slow
@pytest.mark.parametrize("profile", PROFILES)
def test_institutional_profile_runs_to_the_end(profile: str, configs: Path, tmp_path: Path) -> None:
    assert (configs / "conf" / f"{profile}.config").is_file()
    proc = launch(tmp_path, configs, profile)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert "desweep: done." in proc.stdout
    trace = read_trace(tmp_path / "results", "site")
    assert {row["process"].split(":")[-1] for row in trace} >= {"VALIDATE", "INTEGRATE", "DE", "DIAGNOSE", "REPORT"}
    assert {row["status"] for row in trace} == {"COMPLETED"}
    warned = [line for line in proc.stdout.splitlines() if "Parameters this pipeline does not know" in line]
    if PROFILES[profile]:
        assert len(warned) == 1 and all(f"--{name}" in warned[0] for name in PROFILES[profile]), proc.stdout[-3000:]
    else:
        assert not warned, warned


def test_unknown_site_params_stop_the_run_when_asked(configs: Path, tmp_path: Path) -> None:
    proc = launch(tmp_path, configs, "mssm", "--fail_unrecognised_params")
    assert proc.returncode != 0
    assert "--minerva_allocation" in proc.stdout + proc.stderr and "unknown parameter" in proc.stdout + proc.stderr
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir()), "a task ran"

"""desweep's images: the dependency locks, the tags, and the pipeline run in them.

- the locks the images install from (containers/requirements*.lock) fit pyproject.toml, and
  the check fails when either side changes without the other;
- the tags ``make images`` gives the images are the containers nextflow.config resolves for
  every process (the -cuda one for the GPU steps under -profile gpu), registry param included;
- with podman installed, the session's one real run (``real_run``, conftest.py) runs in the cpu
  image (scripts/podman_setup, then scripts/build_images, which does nothing when the image's
  context is unchanged): every task ran in that image, with the locked versions, and
  tests/test_nextflow_pipeline.py compares that run's outputs with ``desweep run`` in this
  environment (which must hold the same locked versions): every table byte for byte.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nextflow_runs import WRAPPER, PipelineRun, image_tags, read_trace, task_env

from desweep import keys

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
LOCKS = ["requirements.lock", "requirements-no-torch.lock"]


def lock_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / "lock_requirements.py"), "--check", *args],
                          capture_output=True, text=True, timeout=60)



def lock_pins(name: str = "requirements.lock") -> dict[str, str]:
    return dict(line.split("==") for line in (REPO / "containers" / name).read_text().splitlines() if "==" in line)


def gpu_processes() -> set[str]:
    return {re.search(r"^process (\w+)", main.read_text(), re.M).group(1)
            for main in (REPO / "modules" / "local").glob("*/main.nf") if "label 'process_gpu'" in main.read_text()}


# --- the locks ------------------------------------------------------------------

def test_locks_fit_pyproject() -> None:
    proc = lock_check()
    assert proc.returncode == 0, proc.stderr


def test_lock_check_fails_when_pyproject_dependencies_change(tmp_path: Path) -> None:
    original = (REPO / "pyproject.toml").read_text()
    changed = re.sub(r'"scvi-tools[^"]*"', '"scvi-tools>=1.5,<1.6"', original)
    assert changed != original
    (tmp_path / "pyproject.toml").write_text(changed)
    proc = lock_check("--pyproject", str(tmp_path / "pyproject.toml"))
    assert proc.returncode == 1
    assert "made from other pyproject.toml dependencies (run `make lock`)" in proc.stderr
    assert re.search(r"scvi-tools==\S+ does not satisfy pyproject's scvi-tools<1.6,>=1.5", proc.stderr), proc.stderr


def test_lock_check_fails_when_the_locks_disagree(tmp_path: Path) -> None:
    for name in LOCKS:
        shutil.copy(REPO / "containers" / name, tmp_path / name)
    no_torch = tmp_path / "requirements-no-torch.lock"
    edited = re.sub(r"^numpy==\S+$", "numpy==1.26.0", no_torch.read_text(), flags=re.M)
    assert edited != no_torch.read_text()
    no_torch.write_text(edited)
    proc = lock_check("--folder", str(tmp_path))
    assert proc.returncode == 1
    assert "requirements-no-torch.lock is not requirements.lock without torch and the CUDA packages" in proc.stderr


def test_no_torch_lock_leaves_out_only_torch_and_its_cuda_libraries() -> None:
    left_out = set(lock_pins()) - set(lock_pins("requirements-no-torch.lock"))
    assert "torch" in left_out and "scvi-tools" not in left_out
    assert all(re.match(r"^(torch|triton|nvidia-.*|cuda-.*)$", name) for name in left_out), sorted(left_out)


# --- the tags -----------------------------------------------------------------

def inspect_containers(cwd: Path, profile: str, *params: str) -> dict[str, str]:
    """process name -> container, as ``nextflow inspect`` resolves them."""
    proc = subprocess.run([str(WRAPPER), "inspect", str(REPO), "-profile", profile, "--outdir", str(cwd / "results"),
                           *params, "-format", "json"], cwd=cwd, env=task_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return {p["name"].split(":")[-1]: p["container"] for p in json.loads(proc.stdout)["processes"]}


@pytest.mark.nextflow
@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_processes_run_in_the_images_make_images_tags(gpu: bool, tmp_path: Path) -> None:
    registry = "registry.example.org:5000/lab"
    tags = image_tags({"REGISTRY": registry})
    containers = inspect_containers(tmp_path, "test,podman,gpu" if gpu else "test,podman", "--container_registry", registry)
    assert {"VALIDATE", "INTEGRATE", "DE", "REPORT"} <= set(containers), containers
    for process, container in containers.items():
        on_gpu = gpu and process in gpu_processes()
        assert container == tags["gpu" if on_gpu else "cpu"], (process, container)


def test_image_tags_come_from_nextflow_config() -> None:
    config = (REPO / "nextflow.config").read_text()
    version = re.search(r"^manifest \{.*?^\s*version\s*=\s*'([^']+)'", config, re.M | re.S).group(1)
    registry = re.search(r"^\s*container_registry\s*=\s*'([^']+)'", config, re.M).group(1)
    assert image_tags() == {"cpu": f"{registry}/desweep:{version}", "gpu": f"{registry}/desweep:{version}-cuda"}
    usage = (REPO / "docs" / "usage.md").read_text()
    for tag in image_tags().values():
        assert f"`{tag}`" in usage, f"{tag} is not in docs/usage.md"


def test_versions_agree() -> None:
    """The manifest, the Python package and pyproject.toml give one version."""
    import tomllib

    import desweep

    config = (REPO / "nextflow.config").read_text()
    manifest = re.search(r"^manifest \{.*?^\s*version\s*=\s*'([^']+)'", config, re.M | re.S).group(1)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("version")
    assert manifest == desweep.__version__ and pyproject in (None, manifest), (manifest, desweep.__version__, pyproject)


# --- built and run with podman --------------------------------------------------------

needs_podman = pytest.mark.skipif(shutil.which("podman") is None,
                                  reason="podman is not installed (apt-get install podman runc debootstrap; .ci/run does)")


@needs_podman
@pytest.mark.slow
@pytest.mark.nextflow
def test_real_run_ran_in_the_podman_image(real_run: PipelineRun, cpu_image: str) -> None:
    assert "podman" in real_run.profiles, f"podman is installed but the session's real run was -profile {real_run.profile}"
    trace = read_trace(real_run.results, "first")
    assert trace and {row["status"] for row in trace} == {"COMPLETED"}, [(r["name"], r["status"]) for r in trace]
    for row in trace:
        launcher = (Path(row["workdir"]) / ".command.run").read_text()
        assert re.search(rf"podman run .* {re.escape(cpu_image)} ", launcher), f"{row['name']} did not run in {cpu_image}"
    versions = (real_run.results / keys.PIPELINE_INFO / keys.SOFTWARE_VERSIONS_YML).read_text()
    assert f"scvi-tools: {lock_pins()['scvi-tools']}" in versions
    # the image has the locked versions, and so must this environment (make install): then the run in
    # the image and `desweep run` here must agree every table byte for byte (test_real_run_matches_desweep_run)
    drift = {name: (pinned, installed_version(name)) for name, pinned in lock_pins().items() if installed_version(name) != pinned}
    assert not drift, f"this environment is not what containers/requirements.lock pins (pinned, installed): {drift}; make install, or make lock"


def installed_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None

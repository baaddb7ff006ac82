"""The conda and mamba profiles make desweep importable in a task without a package index.

desweep is no conda package: the profiles put the pipeline's ``src/`` on ``PYTHONPATH`` and
the tasks run ``bin/desweep-<step>`` and ``bin/desweep`` (Nextflow puts ``bin/`` on a task's
PATH). Conda is not installed here, so the task is simulated: a Python that has every
dependency but not desweep (a virtual environment over this one's packages, desweep's left
out), with the environment ``nextflow config -profile conda`` gives tasks.
(tests/test_schemas.py checks the environment file against pyproject.toml and the lock.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nextflow_runs import REPO, WRAPPER, task_env

import desweep

pytestmark = pytest.mark.nextflow


def profile_env(profile: str) -> dict[str, str]:
    """``env.*`` of ``nextflow config -profile PROFILE -flat``: what every task of that profile gets."""
    proc = subprocess.run([str(WRAPPER), "config", "-profile", profile, "-flat", str(REPO)], capture_output=True,
                          text=True, env=task_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line.removeprefix("env.").split(" = ", 1) for line in proc.stdout.splitlines() if line.startswith("env.")]
    return {name: value.strip("'") for name, value in lines}


def python_without_desweep(folder: Path) -> Path:
    """A venv's bin folder whose python3 sees this environment's packages, desweep's own left out."""
    packages = folder / "packages"
    packages.mkdir()
    for entry in Path(torch.__file__).parents[1].iterdir():
        if not entry.name.lower().startswith(("desweep", "__editable__")):
            (packages / entry.name).symlink_to(entry)
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "dependencies.pth").write_text(f"{packages}\n")  # a plain path: no .pth inside it runs
    return venv / "bin"


@pytest.mark.parametrize("profile", ["conda", "mamba"])
def test_conda_profiles_import_desweep_from_the_pipeline(profile: str, tmp_path: Path) -> None:
    env = profile_env(profile)
    assert env.get("PYTHONPATH") == str(REPO / "src"), env
    bin_dir = python_without_desweep(tmp_path)
    task = {"PATH": os.pathsep.join([str(bin_dir), str(REPO / "bin"), "/usr/bin", "/bin"]), "HOME": str(tmp_path)}
    # without the profile's PYTHONPATH this python has no desweep: the check below is not vacuous
    bare = subprocess.run(["desweep", "--version"], env=task, capture_output=True, text=True, timeout=120)
    assert bare.returncode != 0 and "No module named 'desweep'" in bare.stderr, bare.stdout + bare.stderr
    task.update(env)
    version = subprocess.run(["desweep", "--version"], env=task, capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == desweep.__version__, version.stdout + version.stderr
    step = subprocess.run(["desweep-validate", "--help"], env=task, capture_output=True, text=True, timeout=120)
    assert step.returncode == 0 and "--batch-key" in step.stdout, step.stdout + step.stderr

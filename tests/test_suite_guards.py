"""The suite's own guards: tests that need outside data or tools cannot pass silently without them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_guarded_tests(test_file: str, location: dict[str, str], *, ci: str | None) -> subprocess.CompletedProcess:
    """pytest on ``tests/<test_file>`` with ``location`` (where it looks for its data or tool) and CI set or unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NF_TEST")} | location
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(REPO / "tests" / test_file)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@dataclass(frozen=True)
class Guarded:
    """Tests that need something from ../shared: where they look for it, and what they say without it."""

    test_file: str
    location_env: str
    ci_outcome: str  # pytest's count line in CI: fixtures fail as errors, tests as failures
    ci_message: Callable[[Path], str]
    skip_message: Callable[[Path], str]


GUARDED = {
    "real data": Guarded("test_real_data.py", "DESWEEP_SHARED_DATA", "2 errors",
                         lambda where: f"CI=true: shared real data not found at {where / 'pbmc_3tech.h5ad'}",
                         lambda where: f"shared real data not found at {where / 'pbmc_3tech.h5ad'}"),
    "nf-test": Guarded("test_nf_test.py", "DESWEEP_SHARED_TOOLS", "2 failed",
                       lambda where: f"CI=true: nf-test not found at {where / 'nf-test' / 'nf-test'} nor on PATH",
                       lambda where: "install nf-test (curl -fsSL https://get.nf-test.com | bash, or conda install -c bioconda nf-test)"),
}


@pytest.mark.parametrize("name", GUARDED)
def test_guarded_tests_fail_in_ci_without_what_they_need(name, tmp_path):
    guarded = GUARDED[name]
    proc = run_guarded_tests(guarded.test_file, {guarded.location_env: str(tmp_path)}, ci="true")
    assert proc.returncode == 1, proc.stdout
    assert guarded.ci_outcome in proc.stdout and "passed" not in proc.stdout, proc.stdout
    assert guarded.ci_message(tmp_path) in proc.stdout


@pytest.mark.parametrize("name", GUARDED)
def test_guarded_tests_skip_with_the_reason_outside_ci(name, tmp_path):
    guarded = GUARDED[name]
    proc = run_guarded_tests(guarded.test_file, {guarded.location_env: str(tmp_path)}, ci=None)
    assert proc.returncode == 0, proc.stdout
    assert "2 skipped" in proc.stdout and "passed" not in proc.stdout, proc.stdout
    assert guarded.skip_message(tmp_path) in proc.stdout

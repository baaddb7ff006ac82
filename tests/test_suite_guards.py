"""The suite's own guards: tests that need outside data or tools cannot pass silently without them (issues #19, #15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_real_data_tests(shared_data: Path, *, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["DESWEEP_SHARED_DATA"] = str(shared_data)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(REPO / "tests" / "test_real_data.py")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_real_data_tests_fail_in_ci_without_the_data(tmp_path):
    proc = run_real_data_tests(tmp_path, ci="true")
    assert proc.returncode == 1, proc.stdout
    assert "2 errors" in proc.stdout and "passed" not in proc.stdout, proc.stdout
    assert f"CI=true: shared real data not found at {tmp_path / 'pbmc_3tech.h5ad'}" in proc.stdout


def test_real_data_tests_skip_with_the_reason_outside_ci(tmp_path):
    proc = run_real_data_tests(tmp_path, ci=None)
    assert proc.returncode == 0, proc.stdout
    assert "2 skipped" in proc.stdout and "passed" not in proc.stdout, proc.stdout
    assert f"shared real data not found at {tmp_path / 'pbmc_3tech.h5ad'}" in proc.stdout


def run_nf_test_tests(shared_tools: Path, *, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NF_TEST")}
    env["DESWEEP_SHARED_TOOLS"] = str(shared_tools)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(REPO / "tests" / "test_nf_test.py")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_nf_test_tests_fail_in_ci_without_nf_test(tmp_path):
    proc = run_nf_test_tests(tmp_path, ci="true")
    assert proc.returncode == 1, proc.stdout
    assert "2 failed" in proc.stdout and "passed" not in proc.stdout, proc.stdout
    assert f"CI=true: nf-test not found at {tmp_path / 'nf-test' / 'nf-test'} nor on PATH" in proc.stdout


def test_nf_test_tests_skip_with_how_to_install_outside_ci(tmp_path):
    proc = run_nf_test_tests(tmp_path, ci=None)
    assert proc.returncode == 0, proc.stdout
    assert "2 skipped" in proc.stdout and "passed" not in proc.stdout, proc.stdout
    assert "install nf-test (curl -fsSL https://get.nf-test.com | bash, or conda install -c bioconda nf-test)" in proc.stdout

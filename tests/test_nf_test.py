"""nf-test, run by ``make test``: every nf-test, the pipeline's and the modules', real and -stub.

tests/default.nf.test runs the pipeline (-profile test); modules/local/*/tests/main.nf.test
run each module from the committed fixtures in tests/data/nf_fixtures
(scripts/make_nf_fixtures.py). One nf-test call per tag (``stub``, ``real``) runs all of them,
so nf-test starts once per tag (Nextflow still starts once per test).

nf-test is the nf-core test framework; it is on no package registry this project reaches, so
CI uses the copy in ``../shared/tools/nf-test`` (``DESWEEP_SHARED_TOOLS`` for another folder;
or ``NF_TEST``, or an ``nf-test`` on PATH).
Without it these tests fail in CI (``CI=true``) and are skipped elsewhere, with how to install
it as the reason. nf-test runs with ``--ci``: a snapshot that is missing or differs from the
committed ``.nf-test.snap`` fails the test instead of being written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from nextflow_runs import REPO, TIMEOUT, WRAPPER, task_env

pytestmark = pytest.mark.nextflow

#: the shared tools folder beside the repository (CI has it); DESWEEP_SHARED_TOOLS points elsewhere
SHARED_NF_TEST = Path(os.environ.get("DESWEEP_SHARED_TOOLS", REPO.parent / "shared" / "tools")) / "nf-test" / "nf-test"
INSTALL_HINT = ("install nf-test (curl -fsSL https://get.nf-test.com | bash, or conda install -c bioconda nf-test) "
                "and put it on PATH or set NF_TEST")


def nf_test_command() -> str:
    """The nf-test launcher: NF_TEST, ../shared/tools/nf-test, or the one on PATH; else a CI failure or a skip."""
    found = os.environ.get("NF_TEST") or (str(SHARED_NF_TEST) if SHARED_NF_TEST.is_file() else shutil.which("nf-test"))
    if found:
        return found
    message = f"nf-test not found at {SHARED_NF_TEST} nor on PATH: {INSTALL_HINT}"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def run_nf_test(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """nf-test with a ``nextflow`` that is scripts/nextflow first on PATH, and its work folder under tmp_path."""
    launcher_dir = tmp_path / "bin"
    launcher_dir.mkdir()
    (launcher_dir / "nextflow").symlink_to(WRAPPER)
    env = task_env({"NFT_WORKDIR": str(tmp_path / "nf-test")})
    env["PATH"] = f"{launcher_dir}{os.pathsep}{env['PATH']}"
    start = time.monotonic()
    proc = subprocess.run([nf_test_command(), "test", "--ci", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    print(f"nf-test test --ci {' '.join(args)}: {time.monotonic() - start:.0f} s")
    return proc


def nf_test_files() -> list[Path]:
    return [REPO / "tests" / "default.nf.test", *sorted(REPO.glob("modules/local/*/tests/main.nf.test"))]


@pytest.mark.slow
@pytest.mark.parametrize("tag", ["stub", "real"])
def test_every_nf_test(tag: str, tmp_path: Path) -> None:
    """The pipeline's and every module's test with this tag pass against their committed snapshots."""
    files = nf_test_files()
    assert all(f'tag "{tag}"' in f.read_text() for f in files), f"a test file without a {tag!r} test"
    proc = run_nf_test(tmp_path, "--tag", tag)
    output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    assert proc.returncode == 0, output[-6000:]
    assert f"SUCCESS: Executed {len(files)} tests" in output, output[-3000:]
    assert "created" not in output.split("Snapshot Summary")[-1], "nf-test --ci wrote a snapshot: " + output[-2000:]
